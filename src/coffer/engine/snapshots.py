"""Choosing snapshots the way restic's CLI does: ID prefixes, "latest", host/tag/path filters, groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from coffer.errors import CofferError, UsageError
from coffer.store.format.snapshot import Snapshot


class SnapshotNotFound(CofferError):
    """No snapshot matches the given ID or filter."""


@dataclass(frozen=True)
class SnapshotFilter:
    hosts: tuple[str, ...] = ()
    tags: tuple[tuple[str, ...], ...] = ()  # each --tag "a,b" is one AND-group; groups are OR-ed
    paths: tuple[str, ...] = ()

    @classmethod
    def build(cls, hosts: Iterable[str] = (), tags: Iterable[str] = (), paths: Iterable[str] = ()) -> SnapshotFilter:
        return cls(
            hosts=tuple(hosts),
            tags=tuple(tuple(t.strip() for t in group.split(",")) for group in tags),
            paths=tuple(paths),
        )

    def matches(self, s: Snapshot) -> bool:
        if self.hosts and s.hostname not in self.hosts:
            return False
        if self.tags and not any(_has_tags(s.tags, group) for group in self.tags):
            return False
        return not (self.paths and not all(p.rstrip("/") in s.paths or p in s.paths for p in self.paths))

    @property
    def empty(self) -> bool:
        return not (self.hosts or self.tags or self.paths)


def _has_tags(have: list[str], group: tuple[str, ...]) -> bool:
    """restic's HasTags: every tag of the group; an empty tag (``--tag ""``) matches untagged snapshots."""
    for t in group:
        if t == "" and not have:
            return True
        if t not in have:
            return False
    return True


def sort_by_time(snaps: Iterable[Snapshot]) -> list[Snapshot]:
    return sorted(snaps, key=lambda s: (s.time_ns, s.id))


def select(snaps: Sequence[Snapshot], flt: SnapshotFilter) -> list[Snapshot]:
    return sort_by_time(s for s in snaps if flt.matches(s))


def find(snaps: Sequence[Snapshot], spec: str, flt: SnapshotFilter | None = None) -> Snapshot:
    """One snapshot by unique ID prefix or ``latest`` (newest matching the filter)."""
    flt = flt or SnapshotFilter()
    if spec == "latest":
        cands = select(snaps, flt)
        if not cands:
            raise SnapshotNotFound("no snapshot found" + ("" if flt.empty else " matching the filter"))
        return cands[-1]
    spec = spec.lower()
    if not spec or any(c not in "0123456789abcdef" for c in spec):
        raise UsageError(f"invalid snapshot ID {spec!r}")
    matches = [s for s in snaps if s.id.hex().startswith(spec)]
    if not matches:
        raise SnapshotNotFound(f"no snapshot with ID prefix {spec!r} found")
    if len(matches) > 1:
        raise UsageError(f"snapshot ID prefix {spec!r} is ambiguous ({len(matches)} matches)")
    return matches[0]


def find_parent(
    snaps: Sequence[Snapshot], host: str, paths: Sequence[str], time_ns: int | None = None
) -> Snapshot | None:
    """Newest snapshot of the same host whose paths include every target, not newer than the backup
    (restic's rule; tags are ignored)."""
    want = set(paths)
    cands = [
        s for s in snaps
        if s.hostname == host and want.issubset(s.paths) and (time_ns is None or s.time_ns <= time_ns)
    ]
    return sort_by_time(cands)[-1] if cands else None


@dataclass(frozen=True)
class GroupKey:
    host: str | None = None
    paths: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, object]:
        return {"hostname": self.host, "paths": list(self.paths) if self.paths is not None else None,
                "tags": list(self.tags) if self.tags is not None else None}


@dataclass
class Group:
    key: GroupKey
    snapshots: list[Snapshot] = field(default_factory=list)


def parse_group_by(spec: str) -> tuple[bool, bool, bool]:
    host = paths = tags = False
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "host":
            host = True
        elif part == "paths":
            paths = True
        elif part == "tags":
            tags = True
        else:
            raise UsageError(f"unknown grouping option {part!r} (use host, paths, tags)")
    return host, paths, tags


def group(snaps: Iterable[Snapshot], spec: str) -> list[Group]:
    by_host, by_paths, by_tags = parse_group_by(spec)
    groups: dict[GroupKey, Group] = {}
    for s in sort_by_time(snaps):
        k = GroupKey(
            s.hostname if by_host else None,
            tuple(sorted(s.paths)) if by_paths else None,
            tuple(sorted(s.tags)) if by_tags else None,
        )
        groups.setdefault(k, Group(k)).snapshots.append(s)
    return list(groups.values())
