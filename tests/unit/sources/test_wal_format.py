"""WAL file names, segment validation, the archive catalog and the WAL retention rule (values only)."""

from __future__ import annotations

import pytest

from coffer.errors import SourceError
from coffer.sources.postgres import retention
from coffer.sources.postgres.wal import (
    SnapMeta,
    WalCatalog,
    kind_of,
    next_segment,
    parse_lsn,
    parse_pg_log_time,
    segment_name,
    validate,
)
from helpers.walseg import SEG, SYSID, segment


def test_names_are_classified_and_anything_else_refused() -> None:
    assert kind_of("000000010000000000000003") == "segment"
    assert kind_of("000000010000000000000003.partial") == "partial"
    assert kind_of("000000010000000000000003.00000028.backup") == "backup"
    assert kind_of("00000002.history") == "history"
    for bad in ("../etc/passwd", "00000001000000000000000g", "RECOVERYXLOG", "0000000100000000000003", ""):
        with pytest.raises(SourceError):
            kind_of(bad)


def test_segment_arithmetic() -> None:
    assert segment_name(1, parse_lsn("0/2000028"), SEG) == "000000010000000000000002"
    assert segment_name(3, parse_lsn("1/FF000000"), SEG) == "0000000300000001000000FF"
    assert next_segment("0000000100000000000000FF", SEG) == "000000010000000100000000"
    assert next_segment("000000010000000000000002", SEG) == "000000010000000000000003"


def test_a_valid_segment_passes_and_reports_its_system() -> None:
    info = validate("000000010000000000000003", segment("000000010000000000000003"))
    assert info.kind == "segment" and info.sysid == SYSID and info.seg_size == SEG


@pytest.mark.parametrize("case,match", [
    ("truncated", "not a WAL segment size"),
    ("zeros", "no WAL page header"),
    ("header size", "header says"),
    ("renamed", "does not match the file name"),
    ("short header", "no long header"),
    ("future timeline", "timeline"),
])
def test_damaged_or_foreign_segments_are_rejected_at_push(case: str, match: str) -> None:
    name = "000000010000000000000003"
    data = {
        "truncated": segment(name)[: SEG - 4096],
        "zeros": bytes(SEG),
        "header size": segment(name, seg_size=SEG * 2),
        "renamed": segment("000000010000000000000007"),
        "short header": segment(name, info=0),
        "future timeline": segment(name, tli=2),
    }[case]
    with pytest.raises(SourceError, match=match):
        validate(name, data)


def test_backup_and_history_files() -> None:
    text = ("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTOP WAL LOCATION: 0/2000100 "
            "(file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n"
            "START TIME: 2026-11-26 21:10:00 UTC\nLABEL: coffer-abc\nSTOP TIME: 2026-11-26 21:10:01 UTC\n")
    info = validate("000000010000000000000002.00000028.backup", text.encode())
    assert info.backup_label == "coffer-abc" and info.backup_start == "000000010000000000000002"
    assert info.backup_stop_s == parse_pg_log_time("2026-11-26 21:10:01 UTC")
    with pytest.raises(SourceError):
        validate("000000010000000000000002.00000028.backup", b"garbage\n")
    validate("00000002.history", b"1\t0/3000000\tno recovery target specified\n")
    with pytest.raises(SourceError):
        validate("00000002.history", b"\xff\xfe binary")


def test_log_times() -> None:
    assert parse_pg_log_time("1970-01-01 00:00:10 UTC") == 11  # rounded up: STOP TIME has whole seconds
    assert parse_pg_log_time("1970-01-01 01:00:10 +01") == 11
    assert parse_pg_log_time("1970-01-01 00:00:10 CET") is None  # an abbreviation: not guessed


def meta(i: int, t: int, tags: tuple[str, ...], paths: tuple[str, ...]) -> SnapMeta:
    return SnapMeta(f"{i:064x}", t * 10**9, tags, paths)


def wal(i: int, t: int, *names: str, sysid: str = "1", extra: tuple[str, ...] = ()) -> SnapMeta:
    return meta(i, t, ("wal", "postgres", "wal-dataset=db", f"pg-sysid={sysid}", *extra),
                tuple("/" + n for n in names))


def base(i: int, t: int, start: str | None, sysid: str = "1", label: str = "") -> SnapMeta:
    tags = ["postgres", "basebackup", "dataset=db", f"pg-sysid={sysid}"]
    if start:
        tags.append(f"pg-wal-start={start}")
    if label:
        tags.append(f"pg-label={label}")
    return meta(i, t, tuple(tags), ("/MANIFEST.json", "/base.tar"))


def seg(n: int, tli: int = 1) -> str:
    return "%08X%08X%08X" % (tli, 0, n)


