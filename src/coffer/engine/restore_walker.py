"""A forked restore worker that restores whole subtrees: read the trees, make the directories, write
the files, set every item's metadata, and each directory's once its children are done.

Why: with planning in one process (tree decoding, one object per item, the bookkeeping of every
file, the metadata of every directory), that process stayed busy the whole restore while the
writers waited for it, and every file crossed a pipe twice. Forked from the CLI after the index is
loaded (``workstealing``), a worker has the index and the key, so it needs nothing but the nodes
it is given; idle workers take the far half of the shallowest directory a busy one is making.

Content is written in batches of ``DEAL_WEIGHT``: the files met so far are planned by pack and read
in as few requests as possible, as in one process (``_Restorer._fetch_and_write``), then the walk
goes on. Depth-first order is the order the backup wrote the files in, so a batch touches few packs.

A hard-link group may be met by two workers: the first to claim its inode in the shared table
writes the file; the others report where their links go (``("link", ...)``) and the parent makes
the links when every worker is done, then sets those directories' metadata again. The worker that
wrote the file reports where it is (``("primary", ...)``).

A job's payload is ``(comps, dir node, nodes, count)``: the directory (path components below the
target, already made by whoever gave it) and the nodes to restore into it; ``count`` says whether
they still count towards the progress totals. Its result is None; a worker answers ("flush",) with
("flushed", counters, verify errors) after verifying its files if asked to. Besides the common
protocol it sends ("error", location, message), ("progress", files, bytes, total files, total
bytes), ("link", ...) and ("primary", ...).
"""

from __future__ import annotations

import hashlib
import os
import time
from multiprocessing.connection import Connection
from typing import Any

from coffer.engine.progress import Progress
from coffer.engine.restore import (
    _DONE,
    _PENDING,
    RestoreOptions,
    _count_items,
    _Dir,
    _Item,
    _Restorer,
    reseed_tmp_names,
)
from coffer.engine.restore_dispatch import DEAL_WEIGHT, FILE_COST
from coffer.engine.worker_process import forked_start, send_fatal
from coffer.engine.workstealing import StealingWorker, far_half
from coffer.errors import CofferError
from coffer.store.claims import ClaimTable
from coffer.store.format.tree import Node
from coffer.store.repository import Repository
from coffer.util.failpoints import failpoint

PROGRESS_SECONDS = 0.25
MIN_GIFT_ITEMS = 8  # a gift without a directory in it must have at least this many items


def link_claim(key: tuple[int, int]) -> bytes:
    """The claim of a hard-link group (device, inode) in the shared table."""
    return hashlib.sha256(b"coffer hard link\0%d\0%d" % key).digest()


class _JobDir(_Dir):
    """The directory a job restores into: made by whoever gave the job, finished by them too."""

    __slots__ = ("job",)

    def __init__(self, name: bytes, node: Node | None, parent: _Dir | None, loc: str, job: int) -> None:
        super().__init__(name, node, parent, loc, selected=True)
        self.job = job


class _Frame:
    __slots__ = ("d", "end", "next")

    def __init__(self, d: _Dir) -> None:
        self.d = d
        self.next = 0
        self.end = len(d.children)


def comps_of(d: _Dir) -> list[bytes]:
    comps: list[bytes] = []
    cur: _Dir | None = d
    while cur is not None and cur.parent is not None:
        comps.append(cur.name)
        cur = cur.parent
    return comps[::-1]


def loc_of(comps: list[bytes]) -> str:
    return "/" + "/".join(os.fsdecode(c) for c in comps)


