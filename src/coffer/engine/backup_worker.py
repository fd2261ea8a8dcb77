"""A backup worker process: read, chunk, hash, claim, compress, encrypt, pack and upload whole files.

Why processes: in one Python process the per-file steps (open, stat, hash, compress call, seal,
pack append) hand the GIL to each other tens of times per file, and two cores end up 1.3 busy.
A worker does all of a file's data work in its own interpreter and returns only the content IDs
and the packs it uploaded; the parent keeps the walk, the trees, the index and the snapshot, so
the write order (packs, then index, then snapshot) and every lock stay in one place.

Protocol (pickled tuples over two pipes; the parent is the only peer):
  parent -> worker  ("setup", dict) once, then ("files", [(job, path, size, mtime_ns, ctime_ns), ...]),
                    ("flush",), ("stop",)
  worker -> parent  ("ready",),
                    ("done", [(job, content|None, nread, changed, warning|None, xattrs, xattr warning), ...],
                     packs, stats),
                    ("flushed", packs, stats), ("fatal", job|None, class name, message, hint)

Started with ``python -m coffer.engine.backup_worker REQ_FD RES_FD PARENT_PID``. It dies with its
parent (PR_SET_PDEATHSIG) and on end of input, so a killed backup leaves no writer behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, BinaryIO

from coffer.engine import fileread
from coffer.engine.fsnode import read_xattr_list
from coffer.engine.worker_process import open_repo, send_fatal, worker_main
from coffer.store import chunker
from coffer.store.claims import ClaimTable
from coffer.store.format.index import IndexPack
from coffer.store.format.pack import BlobType
from coffer.store.repository import BlobWriter, Repository, WriterStats
from coffer.util.failpoints import failpoint

CHUNKS_IN_FLIGHT = 6
SEAL_THREADS = 2
REPLY_BATCH = 8


class ClaimingWriter(BlobWriter):
    """A writer whose dedup asks the shared claim table and whose packs are indexed by the parent."""

    def __init__(self, repo: Repository, claims: ClaimTable) -> None:
        super().__init__(repo)
        self.claims = claims
        self._sent = WriterStats()

    def _write_index(self) -> None:
        """The parent writes the index: packs wait in ``_unindexed`` until ``drain``."""

    def drain(self) -> tuple[list[IndexPack], WriterStats]:
        """Packs uploaded and stats accumulated since the last call."""
        with self._lock:
            packs, self._unindexed = self._unindexed, []
            self._unindexed_blobs = 0
            st, last = self.stats, self._sent
            delta = WriterStats(
                blobs=st.blobs - last.blobs, data_blobs=st.data_blobs - last.data_blobs,
                tree_blobs=st.tree_blobs - last.tree_blobs, bytes_plain=st.bytes_plain - last.bytes_plain,
                bytes_stored=st.bytes_stored - last.bytes_stored,
            )
            self._sent = WriterStats(blobs=st.blobs, data_blobs=st.data_blobs, tree_blobs=st.tree_blobs,
                                     bytes_plain=st.bytes_plain, bytes_stored=st.bytes_stored)
        return packs, delta


class DataPath:
    """Read, chunk and store one file's content in this process (the forked walk workers share it)."""

    def __init__(self, repo: Repository, writer: ClaimingWriter) -> None:
        self.repo = repo
        self.writer = writer
        self.chunker = chunker.Chunker(repo.config.chunker_polynomial)
        self.pool = cf.ThreadPoolExecutor(SEAL_THREADS, thread_name_prefix="seal")
        self.slots = threading.BoundedSemaphore(CHUNKS_IN_FLIGHT)

    def _save(self, chunk: bytes) -> bytes:
        try:
            return self.writer.save(BlobType.DATA, chunk)[0]
        finally:
            self.slots.release()

    def chunk_stream(self, f: BinaryIO, on_chunk: Callable[[], None] | None = None) -> tuple[list[bytes], int]:
        """Content IDs and size of ``f``; ``on_chunk`` runs between chunks of a large file."""
        small, it = fileread.small_or_chunks(f, self.chunker)
        if small is not None:
            return ([self.writer.save(BlobType.DATA, small)[0]] if small else []), len(small)
        # A large file: this thread reads and cuts while the others seal (zstd and SHA-256 run
        # without the GIL), so one big file still keeps more than one core busy.
        futs: list[cf.Future[bytes]] = []
        size = 0
        try:
            for c in it:
                size += len(c)
                self.slots.acquire()
                futs.append(self.pool.submit(self._save, c))
                if on_chunk is not None:
                    on_chunk()
        except BaseException:
            for fu in futs:
                fu.cancel()
            cf.wait(futs)
            raise
        return [fu.result() for fu in futs], size

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def serve(inp: Connection, out: Connection) -> int:
    msg = inp.recv()
    if msg[0] != "setup":
        return 2
    setup = msg[1]
    claims = ClaimTable(setup["claims"])
    repo = open_repo(setup)
    writer = ClaimingWriter(repo, claims)
    repo._writer = writer
    w = DataPath(repo, writer)
    out.send(("ready",))
    job: int | None = None
    done: list[tuple[Any, ...]] = []
    try:
        while True:
            try:
                msg = inp.recv()
            except EOFError:
                return 0
            kind = msg[0]
            if kind == "files":
                for job, path, size, mtime_ns, ctime_ns in msg[1]:
                    xattrs: list[Any] = [None, None]

                    def read_xattrs(fd: int, xattrs: list[Any] = xattrs) -> None:
                        xattrs[:] = read_xattr_list(fd)

                    try:
                        content, nread, changed = fileread.read_file(path, size, mtime_ns, ctime_ns, w.chunk_stream,
                                                                     read_xattrs)
                        warning = None
                    except fileread.SourceReadError as e:
                        content, nread, changed, warning = None, 0, False, str(e)
                    done.append((job, content, nread, changed, warning, xattrs[0], xattrs[1]))
                    failpoint("backup_worker_file")
                    job = None
                    # Replies go in batches while more work waits: fewer wake-ups of the parent.
                    if len(done) >= REPLY_BATCH or not inp.poll(0):
                        packs, delta = writer.drain()
                        out.send(("done", done, packs, delta))
                        done = []
                if done:
                    packs, delta = writer.drain()
                    out.send(("done", done, packs, delta))
                    done = []
            elif kind == "flush":
                writer.flush()
                packs, delta = writer.drain()
                out.send(("flushed", packs, delta))
            elif kind == "stop":
                return 0
    except BaseException as e:  # anything else is fatal for the backup: tell the parent why
        send_fatal(out, job, e)
        return 1
    finally:
        w.close()
        writer.abort()
        claims.close()


def main(argv: list[str]) -> int:
    return worker_main(argv, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
