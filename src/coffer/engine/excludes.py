"""restic's exclude patterns: Go ``filepath.Match`` per path component, ``**`` across components.

A pattern starting with ``/`` is anchored at the root; any other pattern matches any run of
consecutive components (so ``*.tmp`` or ``cache/*`` match at any depth). ``!pattern`` re-includes
what an earlier pattern excluded.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from coffer.errors import UsageError

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


@functools.lru_cache(maxsize=4096)
def _component_regex(pat: str, icase: bool) -> re.Pattern[str]:
    """Translate one Go filepath.Match component pattern to a regex."""
    out = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pat[i]))
        elif c == "[":
            j = i + 1
            neg = j < n and pat[j] == "^"
            if neg:
                j += 1
            k = j
            while k < n and (pat[k] != "]" or k == j):
                if pat[k] == "\\":
                    k += 1
                k += 1
            if k >= n:
                raise UsageError(f"invalid exclude pattern {pat!r}: unterminated character class")
            body = pat[j:k].replace("\\", "\\\\")
            out.append("[" + ("^" if neg else "") + body + "]")
            i = k
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("(?s:" + "".join(out) + r")\Z", re.IGNORECASE if icase else 0)


@dataclass(frozen=True, slots=True)
class _Pattern:
    parts: tuple[str, ...]
    anchored: bool
    negate: bool
    icase: bool

    def matches(self, comps: list[str]) -> bool:
        return _match(self.parts, comps, self.anchored, self.icase)


def _match(parts: tuple[str, ...], comps: list[str], anchored: bool, icase: bool) -> bool:
    if "**" in parts:
        k = parts.index("**")
        head, tail = parts[:k], parts[k + 1 :]
        # "**" absorbs zero or more components: try every expansion that still fits.
        for extra in range(0, len(comps) - len(head) - len(tail) + 1):
            if _match(head + ("*",) * extra + tail, comps, anchored, icase):
                return True
        return False
    if len(parts) > len(comps):
        return False
    max_off = 0 if anchored else len(comps) - len(parts)
    for off in range(max_off, -1, -1):
        if all(_component_regex(p, icase).match(comps[off + i]) for i, p in enumerate(parts)):
            return True
    return False


def _compile(pattern: str, icase: bool) -> _Pattern | None:
    pattern = pattern.strip()
    if not pattern or pattern.startswith("#"):
        return None
    negate = pattern.startswith("!")
    if negate:
        pattern = pattern[1:]
    pattern = os.path.expandvars(pattern)
    anchored = pattern.startswith("/")
    parts = tuple(p for p in pattern.strip("/").split("/") if p)
    if icase:
        parts = tuple(p.lower() for p in parts)
    if not parts:
        return None
    return _Pattern(parts, anchored, negate, icase)


@dataclass
class ExcludeRules:
    patterns: list[_Pattern] = field(default_factory=list)
    exclude_caches: bool = False
    one_file_system: bool = False
    raw: list[str] = field(default_factory=list)  # as recorded in the snapshot's "excludes"

    @classmethod
    def build(
        cls, excludes: Iterable[str] = (), iexcludes: Iterable[str] = (), exclude_files: Iterable[str] = (),
        *, exclude_caches: bool = False, one_file_system: bool = False,
    ) -> ExcludeRules:
        rules = cls(exclude_caches=exclude_caches, one_file_system=one_file_system)
        for p in excludes:
            rules._add(p, False, record=True)  # restic records only --exclude values in the snapshot
        for p in iexcludes:
            rules._add(p, True)
        for fn in exclude_files:
            try:
                with open(fn, encoding="utf-8") as f:
                    for line in f:
                        rules._add(line.rstrip("\n"), False)
            except OSError as e:
                raise UsageError(f"cannot read exclude file {fn}: {e.strerror}") from None
        return rules

    def _add(self, p: str, icase: bool, record: bool = False) -> None:
        c = _compile(p, icase)
        if c is not None:
            self.patterns.append(c)
            if record:
                self.raw.append(p)

    def excluded(self, path: str) -> bool:
        """``path`` is the absolute path of an item, as text."""
        if not self.patterns:
            return False
        comps = [c for c in path.split("/") if c]
        lcomps: list[str] | None = None
        result = False
        for p in self.patterns:
            if p.negate != result:
                continue  # cannot change the outcome
            if p.icase:
                if lcomps is None:
                    lcomps = [c.lower() for c in comps]
                hit = p.matches(lcomps)
            else:
                hit = p.matches(comps)
            if hit:
                result = not p.negate
        return result

    @staticmethod
    def is_tagged_cache(dir_path: bytes) -> bool:
        try:
            with open(os.path.join(dir_path, CACHEDIR_TAG.encode()), "rb") as f:
                return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
        except OSError:
            return False