class SubtreeRestorer(_Restorer, StealingWorker):
    tick_seconds = 0.05
    decode_in_main = True

    def __init__(self, repo: Repository, opts: RestoreOptions, threads: int, links: ClaimTable,
                 inp: Connection, out: Connection) -> None:
        _Restorer.__init__(self, repo, opts, Progress(), threads=threads)
        StealingWorker.__init__(self, inp, out)
        self.links = links
        self.known: dict[tuple[bytes, ...], _Dir] = {(): _Dir(b"", None, None, "/", selected=True)}
        self._prefetched: dict[bytes, list[Node] | CofferError] = {}
        self._claimed: set[tuple[int, int]] = set()
        self._linked: set[tuple[int, int]] = set()  # for the progress totals
        self._batch_weight = 0
        self._sent = (0, 0, 0, 0)
        self._last_progress = time.monotonic()

    # ------------------------------------------------------------------ reporting
    def error(self, loc: str, msg: str) -> None:
        self.send(("error", loc, msg))

    def _before_finish(self, f: _Item) -> None:
        if f.node.content:  # a file with content (the tests' crash site), not an empty one
            failpoint("restore_worker_file")

    def on_tick(self) -> None:
        if time.monotonic() - self._last_progress >= PROGRESS_SECONDS:
            self._send_progress()

    def _send_progress(self) -> None:
        pr = self.progress
        now = (pr.files_done, pr.bytes_done, pr.total_files, pr.total_bytes)
        delta = tuple(a - b for a, b in zip(now, self._sent))
        if any(delta):
            self.send(("progress", *delta))
            self._sent = now
        self._last_progress = time.monotonic()

    between_writes = StealingWorker.service

    # ------------------------------------------------------------------ jobs
    def _chain(self, comps: list[bytes]) -> _Dir:
        """The directory at ``comps`` (it exists), with its parents, opened component by component."""
        cur = self.known[()]
        for i in range(len(comps)):
            key = tuple(comps[: i + 1])
            nxt = self.known.get(key)
            if nxt is None:
                nxt = self.known[key] = _Dir(comps[i], None, cur, loc_of(comps[: i + 1]), selected=True)
                nxt.pending = 1  # never finished here: someone else restores it
            cur = nxt
        return cur

    def start_job(self, payload: Any, token: int) -> None:
        comps, dir_node, nodes, count = payload
        parent = self._chain(comps[:-1]) if comps else None
        jd = _JobDir(comps[-1] if comps else b"", dir_node, parent, loc_of(comps), token)
        jd.created = True
        self._open(jd, nodes, count=count)
        self.stacks.append([_Frame(jd)])

    def _open(self, d: _Dir, nodes: list[Node], *, count: bool = True) -> None:
        """``d``'s children planned (not made yet); the parent trees of its subdirectories loaded."""
        for _ in self._add_children(d, nodes):
            pass
        if count:
            self.progress.add_total(*_count_items(d.children, self._linked))
        d.pending = len(d.children) + 1  # +1: held until all children were handed out
        ids = [c.node.subtree for c in d.children
               if isinstance(c, _Dir) and not c.incomplete and c.node is not None and c.node.subtree]
        if len(ids) > 1:
            self._prefetched.update(zip(ids, self.repo.load_trees(ids)))

    def run_stack(self, stack: list[Any]) -> None:
        while stack:
            self.tick()
            f: _Frame = stack[-1]
            if f.next >= f.end:
                stack.pop()
                self._child_done(f.d)  # release the hold
                continue
            c = f.d.children[f.next]
            f.next += 1
            if isinstance(c, _Dir):
                sub = self._enter(c)
                if sub is not None:
                    stack.append(sub)
            else:
                before = len(self.data_files)
                self._create_item(c)
                if len(self.data_files) > before:
                    self._batch_weight += c.node.size + FILE_COST
                    if self._batch_weight >= DEAL_WEIGHT:
                        self._write_batch()

    def _enter(self, d: _Dir) -> _Frame | None:
        assert d.parent is not None and d.node is not None
        nodes: list[Node] | CofferError | None = None
        if d.node.subtree is not None:
            nodes = self._prefetched.pop(d.node.subtree, None)
        if not self._make_dir(d):
            self._child_done(d.parent)
            return None
        if not d.incomplete and d.node.subtree is not None:
            if nodes is None:
                nodes = self.repo.load_trees([d.node.subtree])[0]
            if isinstance(nodes, CofferError):
                self.error(d.loc, f"cannot load tree {d.node.subtree.hex()[:8]}: {nodes}")
                d.incomplete = True  # made empty, its metadata left alone
        if d.incomplete or not isinstance(nodes, list):
            d.pending = 1
            self._child_done(d)
            return None
        self._open(d, nodes)
        return _Frame(d)

    def _write_batch(self) -> None:
        files = [f for f in self.data_files if f.state == _PENDING]
        self.data_files = files  # what _fetch_and_write checks at its end
        self._batch_weight = 0
        if files:
            self._fetch_and_write(self._make_jobs(self._assign_blobs(files=files)))
        self.data_files = []

    def before_idle(self) -> None:
        self._write_batch()  # the jobs' last files: they complete the jobs
        self._send_progress()

    def _finish_dir(self, d: _Dir) -> None:
        if isinstance(d, _JobDir):
            self._drop_dirfd(d)
            self.report(d.job, None)
            return
        super()._finish_dir(d)

    def flushed(self) -> tuple[Any, ...]:
        self._write_batch()
        if self.opts.verify:
            self._verify()
        self._send_progress()
        r = self.result
        counts = (r.files, r.dirs, r.others, r.hardlinks, r.bytes, r.skipped, r.files_verified)
        return ("flushed", counts, r.verify_errors)

    # ------------------------------------------------------------------ giving work away
    def giftable(self) -> tuple[Any, Any] | None:
        found = far_half(self.stacks, lambda f: f.d.children,
                         lambda part: len(part) >= MIN_GIFT_ITEMS or any(isinstance(c, _Dir) for c in part))
        if found is None:
            return None
        f, k = found
        part = f.d.children[k:f.end]
        f.end = k
        for c in part:
            if isinstance(c, _Dir) and c.node is not None and c.node.subtree is not None:
                self._prefetched.pop(c.node.subtree, None)  # the taker loads its own
        return (comps_of(f.d), f.d.node, [c.node for c in part], False), (f.d, len(part))

    def gift_done(self, kept: Any, result: Any) -> None:
        d, n = kept
        for _ in range(n):
            self._child_done(d)

    # ------------------------------------------------------------------ hard links between workers
    def _claim_link(self, f: _Item, key: tuple[int, int]) -> bool:
        if self.links.claim(link_claim(key)):
            self._claimed.add(key)
            return True
        d = f.parent
        failpoint("restore_link_elsewhere")
        self.send(("link", key, comps_of(d), f.name, f.loc, d.loc, d.node))
        self._child_done(d)
        return False

    def _finish_links(self, primary: _Item) -> None:
        super()._finish_links(primary)
        n = primary.node
        key = (n.device_id, n.inode)
        if key in self._claimed:
            self._claimed.discard(key)
            self.send(("primary", key, comps_of(primary.parent), primary.name, primary.loc, primary.state == _DONE))


def serve_forked(repo: Repository, opts: RestoreOptions, threads: int, links: ClaimTable, inp: Connection,
                 out: Connection) -> int:
    """A forked restore worker's life (``fork_worker`` runs it)."""
    reseed_tmp_names()
    r: SubtreeRestorer | None = None
    try:
        forked_start(repo)
        r = SubtreeRestorer(repo, opts, threads, links, inp, out)
        r._open_target()
        return r.serve()
    except BaseException as e:  # anything is fatal for the restore: tell the parent why
        send_fatal(out, None, e)
        return 1
    finally:
        if r is not None:
            r.pool.shutdown(wait=True, cancel_futures=True)
            r._cleanup()
