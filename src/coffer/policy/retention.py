"""Which snapshots to keep: restic 0.14's ``forget`` policy, as a pure function of values.

The rules are restic's (``internal/restic/snapshot_policy.go`` at v0.14.0), reproduced exactly so a
policy moved from restic to coffer keeps and removes the same snapshots:

* Snapshots are grouped (by default by host and paths) and the policy applies to each group alone.
* Within a group, snapshots are visited newest first. Each ``keep-<bucket> N`` counter keeps a
  snapshot when its bucket value (hour, day, ISO week, month, year, or "every snapshot" for
  ``last``) differs from that of the previous snapshot the same counter kept, until N were kept.
  So the newest snapshot of each period is the one kept.
* Buckets are computed in the snapshot's **recorded** local time (the UTC offset stored in its time
  string), not in the zone of the machine running forget: a backup made at 23:30 in New York belongs
  to that day wherever the policy runs. Weeks are ISO weeks.
* ``keep-within D`` keeps every snapshot newer than "latest minus D", where latest is the newest
  snapshot that is not in the future and D is calendar arithmetic (years, months, days as Go's
  ``AddDate``, then hours). ``keep-within-<bucket> D`` keeps the newest snapshot of each bucket
  inside that window, without a count.
* ``keep-tag a,b`` keeps every snapshot carrying all of a and b (``""`` matches untagged ones).
* An empty policy keeps everything ("policy is empty").

Everything is decided here and nothing is done: the result names, for every snapshot, whether it
stays and why (``matches``, and the ``counters`` left after it), so ``--dry-run``, ``--json`` and
reports all come from the same value. No I/O; the current time and the local-zone lookup (needed
only to reproduce Go's daylight-saving arithmetic) are parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coffer.errors import UsageError
from coffer.store.format.snapshot import Snapshot
from coffer.util import gotime

NS = gotime.NS
_EPOCH = datetime(1970, 1, 1)

TagList = tuple[str, ...]


# ---------------------------------------------------------------------------------------- durations
@dataclass(frozen=True, slots=True)
class Duration:
    """restic's calendar duration (``1y2m3d4h``): years, months, days and hours, nothing finer."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, s: str) -> Duration:
        """Parse as restic's ``ParseDuration`` does; a unit given twice counts once (the last)."""
        rest = s.strip()
        vals = {"y": 0, "m": 0, "d": 0, "h": 0}
        while rest:
            m = re.match(r"(-?)(\d*)", rest)
            assert m is not None
            digits = m.group(2)
            if not digits:
                raise UsageError(f"invalid duration {s!r}: no number found")
            num = int(digits) * (-1 if m.group(1) else 1)
            rest = rest[m.end():]
            if not rest:
                raise UsageError(f"invalid duration {s!r}: no unit found after number {num}")
            unit = rest[0]
            if unit not in vals:
                raise UsageError(f"invalid duration {s!r}: invalid unit {unit!r} found after number {num}",
                                 hint="use y, m, d and h, e.g. 1y6m, 30d or 12h")
            vals[unit] = num
            rest = rest[1:]
        return cls(vals["y"], vals["m"], vals["d"], vals["h"])

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        return "".join(f"{v}{u}" for v, u in ((self.years, "y"), (self.months, "m"), (self.days, "d"),
                                              (self.hours, "h")) if v)


def parse_tag_list(s: str) -> TagList:
    """One ``--tag``/``--keep-tag`` value: comma-separated tags, each stripped (restic's splitTagList)."""
    return tuple(t.strip() for t in s.split(","))


def has_tags(snapshot_tags: Sequence[str], wanted: TagList) -> bool:
    """restic's ``HasTags``: all of ``wanted``; an empty tag matches a snapshot without tags."""
    for t in wanted:
        if t == "" and not snapshot_tags:
            return True
        if t not in snapshot_tags:
            return False
    return True


