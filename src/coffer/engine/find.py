"""Finding files by name pattern, and blobs/trees/packs by ID, in snapshots (``restic find``).

Patterns follow restic's ``filter.Match``: Go ``filepath.Match`` per path component, ``**`` for
any number of components. A pattern starting with ``/`` is anchored at the snapshot root; any
other pattern matches any run of consecutive components ending anywhere, so ``*.txt`` matches
a base name and ``sub/*.bin`` matches ``/any/where/sub/x.bin``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field

from coffer.engine.treewalk import allow_deep_trees, join, load_sorted, subtree_of
from coffer.errors import BackendError, FormatError, UsageError
from coffer.store.backend.base import FileType
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.tree import Node
from coffer.store.repository import Repository
from coffer.util import gotime


class BadPattern(UsageError):
    """A pattern Go's filepath.Match would reject."""


# --------------------------------------------------------------------------- Go filepath.Match
def _component_regex(pat: str) -> re.Pattern[str]:
    try:
        return _component_regex_cached(pat)
    except re.error as e:  # pragma: no cover - the translation below should never produce this
        raise BadPattern(f"invalid pattern {pat!r}: {e}") from None


@functools.lru_cache(maxsize=4096)
def _component_regex_cached(pat: str) -> re.Pattern[str]:
    """Translate one Go ``filepath.Match`` pattern (no separators) to a regex, with Go's errors."""
    out: list[str] = []
    i, n = 0, len(pat)

    def esc(j: int) -> tuple[str, int]:
        # Go's getEsc: a class member, maybe backslash-escaped; '-' and ']' must be escaped.
        if j >= n or pat[j] in "-]":
            raise BadPattern(f"syntax error in pattern {pat!r}")
        if pat[j] == "\\":
            j += 1
            if j >= n:
                raise BadPattern(f"syntax error in pattern {pat!r}")
        return pat[j], j + 1

    while i < n:
        c = pat[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise BadPattern(f"syntax error in pattern {pat!r}")
            out.append(re.escape(pat[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            neg = i < n and pat[i] == "^"
            if neg:
                i += 1
            ranges: list[tuple[str, str]] = []
            nrange = 0
            while True:
                if i < n and pat[i] == "]" and nrange > 0:
                    i += 1
                    break
                lo, i = esc(i)
                hi = lo
                if i < n and pat[i] == "-":
                    hi, i = esc(i + 1)
                if i >= n:
                    raise BadPattern(f"syntax error in pattern {pat!r}")
                if lo <= hi:
                    ranges.append((lo, hi))
                nrange += 1
            body = "".join(re.escape(lo) if lo == hi else re.escape(lo) + "-" + re.escape(hi) for lo, hi in ranges)
            if body:
                out.append("[" + ("^" if neg else "") + body + "]")
            else:
                out.append("." if neg else "(?!)")
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("(?s:" + "".join(out) + r")\Z")


@dataclass(frozen=True, slots=True)
class _Part:
    pattern: str  # "/" for the root of an absolute pattern, "" for "**"
    simple: bool

    def matches(self, s: str) -> bool:
        if self.simple:
            return self.pattern == s
        return _component_regex(self.pattern).match(s) is not None


def split_path(p: str) -> list[str]:
    """Path components; an absolute path starts with the component "/" (restic's splitPath)."""
    parts = p.split("/")
    if parts[0] == "":
        parts[0] = "/"
    return parts


def _go_clean(p: str) -> str:
    from coffer.engine.treewalk import clean

    return clean(p.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class GlobPattern:
    original: str
    parts: tuple[_Part, ...]

    @classmethod
    def compile(cls, pattern: str) -> GlobPattern:
        parts = []
        for comp in split_path(_go_clean(pattern)):
            simple = not any(ch in comp for ch in "\\[]*?")
            if comp == "**":
                comp = ""
            elif not simple:
                _component_regex(comp)  # reject malformed patterns up front
            parts.append(_Part(comp, simple))
        return cls(pattern, tuple(parts))

    def match(self, path: str) -> bool:
        if not self.original:
            return True
        return _match(self.parts, split_path(path))

    def child_match(self, path: str) -> bool:
        """True if something below ``path`` could still match (restic's ChildMatch)."""
        if not self.original:
            return True
        parts = self.parts
        if parts[0].pattern != "/":
            return True  # a relative pattern can match at any depth
        strs = split_path(path)
        pos = _double_wildcard(parts)
        if pos >= 0 and len(strs) >= pos:
            strs = strs[:pos]
        k = min(len(strs), len(parts))
        return _match(parts[:k], strs)


def _double_wildcard(parts: tuple[_Part, ...]) -> int:
    for i, p in enumerate(parts):
        if p.pattern == "":
            return i
    return -1


_STAR = _Part("*", False)


def _match(parts: tuple[_Part, ...], strs: list[str]) -> bool:
    pos = _double_wildcard(parts)
    if pos >= 0:
        # Expand "**" into 0, 1, 2, ... single-component wildcards.
        for i in range(0, len(strs) - len(parts) + 2):
            if _match(parts[:pos] + (_STAR,) * i + parts[pos + 1 :], strs):
                return True
        return False
    if not parts:
        return not strs
    if len(parts) > len(strs):
        return False
    min_off, max_off = 0, len(strs) - len(parts)
    if parts[0].pattern == "/":
        max_off = 0
    elif strs[0] == "/":
        min_off = 1  # a relative pattern never matches the root marker
    for off in range(max_off, min_off - 1, -1):
        if all(parts[i].matches(strs[off + i]) for i in range(len(parts) - 1, -1, -1)):
            return True
    return False


def match(pattern: str, path: str) -> bool:
    return GlobPattern.compile(pattern).match(path)


def child_match(pattern: str, path: str) -> bool:
    return GlobPattern.compile(pattern).child_match(path)


# --------------------------------------------------------------------------- by name
@dataclass
class NameQuery:
    """What to look for: any of ``patterns``, optionally bounded by modification time."""

    patterns: list[str]
    ignore_case: bool = False
    oldest_ns: int | None = None
    newest_ns: int | None = None
    _compiled: list[GlobPattern] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        pats = [p.lower() for p in self.patterns] if self.ignore_case else list(self.patterns)
        self._compiled = [GlobPattern.compile(p) for p in pats]

    def _norm(self, path: bytes) -> str:
        s = path.decode("utf-8", "surrogateescape")
        return s.lower() if self.ignore_case else s

    def matches(self, path: bytes) -> bool:
        s = self._norm(path)
        return any(p.match(s) for p in self._compiled)

    def child_may_match(self, path: bytes) -> bool:
        s = self._norm(path)
        return any(p.child_match(s) for p in self._compiled)

    def time_ok(self, node: Node) -> bool:
        if self.oldest_ns is None and self.newest_ns is None:
            return True
        try:
            t = gotime.parse_ns(node.mtime)
        except ValueError:
            return False
        if self.oldest_ns is not None and t < self.oldest_ns:
            return False
        return not (self.newest_ns is not None and t > self.newest_ns)


class NameFinder:
    """Runs one NameQuery over many snapshots.

    A directory whose walk found nothing is remembered by (tree ID, path): the same tree at the
    same path in a later snapshot cannot match either (matching depends only on path and node),
    so it is not loaded again. Snapshots of the same source share most trees, so searching many
    snapshots costs little more than searching one.
    """

    def __init__(self, repo: Repository, query: NameQuery) -> None:
        allow_deep_trees()
        self.repo = repo
        self.query = query
        self._barren: set[tuple[bytes, bytes]] = set()

    def search(self, tree_id: bytes) -> Iterator[tuple[bytes, Node]]:
        yield from self._walk(tree_id, b"/")

    def _walk(self, tree_id: bytes, prefix: bytes) -> Generator[tuple[bytes, Node], None, bool]:
        q = self.query
        found = False
        for node in load_sorted(self.repo, tree_id):
            path = join(prefix, node.name)
            hit = q.matches(path) and q.time_ok(node)
            if hit:
                found = True
                yield path, node
            if node.type != "dir" or not (hit or q.child_may_match(path)):
                continue
            sub = subtree_of(node, path)
            key = (sub, path)
            if key in self._barren:
                continue
            if (yield from self._walk(sub, path)):
                found = True
            else:
                self._barren.add(key)
        return found


# --------------------------------------------------------------------------- by ID
@dataclass(frozen=True, slots=True)
class IdHit:
    kind: str  # "blob" or "tree"
    id: bytes
    path: bytes  # the file holding the blob, or the directory whose subtree is the tree
    parent_tree: bytes | None  # the tree listing that file (blobs only)


class IdSet:
    """Full IDs and ID prefixes (hex) to look for."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.full: set[bytes] = set()
        self.prefixes: list[str] = []
        for s in ids:
            s = s.lower()
            if not s or any(c not in "0123456789abcdef" for c in s):
                raise UsageError(f"invalid ID {s!r}")
            if len(s) == 64:
                self.full.add(bytes.fromhex(s))
            else:
                self.prefixes.append(s)

    def __contains__(self, id_: bytes) -> bool:
        if id_ in self.full:
            return True
        if self.prefixes:
            h = id_.hex()
            return any(h.startswith(p) for p in self.prefixes)
        return False

    def __bool__(self) -> bool:
        return bool(self.full or self.prefixes)


class IdFinder:
    """Finds where data blobs and/or trees are used. Subtrees known to hold none are skipped."""

    def __init__(self, repo: Repository, blobs: IdSet | None = None, trees: IdSet | None = None) -> None:
        allow_deep_trees()
        self.repo = repo
        self.blobs = blobs
        self.trees = trees
        self._barren: set[bytes] = set()

    def search(self, tree_id: bytes) -> Iterator[IdHit]:
        yield from self._walk(tree_id, b"/")

    def _walk(self, tree_id: bytes, prefix: bytes) -> Generator[IdHit, None, bool]:
        found = False
        for node in load_sorted(self.repo, tree_id):
            path = join(prefix, node.name)
            if node.type == "file" and self.blobs is not None and node.content:
                for c in node.content:
                    if c in self.blobs:
                        found = True
                        yield IdHit("blob", c, path, tree_id)
            elif node.type == "dir":
                sub = subtree_of(node, path)
                if self.trees is not None and sub in self.trees:
                    found = True
                    yield IdHit("tree", sub, path, None)
                if sub in self._barren:
                    continue
                if (yield from self._walk(sub, path)):
                    found = True
                else:
                    self._barren.add(sub)
        return found


def blobs_of_packs(
    repo: Repository, packs: Iterable[str], warn: Callable[[str], None] | None = None,
) -> set[bytes]:
    """The blob IDs stored in the given packs (full IDs or prefixes).

    Each pack's own header is read; a pack missing from storage is looked up in the index
    instead (with a warning). Raises UsageError naming the packs found nowhere.
    """
    packs = list(packs)
    IdSet(packs)  # validates
    left = {p.lower() for p in packs}
    out: set[bytes] = set()
    for fi in repo.list_files(FileType.PACK):
        keys = {k for k in left if fi.name.startswith(k)}
        if not keys:
            continue
        left -= keys
        hdr = repo.read_pack_header(bytes.fromhex(fi.name), fi.size)
        out.update(b.id for b in hdr.blobs)
        if not left:
            return out
    from_index: set[str] = set()
    if left:
        for iid in sorted(repo.index.index_ids):
            try:
                idx = repo.load_index_file(iid)
            except (FormatError, BackendError):
                continue
            for p in idx.packs:
                name = p.id.hex()
                if any(name.startswith(k) for k in left):
                    from_index.add(name)
                    out.update(b.id for b in p.blobs)
        left = {k for k in left if not any(name.startswith(k) for name in from_index)}
        if from_index and warn:
            warn("some pack files are missing from the repository, getting their blobs from the repository "
                 f"index: [{' '.join(sorted(from_index))}]\n")
    if left:
        raise UsageError(f"unable to find pack(s): [{' '.join(sorted(left))}]")
    return out


def locate(repo: Repository, t: BlobType, ids: IdSet) -> list[tuple[bytes, PackedBlob]]:
    """(pack ID, blob) for every indexed blob of type ``t`` matching ``ids``."""
    out = []
    for bid in ids.full:
        loc = repo.index.lookup(t, bid)
        if loc is not None:
            out.append((loc.pack_id, loc.blob))
    if ids.prefixes:
        for pack_id, b in repo.index.items():
            if b.type == t and b.id not in ids.full and b.id in ids:
                out.append((pack_id, b))
    return out
