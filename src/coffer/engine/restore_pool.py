"""The restore's side of the forked restore workers (``workstealing``, ``restore_walker``).

This process resolves the snapshot root (and a subpath), opens and tidies the target, and hands
the root's nodes to the workers as one job; from then on it relays gifts, collects errors and
progress, and at the end makes the hard links whose group two workers met (the file itself was
written by the worker that claimed its inode first) and sets those directories' metadata again.
Include patterns need the whole tree before a directory is known to stay: those restores keep the
planning in this process (``_Restorer``).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from coffer.engine.progress import Progress
from coffer.engine.restore import (
    RestoreOptions,
    RestoreResult,
    _Restorer,
    process_count,
)
from coffer.engine.workstealing import StealingPool, Worker, fork_workers
from coffer.errors import RestoreError
from coffer.store.claims import ClaimTable
from coffer.store.format.tree import Node
from coffer.store.repository import Repository

LINK_GROUPS = 1 << 18  # hard-link groups the shared table holds before two workers may both write one


class RestorePool(StealingPool):
    what = "restore worker"
    hint = "run the restore again: it finishes what this one left, and removes its temporary files"

    def __init__(self, procs: list[Worker], links: ClaimTable, recipe: Any) -> None:
        super().__init__(procs)
        self.links = links
        self.recipe = recipe
        self.conductor: _Conductor | None = None

    @classmethod
    def fork(cls, repo: Repository, opts: RestoreOptions) -> RestorePool | None:
        """The workers for restoring into ``opts.target``, forked now (None where they cannot be:
        include patterns, threads already running, ``COFFER_WORKER_FORK=0``, one process)."""
        n = process_count(repo.backend_recipe)
        if n < 2 or opts.includes or opts.iincludes or not repo.index_loaded:
            return None
        from coffer.engine.restore_walker import serve_forked

        conns = max(1, opts.workers, repo.backend.properties.connections)
        threads = max(2, -(-conns // n))  # the backend's connections shared out, at least two each
        links = ClaimTable.create(LINK_GROUPS)
        try:
            procs = fork_workers(functools.partial(serve_forked, repo, opts, threads, links), n)
        except BaseException:
            links.close(remove=True)
            raise
        links.unlink()
        if procs is None:
            links.close()
            return None
        return cls(procs, links, repo.backend_recipe)

    def close(self, *, kill: bool = False) -> None:
        super().close(kill=kill)
        self.links.close()

    def on_message(self, p: Worker, msg: tuple[Any, ...]) -> None:
        c = self.conductor
        if c is None:
            super().on_message(p, msg)
            return
        kind = msg[0]
        if kind == "error":
            c.error(msg[1], msg[2])
        elif kind == "progress":
            _, files, nbytes, total_files, total_bytes = msg
            c.progress.add_done(files, 0)
            c.progress.add_bytes(nbytes)
            c.progress.add_total(total_files, total_bytes)
        elif kind == "link":
            with c.mu:
                c.links.append(msg[1:])
        elif kind == "primary":
            with c.mu:
                c.primaries[msg[1]] = msg[2:]
        else:
            super().on_message(p, msg)

    def on_flushed(self, p: Worker, msg: tuple[Any, ...]) -> None:
        c = self.conductor
        assert c is not None
        _, counts, verify_errors = msg
        files, dirs, others, hardlinks, nbytes, skipped, verified = counts
        with c.mu:
            r = c.result
            r.files += files
            r.dirs += dirs
            r.others += others
            r.hardlinks += hardlinks
            r.bytes += nbytes
            r.skipped += skipped
            r.files_verified += verified
            r.verify_errors.extend(verify_errors)


class _Conductor(_Restorer):
    def __init__(self, repo: Repository, opts: RestoreOptions, progress: Progress, pool: RestorePool) -> None:
        super().__init__(repo, opts, progress, threads=1)
        self.walkers = pool
        self.mu = threading.Lock()
        self.links: list[tuple[Any, ...]] = []  # (key, comps, name, loc, dir loc, dir node)
        self.primaries: dict[tuple[int, int], tuple[Any, ...]] = {}  # key -> (comps, name, loc, ok)

    def error(self, loc: str, msg: str) -> None:
        with self.mu:
            super().error(loc, msg)

    def run(self, tree_id: bytes) -> RestoreResult:
        t0 = time.monotonic()
        pool = self.walkers
        ok = False
        try:
            root = self._resolve_root(tree_id)
            self._open_target()
            self._tidy_existing(root, self.root_fd)
            done = threading.Event()
            pool.conductor = self
            pool.start(lambda e: done.set())
            pool.submit(([], None, self._root_nodes, True), lambda _result: done.set())
            while not done.wait(0.5):
                pass
            if pool.error is not None:
                raise pool.error
            self.progress.scan_finished = True
            pool.flush()
            self._make_links()
            ok = True
        finally:
            pool.close(kill=not ok)
            self.pool.shutdown(wait=True)
            self._cleanup()
        self.result.duration = time.monotonic() - t0
        return self.result

    def _make_links(self) -> None:
        """Hard links whose group two workers met, to the file the first of them wrote."""
        fix: dict[str, tuple[list[bytes], Node]] = {}
        for key, comps, name, loc, dir_loc, dir_node in self.links:
            prim = self.primaries.get(key)
            if prim is None or not prim[3]:
                where = prim[2] if prim is not None else "the first file of its group"
                self.error(loc, f"hard link to {where}, which could not be restored")
                continue
            pcomps, pname, ploc, _ = prim
            try:
                with self._dir_at(pcomps) as src, self._dir_at(comps) as dst:
                    self._link_over(src, pname, dst, name)
            except OSError as e:
                self.error(loc, f"hard link to {ploc}: {e.strerror}")
                continue
            self.result.files += 1
            self.result.hardlinks += 1
            self.progress.add_done(1, 0)
            if dir_node is not None:
                fix[dir_loc] = (comps, dir_node)
        for dir_loc, (comps, dir_node) in fix.items():  # the new link changed its directory's times
            try:
                with self._dir_at(comps) as fd:
                    self._set_meta(dir_loc, dir_node, fd=fd)
            except OSError as e:
                self.os_error(dir_loc, "open directory", e)


def restore_with_walkers(repo: Repository, tree_id: bytes, opts: RestoreOptions, progress: Progress,
                         pool: RestorePool) -> RestoreResult:
    if pool.recipe != repo.backend_recipe:
        pool.close(kill=True)
        raise RestoreError("internal error: restore workers forked for another repository")
    return _Conductor(repo, opts, progress, pool).run(tree_id)