# ---------------------------------------------------------------------------------------- the policy
@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration = Duration()
    within_hourly: Duration = Duration()
    within_daily: Duration = Duration()
    within_weekly: Duration = Duration()
    within_monthly: Duration = Duration()
    within_yearly: Duration = Duration()
    keep_tags: tuple[TagList, ...] = ()

    @property
    def empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        withins = (self.within, self.within_hourly, self.within_daily, self.within_weekly, self.within_monthly,
                   self.within_yearly)
        return not self.keep_tags and not any(counts) and all(w.zero for w in withins)

    def __str__(self) -> str:
        """restic's policy description (printed after ``Applying Policy: ``)."""
        keeps = [f"{n} {label}" for n, label in (
            (self.last, "latest"), (self.hourly, "hourly"), (self.daily, "daily"), (self.weekly, "weekly"),
            (self.monthly, "monthly"), (self.yearly, "yearly")) if n > 0]
        keepw = [f"{label} snapshots within {d}" for d, label in (
            (self.within_hourly, "hourly"), (self.within_daily, "daily"), (self.within_weekly, "weekly"),
            (self.within_monthly, "monthly"), (self.within_yearly, "yearly")) if not d.zero]
        s = f"{', '.join(keeps)} snapshots" if keeps else ""
        if keepw:
            s = (s + ", " if s else "") + ", ".join(keepw)
        if self.keep_tags:
            s = (s + " and " if s else "") + "all snapshots with tags " + format_tag_lists(self.keep_tags)
        if not self.within.zero:
            s = (s + " and " if s else "") + f"all snapshots within {self.within} of the newest"
        return "keep " + s


def format_tag_list(tags: TagList) -> str:
    """Go's ``%v`` of a restic TagList: ``[a, b]``."""
    return "[" + ", ".join(tags) + "]"


def format_tag_lists(lists: Iterable[TagList]) -> str:
    """Go's ``%v`` of restic TagLists: ``[[a, b] [c]]``."""
    return "[" + " ".join(format_tag_list(t) for t in lists) + "]"


# ---------------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Counters:
    """How many more snapshots each counting rule may still keep (restic's ``counters``)."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def as_dict(self) -> dict[str, int]:
        """The JSON object restic prints: zero counters are left out."""
        return {k: v for k, v in (("last", self.last), ("hourly", self.hourly), ("daily", self.daily),
                                  ("weekly", self.weekly), ("monthly", self.monthly), ("yearly", self.yearly)) if v}


@dataclass(frozen=True, slots=True)
class KeepReason:
    snapshot: Snapshot
    matches: tuple[str, ...]
    counters: Counters


@dataclass(frozen=True, slots=True)
class GroupBy:
    host: bool = True
    paths: bool = True
    tags: bool = False

    @classmethod
    def parse(cls, spec: str) -> GroupBy:
        """``host``/``hosts``, ``path``/``paths``, ``tag``/``tags``, comma-separated; ``""`` = no grouping."""
        host = paths = tags = False
        for opt in spec.split(","):
            if opt in ("host", "hosts"):
                host = True
            elif opt in ("path", "paths"):
                paths = True
            elif opt in ("tag", "tags"):
                tags = True
            elif opt != "":
                raise UsageError(f"unknown grouping option: '{opt}'", hint="use host, paths and/or tags")
        return cls(host, paths, tags)

    @property
    def any(self) -> bool:
        return self.host or self.paths or self.tags


@dataclass(frozen=True, slots=True)
class GroupKey:
    """What the snapshots of one group share; unused parts are ``""``/None, as in restic's JSON."""

    hostname: str = ""
    paths: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return not self.hostname and self.paths is None and self.tags is None


@dataclass(frozen=True, slots=True)
class GroupDecision:
    """The policy's verdict for one group: ``keep`` and ``remove`` newest first, one reason per kept one."""

    key: GroupKey
    keep: tuple[Snapshot, ...]
    remove: tuple[Snapshot, ...]
    reasons: tuple[KeepReason, ...]


