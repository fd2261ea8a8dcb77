"""Backup: walk -> read -> chunk -> hash -> dedup -> compress -> encrypt -> pack -> upload.

Three ways to run, fastest first:
- *Forked walk workers* (``engine/walkpool.py``, ``engine/walk_worker.py``): forked by the CLI once
  the index is loaded, they walk whole subtrees, read and store files and write the trees in their
  own processes and take work from each other; this process walks only the paths named on the
  command line and writes the root tree.
- *Data workers* (``engine/workerpool.py``): spawned once the backup has handed 32 MiB to its
  threads; this process walks and builds the trees, they read, chunk and store the files. The path
  where forking is not possible (threads already running, ``COFFER_WORKER_FORK=0``).
- *Threads* only (``COFFER_BACKUP_PROCESSES=0``, streams such as stdin and database dumps): the
  heavy stages run in C code that releases the GIL (the chunker, hashlib, zstandard, the backend's
  I/O), so Python only moves references around.

Memory is bounded by semaphores (files, chunks and packs in flight), never by the size of the
input. The directory bookkeeping all three share is ``engine/dirwalk.py``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import stat as st
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from coffer import env
from coffer.engine import fileread
from coffer.engine.dirwalk import Entry, Frame, PendingDir, SourceWalker, VDir, empty_snapshot_error
from coffer.engine.excludes import ExcludeRules
from coffer.engine.fsnode import node_from_stat
from coffer.engine.progress import Progress, Warning_
from coffer.engine.workerpool import FileResult, WorkerPool
from coffer.errors import CofferError, SourceError, UsageError
from coffer.store import chunker
from coffer.store.claims import ClaimTable
from coffer.store.format.pack import BlobType
from coffer.store.format.snapshot import Snapshot
from coffer.store.format.tree import Node, go_mode
from coffer.store.repository import Repository
from coffer.util import gotime

if TYPE_CHECKING:
    from coffer.engine.walkpool import WalkPool


@dataclass
class StreamInput:
    """A named stream (stdin, a database dump) stored as one file in the snapshot's root.

    ``open`` starts the producer and returns a reader; ``finish`` is called after the stream was
    read to the end and must raise SourceError if the producer failed, so that a truncated dump
    never becomes a snapshot.
    """

    name: str
    open: Callable[[], BinaryIO]
    finish: Callable[[], None] | None = None
    mode: int = 0o644
    allow_empty: bool = True  # False: no data at all is an error (restic's --stdin rule)


@dataclass
class BackupRequest:
    paths: list[str] = field(default_factory=list)
    streams: list[StreamInput] = field(default_factory=list)
    host: str = ""
    tags: list[str] = field(default_factory=list)
    time_ns: int | None = None
    parent: Snapshot | None = None
    excludes: ExcludeRules = field(default_factory=ExcludeRules)
    read_concurrency: int = 2
    program_version: str = ""


@dataclass
class BackupSummary:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs_new: int = 0
    dirs_changed: int = 0
    dirs_unmodified: int = 0
    data_blobs: int = 0
    tree_blobs: int = 0
    data_added: int = 0
    data_added_packed: int = 0
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    total_duration: float = 0.0
    backup_start: str = ""
    backup_end: str = ""


@dataclass
class BackupResult:
    snapshot: Snapshot
    summary: BackupSummary
    warnings: list[Warning_]

    @property
    def partial(self) -> bool:
        """Some source items could not be read (restic exit code 3)."""
        return any(w.during == "archival" for w in self.warnings)


class Archiver(SourceWalker):
    FILES_IN_FLIGHT = 512
    CHUNKS_IN_FLIGHT = 6

    def __init__(self, repo: Repository, req: BackupRequest, progress: Progress | None = None,
                 walkers: WalkPool | None = None) -> None:
        super().__init__(repo, req.excludes, progress or Progress())
        self.req = req
        self.summary = BackupSummary()
        self._tls = threading.local()
        self._file_pool = cf.ThreadPoolExecutor(max(1, req.read_concurrency), thread_name_prefix="file")
        self._blob_pool = cf.ThreadPoolExecutor(2, thread_name_prefix="blob")
        self._file_slots = threading.BoundedSemaphore(self.FILES_IN_FLIGHT)
        self._chunk_slots = threading.BoundedSemaphore(self.CHUNKS_IN_FLIGHT)
        self._root_done = threading.Event()
        self._root_tree: bytes | None = None
        self.count_totals = True
        # Forked walk workers (the caller forked them while this process had one thread): every
        # real entry goes to them; this process keeps the named paths and the root.
        self._walkers = walkers
        self._handed: list[tuple[PendingDir, int, Entry, Node | None]] = []
        # Otherwise data worker processes take over the files once the backup proves big enough to
        # repay their start-up (COFFER_BACKUP_PROCESSES=0 keeps everything in this process).
        self._pool: WorkerPool | None = None
        self._claims: ClaimTable | None = None
        self._processes = 0 if walkers is not None else env.env_int(
            "COFFER_BACKUP_PROCESSES", min(4, os.cpu_count() or 1))
        self._process_threshold = env.env_int("COFFER_BACKUP_PROCESS_THRESHOLD", 32 << 20)
        self._threaded_bytes = 0

    # ------------------------------------------------------------------ plumbing
    def _chunker(self) -> chunker.Chunker:
        c: chunker.Chunker | None = getattr(self._tls, "chunker", None)
        if c is None:
            c = self._tls.chunker = chunker.Chunker(self.repo.config.chunker_polynomial)
        return c

    def _fail(self, e: BaseException) -> None:
        super()._fail(e)
        self._root_done.set()

    def _root_finished(self, nodes: list[Node], tree_id: bytes) -> None:
        if not nodes:
            self._fail(empty_snapshot_error())
            return
        self._root_tree = tree_id
        self._root_done.set()

    # ------------------------------------------------------------------ the walk
    def run(self) -> BackupResult:
        req = self.req
        start_ns = gotime.now_ns()
        t0 = time.monotonic()
        snap_time = req.time_ns if req.time_ns is not None else start_ns
        self.summary.backup_start = gotime.format_ns(start_ns)
        try:
            if self._walkers is not None:
                self._walkers.start_walk(self.progress, lambda c: self._count(**c), self._fail)
            if req.streams:
                paths = ["/" + s.name for s in req.streams]
                self._backup_streams(snap_time)
            else:
                paths = self._backup_paths()
            if self._pool is not None:
                self._pool.send_batches()
            while not self._root_done.wait(0.5):
                self._check()
            self._check()
            if self._walkers is not None:
                self._walkers.flush()
            if self._pool is not None:
                self._pool.flush()
            self._stop_workers(kill=False)
            self.repo.flush()
            self._release_claims()
        except BaseException:
            self._stop_workers(kill=True)
            self._file_pool.shutdown(wait=True, cancel_futures=True)
            self._blob_pool.shutdown(wait=True, cancel_futures=True)
            self._release_claims()
            raise
        self._file_pool.shutdown(wait=True)
        self._blob_pool.shutdown(wait=True)
        assert self._root_tree is not None
        ws = self.repo.writer.stats
        s = self.summary
        for k, v in self.take_counts().items():
            setattr(s, k, v)
        s.data_blobs, s.tree_blobs = ws.data_blobs, ws.tree_blobs
        s.data_added, s.data_added_packed = ws.bytes_plain, ws.bytes_stored
        end_ns = gotime.now_ns()
        s.backup_end = gotime.format_ns(end_ns)
        s.total_duration = time.monotonic() - t0
        snap = Snapshot(
            time=gotime.format_ns(snap_time), tree=self._root_tree, paths=paths,
            hostname=req.host or env.hostname(), username=env.username(), uid=os.getuid(), gid=os.getgid(),
            excludes=list(req.excludes.raw), tags=list(req.tags),
            parent=req.parent.id if req.parent is not None else None,
            program_version=req.program_version,
        )
        self.repo.save_snapshot(snap)
        return BackupResult(snap, s, list(self.progress.warnings))

    # ------------------------------------------------------------------ handing out to the walk workers
    def _entry(self, f: Frame, i: int) -> Frame | None:
        if self._walkers is not None:
            e = f.items[i]
            if e[2] is None and not isinstance(e[3], OSError):  # a real entry: the workers' job
                self._handed.append((f.d, i, e, f.prevs[i] if f.prevs is not None else None))
                return None
        return super()._entry(f, i)

    def _prefetch(self, items: list[Entry], prevs: list[Node | None]) -> None:
        if self._walkers is None:  # else the workers load the trees they compare
            super()._prefetch(items, prevs)

    def _hand_out(self) -> None:
        """Send what the walk of the named paths collected to the workers, as one job."""
        handed, self._handed = self._handed, []
        if not handed or self._walkers is None:
            return
        prevs = [prev for _, _, _, prev in handed]

        def deliver(results: list[Any]) -> None:
            for (d, i, _, prev), r in zip(handed, results):
                self._child_done(d, i, prev if isinstance(r, int) else r)

        self._walkers.walk([e for _, _, e, _ in handed], prevs if any(p is not None for p in prevs) else None,
                           deliver, self._root_dev)

    def _backup_streams(self, snap_time: int) -> None:
        root = PendingDir(None, None, -1, None)
        items = sorted(self.req.streams, key=lambda s: s.name.encode())
        names = [s.name.encode() for s in items]
        if len(set(names)) != len(names) or any(b"/" in n or n in (b"", b".", b"..") for n in names):
            raise UsageError("stream names must be unique plain file names")
        root.slots = [None] * len(items)
        root.pending += len(items)
        t = gotime.format_ns(snap_time)
        for i, s in enumerate(items):
            node = Node(
                name=s.name.encode(), type="file", mode=go_mode(st.S_IFREG | s.mode), mtime=t, atime=t, ctime=t,
                uid=os.getuid(), gid=os.getgid(), content=[],
            )
            self._file_slots.acquire()
            self._file_pool.submit(self._stream_job, root, i, s, node)
        self._release(root)

    def _stream_job(self, d: PendingDir, i: int, s: StreamInput, node: Node) -> None:
        try:
            self.progress.begin_item("/" + s.name)
            reader = s.open()
            try:
                content, size = self._chunk_stream(reader)
            finally:
                close = getattr(reader, "close", None)
                if close is not None:
                    close()
            if s.finish is not None:
                s.finish()
            if size == 0 and not s.allow_empty:
                raise SourceError(f"read /{s.name}: no data read", hint="the program feeding stdin produced nothing")
            node.content, node.size = content, size
            self._count(files_new=1, total_files_processed=1, total_bytes_processed=size)
            self.progress.add_done(1, 0)
            self._child_done(d, i, node)
        except BaseException as e:
            self._fail(e if isinstance(e, CofferError) else SourceError(f"stream {s.name}: {e}"))
        finally:
            self.progress.end_item()
            self._file_slots.release()

    def _backup_paths(self) -> list[str]:
        req = self.req
        if not req.paths:
            raise UsageError("nothing to back up: give at least one path")
        cwd = os.getcwd()
        abs_paths = sorted({os.path.normpath(os.path.join(cwd, p)) for p in req.paths})
        vroot = VDir(b"")
        for p in req.paths:
            absolute = os.fsencode(os.path.normpath(os.path.join(cwd, p)))
            self._add_target(vroot, os.fsencode(os.path.normpath(p)), absolute)
        if self.excludes.one_file_system:
            try:
                self._root_dev = os.lstat(abs_paths[0]).st_dev
            except OSError:
                self._root_dev = None
        if self.count_totals:  # only worth its syscalls when someone watches the progress
            threading.Thread(target=self._scan, args=(abs_paths,), daemon=True, name="scan").start()
        prev_root = None
        if req.parent is not None:
            prev_root = Node(name=b"", type="dir", subtree=req.parent.tree)
        root = PendingDir(None, None, -1, prev_root)
        root.prev_nodes = self._prev_children(prev_root)
        self._walk([self._open_frame(root, self._virtual_entries(vroot))])
        self._hand_out()
        return abs_paths

    @staticmethod
    def _add_target(vroot: VDir, rel: bytes, absolute: bytes) -> None:
        if rel.startswith(b"/"):
            comps = [c for c in rel.split(b"/") if c]
            fs_prefix = b""
        else:
            comps = [c for c in rel.split(b"/") if c and c != b"."]
            # restic drops leading ".." components: "../src" is stored as "src"
            while comps and comps[0] == b"..":
                comps.pop(0)
            fs_prefix = absolute[: len(absolute) - len(b"/".join(comps))].rstrip(b"/") if comps else b""
        if not comps:
            raise UsageError(f"invalid backup target {os.fsdecode(rel)!r}")
        cur = vroot
        path = fs_prefix
        for c in comps[:-1]:
            path = path + b"/" + c
            nxt = cur.children.get(c)
            if isinstance(nxt, bytes):
                return  # an enclosing directory is already a target
            if nxt is None:
                nxt = cur.children[c] = VDir(path)
            cur = nxt
        leaf = comps[-1]
        name = leaf
        k = 0
        while name in cur.children:
            existing = cur.children[name]
            if existing == absolute:
                return
            if isinstance(existing, VDir):
                cur.children[name] = absolute  # the target contains what was intermediate
                return
            k += 1
            name = leaf + b"-%d" % k
        cur.children[name] = absolute

    def _scan(self, paths: list[str]) -> None:
        """Count files and bytes for the progress ETA (best effort, concurrent with the backup)."""
        ex = self.req.excludes
        try:
            stack = [os.fsencode(p) for p in paths]
            while stack and not self._root_done.is_set():
                p = stack.pop()
                try:
                    s = os.lstat(p)
                except OSError:
                    continue
                if st.S_ISDIR(s.st_mode):
                    try:
                        with os.scandir(p) as it:
                            files = 0
                            nbytes = 0
                            for e in it:
                                if ex.patterns and ex.excluded(os.fsdecode(e.path)):
                                    continue
                                if e.is_dir(follow_symlinks=False):
                                    stack.append(e.path)
                                else:
                                    files += 1
                                    if e.is_file(follow_symlinks=False):
                                        try:
                                            nbytes += e.stat(follow_symlinks=False).st_size
                                        except OSError:
                                            pass
                            self.progress.add_total(files, nbytes)
                    except OSError:
                        continue
                else:
                    self.progress.add_total(1, s.st_size if st.S_ISREG(s.st_mode) else 0)
        finally:
            self.progress.scan_finished = True

    # ------------------------------------------------------------------ files
    def _file(self, d: PendingDir, i: int, name: bytes, path: bytes, s: os.stat_result, prev: Node | None) -> None:
        while not self._file_slots.acquire(timeout=0.5):
            self._check()
        if self._processes > 1 and self._threaded_bytes + s.st_size > self._process_threshold:
            self._start_pool()
        pool = self._pool
        # With workers, a file's extended attributes are read by its worker, through the open file.
        node, w = node_from_stat(name, path, s, read_xattrs=pool is None)
        if w:
            self._warn(path, w)
        if pool is not None:
            try:
                pool.submit(path, s.st_size, s.st_mtime_ns, s.st_ctime_ns, (d, i, path, node, prev is not None),
                            self._check)
            except BaseException:
                self._file_slots.release()
                raise
            return
        self._threaded_bytes += s.st_size
        try:
            self._file_pool.submit(self._file_job, d, i, path, node, s, prev is not None)
        except RuntimeError:  # pool shut down after a fatal error
            self._file_slots.release()
            self._check()
            raise

    def _start_pool(self) -> None:
        """Hand the rest of the files to worker processes. Called by the walker thread, which runs
        until the backup ends: the workers die with the thread that started them (PR_SET_PDEATHSIG)."""
        n, self._processes = self._processes, 0  # one attempt
        if self.repo.backend_recipe is None:
            return
        repo = self.repo
        known = repo.index.data_blob_ids()
        try:
            claims = ClaimTable.create(len(known) + (128 << 10))
        except OSError as e:
            self._warn("", f"backup worker processes unavailable, continuing in threads: {e}", "scan")
            return
        # This process's threads claim too from now on (files already handed to them finish here).
        known.extend(repo.writer.share_claims(claims))
        claims.add_many(known)
        self._claims = claims
        try:
            self._pool = WorkerPool(repo, n, claims, self._pool_result, self._fail)
        except (OSError, CofferError) as e:
            self._warn("", f"backup worker processes unavailable, continuing in threads: {e}", "scan")
        finally:
            claims.unlink()  # every worker has it open and mapped: nothing left to clean up later

    def _pool_result(self, ctx: Any, r: FileResult) -> None:
        d, i, path, node, existed = ctx
        try:
            if r.content is None:
                self._warn(path, r.warning or "could not be read", "archival")
                self._child_done(d, i, None)
                return
            node.content, node.xattrs = r.content, r.xattrs
            if r.xattr_warning:
                self._warn(path, r.xattr_warning)
            self.progress.add_bytes(r.nread)
            self._file_read(path, node, r.nread, r.changed, existed)
            self._child_done(d, i, node)
        except BaseException as e:
            self._fail(e)
        finally:
            self._file_slots.release()

    def _stop_workers(self, *, kill: bool) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close(kill=kill)
        if self._walkers is not None:
            walkers, self._walkers = self._walkers, None
            walkers.close(kill=kill)

    def _release_claims(self) -> None:
        if self._claims is not None:
            claims, self._claims = self._claims, None
            if self.repo._writer is not None:
                self.repo._writer.claims = None
            claims.close(remove=True)

    def _file_job(self, d: PendingDir, i: int, path: bytes, node: Node, s: os.stat_result, existed: bool) -> None:
        spath = os.fsdecode(path)
        self.progress.begin_item(spath)
        try:
            try:
                content, size, changed = self._read_file(path, s)
            except fileread.SourceReadError as e:
                self._warn(path, str(e), "archival")
                self._child_done(d, i, None)
                return
            node.content = content
            self._file_read(path, node, size, changed, existed)
            self._child_done(d, i, node)
        except BaseException as e:
            self._fail(e)
        finally:
            self.progress.end_item()
            self._file_slots.release()

    def _read_file(self, path: bytes, s: os.stat_result) -> tuple[list[bytes], int, bool]:
        return fileread.read_file(path, s.st_size, s.st_mtime_ns, s.st_ctime_ns, self._chunk_stream)

    def _chunk_stream(self, f: BinaryIO) -> tuple[list[bytes], int]:
        """Content IDs of a readable stream. Source read errors raise SourceReadError."""
        small, it = fileread.small_or_chunks(f, self._chunker())
        if small is not None:
            # Small files are one chunk: no chunker, no hand-off, the file thread does it all.
            if not small:
                return [], 0
            self._check()
            bid, _ = self.repo.save_blob(BlobType.DATA, small)
            self.progress.add_bytes(len(small))
            return [bid], len(small)
        futs: list[cf.Future[bytes]] = []
        size = 0
        try:
            for chunk in it:
                size += len(chunk)
                while not self._chunk_slots.acquire(timeout=0.5):
                    self._check()
                futs.append(self._blob_pool.submit(self._save_chunk, chunk))
        except fileread.SourceReadError:
            for fu in futs:
                fu.cancel()
            raise
        return [fu.result() for fu in futs], size

    def _save_chunk(self, chunk: bytes) -> bytes:
        try:
            bid, _ = self.repo.save_blob(BlobType.DATA, chunk)
            self.progress.add_bytes(len(chunk))
            return bid
        finally:
            self._chunk_slots.release()
