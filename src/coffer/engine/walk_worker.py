"""A forked backup worker that walks whole subtrees: scan, compare, read, store, and write the trees.

Why: with the walk in one process, a backup of many small directories runs on one core (lstat,
parent-tree decoding and comparison are Python) while the others wait. Forked from the CLI after
the index is loaded (``workstealing``), a worker starts with the index, the key and the parent
snapshot's cache in its own memory, so it can do everything for the entries it is given; only the
resulting nodes travel back. Idle workers take the far half of the shallowest directory a busy one
is handing out, so one deep tree still keeps every core busy.

A job's payload is ``(entries, prevs, root_dev)``: lstat'ed entries of directories, their nodes in
the parent snapshot, and the device ``--one-file-system`` keeps to. Its result has one item per
entry: the node, None (it could not be read, a warning said why) or ``SAME`` (the parent
snapshot's node, unchanged). Along with each result go ``(counts, packs, stats)``: the summary
counters, the packs uploaded and the writer's statistics since the last message. Besides the
common protocol a worker sends ("warn", path, message, during), ("progress", files, bytes) and
answers ("flush",) with ("flushed", packs, stats, counts).
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from typing import Any

from coffer.engine import fileread
from coffer.engine.backup_worker import ClaimingWriter, DataPath
from coffer.engine.dirwalk import SAME, Entry, Frame, PendingDir, SourceWalker
from coffer.engine.excludes import ExcludeRules
from coffer.engine.fsnode import node_from_stat, read_xattr_list
from coffer.engine.progress import Progress, Warning_
from coffer.engine.worker_process import forked_start, send_fatal
from coffer.engine.workstealing import StealingWorker, far_half
from coffer.store.claims import ClaimTable
from coffer.store.format.tree import Node
from coffer.store.repository import Repository
from coffer.util.failpoints import failpoint

PROGRESS_SECONDS = 0.25
MIN_GIFT_FILES = 8  # a gift without a directory in it must have at least this many entries


class SubtreeWalker(SourceWalker, StealingWorker):
    def __init__(self, repo: Repository, excludes: ExcludeRules, writer: ClaimingWriter,
                 inp: Connection, out: Connection) -> None:
        progress = Progress()
        progress.on_warning = self._send_warning
        SourceWalker.__init__(self, repo, excludes, progress)
        StealingWorker.__init__(self, inp, out)
        self.writer = writer
        self.data = DataPath(repo, writer)
        self._sent_files = 0
        self._sent_bytes = 0
        self._last_progress = time.monotonic()

    # ------------------------------------------------------------------ jobs
    def start_job(self, payload: Any, token: int) -> None:
        entries, prevs, root_dev = payload
        self._root_dev = root_dev
        root = PendingDir(None, None, -1, None, job=(token, prevs))
        self.stacks.append([self._open_frame(root, entries, prevs)])

    def run_stack(self, stack: list[Any]) -> None:
        self._walk(stack)

    def _check(self) -> None:
        super()._check()
        self.tick()

    def _job_done(self, d: PendingDir) -> None:
        token, prevs = d.job
        results: list[Any] = list(d.slots)
        if prevs is not None:
            results = [SAME if n is not None and n is p else n for n, p in zip(results, prevs)]
        packs, stats = self.writer.drain()
        self.report(token, results, (self.take_counts(), packs, stats))

    def _root_finished(self, nodes: list[Node], tree_id: bytes) -> None:
        raise AssertionError("a worker walks jobs, never a snapshot's root")

    def flushed(self) -> tuple[Any, ...]:
        self.writer.flush()
        packs, stats = self.writer.drain()
        self._send_progress()
        return ("flushed", packs, stats, self.take_counts())

    # ------------------------------------------------------------------ giving work away
    def giftable(self) -> tuple[Any, Any] | None:
        found = far_half(self.stacks, lambda f: f.items,
                         lambda part: len(part) >= MIN_GIFT_FILES or any(_is_dir(e) for e in part))
        return None if found is None else self._give(*found)

    def _give(self, f: Frame, k: int) -> tuple[Any, Any]:
        items, prevs = f.items[k:f.end], (f.prevs[k:f.end] if f.prevs is not None else None)
        f.end = k
        for prev in prevs or ():
            if prev is not None and prev.subtree is not None:
                self._prefetched.pop(prev.subtree, None)  # the taker loads its own
        return (items, prevs, self._root_dev), (f.d, k, prevs)

    def gift_done(self, kept: Any, result: Any) -> None:
        d, start, prevs = kept
        for j, r in enumerate(result):
            self._child_done(d, start + j, prevs[j] if isinstance(r, int) and prevs is not None else r)

    # ------------------------------------------------------------------ progress and warnings
    def on_tick(self) -> None:
        if time.monotonic() - self._last_progress >= PROGRESS_SECONDS:
            self._send_progress()

    def _send_progress(self) -> None:
        pr = self.progress
        files, nbytes = pr.files_done - self._sent_files, pr.bytes_done - self._sent_bytes
        if files or nbytes:
            self.send(("progress", files, nbytes))
            self._sent_files += files
            self._sent_bytes += nbytes
        self._last_progress = time.monotonic()

    def _send_warning(self, w: Warning_) -> None:
        self.send(("warn", w.path, w.message, w.during))
        self.progress.warnings.clear()

    # ------------------------------------------------------------------ files
    def _file(self, d: PendingDir, i: int, name: bytes, path: bytes, s: os.stat_result, prev: Node | None) -> None:
        node, w = node_from_stat(name, path, s, read_xattrs=False)
        if w:
            self._warn(path, w)
        xattrs: list[Any] = [None, None]

        def on_open(fd: int) -> None:
            xattrs[:] = read_xattr_list(fd)

        try:
            content, nread, changed = fileread.read_file(path, s.st_size, s.st_mtime_ns, s.st_ctime_ns,
                                                         self._chunk_stream, on_open)
        except fileread.SourceReadError as e:
            self._warn(path, str(e), "archival")
            self._child_done(d, i, None)
            return
        failpoint("backup_worker_file")
        node.content, node.xattrs = content, xattrs[0]
        if xattrs[1]:
            self._warn(path, xattrs[1])
        self.progress.add_bytes(nread)
        self._file_read(path, node, nread, changed, prev is not None)
        self._child_done(d, i, node)

    def _chunk_stream(self, f: Any) -> tuple[list[bytes], int]:
        return self.data.chunk_stream(f, on_chunk=self.service)


def _is_dir(e: Entry) -> bool:
    s = e[3]
    return not isinstance(s, OSError) and (s.st_mode & 0o170000) == 0o040000


def serve_forked(repo: Repository, excludes: ExcludeRules, claims: ClaimTable, inp: Connection,
                 out: Connection) -> int:
    """A forked walk worker's life (``fork_worker`` runs it): its own backend connections, a writer
    that claims new blobs in the shared table and leaves the index to the parent, then jobs."""
    writer: ClaimingWriter | None = None
    walker: SubtreeWalker | None = None
    try:
        forked_start(repo)
        writer = ClaimingWriter(repo, claims)
        repo._writer = writer
        walker = SubtreeWalker(repo, excludes, writer, inp, out)
        return walker.serve()
    except BaseException as e:  # anything is fatal for the backup: tell the parent why
        send_fatal(out, None, e)
        return 1
    finally:
        if walker is not None:
            walker.data.close()
        if writer is not None:
            writer.abort()