@dataclass(frozen=True, slots=True)
class ForgetDecision:
    policy: RetentionPolicy
    groups: tuple[GroupDecision, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def remove(self) -> list[Snapshot]:
        return [s for g in self.groups for s in g.remove]

    @property
    def keep(self) -> list[Snapshot]:
        return [s for g in self.groups for s in g.keep]


# ---------------------------------------------------------------------------------------- time helpers
@dataclass(frozen=True, slots=True)
class _When:
    """A snapshot time: the instant, its recorded UTC offset, and whether Go would place it in Local."""

    ns: int
    offset: int
    local: bool

    def wall(self) -> datetime:
        """The wall-clock time in the recorded offset (naive; whole seconds are enough for buckets)."""
        try:
            return _EPOCH + timedelta(seconds=self.ns // NS + self.offset)
        except OverflowError:  # restic clamps years to 0..9999; datetime has no year 0
            return datetime.min if self.ns < 0 else datetime.max


def _when(s: Snapshot, local_offset: Callable[[int], int]) -> _When:
    t = gotime.parse(s.time)
    # Go's time.Parse puts a time in the Local zone when its offset is Local's offset at that instant
    # ("Z" always means UTC). Only calendar arithmetic across a DST change can tell the difference.
    is_utc = s.time.endswith(("Z", "z"))
    local = not is_utc and local_offset(t.ns // NS) == t.offset
    return _When(t.ns, t.offset, local)


def _bucket_hour(w: datetime) -> int:
    return w.year * 1_000_000 + w.month * 10_000 + w.day * 100 + w.hour


def _bucket_day(w: datetime) -> int:
    return w.year * 10_000 + w.month * 100 + w.day


def _bucket_week(w: datetime) -> int:
    year, week, _ = w.isocalendar()
    return year * 100 + week


def _bucket_month(w: datetime) -> int:
    return w.year * 100 + w.month


def _bucket_year(w: datetime) -> int:
    return w.year


def add_date(when: _When, years: int, months: int, days: int, local_offset: Callable[[int], int]) -> int:
    """Go's ``t.AddDate(years, months, days)`` as epoch ns: calendar fields overflow and normalise
    (31 March minus a month is 3 March), the wall clock is kept, and in the Local zone the offset
    of the resulting date applies (Go's ``time.Date``)."""
    sec, frac = divmod(when.ns, NS)
    wall = sec + when.offset
    days_since, tod = divmod(wall, 86400)
    w = _EPOCH + timedelta(days=days_since)
    y, m = w.year + years, w.month + months
    y += (m - 1) // 12
    m = (m - 1) % 12 + 1
    # day overflow (or underflow) rolls over through a plain day count
    new_days = (datetime(y, m, 1) - _EPOCH).days + (w.day - 1) + days
    local_sec = new_days * 86400 + tod
    if not when.local:
        return (local_sec - when.offset) * NS + frac
    # Go's Date(): guess the offset at the local seconds taken as UTC, and correct it once
    # (only when that guess is not zero, exactly as Go does).
    off = local_offset(local_sec)
    if off == 0:
        return local_sec * NS + frac
    off2 = local_offset(local_sec - off)
    return (local_sec - (off2 if off2 != off else off)) * NS + frac


def _within_threshold(latest: _When | None, d: Duration, local_offset: Callable[[int], int]) -> int | None:
    """Epoch ns after which a snapshot is "within" ``d`` of ``latest``; None means every snapshot."""
    if latest is None:
        return None  # restic then measures from Go's zero time (year 1): everything is within
    try:
        t = add_date(latest, -d.years, -d.months, -d.days, local_offset)
    except (ValueError, OverflowError):  # beyond years 1..9999: before or after every snapshot
        earlier = (d.years, d.months, d.days) > (0, 0, 0)
        return None if earlier else 1 << 62
    return t - d.hours * 3600 * NS


# ---------------------------------------------------------------------------------------- the decision
@dataclass(slots=True)
class _Counter:
    """One ``keep-<bucket> N`` rule while a group is walked: how many it may still keep, and the
    bucket value of the snapshot it kept last (``bucket`` None = every snapshot is its own bucket)."""

    remaining: int
    bucket: Callable[[datetime], int] | None
    reason: str
    last: int | None = None


def apply_policy(
    snapshots: Sequence[Snapshot], policy: RetentionPolicy, *, now_ns: int,
    local_offset: Callable[[int], int] = gotime.local_offset,
) -> tuple[list[Snapshot], list[Snapshot], list[KeepReason]]:
    """restic's ``ApplyPolicy`` for one group: (keep, remove, reasons), newest first.

    The input order only matters for snapshots with the same time (the sort is stable).
    """
    whens = {id(s): _when(s, local_offset) for s in snapshots}
    ordered = sorted(snapshots, key=lambda s: -whens[id(s)].ns)
    keep: list[Snapshot] = []
    remove: list[Snapshot] = []
    reasons: list[KeepReason] = []
    if policy.empty:
        return ordered, [], [KeepReason(s, ("policy is empty",), Counters()) for s in ordered]
    if not ordered:
        return [], [], []

    latest: _When | None = None
    for s in ordered:
        w = whens[id(s)]
        if w.ns < now_ns and (latest is None or w.ns > latest.ns):
            latest = w

    counted = [
        _Counter(policy.last, None, "last snapshot"),
        _Counter(policy.hourly, _bucket_hour, "hourly snapshot"),
        _Counter(policy.daily, _bucket_day, "daily snapshot"),
        _Counter(policy.weekly, _bucket_week, "weekly snapshot"),
        _Counter(policy.monthly, _bucket_month, "monthly snapshot"),
        _Counter(policy.yearly, _bucket_year, "yearly snapshot"),
    ]
    windows: list[tuple[Duration, Callable[[datetime], int], str]] = [
        (policy.within_hourly, _bucket_hour, "hourly within"),
        (policy.within_daily, _bucket_day, "daily within"),
        (policy.within_weekly, _bucket_week, "weekly within"),
        (policy.within_monthly, _bucket_month, "monthly within"),
        (policy.within_yearly, _bucket_year, "yearly within"),
    ]
    window_last: list[int | None] = [None] * len(windows)
    window_from = [None if d.zero else _within_threshold(latest, d, local_offset) for d, _, _ in windows]
    within_from = None if policy.within.zero else _within_threshold(latest, policy.within, local_offset)

    for nr, s in enumerate(ordered):
        w = whens[id(s)]
        wall = w.wall()
        matches: list[str] = []
        for tl in policy.keep_tags:
            if has_tags(s.tags, tl):
                matches.append(f"has tags {format_tag_list(tl)}")
        if not policy.within.zero and (within_from is None or w.ns > within_from):
            matches.append(f"within {policy.within}")
        for b in counted:
            if b.remaining > 0:
                val = nr if b.bucket is None else b.bucket(wall)
                if val != b.last:
                    b.last = val
                    b.remaining -= 1
                    matches.append(b.reason)
        for i, (d, fn, label) in enumerate(windows):
            if d.zero:
                continue
            start = window_from[i]
            if start is None or w.ns > start:
                val = fn(wall)
                if val != window_last[i]:
                    window_last[i] = val
                    matches.append(f"{label} {d}")
        if matches:
            keep.append(s)
            reasons.append(KeepReason(s, tuple(matches), Counters(*(b.remaining for b in counted))))
        else:
            remove.append(s)
    return keep, remove, reasons


def group_snapshots(snapshots: Iterable[Snapshot], by: GroupBy) -> dict[GroupKey, list[Snapshot]]:
    """restic's ``GroupSnapshots``: groups in order of first appearance, members in input order.

    Tags in a key are sorted; paths are compared sorted (restic sorts them in place).
    """
    groups: dict[GroupKey, list[Snapshot]] = {}
    for s in snapshots:
        key = GroupKey(
            hostname=s.hostname if by.host else "",
            paths=tuple(sorted(s.paths)) if by.paths and s.paths else None,
            tags=tuple(sorted(s.tags)) if by.tags and s.tags else None,
        )
        groups.setdefault(key, []).append(s)
    return groups


def decide(
    snapshots: Iterable[Snapshot], policy: RetentionPolicy, by: GroupBy, *, now_ns: int,
    local_offset: Callable[[int], int] = gotime.local_offset,
) -> ForgetDecision:
    """The whole ``forget`` decision: group, then apply the policy to each group.

    Snapshots dated in the future are kept out of the "latest" reference (as restic does) and
    named in ``warnings``: a clock that was wrong, or someone planting snapshots to push real ones
    out of a ``keep-within`` window.
    """
    snaps = list(snapshots)
    warnings = tuple(
        f"snapshot {s.id.hex()[:8]} is dated in the future ({s.time}); it does not count as the latest"
        for s in snaps if gotime.parse_ns(s.time) > now_ns
    )
    if policy.empty:
        return ForgetDecision(policy, (), warnings)
    out = []
    for key, members in group_snapshots(snaps, by).items():
        keep, remove, reasons = apply_policy(members, policy, now_ns=now_ns, local_offset=local_offset)
        out.append(GroupDecision(key, tuple(keep), tuple(remove), tuple(reasons)))
    return ForgetDecision(policy, tuple(out), warnings)