def test_catalog_is_built_from_snapshot_metadata_alone() -> None:
    snaps = [wal(1, 10, seg(1)), wal(2, 20, seg(2), seg(3)), base(3, 15, seg(2), label="L1"),
             wal(4, 25, seg(3)),  # a duplicate: the first holder counts
             wal(5, 30, seg(2) + ".00000028.backup", extra=("pg-backup-label=L1", "pg-backup-stop=17")),
             meta(6, 40, ("wal", "wal-dataset=other"), ("/" + seg(9),)),
             meta(7, 41, ("postgres", "dump", "dataset=db"), ("/app.pgdump",))]
    cat = WalCatalog.build(snaps, "db")
    assert cat.holder(seg(3)) is not None and cat.holder(seg(3)).id == f"{2:064x}"  # type: ignore[union-attr]
    assert cat.holder(seg(9)) is None  # another dataset's archive
    assert [b.id for b in cat.base_backups] == [f"{3:064x}"]
    assert cat.segments_after(seg(1), 5) == [seg(2), seg(3)]
    assert cat.backup_end_time("L1") == 17 * 10**9  # STOP TIME, earlier than the push (30)
    assert cat.newest_segment() == seg(3)
    assert cat.gaps(seg(1), SEG) == []
    cat2 = WalCatalog.build([wal(1, 1, seg(1)), wal(2, 2, seg(4))], "db")
    assert cat2.gaps(seg(1), SEG) == [seg(2), seg(3)]


def test_retention_keeps_what_the_oldest_kept_base_backup_needs() -> None:
    w = [wal(1, 10, seg(1)), wal(2, 20, seg(2), seg(3)), wal(3, 30, seg(4)), wal(4, 40, seg(5)),
         wal(5, 5, "00000002.history")]
    d = retention.expire([base(10, 29, seg(4))], w)
    assert [s.id for s in d.remove] == [f"{1:064x}", f"{2:064x}"]
    assert f"{5:064x}" in [s.id for s in d.keep]  # timeline history stays
    # a batch snapshot stays if any of its files is still needed
    d = retention.expire([base(10, 25, seg(3))], w)
    assert [s.id for s in d.remove] == [f"{1:064x}"]


def test_retention_without_base_backups_removes_nothing() -> None:
    w = [wal(1, 10, seg(1)), wal(2, 20, seg(2))]
    d = retention.expire([], w)
    assert d.remove == [] and "no base backup" in d.reason


def test_retention_without_a_start_tag_falls_back_to_time_with_a_margin() -> None:
    w = [wal(1, 1000, seg(1)), wal(2, 9000, seg(2)), wal(3, 9500, seg(3))]
    d = retention.expire([base(10, 9000 + 3600, None)], w, margin_ns=3600 * 10**9)
    assert [s.id for s in d.remove] == [f"{1:064x}"]


def test_retention_drops_wal_of_a_system_no_kept_backup_belongs_to() -> None:
    w = [wal(1, 10, seg(50), sysid="old"), wal(2, 20, seg(1), sysid="new"), wal(3, 99999, seg(60), sysid="old")]
    d = retention.expire([base(10, 5000, seg(1), sysid="new")], w, margin_ns=0)
    assert [s.id for s in d.remove] == [f"{1:064x}"]  # old system's WAL before the oldest kept backup


def test_wal_snapshots_never_match_the_plans_dataset_filter() -> None:
    """The plan's retention filters ``dataset=<name>``: WAL carries ``wal-dataset=`` and stays out of it."""
    from coffer.engine.snapshots import SnapshotFilter
    from coffer.store.format.snapshot import Snapshot

    flt = SnapshotFilter.build(tags=["dataset=db"])
    w = wal(1, 1, seg(1))
    s = Snapshot(time="2026-01-01T00:00:00Z", tree=b"\0" * 32, paths=list(w.paths), tags=list(w.tags))
    assert not flt.matches(s)


def test_choose_base_takes_the_newest_backup_finished_before_the_target() -> None:
    from coffer.actions.wal import archive_window, choose_base

    snaps = [base(1, 100, seg(1), label="a"), base(2, 200, seg(3), label="b"),
             wal(3, 105, seg(1) + ".00000028.backup", extra=("pg-backup-label=a", "pg-backup-stop=102")),
             wal(4, 260, seg(3) + ".00000028.backup", extra=("pg-backup-label=b", "pg-backup-stop=250")),
             wal(5, 300, seg(4))]
    cat = WalCatalog.build(snaps, "db")
    assert choose_base(cat, 240 * 10**9).id == f"{1:064x}"  # b had started but not finished at 240
    assert choose_base(cat, 251 * 10**9).id == f"{2:064x}"
    with pytest.raises(Exception, match="no base backup"):
        choose_base(cat, 50 * 10**9)
    assert archive_window(cat, cat.base_backups[1]) == (250 * 10**9, 300 * 10**9)
    assert archive_window(cat, cat.base_backups[1], last_commit_ns=280 * 10**9) == (250 * 10**9, 280 * 10**9 - 1000)


def test_archive_lag_from_listed_snapshots() -> None:
    from coffer.sources.postgres.status import archive_lag

    snaps = [wal(1, 100, seg(1)), wal(2, 200, seg(2)), base(3, 150, seg(1))]
    lag = archive_lag(snaps, "db", now_ns=500 * 10**9, rpo_seconds=600)
    assert lag.newest_segment == seg(2) and lag.age_seconds == 300 and lag.within(600)
    lag = archive_lag(snaps, "db", now_ns=1000 * 10**9, rpo_seconds=600)
    assert not lag.within(600) and "RPO" in lag.problems[0]
    assert "no WAL archived" in archive_lag([], "db", now_ns=1).problems[0]
