"""Go RFC3339Nano times, to the nanosecond, with the writer's UTC offset."""

from __future__ import annotations

import calendar
import datetime as dt
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.util import gotime
from coffer.util.gotime import GoTime

NS = 1_000_000_000
WALL_MIN = -62135596800  # 0001-01-01T00:00:00 as seconds since the epoch
WALL_MAX = 253402300799  # 9999-12-31T23:59:59

offsets = st.integers(-1439, 1439).map(lambda m: m * 60)  # whole minutes, |offset| < 24 h


@st.composite
def wall_times(draw: st.DrawFn) -> tuple[int, int]:
    """(ns, offset) whose local wall time lies in years 1..9999."""
    offset = draw(offsets)
    wall = draw(st.integers(WALL_MIN, WALL_MAX))
    frac = draw(st.one_of(st.integers(0, NS - 1), st.sampled_from([0, 5, 500_000_000, 123_000_000, 999_999_999])))
    return (wall - offset) * NS + frac, offset


@settings(max_examples=200)
@given(wall_times())
def test_round_trip(t: tuple[int, int]) -> None:
    ns, offset = t
    s = gotime.format_ns(ns, offset)
    assert gotime.parse(s) == GoTime(ns, offset)
    assert gotime.parse(s).format() == s
    assert gotime.parse_ns(s) == ns


@settings(max_examples=200)
@given(wall_times())
def test_shape(t: tuple[int, int]) -> None:
    ns, offset = t
    s = gotime.format_ns(ns, offset)
    if "." in s:
        frac = s[20 : s.index("Z") if s.endswith("Z") else -6]
        assert 1 <= len(frac) <= 9 and not frac.endswith("0")  # trailing zeros dropped
    else:
        assert ns % NS == 0
    assert s.endswith("Z") == (offset == 0)


@settings(max_examples=300)
@given(
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.integers(-1439, 1439),
)
def test_matches_datetime(local: dt.datetime, minutes: int) -> None:
    """An independent oracle at microsecond precision: datetime's own calendar and isoformat."""
    tz = dt.timezone(dt.timedelta(minutes=minutes))
    aware = local.replace(tzinfo=tz)
    ns = calendar.timegm(aware.utctimetuple()) * NS + local.microsecond * 1000
    iso = aware.isoformat(timespec="microseconds")
    date_time, frac, zone = iso[:19], iso[20:26].rstrip("0"), iso[26:]
    expected = date_time + ("." + frac if frac else "") + ("Z" if minutes == 0 else zone)
    assert gotime.format_ns(ns, minutes * 60) == expected


@pytest.mark.parametrize(
    ("ns", "offset", "s"),
    [
        (0, 0, "1970-01-01T00:00:00Z"),
        (1_500_000_000, 0, "1970-01-01T00:00:01.5Z"),
        (1, 0, "1970-01-01T00:00:00.000000001Z"),
        (-1, 0, "1969-12-31T23:59:59.999999999Z"),
        (1_700_000_000_123_456_789, 3600, "2023-11-14T23:13:20.123456789+01:00"),
        (1_700_000_000 * NS, -1800, "2023-11-14T21:43:20-00:30"),
        (1_700_000_000 * NS, 19800, "2023-11-15T03:43:20+05:30"),
        (WALL_MIN * NS, 0, "0001-01-01T00:00:00Z"),
        (WALL_MAX * NS + NS - 1, 0, "9999-12-31T23:59:59.999999999Z"),
        (951782400 * NS, 0, "2000-02-29T00:00:00Z"),
    ],
)
def test_vectors(ns: int, offset: int, s: str) -> None:
    assert gotime.format_ns(ns, offset) == s
    assert gotime.parse(s) == GoTime(ns, offset)


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        # restic's FixTime: outside 0..9999 only the year changes (AddDate semantics)
        ("10000-06-07T08:09:10.5Z", "9999-06-07T08:09:10.5Z"),
        ("12345-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59.999999999Z"),
        ("10000-02-29T01:02:03Z", "9999-03-01T01:02:03Z"),  # 9999 has no 29 February
        ("0000-02-29T00:00:00Z", "0000-02-29T00:00:00Z"),  # year 0 exists and is a leap year
        ("0000-12-31T23:59:59.25+01:00", "0000-12-31T23:59:59.25+01:00"),
    ],
)
def test_years_outside_range_like_restic(wall: str, expected: str) -> None:
    t = gotime.parse(wall)
    assert gotime.format_ns(t.ns, t.offset) == expected


