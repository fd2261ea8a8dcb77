"""A restore worker process: fetch, decode, write and finish its share of the files.

Why processes: a restore of many small files is hundreds of thousands of short system calls
(open, pwrite, fchown, fchmod, utimensat, rename), and in one interpreter every one of them hands
the GIL over and back between the threads; two processes each run their own share on their own
core. The parent plans, creates the directories and everything without content, gives each worker
a contiguous share of the files (whole files, so each is written and finished by one process), and
sets directory metadata and hard links as workers report files done.

Run as ``python -m coffer.engine.restore_worker REQ_FD RES_FD PARENT_PID``. The parent sends a
setup message as soon as the worker starts (how to open the repository; the worker connects at
once), then its share of the files; the worker answers with batches of ``("files", [(index, error or None), ...],
bytes, [(path, message), ...])`` and a final ``("end",)``, or ``("error", text)``. It dies with
its parent (PR_SET_PDEATHSIG), leaving at worst temporary files that the next restore into the
same target removes.
"""

from __future__ import annotations

import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from coffer.engine.backup_worker import worker_main
from coffer.engine.progress import Progress
from coffer.engine.restore import RestoreOptions, _Dir, _Item, _Restorer
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.tree import Node
from coffer.store.repository import Repository
from coffer.util.failpoints import failpoint

# dir index, name, location, (mode, uid, gid, mtime, atime, xattrs), content IDs
_ShareFile = tuple[int, bytes, str, tuple[int, int, int, str, str, Any], list[bytes]]
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
    """A _Restorer whose plan is the parent's share: existing directories, files with content."""

    def __init__(self, repo: Repository, opts: RestoreOptions, reporter: _Reporter) -> None:
        super().__init__(repo, opts, reporter.progress)
        self.reporter = reporter
        self.index_of: dict[_Item, int] = {}

    def error(self, loc: str, msg: str) -> None:
        self.reporter.errors.append((loc, msg))

    def _file_finished(self, f: _Item, err: str | None) -> None:
        self.reporter.file(self.index_of[f], err)

    def _finish_file(self, f: _Item) -> None:
        failpoint("restore_worker_file")
        super()._finish_file(f)

    def run_share(
        self, dirs: list[list[bytes]], files: list[_ShareFile], blobs: dict[bytes, tuple[bytes, int, int, int]],
    ) -> None:
        root = _Dir(b"", None, None, "/", selected=True)
        dir_objs: list[_Dir] = []
        known: dict[tuple[bytes, ...], _Dir] = {(): root}
        for comps in dirs:
            cur = root
            for i in range(len(comps)):
                key = tuple(comps[: i + 1])
                nxt = known.get(key)
                if nxt is None:
                    nxt = known[key] = _Dir(comps[i], None, cur, "", selected=True)
                cur = nxt
            dir_objs.append(cur)
        where = {bid: (pid, PackedBlob(BlobType.DATA, bid, off, length, ulen))
                 for bid, (pid, off, length, ulen) in blobs.items()}
        for idx, (di, name, loc, (mode, uid, gid, mtime, atime, xattrs), content) in enumerate(files):
            d = dir_objs[di]
            node = Node(name=name, type="file", mode=mode, uid=uid, gid=gid, mtime=mtime, atime=atime,
                        xattrs=xattrs, content=content)
            f = _Item(name, node, d, loc)
            self.index_of[f] = idx
            d.pending += 1
            self.data_files.append(f)
        for d in known.values():
            d.pending += 1  # never finished here: _finish_dir only drops the descriptor
        self._open_target()
        try:
            jobs = self._make_jobs(self._assign_blobs(where.get))
            self._fetch_and_write(jobs)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._cleanup()


def serve(inp: Connection, out: Connection) -> int:
    try:
        from coffer.engine.backup_worker import open_repo

        try:
            setup = inp.recv()
            repo = open_repo(setup)  # connect while the parent still plans
            share = inp.recv()
        except EOFError:
            return 0  # started early, then not needed
        reporter = _Reporter(out, Progress())
        r = _ShareRestorer(repo, setup["opts"], reporter)
        r.run_share(share["dirs"], share["files"], share["blobs"])
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
    sys.exit(main(sys.argv))
