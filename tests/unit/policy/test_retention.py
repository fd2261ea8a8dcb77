"""The retention decision as values: restic 0.14's rules, one at a time (the golden tests compare
the whole thing with the restic binary)."""

from __future__ import annotations

import hashlib

import pytest

from coffer.errors import UsageError
from coffer.policy.retention import (
    Counters,
    Duration,
    GroupBy,
    GroupKey,
    RetentionPolicy,
    add_date,
    apply_policy,
    decide,
    group_snapshots,
    has_tags,
    parse_tag_list,
)
from coffer.policy.retention import _When as When
from coffer.store.format.snapshot import Snapshot
from coffer.util import gotime

NOW = gotime.parse_ns("2026-01-01T00:00:00Z")
UTC = lambda _s: 0  # noqa: E731 - a local zone that is UTC


def snap(t: str, host: str = "h", paths: tuple[str, ...] = ("/p",), tags: tuple[str, ...] = ()) -> Snapshot:
    sid = hashlib.sha256(f"{t}{host}{paths}{tags}".encode()).digest()
    return Snapshot(time=t, tree=bytes(32), paths=list(paths), hostname=host, tags=list(tags), id=sid)


def kept(snaps: list[Snapshot], policy: RetentionPolicy, **kw: object) -> list[str]:
    keep, _remove, _ = apply_policy(snaps, policy, now_ns=NOW, local_offset=UTC, **kw)  # type: ignore[arg-type]
    return [s.time for s in keep]


# ---------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "want"), [
    ("1y2m3d4h", Duration(1, 2, 3, 4)), ("30d", Duration(days=30)), ("5h", Duration(hours=5)),
    ("", Duration()), (" 2m ", Duration(months=2)), ("1d2d", Duration(days=2)), ("-1d", Duration(days=-1)),
])
def test_duration_parse(text: str, want: Duration) -> None:
    assert Duration.parse(text) == want


@pytest.mark.parametrize("text", ["1x", "d", "5", "1y2", "abc"])
def test_duration_parse_errors(text: str) -> None:
    with pytest.raises(UsageError):
        Duration.parse(text)


def test_duration_string_as_restic() -> None:
    assert str(Duration(1, 2, 3, 4)) == "1y2m3d4h"
    assert str(Duration(days=45)) == "45d"
    assert Duration().zero and not Duration(hours=1).zero


def test_tag_lists() -> None:
    assert parse_tag_list("a, b") == ("a", "b")
    assert parse_tag_list("") == ("",)
    assert has_tags(["a", "b"], ("a",)) and has_tags(["a", "b"], ("b", "a"))
    assert not has_tags(["a"], ("a", "b"))
    assert has_tags([], ("",)) and not has_tags(["a"], ("",))


def test_group_by_parse() -> None:
    assert GroupBy.parse("host,paths") == GroupBy(True, True, False)
    assert GroupBy.parse("tags") == GroupBy(False, False, True)
    assert GroupBy.parse("hosts,path,tag") == GroupBy(True, True, True)
    assert GroupBy.parse("") == GroupBy(False, False, False)
    with pytest.raises(UsageError, match="unknown grouping option: ' paths'"):
        GroupBy.parse("host, paths")


def test_policy_description_as_restic() -> None:
    p = RetentionPolicy(last=1, daily=7, within_daily=Duration(months=1), keep_tags=(("a", "b"), ("c",)),
                        within=Duration(years=1, days=2))
    assert str(p) == ("keep 1 latest, 7 daily snapshots, daily snapshots within 1m and all snapshots with tags "
                      "[[a, b] [c]] and all snapshots within 1y2d of the newest")
    assert str(RetentionPolicy(weekly=2)) == "keep 2 weekly snapshots"
    assert RetentionPolicy().empty and not RetentionPolicy(keep_tags=(("",),)).empty


# ---------------------------------------------------------------------------------------- buckets
def test_empty_policy_keeps_everything_newest_first() -> None:
    snaps = [snap("2025-01-01T00:00:00Z"), snap("2025-01-03T00:00:00Z"), snap("2025-01-02T00:00:00Z")]
    keep, remove, reasons = apply_policy(snaps, RetentionPolicy(), now_ns=NOW, local_offset=UTC)
    assert [s.time[:10] for s in keep] == ["2025-01-03", "2025-01-02", "2025-01-01"]
    assert remove == [] and all(r.matches == ("policy is empty",) for r in reasons)


def test_daily_keeps_the_newest_of_each_day_and_counts_down() -> None:
    snaps = [snap(t) for t in ("2025-01-01T08:00:00Z", "2025-01-01T20:00:00Z", "2025-01-02T09:00:00Z",
                               "2025-01-03T10:00:00Z", "2025-01-03T11:00:00Z")]
    keep, remove, reasons = apply_policy(snaps, RetentionPolicy(daily=2), now_ns=NOW, local_offset=UTC)
    assert [s.time for s in keep] == ["2025-01-03T11:00:00Z", "2025-01-02T09:00:00Z"]
    assert [s.time for s in remove] == ["2025-01-03T10:00:00Z", "2025-01-01T20:00:00Z", "2025-01-01T08:00:00Z"]
    assert [r.counters for r in reasons] == [Counters(daily=1), Counters()]
    assert Counters(daily=1).as_dict() == {"daily": 1} and Counters().as_dict() == {}


def test_buckets_use_the_recorded_offset() -> None:
    # 23:30 in New York (-05:00) is the next day in UTC; the recorded zone decides the day
    snaps = [snap("2025-01-01T23:30:00-05:00"), snap("2025-01-01T12:00:00-05:00")]
    assert kept(snaps, RetentionPolicy(daily=5)) == ["2025-01-01T23:30:00-05:00"]
    snaps = [snap("2025-01-02T01:00:00Z"), snap("2025-01-01T23:00:00Z")]
    assert len(kept(snaps, RetentionPolicy(daily=5))) == 2


