"""A restore worker process: fetch, decode, write and finish its share of the files.

Why processes: a restore of many small files is hundreds of thousands of short system calls
(open, pwrite, fchown, fchmod, utimensat, rename), and in one interpreter every one of them hands
the GIL over and back between the threads; two processes each run their own share on their own
core. The parent plans, creates the directories and everything without content, deals the files
out in contiguous pieces (whole files, so each is written and finished by one process), and sets
directory metadata and hard links as workers report files done.

Run as ``python -m coffer.engine.restore_worker REQ_FD RES_FD PARENT_PID``. The parent sends
``{"recipe": ...}`` as soon as the worker starts (the worker imports and connects to the backend
while the parent still derives the key, locks and plans), then the key and options, then deals of
files (each level's files as soon as their directories exist) and None when no more follow. The
worker answers with batches of ``("files", [(index, error or None), ...], bytes, [(path, message),
...])`` (indexes count across deals) and a final ``("end",)``, or ``("error", text)``. It dies
with its parent (PR_SET_PDEATHSIG), leaving at worst temporary files that the next restore into
the same target removes.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from coffer.engine.progress import Progress
from coffer.engine.restore import RestoreOptions, _Dir, _Item, _Job, _Restorer, reseed_tmp_names
from coffer.engine.worker_process import open_backend_recipe, open_repo, worker_main
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.tree import Node
from coffer.store.repository import Repository
from coffer.util.failpoints import failpoint

FLUSH_FILES = 256
FLUSH_SECONDS = 0.05


class _Reporter:
    """Batches what the parent needs to know (one pipe write per batch, not per file)."""

    def __init__(self, out: Connection, progress: Progress) -> None:
        self.out = out
        self.progress = progress
        self.files: list[tuple[int, str | None]] = []
        self.errors: list[tuple[str, str]] = []
        self.sent_bytes = 0
        self.last = time.monotonic()

    def file(self, idx: int, err: str | None) -> None:
        self.files.append((idx, err))
        if len(self.files) >= FLUSH_FILES or time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        nbytes = self.progress.bytes_done - self.sent_bytes
        if self.files or self.errors or nbytes:
            self.out.send(("files", self.files, nbytes, self.errors))
            self.files, self.errors = [], []
            self.sent_bytes += nbytes
        self.last = time.monotonic()


class _ShareRestorer(_Restorer):
    """A _Restorer whose plan is the parent's deals: existing directories, files with content."""

    def __init__(self, repo: Repository, opts: RestoreOptions, reporter: _Reporter, threads: int = 0) -> None:
        super().__init__(repo, opts, reporter.progress, threads=threads)
        self.reporter = reporter
        self.index_of: dict[_Item, int] = {}
        self.root = _Dir(b"", None, None, "/", selected=True)
        self.root.pending = 1  # never finished here: _finish_dir only drops the descriptor
        self.known: dict[tuple[bytes, ...], _Dir] = {(): self.root}

    def error(self, loc: str, msg: str) -> None:
        self.reporter.errors.append((loc, msg))

    def _file_finished(self, f: _Item, err: str | None) -> None:
        self.reporter.file(self.index_of[f], err)

    def _before_finish(self, f: _Item) -> None:
        failpoint("restore_worker_file")

    def _add_share(self, share: dict[str, Any]) -> list[_Job]:
        """One deal: its files registered (indexed after the earlier deals'), its reads planned."""
        dir_objs: list[_Dir] = []
        known = self.known
        for comps in share["dirs"]:
            cur = self.root
            for i in range(len(comps)):
                key = tuple(comps[: i + 1])
                nxt = known.get(key)
                if nxt is None:
                    nxt = known[key] = _Dir(comps[i], None, cur, "", selected=True)
                    nxt.pending = 1  # never finished here either
                cur = nxt
            dir_objs.append(cur)
        where = {bid: (pid, PackedBlob(BlobType.DATA, bid, off, length, ulen))
                 for bid, (pid, off, length, ulen) in share["blobs"].items()}
        new: list[_Item] = []
        base = len(self.index_of)
        for idx, (di, name, loc, (mode, uid, gid, mtime, atime, xattrs), content) in enumerate(share["files"]):
            d = dir_objs[di]
            node = Node(name=name, type="file", mode=mode, uid=uid, gid=gid, mtime=mtime, atime=atime,
                        xattrs=xattrs, content=content)
            f = _Item(name, node, d, loc)
            self.index_of[f] = base + idx
            d.pending += 1
            new.append(f)
        self.data_files.extend(new)
        return self._make_jobs(self._assign_blobs(where.get, new))

    def run_deals(self, deals: queue.SimpleQueue[Any]) -> None:
        """Write every deal as it comes, until the parent says there are no more (None)."""

        def jobs() -> Iterator[_Job]:
            while (share := deals.get()) is not None:
                yield from self._add_share(share)

        self._open_target()
        try:
            self._fetch_and_write(jobs())
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._cleanup()


def _read_deals(inp: Connection, deals: queue.SimpleQueue[Any]) -> None:
    """Take the parent's deals off the pipe at once (it must never wait on a busy worker)."""
    try:
        while True:
            msg = inp.recv()
            deals.put(msg)
            if msg is None:
                return
    except (EOFError, OSError):
        deals.put(None)  # the parent is gone or gave up: finish what came


def serve(inp: Connection, out: Connection) -> int:
    reseed_tmp_names()
    try:
        try:
            backend = open_backend_recipe(inp.recv()["recipe"])  # connect while the parent opens and plans
            setup = inp.recv()
            repo = open_repo(setup, backend)
            first = inp.recv()
        except EOFError:
            return 0  # started early, then not needed
        deals: queue.SimpleQueue[Any] = queue.SimpleQueue()
        deals.put(first)
        if first is not None:
            threading.Thread(target=_read_deals, args=(inp, deals), name="deals", daemon=True).start()
        reporter = _Reporter(out, Progress())
        _ShareRestorer(repo, setup["opts"], reporter, setup.get("threads", 0)).run_deals(deals)
        reporter.flush()
        out.send(("end",))
        return 0
    except BaseException as e:  # everything goes to the parent, which reports it
        try:
            out.send(("error", f"{type(e).__name__}: {e}"))
        except OSError:
            pass
        return 1


def main(argv: list[str]) -> int:
    return worker_main(argv, serve)


if __name__ == "__main__":
    rc = main(sys.argv)
    # Everything is written, closed and reported: skip the interpreter's teardown, which frees the
    # plan object by object (a tenth of a second the parent would wait for).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