def test_negative_years_clamp_to_zero() -> None:
    year0 = gotime.parse("0000-03-04T05:06:07.8Z").ns
    one_year_earlier = year0 - 366 * 86400 * NS  # year -1 (a common year in between is fine here)
    assert gotime.format_ns(one_year_earlier, 0).startswith("0000-")
    assert gotime.format_ns(year0 - 10**6 * 86400 * NS, 0).startswith("0000-")


@pytest.mark.parametrize(
    "bad",
    [
        "", "2020-01-01", "2020-01-01 00:00:00Z", "2020-01-01T00:00:00", "2020-13-01T00:00:00Z",
        "2020-00-10T00:00:00Z", "2020-01-01T24:00:00Z", "2020-01-01T00:60:00Z", "2020-01-01T00:00:00.Z",
        "2020-01-01T00:00:00.1234567890Z", "2020-01-01T00:00:00+0100", "2020-01-01T00:00:00Z\n",
        " 2020-01-01T00:00:00Z", "20-01-01T00:00:00Z", "2020-1-01T00:00:00Z",
    ],
)
def test_parse_rejects(bad: str) -> None:
    # Warm the cache of heads and zones first: the cached path must reject what the slow one does.
    gotime.parse("2020-01-01T00:00:00+01:00")
    gotime.parse("2020-01-01T00:00:00.5Z")
    with pytest.raises(ValueError):
        gotime.parse(bad)
    with pytest.raises(ValueError):
        gotime.parse_ns(bad)


@given(wall_times(), st.text(alphabet="0123456789.+-:Zz\n\u0663", max_size=12))
def test_cached_parse_agrees_with_the_regular_expression(t: tuple[int, int], tail: str) -> None:
    s = gotime.format_ns(*t)
    variants = [s, s[:19] + tail, s[:19] + "." + tail, s[:19] + tail + "Z", s[:19] + tail + "+05:30"]
    gotime.parse(s)  # its head (and zone) are now cached
    gotime.parse("2001-02-03T04:05:06+05:30")
    for v in variants:
        try:
            want = gotime._parse_regex(v)
        except ValueError:
            assert gotime._parse_cached(v) is None
            with pytest.raises(ValueError):
                gotime.parse_ns(v)
        else:
            got = gotime._parse_cached(v)
            assert got is None or got == want
            assert gotime.parse_ns(v) == want[0]


@given(st.integers(0, 9999), st.integers(0, 14), st.integers(0, 33), st.integers(0, 25), st.integers(0, 61),
       st.integers(0, 61), st.sampled_from(["T", "t", " "]),
       st.sampled_from(["Z", "z", ".5Z", "+01:30", ".000000001-08:00"]))
def test_fast_head_parse_agrees_with_the_regular_expression(
    y: int, mo: int, d: int, h: int, mi: int, sec: int, sep: str, tail: str
) -> None:
    """Every date and time field in and out of range, leap seconds, day 31 of short months."""
    s = "%04d-%02d-%02d%s%02d:%02d:%02d%s" % (y, mo, d, sep, h, mi, sec, tail)
    gotime._heads.clear()
    try:
        want = gotime._parse_regex(s)
    except ValueError:
        with pytest.raises(ValueError):
            gotime.parse(s)
        return
    gotime._heads.clear()  # the regular expression cached it: make the fast path do the work
    assert gotime.parse_ns(s) == want[0]
    assert gotime.parse_ns(s) == want[0]  # and again from the cache


def test_parse_lowercase_separators() -> None:
    assert gotime.parse("2020-01-01t00:00:00z") == gotime.parse("2020-01-01T00:00:00Z")


def test_plus_zero_offset_formats_as_z() -> None:
    t = gotime.parse("2020-01-01T00:00:00+00:00")
    assert t.offset == 0 and t.format() == "2020-01-01T00:00:00Z"


def test_local_zone() -> None:
    ns = 1_700_000_000_123_000_000
    sec = ns // NS
    assert gotime.local_offset(sec) == time.localtime(sec).tm_gmtoff
    assert gotime.format_ns(ns) == gotime.format_ns(ns, gotime.local_offset(sec))
    assert gotime.parse_ns(gotime.format_ns(ns)) == ns


def test_seconds_and_now() -> None:
    assert GoTime(1_500_000_000, 0).seconds == 1.5
    before = time.time_ns()
    assert before <= gotime.now_ns() <= time.time_ns()