def test_weekly_uses_iso_weeks() -> None:
    # 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 53 of 2020; 2021-01-04 starts week 1
    snaps = [snap("2020-12-31T12:00:00Z"), snap("2021-01-03T12:00:00Z"), snap("2021-01-04T12:00:00Z")]
    assert kept(snaps, RetentionPolicy(weekly=5)) == ["2021-01-04T12:00:00Z", "2021-01-03T12:00:00Z"]


def test_combined_rules_and_reasons() -> None:
    snaps = [snap("2025-03-01T00:00:00Z"), snap("2025-02-15T00:00:00Z"), snap("2025-02-14T00:00:00Z", tags=("x",))]
    _keep, remove, reasons = apply_policy(
        snaps, RetentionPolicy(last=1, monthly=2, keep_tags=(("x",),)), now_ns=NOW, local_offset=UTC)
    assert [r.matches for r in reasons] == [
        ("last snapshot", "monthly snapshot"), ("monthly snapshot",), ("has tags [x]",)]
    assert reasons[0].counters == Counters(monthly=1)
    assert remove == []


def test_keep_within_counts_from_the_latest_not_from_now() -> None:
    snaps = [snap("2020-06-10T00:00:00Z"), snap("2020-06-05T00:00:00Z"), snap("2020-05-01T00:00:00Z")]
    assert kept(snaps, RetentionPolicy(within=Duration(days=7))) == ["2020-06-10T00:00:00Z", "2020-06-05T00:00:00Z"]


def test_future_snapshots_are_not_the_latest() -> None:
    snaps = [snap("2099-01-01T00:00:00Z"), snap("2020-06-10T00:00:00Z"), snap("2020-01-01T00:00:00Z")]
    assert kept(snaps, RetentionPolicy(within=Duration(days=30))) == ["2099-01-01T00:00:00Z", "2020-06-10T00:00:00Z"]
    d = decide(snaps, RetentionPolicy(within=Duration(days=30)), GroupBy(), now_ns=NOW, local_offset=UTC)
    assert len(d.warnings) == 1 and "future" in d.warnings[0]


def test_keep_within_bucket_keeps_one_per_period_inside_the_window() -> None:
    snaps = [snap(t) for t in ("2025-01-10T10:00:00Z", "2025-01-10T09:00:00Z", "2025-01-09T10:00:00Z",
                               "2024-12-01T10:00:00Z")]
    keep, _, reasons = apply_policy(snaps, RetentionPolicy(within_daily=Duration(days=3)), now_ns=NOW,
                                    local_offset=UTC)
    assert [s.time for s in keep] == ["2025-01-10T10:00:00Z", "2025-01-09T10:00:00Z"]
    assert reasons[0].matches == ("daily within 3d",)


def test_add_date_normalises_like_go() -> None:
    t = gotime.parse("2023-03-31T22:00:00Z")
    back = add_date(When(t.ns, 0, False), 0, -1, 0, UTC)
    assert gotime.format_ns(back, 0) == "2023-03-03T22:00:00Z"  # "31 February" overflows into March
    leap = gotime.parse("2024-02-29T00:00:00Z")
    assert gotime.format_ns(add_date(When(leap.ns, 0, False), -1, 0, 0, UTC), 0) == "2023-03-01T00:00:00Z"


def test_add_date_in_the_local_zone_takes_the_offset_of_the_new_date() -> None:
    def new_york(sec: int) -> int:  # EDT from 2023-03-12 07:00Z, EST before
        return -4 * 3600 if sec >= gotime.parse_ns("2023-03-12T07:00:00Z") // gotime.NS else -5 * 3600

    t = gotime.parse("2023-03-31T22:00:00-04:00")
    fixed = add_date(When(t.ns, t.offset, False), 0, -1, 0, new_york)
    local = add_date(When(t.ns, t.offset, True), 0, -1, 0, new_york)
    assert gotime.format_ns(fixed, 0) == "2023-03-04T02:00:00Z"
    assert gotime.format_ns(local, 0) == "2023-03-04T03:00:00Z"


# ---------------------------------------------------------------------------------------- groups
def test_grouping_as_restic() -> None:
    a = snap("2025-01-01T00:00:00Z", host="a", paths=("/y", "/x"), tags=("t2", "t1"))
    b = snap("2025-01-02T00:00:00Z", host="b", paths=("/x", "/y"))
    groups = group_snapshots([a, b], GroupBy(host=False, paths=True, tags=False))
    assert list(groups) == [GroupKey("", ("/x", "/y"), None)]
    groups = group_snapshots([a, b], GroupBy(host=True, paths=False, tags=True))
    assert list(groups) == [GroupKey("a", None, ("t1", "t2")), GroupKey("b", None, None)]


def test_decide_applies_the_policy_per_group() -> None:
    snaps = [snap("2025-01-01T00:00:00Z", host="a"), snap("2025-01-02T00:00:00Z", host="a"),
             snap("2025-01-01T00:00:00Z", host="b")]
    d = decide(snaps, RetentionPolicy(last=1), GroupBy(), now_ns=NOW, local_offset=UTC)
    assert {g.key.hostname: len(g.keep) for g in d.groups} == {"a": 1, "b": 1}
    assert [s.hostname for s in d.remove] == ["a"]
    assert decide(snaps, RetentionPolicy(), GroupBy(), now_ns=NOW).groups == ()
