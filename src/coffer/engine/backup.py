"""Backup: walk -> read -> chunk -> hash -> dedup -> compress -> encrypt -> pack -> upload.

Threads, not processes: every heavy stage runs in C code that releases the GIL (the compiled
chunker, hashlib, zstandard, the backend's I/O), so two cores stay busy while Python only moves
references around. Memory is bounded by semaphores (files in flight, chunks in flight, packs in
flight), never by the size of the input.

Directories finish asynchronously: a directory's tree blob is written by whichever thread completes
its last child, so the walker never waits for a slow file. A directory whose entries are all the
parent snapshot's nodes keeps the parent's tree ID without re-encoding anything; that is what
makes a no-change backup cheap.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import stat as st
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

from coffer import env
from coffer.engine import fileread
from coffer.engine.excludes import CACHEDIR_TAG, ExcludeRules
from coffer.engine.fsnode import node_from_stat, same_metadata, unchanged
from coffer.engine.progress import Progress, Warning_
from coffer.engine.workerpool import FileResult, WorkerPool
from coffer.errors import CofferError, Interrupted, SourceError, UsageError
from coffer.store import chunker
from coffer.store.claims import ClaimTable
from coffer.store.format.pack import BlobType
from coffer.store.format.snapshot import Snapshot
from coffer.store.format.tree import Node, go_mode
from coffer.store.repository import Repository
from coffer.util import gotime


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


class _Dir:
    """A directory being assembled: one slot per entry, filled as children finish."""

    __slots__ = ("node", "parent", "parent_index", "pending", "prev_node", "prev_nodes", "slots", "subtree_done")

    def __init__(self, node: Node | None, parent: _Dir | None, parent_index: int, prev_node: Node | None) -> None:
        self.node = node
        self.parent = parent
        self.parent_index = parent_index
        self.pending = 1  # the walker's own hold, released when all entries were handed out
        self.prev_node = prev_node
        self.prev_nodes: list[Node] | None = None
        self.slots: list[Node | None] = []
        self.subtree_done = False


class _VDir:
    """Intermediate directory made from target paths (e.g. /home and /home/alice for /home/alice/src)."""

    def __init__(self, fs_path: bytes) -> None:
        self.fs_path = fs_path
        self.children: dict[bytes, _VDir | bytes] = {}  # name -> sub-VDir or target path


_Entry = tuple[bytes, bytes, "_VDir | None", "os.stat_result | OSError"]


class _Listing(NamedTuple):
    entries: list[_Entry]
    error: OSError | None
    prev_nodes: list[Node] | None


class Archiver:
    FILES_IN_FLIGHT = 512
    CHUNKS_IN_FLIGHT = 6

    def __init__(self, repo: Repository, req: BackupRequest, progress: Progress | None = None) -> None:
        self.repo = repo
        self.req = req
        self.progress = progress or Progress()
        self.summary = BackupSummary()
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._file_pool = cf.ThreadPoolExecutor(max(1, req.read_concurrency), thread_name_prefix="file")
        self._blob_pool = cf.ThreadPoolExecutor(2, thread_name_prefix="blob")
        self._file_slots = threading.BoundedSemaphore(self.FILES_IN_FLIGHT)
        self._chunk_slots = threading.BoundedSemaphore(self.CHUNKS_IN_FLIGHT)
        self._error: BaseException | None = None
        self._root_done = threading.Event()
        self._root_tree: bytes | None = None
        self._root_dev: int | None = None
        self.cancel = threading.Event()
        self.count_totals = True
        self._unmodified = 0
        # Parent-snapshot trees of the subdirectories of directories being walked, loaded together
        # (one coalesced read per pack instead of one request per tree); the walker thread's alone.
        self._prefetched: dict[bytes, list[Node] | CofferError] = {}
        self._unmodified_bytes = 0
        # Worker processes take over the files' data work once the backup proves big enough to
        # repay their start-up (COFFER_BACKUP_PROCESSES=0 keeps everything in this process).
        self._pool: WorkerPool | None = None
        self._claims: ClaimTable | None = None
        self._processes = env.env_int("COFFER_BACKUP_PROCESSES", min(4, os.cpu_count() or 1))
        self._process_threshold = env.env_int("COFFER_BACKUP_PROCESS_THRESHOLD", 32 << 20)
        self._threaded_bytes = 0

    # ------------------------------------------------------------------ plumbing
    def _chunker(self) -> chunker.Chunker:
        c: chunker.Chunker | None = getattr(self._tls, "chunker", None)
        if c is None:
            c = self._tls.chunker = chunker.Chunker(self.repo.config.chunker_polynomial)
        return c

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = e
        self._root_done.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self.cancel.is_set():
            raise Interrupted("backup interrupted")

    def _warn(self, path: bytes | str, msg: str, during: str = "archival") -> None:
        p = os.fsdecode(path) if isinstance(path, bytes) else path
        self.progress.warn(p, msg, during)

    def _count(self, **kw: int) -> None:
        with self._lock:
            s = self.summary
            for k, v in kw.items():
                setattr(s, k, getattr(s, k) + v)

    # ------------------------------------------------------------------ directory completion
    def _child_done(self, d: _Dir, index: int, node: Node | None) -> None:
        """Fill a slot; when a directory has all its children, finish it (and maybe its parents)."""
        cur: _Dir | None = d
        idx, val = index, node
        while cur is not None:
            with self._lock:
                if idx >= 0:
                    cur.slots[idx] = val
                cur.pending -= 1
                ready = cur.pending == 0
            if not ready:
                return
            try:
                val = self._finish_dir(cur)
            except BaseException as e:  # a failed tree save is fatal for the whole backup
                self._fail(e)
                return
            idx = cur.parent_index
            cur = cur.parent

    def _release(self, d: _Dir) -> None:
        self._child_done(d, -1, None)

    def _finish_dir(self, d: _Dir) -> Node | None:
        nodes = [n for n in d.slots if n is not None]
        prev = d.prev_nodes
        unchanged_tree = (
            prev is not None
            and d.prev_node is not None
            and d.prev_node.subtree is not None
            and len(prev) == len(nodes)
            and all(a is b for a, b in zip(nodes, prev))
            and self.repo.has_blob(BlobType.TREE, d.prev_node.subtree)
        )
        if unchanged_tree:
            assert d.prev_node is not None and d.prev_node.subtree is not None
            subtree = d.prev_node.subtree
            if d.node is not None:
                self._count(dirs_unmodified=1)
        else:
            if self._error is not None:
                return None
            subtree = self.repo.save_tree(nodes)
            if d.node is not None:
                self._count(**({"dirs_changed": 1} if d.prev_node is not None else {"dirs_new": 1}))
        if d.node is None:  # the root
            if not nodes:
                self._fail(SourceError("unable to save snapshot: snapshot is empty",
                                       hint="every path was excluded or could not be read"))
                return None
            self._root_tree = subtree
            self._root_done.set()
            return None
        if d.prev_node is not None and d.node is d.prev_node and d.prev_node.subtree == subtree:
            return d.prev_node
        n = d.node
        if n is d.prev_node:  # metadata was reused but the content changed: make our own copy
            n = _copy_node(n)
        n.subtree = subtree
        return n

    # ------------------------------------------------------------------ previous snapshot
    def _prev_children(self, prev: Node | None) -> list[Node] | None:
        if prev is None or prev.type != "dir" or prev.subtree is None:
            return None
        got = self._prefetched.pop(prev.subtree, None)
        try:
            if got is None:
                return self.repo.load_tree(prev.subtree)
            if isinstance(got, CofferError):
                raise got
            return got
        except CofferError as e:
            self._warn("", f"cannot load tree {prev.subtree.hex()[:8]} of the parent snapshot: {e}", "scan")
            return None

    def _prefetch(self, items: list[_Entry], prev_map: dict[bytes, Node]) -> None:
        """Load the parent trees of this directory's subdirectories in one go."""
        ids = []
        for name, _, _, s in items:
            if not isinstance(s, OSError) and st.S_ISDIR(s.st_mode):
                prev = prev_map.get(name)
                if prev is not None and prev.type == "dir" and prev.subtree is not None:
                    ids.append(prev.subtree)
        if len(ids) > 1:
            self._prefetched.update(zip(ids, self.repo.load_trees(ids)))

    # ------------------------------------------------------------------ the walk
    def run(self) -> BackupResult:
        req = self.req
        start_ns = gotime.now_ns()
        t0 = time.monotonic()
        snap_time = req.time_ns if req.time_ns is not None else start_ns
        self.summary.backup_start = gotime.format_ns(start_ns)
        try:
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
            if self._pool is not None:
                self._pool.flush()
                self._stop_pool(kill=False)
            self.repo.flush()
            self._release_claims()
        except BaseException:
            self._stop_pool(kill=True)
            self._file_pool.shutdown(wait=True, cancel_futures=True)
            self._blob_pool.shutdown(wait=True, cancel_futures=True)
            self._release_claims()
            raise
        self._file_pool.shutdown(wait=True)
        self._blob_pool.shutdown(wait=True)
        assert self._root_tree is not None
        ws = self.repo.writer.stats
        s = self.summary
        s.files_unmodified += self._unmodified
        s.total_files_processed += self._unmodified
        s.total_bytes_processed += self._unmodified_bytes
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

    def _backup_streams(self, snap_time: int) -> None:
        root = _Dir(None, None, -1, None)
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

    def _stream_job(self, d: _Dir, i: int, s: StreamInput, node: Node) -> None:
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
        vroot = _VDir(b"")
        for p in req.paths:
            absolute = os.fsencode(os.path.normpath(os.path.join(cwd, p)))
            self._add_target(vroot, os.fsencode(os.path.normpath(p)), absolute)
        if self.req.excludes.one_file_system:
            try:
                self._root_dev = os.lstat(abs_paths[0]).st_dev
            except OSError:
                self._root_dev = None
        if self.count_totals:  # only worth its syscalls when someone watches the progress
            threading.Thread(target=self._scan, args=(abs_paths,), daemon=True, name="scan").start()
        prev_root = None
        if req.parent is not None:
            prev_root = Node(name=b"", type="dir", subtree=req.parent.tree)
        root = _Dir(None, None, -1, prev_root)
        root.prev_nodes = self._prev_children(prev_root)
        self._walk(root, self._virtual_entries(vroot))
        return abs_paths

    @staticmethod
    def _add_target(vroot: _VDir, rel: bytes, absolute: bytes) -> None:
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
                nxt = cur.children[c] = _VDir(path)
            cur = nxt
        leaf = comps[-1]
        name = leaf
        k = 0
        while name in cur.children:
            existing = cur.children[name]
            if existing == absolute:
                return
            if isinstance(existing, _VDir):
                cur.children[name] = absolute  # the target contains what was intermediate
                return
            k += 1
            name = leaf + b"-%d" % k
        cur.children[name] = absolute

    def _virtual_entries(self, v: _VDir) -> list[_Entry]:
        out: list[_Entry] = []
        ex = self.req.excludes
        for name in sorted(v.children):
            c = v.children[name]
            path = c.fs_path if isinstance(c, _VDir) else c
            if not isinstance(c, _VDir) and ex.patterns and ex.excluded(os.fsdecode(path)):
                continue
            try:
                s: os.stat_result | OSError = os.lstat(path)
            except OSError as e:
                s = e
            out.append((name, path, c if isinstance(c, _VDir) else None, s))
        return out

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

    def _walk(self, root: _Dir, root_entries: list[_Entry]) -> None:
        # An explicit stack of generators: deep trees must not hit Python's recursion limit.
        stack: list[Iterator[Any]] = [self._process_dir(root, root_entries)]
        while stack:
            self._check()
            try:
                child = next(stack[-1])
            except StopIteration:
                stack.pop()
                continue
            if child is not None:
                stack.append(child)

    def _scan_dir(self, path: bytes, prev_dir: Node | None) -> _Listing:
        """One directory's entries (lstat'ed, excludes applied) and its parent-snapshot tree.

        Done in the walker's own thread on purpose: scanning ahead in other threads made the
        no-change backup slower, because every short syscall hands the GIL over and back."""
        prev_nodes = self._prev_children(prev_dir)
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            return _Listing([], e, prev_nodes)
        prefix = path if path.endswith(b"/") else path + b"/"
        ex = self.req.excludes
        entries: list[_Entry] = []
        for n in names:
            p = prefix + n
            if ex.patterns and ex.excluded(os.fsdecode(p)):
                continue
            try:
                entries.append((n, p, None, os.lstat(p)))
            except OSError as e:
                entries.append((n, p, None, e))
        return _Listing(entries, None, prev_nodes)

    def _descend(self, path: bytes, s: os.stat_result) -> bool:
        """False when a directory's contents are excluded (another file system)."""
        ex = self.req.excludes
        return not (ex.one_file_system and self._root_dev is not None and s.st_dev != self._root_dev)

    def _process_dir(self, d: _Dir, items: list[_Entry]) -> Iterator[Any]:
        with self._lock:
            d.slots = [None] * len(items)
            d.pending += len(items)
        prev_map = {n.name: n for n in d.prev_nodes} if d.prev_nodes else None
        if prev_map:
            self._prefetch(items, prev_map)
        for i, (name, path, vdir, s) in enumerate(items):
            if isinstance(s, OSError):
                self._warn(path, f"{s.strerror}", "archival")
                self._child_done(d, i, None)
                continue
            prev = prev_map.get(name) if prev_map else None
            mode = s.st_mode
            if st.S_ISDIR(mode):
                yield self._enter_dir(d, i, name, path, s, prev, vdir)
            elif vdir is not None:
                self._warn(path, "intermediate path is not a directory", "archival")
                self._child_done(d, i, None)
            elif st.S_ISREG(mode):
                self._file(d, i, name, path, s, prev)
            else:
                node, w = node_from_stat(name, path, s)
                if w:
                    self._warn(path, w)
                self._child_done(d, i, node)  # restic counts only regular files in "Files"
        self._release(d)

    def _enter_dir(
        self, parent: _Dir, i: int, name: bytes, path: bytes, s: os.stat_result, prev: Node | None,
        vdir: _VDir | None,
    ) -> Iterator[Any] | None:
        prev_dir = prev if prev is not None and prev.type == "dir" else None
        if prev_dir is not None and _same_dir_meta(s, prev_dir):
            node = prev_dir  # reused as-is if the subtree also comes out the same
        else:
            node, w = node_from_stat(name, path, s)
            if w:
                self._warn(path, w)
        sub = _Dir(node, parent, i, prev_dir)
        if vdir is not None:
            sub.prev_nodes = self._prev_children(prev_dir)
            return self._process_dir(sub, self._virtual_entries(vdir))
        if self._descend(path, s):
            listing = self._scan_dir(path, prev_dir)
        else:
            sub.prev_nodes = self._prev_children(prev_dir)
            return self._process_dir(sub, [])
        sub.prev_nodes = listing.prev_nodes
        if listing.error is not None:
            self._warn(path, f"cannot read directory: {listing.error.strerror}", "archival")
        entries = listing.entries
        if self.req.excludes.exclude_caches and ExcludeRules.is_tagged_cache(path):
            # A tagged cache directory keeps only its CACHEDIR.TAG, as restic does.
            entries = [e for e in entries if e[0] == CACHEDIR_TAG.encode()]
        return self._process_dir(sub, entries)

    # ------------------------------------------------------------------ files
    def _file(self, d: _Dir, i: int, name: bytes, path: bytes, s: os.stat_result, prev: Node | None) -> None:
        if prev is not None and unchanged(s, prev) and self._all_present(prev.content or []):
            if same_metadata(s, prev):
                node = prev
            else:
                node, w = node_from_stat(name, path, s)
                node.content = list(prev.content or [])
            # Only the walker thread counts unchanged files: no lock needed (merged at the end).
            self._unmodified += 1
            self._unmodified_bytes += s.st_size
            pr = self.progress
            pr.files_done += 1
            pr.bytes_done += s.st_size
            self._child_done(d, i, node)
            return
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
            if r.changed:
                self._warn(path, "file changed while it was read; the stored content may be inconsistent", "changed")
            node.content, node.size, node.xattrs = r.content, r.nread, r.xattrs
            if r.xattr_warning:
                self._warn(path, r.xattr_warning)
            self._count(
                total_files_processed=1, total_bytes_processed=r.nread,
                **({"files_changed": 1} if existed else {"files_new": 1}),
            )
            self.progress.add_bytes(r.nread)
            self.progress.add_done(1, 0)
            self._child_done(d, i, node)
        except BaseException as e:
            self._fail(e)
        finally:
            self._file_slots.release()

    def _stop_pool(self, *, kill: bool) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close(kill=kill)

    def _release_claims(self) -> None:
        if self._claims is not None:
            claims, self._claims = self._claims, None
            if self.repo._writer is not None:
                self.repo._writer.claims = None
            claims.close(remove=True)

    def _all_present(self, content: list[bytes]) -> bool:
        has = self.repo.has_blob
        return all(has(BlobType.DATA, c) for c in content)

    def _file_job(self, d: _Dir, i: int, path: bytes, node: Node, s: os.stat_result, existed: bool) -> None:
        spath = os.fsdecode(path)
        self.progress.begin_item(spath)
        try:
            try:
                content, size, changed = self._read_file(path, s)
            except fileread.SourceReadError as e:
                self._warn(path, str(e), "archival")
                self._child_done(d, i, None)
                return
            if changed:
                self._warn(path, "file changed while it was read; the stored content may be inconsistent", "changed")
            node.content, node.size = content, size
            self._count(
                total_files_processed=1, total_bytes_processed=size,
                **({"files_changed": 1} if existed else {"files_new": 1}),
            )
            self.progress.add_done(1, 0)
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


def _same_dir_meta(s: os.stat_result, prev: Node) -> bool:
    """A directory node can be reused when nothing restic records about it changed."""
    return (
        prev.inode == s.st_ino
        and prev.mtime == gotime.format_ns(s.st_mtime_ns)
        and prev.ctime == gotime.format_ns(s.st_ctime_ns)
        and prev.atime == prev.mtime
        and prev.mode == go_mode(s.st_mode)
        and prev.uid == s.st_uid
        and prev.gid == s.st_gid
        and prev.device_id == s.st_dev
        and prev.links == 0
    )


def _copy_node(n: Node) -> Node:
    import copy

    return copy.copy(n)

