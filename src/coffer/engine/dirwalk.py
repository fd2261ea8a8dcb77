"""Walking a source directory tree into tree blobs: what the backup's parent and its workers share.

A directory is a row of slots, one per entry, filled as its children finish; the one that fills
the last slot writes the directory's tree (or keeps the parent snapshot's tree ID when every entry
came out as the parent's own node object, which is what makes a no-change backup cheap).

The walk is an explicit stack of frames, one per directory being handed out. A frame's entries
``items[next:end]`` are not handed out yet, so a worker process can give the far end of a frame
away to an idle worker (``Frame.end`` moves back) and fill those slots when the results come back:
that is how a backup's walk keeps every core busy on one deep source tree.
"""

from __future__ import annotations

import os
import stat as st
import threading
from typing import Any, NamedTuple

from coffer.engine.excludes import CACHEDIR_TAG, ExcludeRules
from coffer.engine.fsnode import node_from_stat, same_metadata, unchanged
from coffer.engine.progress import Progress
from coffer.errors import CofferError, Interrupted, SourceError
from coffer.store.format.pack import BlobType
from coffer.store.format.tree import Node, go_mode
from coffer.store.repository import Repository
from coffer.util import gotime

# A job's result for an entry that came out as the parent snapshot's node itself: the receiver
# puts its own copy of that node in the slot, so its "unchanged directory" test (identity) holds.
SAME = 1


class PendingDir:
    """A directory being assembled: one slot per entry, filled as children finish."""

    __slots__ = ("job", "node", "parent", "parent_index", "pending", "prev_node", "prev_nodes", "slots")

    def __init__(self, node: Node | None, parent: PendingDir | None, parent_index: int, prev_node: Node | None,
                 job: Any = None) -> None:
        self.node = node
        self.parent = parent
        self.parent_index = parent_index
        self.pending = 1  # the walker's own hold, released when all entries were handed out
        self.prev_node = prev_node
        self.prev_nodes: list[Node] | None = None
        self.slots: list[Node | None] = []
        # Not None for the root of a job a worker process walks for someone else: its slots are
        # the job's results, sent back instead of becoming a tree.
        self.job = job


class VDir:
    """Intermediate directory made from target paths (e.g. /home and /home/alice for /home/alice/src)."""

    def __init__(self, fs_path: bytes) -> None:
        self.fs_path = fs_path
        self.children: dict[bytes, VDir | bytes] = {}  # name -> sub-VDir or target path


Entry = tuple[bytes, bytes, "VDir | None", "os.stat_result | OSError"]  # name, path, virtual dir, lstat


class Listing(NamedTuple):
    entries: list[Entry]
    error: OSError | None
    prev_nodes: list[Node] | None


class Frame:
    """A directory whose entries are being handed out: ``items[next:end]`` are still to go."""

    __slots__ = ("d", "end", "items", "next", "prevs")

    def __init__(self, d: PendingDir, items: list[Entry], prevs: list[Node | None] | None) -> None:
        self.d = d
        self.items = items
        self.prevs = prevs  # the parent snapshot's node of each entry (None: no parent tree)
        self.next = 0
        self.end = len(items)


# The backup summary's counters a walk adds to (a worker's are merged into its parent's).
COUNT_FIELDS = ("files_new", "files_changed", "files_unmodified", "dirs_new", "dirs_changed", "dirs_unmodified",
                "total_files_processed", "total_bytes_processed")


