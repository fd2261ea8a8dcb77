"""Restore: plan by pack, fetch and decode in parallel, ``pwrite`` at offsets, metadata last.

How it is organised, and why:

* **Plan, then touch.** The trees are read (in parallel, in batches) into a plan of directories,
  files and other nodes; filters and name checks are applied there. With include patterns the whole
  plan comes first (a directory stays only if something below it is selected); without them each
  batch of directories is made as soon as its trees are read, and its files go to the writers
  (``_plan_streamed``). Every data blob a file needs is looked up in the index once, and the blobs
  are grouped by pack and coalesced into ranges, so each pack is read in as few backend requests as
  possible however the blobs of the files are spread over packs (restic >= 0.18 assigns chunks to
  packs at random).
* **Workers fetch, decode and write** (backend ``load``, MAC check, decrypt, decompress, hash
  check, ``pwrite``); the main thread does the bookkeeping and all metadata. The descriptor caches
  are shared under one lock, held only to look up or open a descriptor: a worker *pins* a file's
  descriptor while it writes, and only the main thread evicts or closes descriptors, never a pinned
  one, so no write or metadata call can land in a descriptor that was closed and reused meanwhile.
  Writing in the main thread instead left it the bottleneck (the kernel's copy of every byte ran on
  one core). Memory is bounded by the bytes of ranges in flight (``READ_BUDGET``) and one decoded
  blob per fetching thread. Large restores run this in worker processes (``restore_worker``), one
  per core, each with its share of the files.
* **Never write outside the target** (reliability T31, T32). Node names that could climb or contain
  a separator are refused. Every write is relative to a directory descriptor opened with
  ``O_NOFOLLOW|O_DIRECTORY``, one component at a time from the target, so neither a symlink restored
  from the snapshot nor one planted in the target is ever traversed. Whatever is in the way of a
  name is replaced, never followed.
* **No file looks complete before it is** (T4). Content goes to a temporary name in the same
  directory (``.name.coffer-tmp-<hex>``); ownership, mode, xattrs and times are set on the open
  descriptor, and only then is it renamed over the final name. A file whose blob fails is removed and
  reported; everything else still restores. Symlinks, FIFOs, devices and hard links are also made
  under a temporary name and renamed, so overwriting is atomic too.
* **Directories get their metadata after all their children** (their mtime would change otherwise).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import errno
import hashlib
import itertools
import os
import re
import resource
import secrets
import stat as st
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

from coffer.engine.excludes import ExcludeRules
from coffer.engine.progress import Progress
from coffer.env import env_int
from coffer.errors import CofferError, RestoreError
from coffer.store.backend.base import FileType, Handle
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.tree import Node, unix_perm
from coffer.store.repository import Repository
from coffer.util import gotime

if TYPE_CHECKING:
    from coffer.engine.restore_pool import RestorePool
    from coffer.engine.workerpool import ForkedProcess

# Coalescing: read neighbouring blobs of one pack in a single request when the hole between them is
# small, up to the backend's read size (4 MiB on a local disk; a whole pack over a network, where
# every request costs a round trip). Memory stays bounded by the bytes read but not yet written
# (READ_BUDGET, or one request when that is larger) and by decoding one blob at a time.
MAX_GAP = 1 * 1024 * 1024
READ_BUDGET = 64 * 1024 * 1024
# Descriptors kept open (bounded by RLIMIT_NOFILE/4 each): files of many directories share a pack,
# and a file or directory evicted before it is finished must be opened again. Together they stay
# below 1024, so a backend connection made meanwhile still gets a descriptor select() accepts
# (paramiko's SFTP client uses select()).
DIR_FD_CACHE = 640
FILE_FD_CACHE = 256
NAME_MAX = 255
_TREE_BATCH = 256  # trees per planning task

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_RE = re.compile(rb"^\.(?:.*\.)?coffer-tmp-[0-9a-f]{16}$", re.DOTALL)
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class RestoreOptions:
    """What to restore, and how.

    ``includes``/``excludes`` are restic patterns (``--include``/``--exclude``; the ``i`` variants
    ignore case). They match the item's location inside the restored tree, written with a leading
    ``/`` as restic does: the path inside the snapshot (``/home/alice/a.txt``), or, with a
    ``subpath``, the path below that subpath (restic matches relative to the restored subtree too).
    An item is restored when it matches an include, lies inside a matched directory, or is a parent
    directory of a restored item; an exclude always wins and prunes a directory's whole subtree.
    """

    target: str
    subpath: str = ""
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    iincludes: list[str] = field(default_factory=list)
    iexcludes: list[str] = field(default_factory=list)
    sparse: bool = False
    verify: bool = False
    overwrite: bool = True  # False: leave existing non-directories alone (counted in ``skipped``)
    workers: int = 2  # fetch/decode threads (at least the backend's ``connections`` are used)


class RestoreIssue(NamedTuple):
    """One problem with one item. ``path`` is the item's location in the restored tree
    (``/dir/file``, the same form the include/exclude patterns match), as text; bytes that are not
    UTF-8 appear as surrogate escapes (``os.fsencode(path)`` gives the raw name back)."""

    path: str
    message: str


@dataclass
class RestoreResult:
    files: int = 0  # regular files restored, hard links included
    dirs: int = 0
    others: int = 0  # symlinks, FIFOs, device nodes
    hardlinks: int = 0  # of ``files``, how many were made as links to an earlier copy
    bytes: int = 0  # content bytes of the files restored (each hard-link group counted once)
    skipped: int = 0  # existing items left alone because overwrite is off
    files_verified: int = 0
    errors: list[RestoreIssue] = field(default_factory=list)
    verify_errors: list[RestoreIssue] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.verify_errors


def restore(
    repo: Repository, tree_id: bytes, opts: RestoreOptions, progress: Progress | None = None,
    early: EarlyWorkers | None = None, walkers: RestorePool | None = None,
) -> RestoreResult:
    """Restore the tree ``tree_id`` (a snapshot's root tree) into ``opts.target``.

    Per-item problems (damaged or missing blobs, invalid names, metadata that cannot be set) are
    returned in the result and never stop the rest of the restore. Exceptions are raised only when
    nothing sensible can be done: the target cannot be created, the subpath does not exist, the
    root tree cannot be read. ``early``: worker processes started before the repository was open
    (``start_workers``); the restore uses them if it has enough to write, else ends them.
    ``walkers``: workers forked once the index was loaded (``RestorePool.fork``), which then do
    the whole restore (the restore takes them over and ends them).
    """
    if walkers is not None:
        from coffer.engine.restore_pool import restore_with_walkers

        if early is not None:
            early.close()
        return restore_with_walkers(repo, tree_id, opts, progress or Progress(), walkers)
    procs = early.take(repo.backend_recipe) if early is not None else []
    return _Restorer(repo, opts, progress or Progress(), procs).run(tree_id)


_Proc = tuple["subprocess.Popen[bytes] | ForkedProcess", Connection, Connection]


def process_count(recipe: object) -> int:
    """Worker processes for a large restore: ``COFFER_RESTORE_PROCESSES`` (default: the cores, at
    most 4); 0 (threads here) when that is below 2 or workers cannot reopen the backend."""
    n = env_int("COFFER_RESTORE_PROCESSES", min(4, os.cpu_count() or 1))
    return n if n >= 2 and recipe is not None else 0


def _start_worker(recipe: tuple[str, dict[str, str], bool], fork_beside: list[_Proc] | None = None) -> _Proc:
    """A worker told at once how to reach the backend: it imports and connects meanwhile.

    ``fork_beside`` (the workers started so far): fork it from this process instead of starting
    a fresh interpreter; only while this process has a single thread (``can_fork``)."""
    from coffer.engine.workerpool import fork_worker, spawn_worker

    proc: _Proc
    if fork_beside is not None:
        from coffer.engine.restore_worker import serve

        proc = fork_worker(serve, [c for _, out, inp in fork_beside for c in (out, inp)])
    else:
        proc = spawn_worker("coffer.engine.restore_worker")
    try:
        proc[1].send({"recipe": recipe})
    except OSError:
        pass  # it died at once: that shows when its setup is sent
    return proc


def _end_workers(procs: list[_Proc]) -> None:
    """End workers that were given nothing to write (so they hold no files): close, then kill."""
    for _, out, inp in procs:
        out.close()
        inp.close()
    for popen, _, _ in procs:
        try:
            popen.wait(0.5)  # one waiting for its next message ends at once on end of input
        except subprocess.TimeoutExpired:
            popen.kill()  # one still connecting (a slow SFTP login): nothing of it to keep
            popen.wait()


class EarlyWorkers:
    """Restore worker processes started before the repository is even open.

    Each costs an interpreter, imports and a backend connection, a few tenths of a second of CPU.
    Started while this process derives the key, takes the lock and loads the index (its second
    core mostly idle), that cost is off the restore's path. A restore that turns out small ends
    them unused."""

    def __init__(self, recipe: tuple[str, dict[str, str], bool], n: int) -> None:
        from coffer.engine.workerpool import can_fork

        self.recipe = recipe
        self.procs: list[_Proc] = []
        try:
            fork = can_fork()
            if fork and recipe[0].startswith("s3:"):
                # Load botocore and the S3 model here first (this process needs them next anyway):
                # the forked workers then make their clients in a few milliseconds.
                from coffer.engine.worker_process import open_backend_recipe

                open_backend_recipe(recipe).close()
            for _ in range(n):
                self.procs.append(_start_worker(recipe, self.procs if fork else None))
        except BaseException:
            self.close()
            raise

    def take(self, recipe: object) -> list[_Proc]:
        """The workers, for a restore from the repository they were started for (else none)."""
        procs, self.procs = self.procs, []
        if recipe != self.recipe:
            _end_workers(procs)
            return []
        return procs

    def close(self) -> None:
        procs, self.procs = self.procs, []
        _end_workers(procs)

    def __enter__(self) -> EarlyWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_workers(recipe: tuple[str, dict[str, str], bool] | None) -> EarlyWorkers | None:
    """Start the workers a whole-snapshot restore will likely want (None where it would not use any)."""
    n = process_count(recipe)
    if not n or recipe is None:
        return None
    return EarlyWorkers(recipe, n)


# ---------------------------------------------------------------------------------------- the plan

_PENDING, _DONE, _FAILED, _SKIPPED = 0, 1, 2, 3
_WHOLE = "\x00written whole"  # a worker's result: the file is written, finished and in place


class _Dir:
    __slots__ = ("children", "created", "incomplete", "loc", "name", "node", "parent", "pending", "pins", "selected")

    def __init__(self, name: bytes, node: Node | None, parent: _Dir | None, loc: str, selected: bool) -> None:
        self.name = name
        self.node = node  # None for the target itself, whose metadata is not restored
        self.parent = parent
        self.loc = loc
        self.selected = selected
        self.children: list[_Dir | _Item] = []
        self.pending = 0
        self.created = False
        self.incomplete = False  # its tree could not be read: do not give it final metadata
        self.pins = 0  # workers using its descriptor right now (it must stay open)


class _Item:
    """A non-directory node: regular file, symlink, FIFO, device."""

    __slots__ = ("blobs", "links", "loc", "name", "node", "parent", "pins", "remaining", "size", "state", "tmp")

    def __init__(self, name: bytes, node: Node, parent: _Dir, loc: str) -> None:
        self.name = name
        self.node = node
        self.parent = parent
        self.loc = loc
        self.state = _PENDING
        self.tmp: bytes | None = None  # temporary name while content is written
        self.size = 0
        self.remaining = 0  # blob writes still outstanding
        self.blobs: list[_BlobReq] | None = None
        self.links: list[_Item] | None = None  # hard links waiting for this (primary) file
        self.pins = 0  # workers writing into the open descriptor right now (it must stay open)


class _BlobReq:
    """One data blob and every (file, offset) it must be written to."""

    __slots__ = ("blob", "pack_id", "targets")

    def __init__(self, pack_id: bytes, blob: PackedBlob) -> None:
        self.pack_id = pack_id
        self.blob = blob
        self.targets: list[tuple[_Item, int]] = []


@dataclass(slots=True)
class _Job:
    """A contiguous range of one pack, read in one backend request."""

    pack_id: bytes
    start: int
    length: int
    reqs: list[_BlobReq]


def invalid_name(name: bytes) -> bool:
    """Names that would leave the directory they are in, or that no file system accepts."""
    return name in (b"", b".", b"..") or b"/" in name or b"\0" in name


_TMP_PREFIX = secrets.randbits(32) << 32  # names need not be secret (O_EXCL, O_NOFOLLOW), only unlikely to clash
_tmp_counter = itertools.count()


def reseed_tmp_names() -> None:
    """A forked worker starts with its parent's prefix and counter: give it its own."""
    global _TMP_PREFIX, _tmp_counter
    _TMP_PREFIX = secrets.randbits(32) << 32
    _tmp_counter = itertools.count()


def _count_items(children: Iterable[_Dir | _Item], linked: set[tuple[int, int]]) -> tuple[int, int]:
    """The items to restore among ``children`` and the bytes of content they need written (a hard
    link's content once: ``linked`` holds the inodes seen so far)."""
    files = nbytes = 0
    for c in children:
        if isinstance(c, _Dir):
            continue
        files += 1
        n = c.node
        if n.type == "file":
            if n.links > 1 and n.inode:
                if (n.device_id, n.inode) in linked:
                    continue
                linked.add((n.device_id, n.inode))
            nbytes += n.size
    return files, nbytes


def _create_tmp(dfd: int, name: bytes) -> tuple[bytes, int]:
    """A new temporary file for ``name`` in ``dfd``: its name and a descriptor open for writing."""
    while True:
        tmp = _tmp_name(name)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                dir_fd=dfd)
        except FileExistsError:
            continue  # someone's leftover or a clash of random names: the next name


