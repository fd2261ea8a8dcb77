"""Go's RFC3339Nano time strings, kept to the nanosecond.

restic writes every timestamp (node times, snapshot time, lock time) through Go's
``time.Time.MarshalJSON``: RFC3339 with up to nine fractional digits, trailing zeros dropped, and the
writer's local UTC offset ("Z" when the offset is zero). Python's ``datetime`` keeps only
microseconds, so times live here as integer nanoseconds since the epoch plus the offset in seconds.
Reproducing the exact string matters: it is part of the tree bytes, hence of the tree ID.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass

NS = 1_000_000_000

_RFC3339 = re.compile(
    r"^(\d{4,})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)

_offset_cache: dict[int, int] = {}
# A zone that is UTC all year needs no lookup at all (servers usually run in UTC).
_ALWAYS_UTC = time.timezone == 0 and time.altzone == 0 and not time.daylight


def local_offset(sec: int) -> int:
    """UTC offset in seconds of the local zone at ``sec`` (honours DST, like Go's time.Local)."""
    if _ALWAYS_UTC:
        return 0
    # Offsets change rarely; caching per hour keeps this off the per-file cost of a backup.
    hour = sec // 3600
    off = _offset_cache.get(hour)
    if off is None:
        try:
            off = time.localtime(sec).tm_gmtoff
        except (OverflowError, OSError, ValueError):
            off = 0
        if len(_offset_cache) > 4096:
            _offset_cache.clear()
        _offset_cache[hour] = off
    return off


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """Proleptic Gregorian (year, month, day) of day ``z`` since 1970-01-01, for any integer."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Inverse of ``_civil_from_days``; out-of-range days roll over like ``calendar.timegm``."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


_day_cache: dict[int, str] = {}


def format_ns(ns: int, offset: int | None = None) -> str:
    """Format epoch nanoseconds as Go's RFC3339Nano; ``offset=None`` means the local zone."""
    sec, frac = divmod(ns, NS)
    if offset is None:
        offset = 0 if _ALWAYS_UTC else local_offset(sec)
    days, tod = divmod(sec + offset, 86400)
    # Fast path: the date part of the day is cached (a backup formats two times per file).
    date = _day_cache.get(days)
    if date is not None:
        hh, rem = divmod(tod, 3600)
        s = "%sT%02d:%02d:%02d" % (date, hh, rem // 60, rem % 60)
        if frac:
            s += ("." + "%09d" % frac).rstrip("0")
        if offset == 0:
            return s + "Z"
        sign = "+" if offset > 0 else "-"
        h, m = divmod(abs(offset) // 60, 60)
        return "%s%s%02d:%02d" % (s, sign, h, m)
    year, mon, day = _civil_from_days(days)
    if not 0 <= year <= 9999:
        # Go cannot marshal such years; restic's FixTime sets the year to 0 or 9999 and keeps the
        # rest (AddDate, so 29 February in a common year becomes 1 March).
        year = 0 if year < 0 else 9999
        if mon == 2 and day == 29 and not _is_leap(year):
            mon, day = 3, 1
    if 1 <= year <= 9999 and len(_day_cache) < 100_000:
        _day_cache[days] = "%04d-%02d-%02d" % (year, mon, day)
    hh, rem = divmod(tod, 3600)
    s = "%04d-%02d-%02dT%02d:%02d:%02d" % (year, mon, day, hh, rem // 60, rem % 60)
    if frac:
        s += ("." + "%09d" % frac).rstrip("0")
    if offset == 0:
        return s + "Z"
    sign = "+" if offset > 0 else "-"
    h, m = divmod(abs(offset) // 60, 60)
    return "%s%s%02d:%02d" % (s, sign, h, m)


@dataclass(frozen=True, slots=True)
class GoTime:
    """A parsed timestamp: epoch nanoseconds and the UTC offset it was written with."""

    ns: int
    offset: int

    def format(self) -> str:
        return format_ns(self.ns, self.offset)

    @property
    def seconds(self) -> float:
        return self.ns / NS


# A restore parses two timestamps per file and directory; most share their date-and-time-to-the-second
# part or at least their zone with one parsed before, so the regular expression runs once per head.
_heads: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" (validated) -> its seconds as if written in UTC
_zones: dict[str, int] = {}  # "+HH:MM" (validated) -> offset seconds
_CACHE_MAX = 1 << 16


def _parse_cached(s: str) -> tuple[int, int] | None:
    """(epoch ns, offset) when the head and zone were seen before, else None (take the slow path)."""
    base = _heads.get(s[:19])
    if base is None:
        return None
    rest = s[19:]
    last = rest[-1:]
    if last == "Z" or last == "z":
        offset, frac = 0, rest[:-1]
    else:
        off = _zones.get(rest[-6:])
        if off is None:
            return None
        offset, frac = off, rest[:-6]
    if not frac:
        return (base - offset) * NS, offset
    digits = frac[1:]
    if frac[0] != "." or not 1 <= len(digits) <= 9 or not (digits.isascii() and digits.isdigit()):
        return None
    return (base - offset) * NS + int(digits) * 10 ** (9 - len(digits)), offset


_EPOCH_DAYS = datetime.date(1970, 1, 1).toordinal()
_from_iso = datetime.datetime.fromisoformat


def _parse_head(s: str) -> int | None:
    """The common layout's "YYYY-MM-DDTHH:MM:SS" as seconds (as if UTC), parsed in C; None for
    anything else (the regular expression decides: leap seconds, day 31 of a short month...)."""
    head = s[:19]
    if len(head) != 19 or head[4] != "-" or head[7] != "-" or head[13] != ":" or head[16] != ":":
        return None
    sep = head[10]
    if sep != "T":
        if sep != "t":
            return None
        head = head[:10] + "T" + head[11:]
    try:
        d = _from_iso(head)
    except ValueError:
        return None
    base = (d.toordinal() - _EPOCH_DAYS) * 86400 + d.hour * 3600 + d.minute * 60 + d.second
    if len(_heads) >= _CACHE_MAX:
        _heads.clear()
    _heads[s[:19]] = base
    return base


def _parse_slow(s: str) -> tuple[int, int]:
    if _parse_head(s) is not None:  # a new head of the common layout: cached, then parsed the fast way
        r = _parse_cached(s)
        if r is not None:
            return r
    return _parse_regex(s)


def _parse_regex(s: str) -> tuple[int, int]:
    """The reference parse (what every faster path must agree with)."""
    m = _RFC3339.fullmatch(s)
    if not m:
        raise ValueError(f"not an RFC3339 time: {s!r}")
    year, mon, day, hh, mm, ss = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    ns_frac = int(frac.ljust(9, "0")) if frac else 0
    if m.group(8):
        offset = 0
    else:
        offset = (int(m.group(10)) * 3600 + int(m.group(11)) * 60) * (1 if m.group(9) == "+" else -1)
    if not (1 <= mon <= 12 and 1 <= day <= 31 and hh <= 23 and mm <= 59 and ss <= 60):
        raise ValueError(f"time out of range: {s!r}")
    base = _days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss
    if m.end(6) == 19 and s.isascii():  # the common layout: remember its head (and zone)
        if len(_heads) >= _CACHE_MAX:
            _heads.clear()
        _heads[s[:19]] = base
        if m.group(9) and len(_zones) < 1024:
            _zones[s[m.start(9):]] = offset
    return (base - offset) * NS + ns_frac, offset


def parse(s: str) -> GoTime:
    """Parse an RFC3339(Nano) string; raises ValueError on anything else."""
    r = _parse_cached(s) or _parse_slow(s)
    return GoTime(r[0], r[1])


def parse_ns(s: str) -> int:
    r = _parse_cached(s) or _parse_slow(s)
    return r[0]


def now_ns() -> int:
    return time.time_ns()
