"""Differences between two snapshots' trees, as ``restic diff`` reports them.

Modifiers: ``+`` added, ``-`` removed, ``M`` file content changed, ``T`` type changed, ``U``
metadata changed (only when asked). Directory paths end in ``/``. Subtrees with the same ID on
both sides are not compared at all; they are only scanned (once per tree ID) to learn which blobs
both snapshots share, so that the added/removed blob statistics are right.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from coffer.engine.treewalk import allow_deep_trees, join, load_sorted, subtree_of
from coffer.store.format.pack import BlobType
from coffer.store.format.tree import Node
from coffer.store.repository import Repository
from coffer.util import gotime


@dataclass(frozen=True, slots=True)
class Change:
    path: bytes
    modifier: str


@dataclass(slots=True)
class DiffStat:
    files: int = 0
    dirs: int = 0
    others: int = 0
    data_blobs: int = 0
    tree_blobs: int = 0
    bytes: int = 0

    def add(self, node: Node | None) -> None:
        if node is None:
            return
        if node.type == "file":
            self.files += 1
        elif node.type == "dir":
            self.dirs += 1
        else:
            self.others += 1

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "dirs": self.dirs, "others": self.others, "data_blobs": self.data_blobs,
                "tree_blobs": self.tree_blobs, "bytes": self.bytes}


@dataclass(slots=True)
class DiffStats:
    changed_files: int = 0
    added: DiffStat = field(default_factory=DiffStat)
    removed: DiffStat = field(default_factory=DiffStat)


# A blob handle as one bytes value: data blobs are their 32-byte ID, trees get a "T" prefix.
def _tree(tid: bytes) -> bytes:
    return b"T" + tid


def _add_blobs(bs: set[bytes], node: Node | None) -> None:
    if node is None:
        return
    if node.type == "file":
        bs.update(node.content or ())
    elif node.type == "dir" and node.subtree is not None:
        bs.add(_tree(node.subtree))


def _time_eq(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return gotime.parse_ns(a) == gotime.parse_ns(b)
    except ValueError:
        return False


def nodes_equal(a: Node, b: Node) -> bool:
    """restic's Node.Equals: every stored attribute, times compared as instants."""
    if (a.name, a.type, a.mode, a.uid, a.gid, a.user, a.group, a.inode, a.device_id, a.size, a.links,
            a.linktarget, a.device, a.content, a.subtree, a.error) != (
            b.name, b.type, b.mode, b.uid, b.gid, b.user, b.group, b.inode, b.device_id, b.size, b.links,
            b.linktarget, b.device, b.content, b.subtree, b.error):
        return False
    if not (_time_eq(a.mtime, b.mtime) and _time_eq(a.atime, b.atime) and _time_eq(a.ctime, b.ctime)):
        return False
    xa, xb = a.xattrs or [], b.xattrs or []
    return len(xa) == len(xb) and dict(xa) == dict(xb)


class Differ:
    """Compare two trees: iterate ``changes()``, then read ``stats`` (filled by the iteration)."""

    def __init__(self, repo: Repository, *, metadata: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
        allow_deep_trees()
        self.repo = repo
        self.metadata = metadata
        self.warn = warn
        self.stats = DiffStats()
        self._before: set[bytes] = set()
        self._after: set[bytes] = set()
        self._common: set[bytes] = set()
        self._collected: set[bytes] = set()

    def changes(self, tree1: bytes, tree2: bytes) -> Iterator[Change]:
        self._before.add(_tree(tree1))
        self._after.add(_tree(tree2))
        if tree1 != tree2:
            yield from self._diff_tree(b"/", tree1, tree2)
        else:
            self._collect(tree1)
        both = self._before & self._after
        self._count(self._before - both - self._common, self.stats.removed)
        self._count(self._after - both - self._common, self.stats.added)

    # ------------------------------------------------------------------------------ internals
    def _count(self, blobs: set[bytes], st: DiffStat) -> None:
        idx = self.repo.index
        for h in blobs:
            if len(h) == 33:
                st.tree_blobs += 1
                loc = idx.lookup(BlobType.TREE, h[1:])
            else:
                st.data_blobs += 1
                loc = idx.lookup(BlobType.DATA, h)
            if loc is None:
                if self.warn:
                    kind = "tree" if len(h) == 33 else "data"
                    self.warn(f"unable to find blob size for <{kind}/{h[-32:].hex()[:8]}>")
                continue
            st.bytes += loc.blob.plain_length

    def _collect(self, tree_id: bytes) -> None:
        """Note every blob below a tree both snapshots share (each tree ID is read once)."""
        stack = [tree_id]
        while stack:
            tid = stack.pop()
            if tid in self._collected:
                continue
            self._collected.add(tid)
            for node in self.repo.load_tree(tid):
                _add_blobs(self._common, node)
                if node.type == "dir" and node.subtree is not None:
                    stack.append(node.subtree)

    def _print_dir(self, mode: str, st: DiffStat, blobs: set[bytes], prefix: bytes,
                   tree_id: bytes) -> Generator[Change, None, None]:
        for node in load_sorted(self.repo, tree_id):
            name = join(prefix, node.name)
            if node.type == "dir":
                name += b"/"
            yield Change(name, mode)
            st.add(node)
            _add_blobs(blobs, node)
            if node.type == "dir":
                yield from self._print_dir(mode, st, blobs, name, subtree_of(node, name))

    def _diff_tree(self, prefix: bytes, id1: bytes, id2: bytes) -> Generator[Change, None, None]:
        t1 = {n.name: n for n in load_sorted(self.repo, id1)}
        t2 = {n.name: n for n in load_sorted(self.repo, id2)}
        st = self.stats
        for name in sorted(t1.keys() | t2.keys()):
            n1, n2 = t1.get(name), t2.get(name)
            _add_blobs(self._before, n1)
            _add_blobs(self._after, n2)
            path = join(prefix, name)
            if n1 is not None and n2 is not None:
                mod = ""
                if n1.type != n2.type:
                    mod += "T"
                if n2.type == "dir":
                    path += b"/"
                if n1.type == "file" and n2.type == "file" and n1.content != n2.content:
                    mod += "M"
                    st.changed_files += 1
                elif self.metadata and not nodes_equal(n1, n2):
                    mod += "U"
                if mod:
                    yield Change(path, mod)
                if n1.type == "dir" and n2.type == "dir":
                    s1, s2 = subtree_of(n1, path), subtree_of(n2, path)
                    if s1 == s2:
                        self._collect(s1)
                    else:
                        yield from self._diff_tree(path, s1, s2)
            elif n1 is not None:
                if n1.type == "dir":
                    path += b"/"
                yield Change(path, "-")
                st.removed.add(n1)
                if n1.type == "dir":
                    yield from self._print_dir("-", st.removed, self._before, path, subtree_of(n1, path))
            elif n2 is not None:
                if n2.type == "dir":
                    path += b"/"
                yield Change(path, "+")
                st.added.add(n2)
                if n2.type == "dir":
                    yield from self._print_dir("+", st.added, self._after, path, subtree_of(n2, path))


def diff(repo: Repository, tree1: bytes, tree2: bytes, *, metadata: bool = False) -> tuple[list[Change], DiffStats]:
    """Convenience for callers that want everything at once."""
    d = Differ(repo, metadata=metadata)
    changes = list(d.changes(tree1, tree2))
    return changes, d.stats