def _evict(cache: OrderedDict[Any, int], limit: int, keep: object = None) -> None:
    """Close the least recently used descriptors beyond ``limit``, never a pinned one nor ``keep``
    (just opened for the caller); fd_lock held, main thread."""
    excess = len(cache) - limit
    victims: list[Any] = []
    for o in cache:  # oldest first; stop as soon as there are enough
        if len(victims) >= excess:
            break
        if not o.pins and o is not keep:
            victims.append(o)
    for o in victims:
        os.close(cache.pop(o))


def _tmp_name(name: bytes) -> bytes:
    suffix = b"coffer-tmp-%016x" % (_TMP_PREFIX | (next(_tmp_counter) & 0xFFFFFFFF))
    tmp = b"." + name + b"." + suffix
    return tmp if len(tmp) <= NAME_MAX else b"." + suffix


class _Restorer:
    def __init__(self, repo: Repository, opts: RestoreOptions, progress: Progress,
                 early: list[_Proc] | None = None, threads: int = 0) -> None:
        self.repo = repo
        self.opts = opts
        self.progress = progress
        self.result = RestoreResult()
        self.incl = ExcludeRules.build(opts.includes, opts.iincludes)
        self.excl = ExcludeRules.build(opts.excludes, opts.iexcludes)
        # Fetching is I/O as much as CPU: use at least as many threads as the backend has connections
        # (a worker process is told its part of them).
        self.workers = threads or max(1, opts.workers, repo.backend.properties.connections)
        self.pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="restore")
        # ...but decode (MAC, AES, zstd, SHA-256) on no more threads than there are cores: more
        # only fight over the GIL while the backend's connections stay busy fetching.
        self.decode_slots = threading.BoundedSemaphore(max(1, min(self.workers, os.cpu_count() or 2)))
        self.root_fd = -1
        self.dir_fds: OrderedDict[_Dir, int] = OrderedDict()
        self.file_fds: OrderedDict[_Item, int] = OrderedDict()
        self.fd_lock = threading.RLock()  # dir_fds, file_fds and pins, shared with writing workers
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.dir_cache = DIR_FD_CACHE if soft == resource.RLIM_INFINITY else max(2, min(DIR_FD_CACHE, soft // 4))
        self.file_cache = FILE_FD_CACHE if soft == resource.RLIM_INFINITY else max(1, min(FILE_FD_CACHE, soft // 4))
        self.main_thread = threading.get_ident()  # the only thread that evicts or closes descriptors
        self.with_tmp: set[_Item] = set()  # temporary files that exist right now
        self.hardlinks: dict[tuple[int, int], _Item] = {}
        self.data_files: list[_Item] = []
        self.done_files: list[_Item] = []
        self._root_nodes: list[Node] = []
        self._planned_bytes = 0  # file content seen so far while planning (an estimate: before filters)
        self._early: list[_Proc] | None = None
        if early:
            self._early = []
            for proc in early:  # started before the key was known: now they can open the repository
                self._send_setup(proc[1])
                self._early.append(proc)

    # ---------------------------------------------------------------- reporting
    def error(self, loc: str, msg: str) -> None:
        self.result.errors.append(RestoreIssue(loc, msg))
        self.progress.warn(loc, msg, "restore")

    def os_error(self, loc: str, what: str, e: OSError) -> None:
        self.error(loc, f"{what}: {e.strerror or e}")

    # ---------------------------------------------------------------- run
    def run(self, tree_id: bytes) -> RestoreResult:
        t0 = time.monotonic()
        repo = self.repo
        if not repo.index_loaded:
            repo.load_index()
        try:
            root = self._resolve_root(tree_id)
            self._open_target()
            try:
                if self._process_count() and not self.incl.patterns:
                    self._plan_streamed(root)
                else:
                    self._plan(root)
                    self._create(root)
                    procs = self._processes()
                    if procs > 1:
                        self._write_in_processes(procs)
                    else:
                        self._close_early_workers()
                        self._fetch_and_write(self._make_jobs(self._assign_blobs()))
                if self.opts.verify:
                    self._verify()
            finally:
                self._close_early_workers()
                self.pool.shutdown(wait=True, cancel_futures=True)  # no worker holds a descriptor now
                self._cleanup()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.result.duration = time.monotonic() - t0
        return self.result

    # ---------------------------------------------------------------- planning
    def _resolve_root(self, tree_id: bytes) -> _Dir:
        """The directory whose contents go into the target (the snapshot root or ``subpath``)."""
        try:
            nodes = self.repo.load_tree(tree_id)
        except CofferError as e:
            raise RestoreError(f"cannot load the root tree {tree_id.hex()[:8]}: {e}") from None
        comps = [c for c in os.fsencode(self.opts.subpath).split(b"/") if c and c != b"."]
        here = "/"
        for i, comp in enumerate(comps):
            node = next((n for n in nodes if n.name == comp), None)
            here = here.rstrip("/") + "/" + os.fsdecode(comp)
            if node is None:
                raise RestoreError(f"path {here!r} not found in the snapshot")
            if node.type != "dir":
                if i != len(comps) - 1:
                    raise RestoreError(f"path {here!r} in the snapshot is not a directory")
                nodes = [node]  # a single non-directory: restore just it into the target
                break
            if node.subtree is None:
                raise RestoreError(f"directory {here!r} in the snapshot has no subtree")
            try:
                nodes = self.repo.load_tree(node.subtree)
            except CofferError as e:
                raise RestoreError(f"cannot load the tree of {here!r}: {e}") from None
        root = _Dir(b"", None, None, "/", selected=not self.incl.patterns)
        self._root_nodes = nodes
        return root

    def _plan(self, root: _Dir) -> None:
        """Read the trees (in parallel, level by level) into _Dir/_Item objects; filter; prune."""
        all_dirs: list[_Dir] = [root]
        level: list[tuple[_Dir, list[Node]]] = [(root, self._root_nodes)]
        while level:
            to_load: list[tuple[_Dir, bytes]] = []
            for d, nodes in level:
                for sub, subtree in self._add_children(d, nodes):
                    all_dirs.append(sub)
                    to_load.append((sub, subtree))
            level = []
            self._maybe_start_workers()
            loaded = (pair for batch in self._load_tree_batches(to_load) for pair in batch)
            for (sub, subtree), res in loaded:
                if isinstance(res, Exception):
                    self.error(sub.loc, f"cannot load tree {subtree.hex()[:8]}: {res}")
                    sub.incomplete = True
                    continue
                level.append((sub, res))
        # Prune: a directory that is not selected itself stays only if something below it stays.
        for d in reversed(all_dirs):
            d.children = [c for c in d.children if not isinstance(c, _Dir) or c.selected or c.children]
        linked: set[tuple[int, int]] = set()
        self.progress.add_total(*_count_items((c for d in all_dirs for c in d.children), linked))
        self.progress.scan_finished = True

    def _plan_streamed(self, root: _Dir) -> None:
        """Plan, create and write as the trees arrive: once worker processes run, the files of each
        batch of directories go to them as soon as the directories exist, so content is written
        while the rest of the trees load (in a tree of many small directories most files are in
        the last, largest level: dealing per level would leave the workers idle until the end).

        Only without include patterns: with them a directory stays only if something below it is
        selected, which is known once the whole tree is read (``_plan``'s prune)."""
        from coffer.engine.restore_dispatch import DEAL_WEIGHT, FILE_COST, Dispatcher

        disp: Dispatcher | None = None
        dealt = weighed = weight = 0  # data_files handed out, and weighed (the work they are) since
        deal_weight = env_int("COFFER_RESTORE_DEAL_BYTES", DEAL_WEIGHT)
        linked: set[tuple[int, int]] = set()

        def plan_dir(d: _Dir, nodes: list[Node], to_load: list[tuple[_Dir, bytes]]) -> tuple[int, int]:
            """``d``'s children planned and made (subdirectories queued); its files and bytes."""
            subs = list(self._add_children(d, nodes))
            if not self._create_dir(d):
                return 0, 0  # nothing below it can be made: its trees are not even read
            for c in d.children:
                if isinstance(c, _Dir) and c.incomplete:
                    self._create_dir(c)  # no subtree to read: made empty now
            to_load.extend(subs)
            return _count_items(d.children, linked)

        def deal(final: bool = False) -> None:
            """Hand out what was planned since the last deal once it is worth a deal of its own: each
            deal costs every worker its own reads of the packs it touches."""
            nonlocal disp, dealt, weighed, weight
            if disp is None and self._planned_bytes >= self._threshold():
                self._maybe_start_workers()  # unless they were started before the repository was open
                if self._early:
                    disp, self._early = Dispatcher(self, self._early), []
            if disp is None:
                return
            disp.poll()
            added = self.data_files[weighed:]
            weight += sum(f.node.size for f in added) + FILE_COST * len(added)
            weighed = len(self.data_files)
            if not final and weight < deal_weight * len(disp.workers):
                return
            disp.deal([f for f in self.data_files[dealt:] if f.state == _PENDING])
            dealt, weight = weighed, 0

        try:
            to_load: list[tuple[_Dir, bytes]] = []
            self.progress.add_total(*plan_dir(root, self._root_nodes, to_load))
            deal()
            while to_load:
                nxt: list[tuple[_Dir, bytes]] = []
                for batch in self._load_tree_batches(to_load):
                    files = nbytes = 0
                    for (sub, subtree), res in batch:
                        if isinstance(res, Exception):
                            self.error(sub.loc, f"cannot load tree {subtree.hex()[:8]}: {res}")
                            sub.incomplete = True
                            self._create_dir(sub)  # made empty, its metadata left alone
                            continue
                        f, n = plan_dir(sub, res, nxt)
                        files += f
                        nbytes += n
                    self.progress.add_total(files, nbytes)
                    deal()
                to_load = nxt
            self.progress.scan_finished = True
            if disp is None:  # too little content for processes: write it in threads here
                self._close_early_workers()
                self._fetch_and_write(self._make_jobs(self._assign_blobs()))
                return
            deal(final=True)
            disp.finish()
        finally:
            if disp is not None:
                disp.close()
        if self.opts.verify:
            self._assign_blobs()  # blob lists for _verify (files already failed stay failed)

    def _load_tree_batches(
        self, to_load: list[tuple[_Dir, bytes]],
    ) -> Iterator[list[tuple[tuple[_Dir, bytes], list[Node] | CofferError]]]:
        """The trees of ``to_load`` read in parallel batches, each batch as soon as it is read (in
        order): a few batches per fetch thread, so one hand-off and a few coalesced reads per batch,
        not per tree."""
        step = max(16, min(_TREE_BATCH, -(-len(to_load) // (2 * self.workers))))
        chunks = [to_load[i : i + step] for i in range(0, len(to_load), step)]
        for chunk, batch in zip(chunks, self.pool.map(self.repo.load_trees, [[t for _, t in c] for c in chunks])):
            yield list(zip(chunk, batch))

    def _add_children(self, d: _Dir, nodes: list[Node]) -> Iterator[tuple[_Dir, bytes]]:
        seen: set[bytes] = set()
        base = d.loc.rstrip("/") + "/"
        for n in nodes:
            name = n.name
            loc = base + os.fsdecode(name)
            if invalid_name(name):
                self.error(base + repr(name)[2:-1], "invalid node name (refused: it could escape the target)")
                continue
            if name in seen:
                self.error(loc, "duplicate node name in the tree (refused)")
                continue
            seen.add(name)
            if self.excl.patterns and self.excl.excluded(loc):
                continue
            selected = d.selected or not self.incl.patterns or self._included(loc)
            if n.type == "dir":
                if not selected and not self._child_may_match(loc):
                    continue
                sub = _Dir(name, n, d, loc, selected)
                d.children.append(sub)
                if n.subtree is None:
                    self.error(loc, "directory node has no subtree")
                    sub.incomplete = True
                    continue
                yield sub, n.subtree
            elif not selected:
                continue
            elif n.type == "socket":
                continue  # like restic: sockets are not restored
            elif n.type in ("file", "symlink", "fifo", "dev", "chardev"):
                d.children.append(_Item(name, n, d, loc))
                self._planned_bytes += n.size
            else:
                self.error(loc, f"cannot restore a node of type {n.type!r}")

    @staticmethod
    def _comps(loc: str) -> list[str]:
        return [c for c in loc.split("/") if c]

    def _included(self, loc: str) -> bool:
        comps = self._comps(loc)
        lower: list[str] | None = None
        for p in self.incl.patterns:
            if p.icase:
                lower = lower or [c.lower() for c in comps]
                if p.matches(lower):
                    return True
            elif p.matches(comps):
                return True
        return False

    def _child_may_match(self, loc: str) -> bool:
        """Could something below the directory ``loc`` match an include pattern? (restic ChildMatch)"""
        comps = self._comps(loc)
        for p in self.incl.patterns:
            if not p.anchored:
                return True
            c = [x.lower() for x in comps] if p.icase else comps
            head = p.parts[: p.parts.index("**")] if "**" in p.parts else p.parts
            k = min(len(head), len(c))
            if len(c) >= len(p.parts) and "**" not in p.parts:
                continue  # the pattern is no longer than the path: only the path itself could match
            if k == 0 or dataclasses.replace(p, parts=head[:k]).matches(c[:k]):
                return True
        return False

    # ---------------------------------------------------------------- descriptors
    def _open_target(self) -> None:
        target = self.opts.target
        try:
            os.makedirs(target, mode=0o700, exist_ok=True)
            self.root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise RestoreError(f"cannot create or open the target directory {target}: {e.strerror or e}") from None

    def _dirfd(self, d: _Dir) -> int:
        """A descriptor for a restored directory, opened component by component without following
        symlinks (cached, least recently used ones are closed)."""
        if d.parent is None:
            return self.root_fd
        with self.fd_lock:
            return self._dirfd_locked(d)

    def _dirfd_locked(self, d: _Dir) -> int:
        fd = self.dir_fds.get(d)
        if fd is not None:
            self.dir_fds.move_to_end(d)
            return fd
        chain = []
        cur: _Dir | None = d
        pfd = -1
        while cur is not None:
            if cur.parent is None:
                pfd = self.root_fd
                break
            cached = self.dir_fds.get(cur)
            if cached is not None:
                self.dir_fds.move_to_end(cur)
                pfd = cached
                break
            chain.append(cur)
            cur = cur.parent
        for c in reversed(chain):
            fd = os.open(c.name, _DIR_FLAGS, dir_fd=pfd)
            self._cache_dirfd(c, fd)
            pfd = fd
        return pfd

    def _cache_dirfd(self, d: _Dir, fd: int) -> None:
        self.dir_fds[d] = fd
        if threading.get_ident() != self.main_thread:
            return  # the main thread may be using any of them right now; it trims the cache itself
        if len(self.dir_fds) > self.dir_cache:
            _evict(self.dir_fds, self.dir_cache, keep=d)

    def _drop_dirfd(self, d: _Dir) -> None:
        with self.fd_lock:
            fd = self.dir_fds.pop(d, None)
            if fd is not None:
                os.close(fd)

    def _file_fd(self, f: _Item) -> int:
        """The open temporary file of ``f``, created (and sized) on first use."""
        with self.fd_lock:
            return self._file_fd_locked(f)

    def _file_fd_locked(self, f: _Item) -> int:
        fd = self.file_fds.get(f)
        if fd is not None:
            self.file_fds.move_to_end(f)
            return fd
        dfd = self.root_fd if f.parent.parent is None else self._dirfd_locked(f.parent)
        if f.tmp is None:
            tmp, fd = _create_tmp(dfd, f.name)
            f.tmp = tmp
            self.with_tmp.add(f)
            if f.size:
                os.ftruncate(fd, f.size)
        else:
            fd = os.open(f.tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        self.file_fds[f] = fd
        if len(self.file_fds) > self.file_cache and threading.get_ident() == self.main_thread:
            # Never the one just opened: with pinned files in the cache it could be among the oldest
            # unpinned ones, and the caller is about to use it.
            _evict(self.file_fds, self.file_cache, keep=f)
        return fd

    def _close_file(self, f: _Item) -> None:
        with self.fd_lock:
            if f.pins:
                return  # a worker is writing into it: the last one to finish closes it (_unpin)
            fd = self.file_fds.pop(f, None)
            if fd is not None:
                os.close(fd)

    def _trim_fds(self) -> None:
        """Main thread: close what workers opened beyond the caches' size (never a pinned file)."""
        with self.fd_lock:
            if len(self.dir_fds) > self.dir_cache:
                _evict(self.dir_fds, self.dir_cache)
            if len(self.file_fds) > self.file_cache:
                _evict(self.file_fds, self.file_cache)

    def _pin(self, f: _Item) -> int:
        """Worker: the descriptor to write ``f``'s content into, kept open until _unpin; -1 when
        the file no longer wants content (it failed meanwhile)."""
        with self.fd_lock:
            if f.state != _PENDING:
                return -1
            fd = self._file_fd_locked(f)
            f.pins += 1
            return fd

    def _unpin(self, f: _Item) -> None:
        with self.fd_lock:
            f.pins -= 1
            if not f.pins and f.state != _PENDING:
                self._close_file(f)

    def _cleanup(self) -> None:
        """Close everything; remove temporary files of anything left unfinished (interrupted run)."""
        for f in list(self.with_tmp):
            self._close_file(f)
            try:
                if f.tmp is not None:
                    os.unlink(f.tmp, dir_fd=self._dirfd(f.parent))
            except OSError:
                pass
        self.with_tmp.clear()
        for fd in self.file_fds.values():
            os.close(fd)
        self.file_fds.clear()
        for fd in self.dir_fds.values():
            os.close(fd)
        self.dir_fds.clear()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    # ---------------------------------------------------------------- replacing what is in the way
    def _remove_tree(self, dfd: int, name: bytes) -> None:
        """Delete ``name`` in ``dfd`` and, if it is a directory, everything below it; never follows."""
        try:
            os.unlink(name, dir_fd=dfd)
            return
        except IsADirectoryError:
            pass
        except OSError as e:
            if e.errno not in (errno.EISDIR, errno.EPERM):
                raise
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            with os.scandir(fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for ename, is_dir in entries:
                if is_dir:
                    self._remove_tree(fd, os.fsencode(ename))
                else:
                    os.unlink(ename, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dfd)

    def _replace(self, dfd: int, tmp: bytes, name: bytes) -> None:
        """Rename ``tmp`` over ``name``; a directory in the way is removed first (overwrite)."""
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as e:
            if e.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            self._remove_tree(dfd, name)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)

    def _exists(self, dfd: int, name: bytes) -> bool:
        try:
            os.stat(name, dir_fd=dfd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    # ---------------------------------------------------------------- metadata
    def _set_meta(self, loc: str, node: Node, *, fd: int = -1, dfd: int = -1, name: bytes = b"") -> None:
        """Ownership, mode, xattrs, times: via ``fd`` if given, else ``name`` in ``dfd`` (no follow)."""
        is_link = node.type == "symlink"
        try:
            if fd >= 0:
                os.fchown(fd, node.uid, node.gid)
            else:
                os.chown(name, node.uid, node.gid, dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            if not (e.errno == errno.EPERM and not _IS_ROOT):  # like restic: non-root keeps its own uid
                self.os_error(loc, "chown", e)
        if not is_link:  # Linux cannot chmod a symlink; restic skips it too
            perm = unix_perm(node.mode)
            try:
                if fd >= 0:
                    os.fchmod(fd, perm)
                else:
                    try:
                        os.chmod(name, perm, dir_fd=dfd, follow_symlinks=False)
                    except (NotImplementedError, ValueError):
                        os.chmod(name, perm, dir_fd=dfd)  # our own fresh node, under a random name
            except OSError as e:
                self.os_error(loc, "chmod", e)
        if node.xattrs:
            for xname, value in node.xattrs:
                try:
                    if fd >= 0:
                        os.setxattr(fd, xname, value)
                    else:
                        os.setxattr(b"/proc/self/fd/%d/%s" % (dfd, name), xname, value, follow_symlinks=False)
                except OSError as e:
                    self.os_error(loc, f"setxattr {xname}", e)
        try:
            mtime = gotime.parse_ns(node.mtime)
            atime = gotime.parse_ns(node.atime) if node.atime else mtime
        except ValueError:
            self.error(loc, f"invalid timestamp {node.mtime!r}: times not restored")
            return
        try:
            if fd >= 0:
                os.utime(fd, ns=(atime, mtime))
            else:
                os.utime(name, ns=(atime, mtime), dir_fd=dfd, follow_symlinks=False)
        except (OSError, OverflowError) as e:
            self.error(loc, f"utime: {getattr(e, 'strerror', None) or e}")

    # ---------------------------------------------------------------- phase A: the skeleton
    def _create(self, root: _Dir) -> None:
        """Directories, symlinks, FIFOs, devices, empty files and hard links, depth first; files with
        content are only registered here and written once their blobs arrive."""
        stack: list[_Dir] = [root]
        while stack:
            d = stack.pop()
            if self._create_dir(d):
                stack.extend(reversed([c for c in d.children if isinstance(c, _Dir)]))

    def _create_dir(self, d: _Dir) -> bool:
        """Make ``d`` (or tidy the target) and everything in it but subdirectories; False when ``d``
        could not be made (then nothing below it can be, and its parent counts it done)."""
        if d.parent is None:
            self._tidy_existing(d, self.root_fd)
        elif not self._make_dir(d):
            self._child_done(d.parent)
            return False
        d.pending = len(d.children) + 1  # +1: held until all children were handed out
        for c in d.children:
            if not isinstance(c, _Dir):
                self._create_item(c)
        self._child_done(d)  # release the hold
        return True

    def _make_dir(self, d: _Dir) -> bool:
        assert d.parent is not None
        try:
            pfd = self._dirfd(d.parent)
        except OSError as e:
            self.os_error(d.loc, "open parent directory", e)
            return False
        existed = False
        try:
            try:
                os.mkdir(d.name, 0o700, dir_fd=pfd)
            except FileExistsError:
                s = os.stat(d.name, dir_fd=pfd, follow_symlinks=False)
                if st.S_ISDIR(s.st_mode):
                    existed = True
                elif self.opts.overwrite:
                    os.unlink(d.name, dir_fd=pfd)  # a file or a (planted) symlink: never follow it
                    os.mkdir(d.name, 0o700, dir_fd=pfd)
                else:
                    self.error(d.loc, "exists and is not a directory (not overwritten)")
                    return False
            fd = os.open(d.name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as e:
            self.os_error(d.loc, "create directory", e)
            return False
        self._cache_dirfd(d, fd)
        d.created = True
        if existed:
            self._tidy_existing(d, fd)
        return True

    def _tidy_existing(self, d: _Dir, fd: int) -> None:
        """A directory from an earlier (maybe interrupted) restore: drop our stale temporary files,
        and make sure we can write into it until its own mode is restored at the end."""
        try:
            s = os.fstat(fd)
            if not _IS_ROOT and st.S_IMODE(s.st_mode) & 0o700 != 0o700:
                os.fchmod(fd, st.S_IMODE(s.st_mode) | 0o700)
            with os.scandir(fd) as it:
                stale = [
                    e.name for e in it if _TMP_RE.match(os.fsencode(e.name)) and not e.is_dir(follow_symlinks=False)
                ]
            for name in stale:
                os.unlink(name, dir_fd=fd)
        except OSError as e:
            self.os_error(d.loc, "prepare existing directory", e)

    def _child_done(self, d: _Dir) -> None:
        """One child of ``d`` is finished (or failed): finish directories whose children are all done."""
        cur: _Dir | None = d
        while cur is not None:
            cur.pending -= 1
            if cur.pending > 0:
                return
            self._finish_dir(cur)
            cur = cur.parent

    def _finish_dir(self, d: _Dir) -> None:
        if d.parent is None:
            return
        if d.created and d.node is not None and not d.incomplete:
            try:
                self._set_meta(d.loc, d.node, fd=self._dirfd(d))
            except OSError as e:
                self.os_error(d.loc, "open directory", e)
        self._drop_dirfd(d)
        self.result.dirs += 1

    def _create_item(self, f: _Item) -> None:
        n = f.node
        try:
            dfd = self._dirfd(f.parent)
            if not self.opts.overwrite and self._exists(dfd, f.name):
                f.state = _SKIPPED
                self.result.skipped += 1
                self.progress.add_done(1, n.size if n.type == "file" else 0)
                self._child_done(f.parent)
                return
        except OSError as e:
            self._fail(f, f"open directory: {e.strerror}")
            return
        if n.type == "file":
            if n.links > 1 and n.inode:
                key = (n.device_id, n.inode)
                primary = self.hardlinks.get(key)
                if primary is not None:
                    if primary.state == _PENDING:
                        if primary.links is None:
                            primary.links = []
                        primary.links.append(f)
                    else:
                        self._link(primary, f)
                    return
                if not self._claim_link(f, key):
                    return  # another process restores this inode; the link is made at the end
                self.hardlinks[key] = f
            if n.content is None:
                self._fail(f, "file node has no content list")
            elif not n.content:
                self._finish_file(f)
            else:
                self.data_files.append(f)
            return
        # symlink, FIFO, device: made under a temporary name, then renamed over the final one
        tmp = _tmp_name(f.name)
        try:
            if n.type == "symlink":
                os.symlink(n.linktarget, tmp, dir_fd=dfd)
            elif n.type == "fifo":
                os.mkfifo(tmp, 0o600, dir_fd=dfd)
            else:
                kind = st.S_IFBLK if n.type == "dev" else st.S_IFCHR
                os.mknod(tmp, kind | 0o600, n.device, dir_fd=dfd)
        except OSError as e:
            self._fail(f, f"create {n.type}: {e.strerror}")
            return
        self._set_meta(f.loc, n, dfd=dfd, name=tmp)
        try:
            self._replace(dfd, tmp, f.name)
        except OSError as e:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            self._fail(f, f"rename into place: {e.strerror}")
            return
        f.state = _DONE
        self.result.others += 1
        self.progress.add_done(1, 0)
        self._child_done(f.parent)

    def _claim_link(self, f: _Item, key: tuple[int, int]) -> bool:
        """The first of its hard-link group seen here: False when another process restores the
        group (for subclasses that share a restore with other processes)."""
        return True

    # ---------------------------------------------------------------- files: finish or fail
    def _finish_file(self, f: _Item) -> None:
        """All content is written: metadata on the open descriptor, then rename into place."""
        self._before_finish(f)
        try:
            fd = self._file_fd(f)
            self._set_meta(f.loc, f.node, fd=fd)
            self._close_file(f)
            assert f.tmp is not None
            self._replace(self._dirfd(f.parent), f.tmp, f.name)
        except OSError as e:
            self._fail(f, f"{e.strerror or e}")
            return
        self.with_tmp.discard(f)
        self._file_finished(f, None)
        self._done(f)

    def _done(self, f: _Item) -> None:
        f.state = _DONE
        self.done_files.append(f)
        self.result.files += 1
        self.result.bytes += f.size
        self.progress.add_done(1, 0)
        self._finish_links(f)
        self._child_done(f.parent)

    def _file_finished(self, f: _Item, err: str | None) -> None:
        """A file's content is written and finished (``err`` None) or failed; for subclasses."""

    def _fail(self, f: _Item, msg: str, *, report: bool = True) -> None:
        if f.state != _PENDING:
            return
        f.state = _FAILED
        if report:
            self.error(f.loc, msg)
        self._file_finished(f, msg)
        self._close_file(f)
        if f.tmp is not None:
            try:
                os.unlink(f.tmp, dir_fd=self._dirfd(f.parent))
            except OSError:
                pass
            self.with_tmp.discard(f)
        self.progress.add_done(1, 0)
        self._finish_links(f)
        self._child_done(f.parent)

    def _finish_links(self, primary: _Item) -> None:
        links, primary.links = primary.links, None
        for f in links or ():
            if primary.state == _DONE:
                self._link(primary, f)
            else:
                self._fail(f, f"hard link to {primary.loc}, which could not be restored")

    def _link(self, primary: _Item, f: _Item) -> None:
        if primary.state != _DONE:
            self._fail(f, f"hard link to {primary.loc}, which could not be restored")
            return
        src_fd = -1
        try:
            src_fd = os.dup(self._dirfd(primary.parent))  # dup: the next lookup may evict it
            self._link_over(src_fd, primary.name, self._dirfd(f.parent), f.name)
        except OSError as e:
            self._fail(f, f"hard link to {primary.loc}: {e.strerror}")
            return
        finally:
            if src_fd >= 0:
                os.close(src_fd)
        f.state = _DONE
        self.result.files += 1
        self.result.hardlinks += 1
        self.progress.add_done(1, 0)
        self._child_done(f.parent)

    def _link_over(self, src_dfd: int, src_name: bytes, dfd: int, name: bytes) -> None:
        """A hard link to ``src_name`` made under a temporary name, then renamed over ``name``."""
        tmp = _tmp_name(name)
        os.link(src_name, tmp, src_dir_fd=src_dfd, dst_dir_fd=dfd, follow_symlinks=False)
        try:
            self._replace(dfd, tmp, name)
        except OSError:
            os.unlink(tmp, dir_fd=dfd)
            raise

    # ---------------------------------------------------------------- phase B: content
    def _locate(self, bid: bytes) -> tuple[bytes, PackedBlob] | None:
        loc = self.repo.index.lookup(BlobType.DATA, bid)
        return None if loc is None else (loc.pack_id, loc.blob)

    def _assign_blobs(
        self, locate: Callable[[bytes], tuple[bytes, PackedBlob] | None] | None = None,
        files: list[_Item] | None = None,
    ) -> dict[bytes, list[_BlobReq]]:
        """Every needed blob once, grouped by pack in the order files need them; every file (of
        ``files``, by default all) gets its size and blob list, and fails here when a blob is
        missing from the index."""
        lookup = locate or self._locate
        reqs: dict[bytes, _BlobReq] = {}
        by_pack: dict[bytes, list[_BlobReq]] = {}
        for f in self.data_files if files is None else files:
            content = f.node.content or []
            blobs: list[_BlobReq] = []
            missing = None
            for bid in content:
                r = reqs.get(bid)
                if r is None:
                    loc = lookup(bid)
                    if loc is None:
                        missing = bid
                        break
                    r = reqs[bid] = _BlobReq(*loc)
                    by_pack.setdefault(loc[0], []).append(r)
                blobs.append(r)
            if missing is not None:
                self._fail(f, f"data blob {missing.hex()} is not in the index (missing from the repository)")
                continue
            off = 0
            for r in blobs:
                r.targets.append((f, off))
                off += r.blob.plain_length
            f.size = off
            f.remaining = len(blobs)
            f.blobs = blobs
        return by_pack

    def _make_jobs(self, by_pack: dict[bytes, list[_BlobReq]]) -> list[_Job]:
        """Each pack's blobs coalesced into ranges read in one request each."""
        max_read = self.repo.backend.properties.read_size
        jobs: list[_Job] = []
        for pack_id, rs in by_pack.items():
            rs = [r for r in rs if r.targets]
            rs.sort(key=lambda r: r.blob.offset)
            cur: list[_BlobReq] = []
            start = end = 0
            for r in rs:
                b = r.blob
                if cur and (b.offset - end > MAX_GAP or b.offset + b.length - start > max_read):
                    jobs.append(_Job(pack_id, start, end - start, cur))
                    cur = []
                if not cur:
                    start = end = b.offset
                cur.append(r)
                end = max(end, b.offset + b.length)
            if cur:
                jobs.append(_Job(pack_id, start, end - start, cur))
        return jobs

    def _fetch(self, job: _Job) -> list[list[str | None] | str]:
        """Worker: read one range of a pack, decode its blobs and write them into their files.

        One result per blob: why it could not be read, or per target file None (written, or no
        longer wanted) or why the write failed. The main thread turns these into file states."""
        raw = self._load_range(job)
        return raw if isinstance(raw, list) else self._decode_range(job, raw)

    def _load_range(self, job: _Job) -> bytes | list[list[str | None] | str]:
        """The stored bytes of one range of a pack, or one error per blob when it cannot be read."""
        pid = job.pack_id.hex()
        try:
            return self.repo.backend.load(Handle(FileType.PACK, pid), job.start, job.length)
        except (CofferError, OSError) as e:
            msg = f"pack {pid[:8]}: cannot read {job.length} bytes at offset {job.start}: {e}"
            return [f"{msg} (data blob {r.blob.id.hex()[:8]})" for r in job.reqs]

    def _decode_range(self, job: _Job, raw: bytes) -> list[list[str | None] | str]:
        mv = memoryview(raw)
        sparse = self.opts.sparse
        out: list[list[str | None] | str] = []
        # Decode and write blob by blob: one blob's plaintext at a time, however long the range.
        for r in job.reqs:
            b = r.blob
            lo = b.offset - job.start
            try:
                with self.decode_slots:
                    data = self.repo.decode_blob(job.pack_id, b, mv[lo : lo + b.length])
            except CofferError as e:
                out.append(str(e))
                continue
            n = len(data)
            targets = r.targets
            if len(targets) == 1 and not sparse:
                f = targets[0][0]
                if f.blobs is not None and len(f.blobs) == 1 and f.tmp is None:
                    out.append([self._write_whole(f, data)])
                    continue
            skip = sparse and n > 0 and data[0] == 0 and data[-1] == 0 and data == bytes(n)
            written: list[str | None] = []
            for f, off in targets:
                err = None
                if not skip:
                    try:
                        fd = self._pin(f)
                    except OSError as e:
                        fd, err = -1, f"open: {e.strerror or e}"
                    if fd >= 0:
                        try:
                            _pwrite_all(fd, data, off)
                        except OSError as e:
                            err = f"write: {e.strerror or e}"
                        finally:
                            self._unpin(f)
                written.append(err)
            out.append(written)
        return out

    def _write_whole(self, f: _Item, data: bytes) -> str | None:
        """Worker: a file whose whole content is this one blob, created, written, finished and
        renamed into place right here (most files of a tree of small files): no descriptor kept,
        no hand-over to the main thread but the result. ``_WHOLE`` when done, else why not."""
        with self.fd_lock:
            if f.state != _PENDING:
                return None  # failed meanwhile: nothing to write
            dfd = self.root_fd if f.parent.parent is None else self._dirfd_locked(f.parent)
            f.parent.pins += 1
        try:
            tmp, fd = _create_tmp(dfd, f.name)
            f.tmp = tmp
            with self.fd_lock:
                self.with_tmp.add(f)
            try:
                _pwrite_all(fd, data, 0)
                self._before_finish(f)
                self._set_meta(f.loc, f.node, fd=fd)
            finally:
                os.close(fd)
            self._replace(dfd, tmp, f.name)
        except OSError as e:
            return f"write: {e.strerror or e}"
        finally:
            with self.fd_lock:
                f.parent.pins -= 1
        with self.fd_lock:
            self.with_tmp.discard(f)  # in place: an interrupted run has nothing of it to remove
        return _WHOLE

    def _before_finish(self, f: _Item) -> None:
        """A file's content is complete and it is about to be finished; for subclasses (tests' crash sites)."""

    tick_seconds: float | None = None  # how often ``between_writes`` runs while ranges are in flight
    # Decode and write in the thread that runs _fetch_and_write, the others only read: in a worker
    # process of its own, one thread doing every short system call costs far less than several
    # handing the GIL to each other around each of them.
    decode_in_main = False

    def between_writes(self) -> None:
        """Called while content is being fetched and written; for subclasses that must stay responsive."""

    def _fetch_and_write(self, jobs: Iterable[_Job]) -> None:
        inflight: dict[cf.Future[list[list[str | None] | str]], _Job] = {}
        it = iter(jobs)
        limit = self.workers + 1
        nbytes = 0  # read (or being read) and not yet written: bounds memory
        nxt = next(it, None)

        work: Callable[[_Job], Any] = self._load_range if self.decode_in_main else self._fetch

        def top_up() -> None:
            nonlocal nxt, nbytes
            while nxt is not None and len(inflight) < limit and (not inflight or nbytes + nxt.length <= READ_BUDGET):
                inflight[self.pool.submit(work, nxt)] = nxt
                nbytes += nxt.length
                nxt = next(it, None)

        top_up()
        while inflight:
            done, _ = cf.wait(inflight, timeout=self.tick_seconds, return_when=cf.FIRST_COMPLETED)
            self.between_writes()
            for fut in done:
                job = inflight.pop(fut)
                results = fut.result()
                if self.decode_in_main and not isinstance(results, list):
                    top_up()  # the next reads go out while this thread decodes and writes
                    results = self._decode_range(job, results)
                nbytes -= job.length
                top_up()  # keep the workers busy while this thread writes
                self._write(job, results)
        # Files whose every blob was skipped cannot be left pending; neither can anything else.
        for f in self.data_files:
            if f.state == _PENDING:
                self._fail(f, "internal error: content incomplete")

    # ---------------------------------------------------------------- phase B in worker processes
    def _process_count(self) -> int:
        return process_count(self.repo.backend_recipe)

    def _threshold(self) -> int:
        return env_int("COFFER_RESTORE_PROCESS_THRESHOLD", 32 << 20)

    def _maybe_start_workers(self) -> None:
        """Start the worker processes while planning goes on, once the plan holds enough content:
        their start-up (an interpreter, imports, a backend) then costs no wall time."""
        if self._early is not None or self._planned_bytes < self._threshold():
            return  # already started (maybe before the repository was open), or not worth it yet
        n = self._process_count()
        self._early = []
        for _ in range(n):
            self._early.append(self._spawn_worker())

    def _spawn_worker(self) -> _Proc:
        """Start a worker and tell it at once how to open the repository: it connects (an S3
        client, say) while this process still plans; its files follow in later messages."""
        assert self.repo.backend_recipe is not None
        proc = _start_worker(self.repo.backend_recipe)
        self._send_setup(proc[1])
        return proc

    def _worker_threads(self) -> int:
        """Fetch threads per worker process: the backend's connections shared out between the
        workers (at least two each, so one request is always under way while another is decoded).
        More only fight over each worker's GIL, and the connection limit is the user's."""
        n = max(1, self._process_count())
        return max(2, -(-max(1, self.opts.workers, self.repo.backend.properties.connections) // n))

    def _send_setup(self, out: Connection) -> None:
        repo = self.repo
        try:
            out.send({"key": repo.key, "config": repo.config, "key_id": repo.key_id,
                      "opts": dataclasses.replace(self.opts, verify=False), "threads": self._worker_threads()})
        except OSError:
            pass  # a worker that died: found when its first deal is sent

    def _close_early_workers(self) -> None:
        """Workers started early but given nothing to do: closing their pipe ends them."""
        early, self._early = self._early, []
        _end_workers(early or [])

    def _processes(self) -> int:
        """How many worker processes write the content: 0 for threads in this process.

        Processes pay off once there is enough to write (``COFFER_RESTORE_PROCESS_THRESHOLD``
        bytes, 32 MiB by default); ``COFFER_RESTORE_PROCESSES=0`` keeps everything in threads."""
        n = self._process_count()
        if not n:
            return 0
        pending = [f for f in self.data_files if f.state == _PENDING]
        if len(pending) < 2 or sum(f.node.size for f in pending) < self._threshold():
            return 0
        return min(n, len(pending))

    def _write_in_processes(self, n: int) -> None:
        """Deal every file with content out to ``n`` worker processes; finish what they report."""
        from coffer.engine.restore_dispatch import Dispatcher

        files = [f for f in self.data_files if f.state == _PENDING]
        early, self._early = self._early or [], []
        procs = early[:n]
        self._early = early[n:]
        self._close_early_workers()  # any left over get nothing to do
        disp = None
        try:
            while len(procs) < n:
                procs.append(self._spawn_worker())
            disp = Dispatcher(self, procs)
            disp.deal(files)
            disp.finish()
        finally:
            if disp is not None:
                disp.close()
            else:
                self._early = procs
                self._close_early_workers()
        if self.opts.verify:
            self._assign_blobs()  # blob lists for _verify (files already failed stay failed)

    def _write(self, job: _Job, results: list[list[str | None] | str]) -> None:
        """Account for what a worker wrote: finish files whose content is complete, fail others."""
        add_bytes = self.progress.add_bytes
        for r, res in zip(job.reqs, results):
            if isinstance(res, str):
                for f, _ in r.targets:
                    self._fail(f, res)
                continue
            n = r.blob.plain_length
            for (f, _), err in zip(r.targets, res):
                if f.state != _PENDING:
                    continue
                if err is _WHOLE:  # written and finished by the worker
                    add_bytes(n)
                    f.remaining = 0
                    self.with_tmp.discard(f)
                    self._file_finished(f, None)
                    self._done(f)
                    continue
                if err is not None:
                    self._fail(f, err)
                    continue
                add_bytes(n)
                f.remaining -= 1
                if f.remaining == 0:
                    self._finish_file(f)
        self._trim_fds()

    # ---------------------------------------------------------------- verify
    def _verify(self) -> None:
        """Re-read every restored file and check it splits into its content blobs, by hash."""
        by_dir: dict[_Dir, list[_Item]] = {}
        for f in self.done_files:
            by_dir.setdefault(f.parent, []).append(f)
        jobs = []
        for d, files in by_dir.items():
            comps: list[bytes] = []
            cur: _Dir | None = d
            while cur is not None and cur.parent is not None:
                comps.append(cur.name)
                cur = cur.parent
            comps.reverse()
            items = [
                (f.name, f.loc, f.size, [(r.blob.id, r.blob.plain_length) for r in f.blobs or ()]) for f in files
            ]
            jobs.append((comps, items))
        for errs, nfiles in self.pool.map(lambda j: self._verify_dir(*j), jobs):
            self.result.verify_errors.extend(errs)
            self.result.files_verified += nfiles

    def _verify_dir(
        self, comps: list[bytes], items: list[tuple[bytes, str, int, list[tuple[bytes, int]]]]
    ) -> tuple[list[RestoreIssue], int]:
        errs: list[RestoreIssue] = []
        try:
            with self._dir_at(comps) as dfd:
                for name, loc, size, blobs in items:
                    msg = _verify_file(dfd, name, size, blobs)
                    if msg:
                        errs.append(RestoreIssue(loc, msg))
        except OSError as e:
            return [RestoreIssue(loc, f"verify: cannot open directory: {e.strerror}") for _, loc, _, _ in items], 0
        return errs, len(items)

    @contextlib.contextmanager
    def _dir_at(self, comps: list[bytes]) -> Iterator[int]:
        """A descriptor for the restored directory at ``comps``, opened one component at a time
        without following symlinks, outside the descriptor caches (any thread)."""
        fds: list[int] = []
        try:
            fd = self.root_fd
            for c in comps:
                fd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                fds.append(fd)
            yield fd
        finally:
            for fd in fds:
                os.close(fd)


def _verify_file(dfd: int, name: bytes, size: int, blobs: list[tuple[bytes, int]]) -> str | None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(name, flags | _O_NOATIME, dir_fd=dfd)  # reading must not change the restored atime
        except PermissionError:
            fd = os.open(name, flags, dir_fd=dfd)
    except OSError as e:
        return f"verify: cannot open: {e.strerror}"
    try:
        s = os.fstat(fd)
        if not st.S_ISREG(s.st_mode):
            return "verify: not a regular file"
        if s.st_size != size:
            return f"verify: size is {s.st_size}, expected {size}"
        off = 0
        for bid, plen in blobs:
            data = _pread_all(fd, plen, off)
            if len(data) != plen or hashlib.sha256(data).digest() != bid:
                return f"verify: content at offset {off} ({plen} bytes) does not match data blob {bid.hex()[:8]}"
            off += plen
    except OSError as e:
        return f"verify: read: {e.strerror}"
    finally:
        os.close(fd)
    return None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    n = os.pwrite(fd, data, offset)
    if n == len(data):
        return
    mv = memoryview(data)
    pos = n
    while pos < len(mv):
        n = os.pwrite(fd, mv[pos:], offset + pos)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        pos += n


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