class SourceWalker:
    """The walk, the directory completion and the parent-snapshot comparison of one process.

    Subclasses decide what happens to a regular file that needs reading (``_file``) and to the
    root of a job (``_job_done``)."""

    def __init__(self, repo: Repository, excludes: ExcludeRules, progress: Progress) -> None:
        self.repo = repo
        self.excludes = excludes
        self.progress = progress
        self.counts = dict.fromkeys(COUNT_FIELDS, 0)
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._root_dev: int | None = None
        self.cancel = threading.Event()
        # Unchanged files are counted by the walking thread alone: no lock (merged at the end).
        self._unmodified = 0
        self._unmodified_bytes = 0
        # Parent-snapshot trees of the subdirectories of directories being walked, loaded together
        # (one coalesced read per pack instead of one request per tree); the walking thread's alone.
        self._prefetched: dict[bytes, list[Node] | CofferError] = {}

    # ------------------------------------------------------------------ plumbing
    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = e

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
            c = self.counts
            for k, v in kw.items():
                c[k] += v

    def take_counts(self) -> dict[str, int]:
        """The counters since the last call, unchanged files included (and reset them)."""
        with self._lock:
            c, self.counts = self.counts, dict.fromkeys(COUNT_FIELDS, 0)
        u, ub = self._unmodified, self._unmodified_bytes
        self._unmodified = self._unmodified_bytes = 0
        c["files_unmodified"] += u
        c["total_files_processed"] += u
        c["total_bytes_processed"] += ub
        return c

    # ------------------------------------------------------------------ directory completion
    def _child_done(self, d: PendingDir, index: int, node: Node | None) -> None:
        """Fill a slot; when a directory has all its children, finish it (and maybe its parents)."""
        cur: PendingDir | None = d
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

    def _release(self, d: PendingDir) -> None:
        self._child_done(d, -1, None)

    def _finish_dir(self, d: PendingDir) -> Node | None:
        if d.job is not None:
            self._job_done(d)
            return None
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
            if d.node is not None:  # as restic counts: by the tree that came out
                if d.prev_node is None:
                    self._count(dirs_new=1)
                elif d.prev_node.subtree == subtree:  # re-encoded (a symlink's node is made anew) to the same tree
                    self._count(dirs_unmodified=1)
                else:
                    self._count(dirs_changed=1)
        if d.node is None:
            self._root_finished(nodes, subtree)
            return None
        if d.prev_node is not None and d.node is d.prev_node and d.prev_node.subtree == subtree:
            return d.prev_node
        n = d.node
        if n is d.prev_node:  # metadata was reused but the content changed: make our own copy
            n = _copy_node(n)
        n.subtree = subtree
        return n

    def _root_finished(self, nodes: list[Node], tree_id: bytes) -> None:
        raise NotImplementedError

    def _job_done(self, d: PendingDir) -> None:
        raise NotImplementedError

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

    def _prefetch(self, items: list[Entry], prevs: list[Node | None]) -> None:
        """Load the parent trees of a directory's subdirectories in one go."""
        ids = []
        for (_, _, _, s), prev in zip(items, prevs):
            if prev is not None and prev.type == "dir" and prev.subtree is not None and not isinstance(s, OSError) \
                    and st.S_ISDIR(s.st_mode):
                ids.append(prev.subtree)
        if len(ids) > 1:
            self._prefetched.update(zip(ids, self.repo.load_trees(ids)))

    # ------------------------------------------------------------------ the walk
    def _walk(self, stack: list[Frame]) -> None:
        """Hand out every entry of the frames on ``stack`` (an explicit stack: deep trees must not
        hit Python's recursion limit)."""
        while stack:
            self._check()
            f = stack[-1]
            i = f.next
            if i >= f.end:
                stack.pop()
                self._release(f.d)
                continue
            f.next = i + 1
            sub = self._entry(f, i)
            if sub is not None:
                stack.append(sub)

    def _open_frame(self, d: PendingDir, items: list[Entry], prevs: list[Node | None] | None = None) -> Frame:
        """Give ``d`` a slot per entry and pair each entry with its node in the parent snapshot."""
        with self._lock:
            d.slots = [None] * len(items)
            d.pending += len(items)
        if prevs is None and d.prev_nodes:
            prev_map = {n.name: n for n in d.prev_nodes}
            prevs = [prev_map.get(e[0]) for e in items]
        if prevs is not None:
            self._prefetch(items, prevs)
        return Frame(d, items, prevs)

    def _entry(self, f: Frame, i: int) -> Frame | None:
        """Hand out entry ``i`` of ``f``: a directory becomes the next frame, anything else is done
        here (or handed to whoever reads files)."""
        name, path, vdir, s = f.items[i]
        d = f.d
        if isinstance(s, OSError):
            self._warn(path, f"{s.strerror}", "archival")
            self._child_done(d, i, None)
            return None
        prev = f.prevs[i] if f.prevs is not None else None
        mode = s.st_mode
        if st.S_ISDIR(mode):
            return self._enter_dir(d, i, name, path, s, prev, vdir)
        if vdir is not None:
            self._warn(path, "intermediate path is not a directory", "archival")
            self._child_done(d, i, None)
        elif st.S_ISREG(mode):
            if not self._unchanged_file(d, i, name, path, s, prev):
                self._file(d, i, name, path, s, prev)
        else:
            node, w = node_from_stat(name, path, s)
            if w:
                self._warn(path, w)
            self._child_done(d, i, node)  # restic counts only regular files in "Files"
        return None

    def _scan_dir(self, path: bytes, prev_dir: Node | None) -> Listing:
        """One directory's entries (lstat'ed, excludes applied) and its parent-snapshot tree.

        Done in the walking thread on purpose: scanning ahead in other threads made the
        no-change backup slower, because every short syscall hands the GIL over and back."""
        prev_nodes = self._prev_children(prev_dir)
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            return Listing([], e, prev_nodes)
        prefix = path if path.endswith(b"/") else path + b"/"
        ex = self.excludes
        entries: list[Entry] = []
        for n in names:
            p = prefix + n
            if ex.patterns and ex.excluded(os.fsdecode(p)):
                continue
            try:
                entries.append((n, p, None, os.lstat(p)))
            except OSError as e:
                entries.append((n, p, None, e))
        return Listing(entries, None, prev_nodes)

    def _descend(self, s: os.stat_result) -> bool:
        """False when a directory's contents are excluded (another file system)."""
        return not (self.excludes.one_file_system and self._root_dev is not None and s.st_dev != self._root_dev)

    def _virtual_entries(self, v: VDir) -> list[Entry]:
        out: list[Entry] = []
        ex = self.excludes
        for name in sorted(v.children):
            c = v.children[name]
            path = c.fs_path if isinstance(c, VDir) else c
            if not isinstance(c, VDir) and ex.patterns and ex.excluded(os.fsdecode(path)):
                continue
            try:
                s: os.stat_result | OSError = os.lstat(path)
            except OSError as e:
                s = e
            out.append((name, path, c if isinstance(c, VDir) else None, s))
        return out

    def _enter_dir(
        self, parent: PendingDir, i: int, name: bytes, path: bytes, s: os.stat_result, prev: Node | None,
        vdir: VDir | None,
    ) -> Frame:
        prev_dir = prev if prev is not None and prev.type == "dir" else None
        if prev_dir is not None and _same_dir_meta(s, prev_dir):
            node = prev_dir  # reused as-is if the subtree also comes out the same
        else:
            node, w = node_from_stat(name, path, s)
            if w:
                self._warn(path, w)
        sub = PendingDir(node, parent, i, prev_dir)
        if vdir is not None:
            sub.prev_nodes = self._prev_children(prev_dir)
            return self._open_frame(sub, self._virtual_entries(vdir))
        if not self._descend(s):
            sub.prev_nodes = self._prev_children(prev_dir)
            return self._open_frame(sub, [])
        listing = self._scan_dir(path, prev_dir)
        sub.prev_nodes = listing.prev_nodes
        if listing.error is not None:
            self._warn(path, f"cannot read directory: {listing.error.strerror}", "archival")
        entries = listing.entries
        if self.excludes.exclude_caches and ExcludeRules.is_tagged_cache(path):
            # A tagged cache directory keeps only its CACHEDIR.TAG, as restic does.
            entries = [e for e in entries if e[0] == CACHEDIR_TAG.encode()]
        return self._open_frame(sub, entries)

    # ------------------------------------------------------------------ files
    def _unchanged_file(self, d: PendingDir, i: int, name: bytes, path: bytes, s: os.stat_result,
                        prev: Node | None) -> bool:
        """Keep the parent snapshot's content of a file that did not change (True), without reading it."""
        if prev is None or not unchanged(s, prev) or not self._all_present(prev.content or []):
            return False
        if same_metadata(s, prev):
            node = prev
        else:
            node, _ = node_from_stat(name, path, s)
            node.content = list(prev.content or [])
        self._unmodified += 1
        self._unmodified_bytes += s.st_size
        pr = self.progress
        pr.files_done += 1
        pr.bytes_done += s.st_size
        self._child_done(d, i, node)
        return True

    def _all_present(self, content: list[bytes]) -> bool:
        has = self.repo.has_blob
        return all(has(BlobType.DATA, c) for c in content)

    def _file(self, d: PendingDir, i: int, name: bytes, path: bytes, s: os.stat_result, prev: Node | None) -> None:
        raise NotImplementedError

    def _file_read(self, path: bytes, node: Node, nread: int, changed: bool, existed: bool) -> None:
        """Book a file whose content was read (the node already carries it)."""
        if changed:
            self._warn(path, "file changed while it was read; the stored content may be inconsistent", "changed")
        node.size = nread
        self._count(total_files_processed=1, total_bytes_processed=nread,
                    **({"files_changed": 1} if existed else {"files_new": 1}))
        self.progress.add_done(1, 0)


def empty_snapshot_error() -> SourceError:
    return SourceError("unable to save snapshot: snapshot is empty",
                       hint="every path was excluded or could not be read")


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
