"""Walking a snapshot's trees with full paths, the way restic's walker does.

Paths are bytes (node names are raw bytes), slash-separated and absolute from the snapshot root:
the root tree's nodes are ``/name``. Within one tree nodes are visited in name order, and a
directory is yielded before its contents (pre-order), which is the order ``restic ls`` prints.
"""

from __future__ import annotations

import posixpath
import sys
from collections.abc import Callable, Iterator, Sequence

from coffer.errors import FormatError
from coffer.store.format.tree import Node
from coffer.store.repository import Repository

Descend = Callable[[bytes, Node], bool]


MAX_DEPTH = 8192  # directory nesting the recursive walkers (diff, find, stats) support


def allow_deep_trees() -> None:
    """Let the recursive walkers follow directories nested up to MAX_DEPTH levels.

    Every level costs a couple of Python frames (3.11 frames do not use the C stack), so the
    default limit of 1000 would stop at a few hundred levels, which real file systems exceed.
    """
    if sys.getrecursionlimit() < 3 * MAX_DEPTH:
        sys.setrecursionlimit(3 * MAX_DEPTH)


def join(prefix: bytes, name: bytes) -> bytes:
    return prefix + name if prefix.endswith(b"/") else prefix + b"/" + name


def load_sorted(repo: Repository, tree_id: bytes) -> list[Node]:
    nodes = repo.load_tree(tree_id)
    # Trees are written sorted; sort anyway so a foreign writer cannot change the walk order.
    if any(a.name > b.name for a, b in zip(nodes, nodes[1:])):
        nodes.sort(key=lambda n: n.name)
    return nodes


def subtree_of(node: Node, path: bytes) -> bytes:
    if node.subtree is None:
        raise FormatError(f"subtree for node {path.decode('utf-8', 'replace')} is missing")
    return node.subtree


def walk(
    repo: Repository, tree_id: bytes, prefix: bytes = b"/", *, descend: Descend | None = None,
) -> Iterator[tuple[bytes, Node]]:
    """Yield ``(path, node)`` for every node below ``tree_id``, depth first.

    ``descend(path, node)`` is asked for each directory after it was yielded; returning False
    skips its contents (its subtree is not even loaded). Iterative, so deep trees are fine.
    """
    stack: list[tuple[bytes, Iterator[Node]]] = [(prefix, iter(load_sorted(repo, tree_id)))]
    while stack:
        pfx, it = stack[-1]
        node = next(it, None)
        if node is None:
            stack.pop()
            continue
        path = join(pfx, node.name)
        yield path, node
        if node.type == "dir" and (descend is None or descend(path, node)):
            stack.append((path, iter(load_sorted(repo, subtree_of(node, path)))))


# ------------------------------------------------------------------------------------ paths
def clean(p: bytes) -> bytes:
    """Go's path.Clean for slash paths (a leading "//" collapses too, unlike posixpath)."""
    if not p:
        return b"."
    c = posixpath.normpath(p)
    if c.startswith(b"//"):
        c = b"/" + c.lstrip(b"/")
    return c


def has_path_prefix(base: bytes, p: bytes) -> bool:
    """True if ``p`` is ``base`` or lies below it (restic's fs.HasPathPrefix)."""
    if base.startswith(b"/") != p.startswith(b"/"):
        return False
    base, p = clean(base), clean(p)
    if base == p:
        return True
    if base == b"/":
        return True
    if base == b".":
        return not p.startswith(b"/") and p != b".." and not p.startswith(b"../")
    return p.startswith(base + b"/")


def split_components(subpath: str | bytes) -> list[bytes]:
    raw = subpath.encode("utf-8", "surrogateescape") if isinstance(subpath, str) else subpath
    return [c for c in clean(raw).split(b"/") if c and c != b"."]


def find_node(repo: Repository, tree_id: bytes, subpath: str | bytes) -> Node | None:
    """The node at ``subpath`` (relative to the tree, leading "/" allowed), or None."""
    comps = split_components(subpath)
    if not comps:
        return None
    cur = tree_id
    node: Node | None = None
    for i, name in enumerate(comps):
        node = next((n for n in repo.load_tree(cur) if n.name == name), None)
        if node is None:
            return None
        if i < len(comps) - 1:
            if node.type != "dir":
                return None
            cur = subtree_of(node, name)
    return node


def find_tree(repo: Repository, tree_id: bytes, subpath: str | bytes) -> bytes:
    """The tree ID of directory ``subpath`` below ``tree_id`` (restic's FindTreeDirectory)."""
    cur = tree_id
    done = b""
    for name in split_components(subpath):
        done = join(done, name) if done else name
        node = next((n for n in repo.load_tree(cur) if n.name == name), None)
        shown = done.decode("utf-8", "replace")
        if node is None:
            raise FormatError(f"path {shown}: not found")
        if node.type != "dir" or node.subtree is None:
            raise FormatError(f"path {shown}: not a directory")
        cur = node.subtree
    return cur


# ------------------------------------------------------------------------------------ ls
def list_tree(
    repo: Repository, tree_id: bytes, dirs: Sequence[bytes] = (), *, recursive: bool = False,
) -> Iterator[tuple[bytes, Node]]:
    """What ``restic ls SNAPSHOT [DIR...]`` prints.

    Without ``dirs`` every node is listed. With ``dirs`` (absolute paths) a given dir is listed
    with its direct children; ``recursive`` lists everything below it too. Directories that
    are not on the way to a given dir are not loaded at all.
    """
    if not dirs:
        yield from walk(repo, tree_id)
        return

    def within(path: bytes) -> bool:
        return any(has_path_prefix(d, path) for d in dirs)

    def approaching(path: bytes) -> bool:
        return any(has_path_prefix(path, d) for d in dirs)

    def descend(path: bytes, node: Node) -> bool:
        return (recursive and within(path)) or approaching(path)

    for path, node in walk(repo, tree_id, descend=descend):
        if within(path):
            yield path, node
