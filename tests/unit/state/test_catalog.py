"""The catalog: migrations, operations with every field, drills, and the coverage ledger."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coffer.state.catalog import FAILED, OK, RUNNING, Catalog, CatalogError, DrillRecord
from coffer.state.migrations import all_migrations

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    c = Catalog.open(str(tmp_path / "sub" / "catalog.db"))
    yield c  # type: ignore[misc]
    c.close()


def test_new_catalog_is_migrated_to_the_latest_schema(cat: Catalog, tmp_path: Path) -> None:
    assert cat.schema_version() == len(all_migrations()) >= 1
    assert {"operations", "drills", "pack_coverage", "schema_migrations"} <= set(cat.iter_tables())
    # reopening applies nothing twice
    again = Catalog.open(str(tmp_path / "sub" / "catalog.db"))
    assert again.schema_version() == cat.schema_version()
    again.close()


def test_a_catalog_from_a_newer_coffer_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    Catalog.open(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="newer than this coffer"):
        Catalog.open(path)


def test_operation_records_every_field(cat: Catalog) -> None:
    run = cat.start("run", dataset="app", started=T0)
    op = cat.start("backup", dataset="app", repository="nvme", parent=run, started=T0)
    assert cat.get(op).result == RUNNING  # visible while it runs (and after a crash)
    cat.finish(op, OK, bytes=1234, files=7, snapshot_ids=["ab" * 32], errors=["x: unreadable"],
               details={"data_added": 99}, finished=T0 + timedelta(seconds=5))
    got = cat.get(op)
    assert (got.kind, got.dataset, got.repository, got.parent_id) == ("backup", "app", "nvme", run)
    assert got.started == T0 and got.finished == T0 + timedelta(seconds=5) and got.duration == 5
    assert (got.result, got.bytes, got.files) == (OK, 1234, 7)
    assert got.snapshot_ids == ["ab" * 32] and got.errors == ["x: unreadable"] and got.details == {"data_added": 99}
    assert [o.id for o in cat.operations(parent=run)] == [op]
    assert cat.last("backup", dataset="app").id == op  # type: ignore[union-attr]
    assert cat.last("run", dataset="app") is None  # still running


def test_queries_filter_and_order(cat: Catalog) -> None:
    for i, (kind, result) in enumerate([("backup", OK), ("backup", FAILED), ("copy", OK), ("check", OK)]):
        op = cat.start(kind, dataset="app" if kind != "check" else None, repository="nvme",
                       started=T0 + timedelta(hours=i))
        cat.finish(op, result)
    assert [o.result for o in cat.operations("backup")] == [OK, FAILED]
    assert len(cat.operations(since=T0 + timedelta(hours=2))) == 2
    assert len(cat.operations(until=T0 + timedelta(hours=1))) == 1
    assert cat.last("backup", dataset="app").result == FAILED  # type: ignore[union-attr]
    assert cat.last("check", repository="nvme") is not None
    with pytest.raises(ValueError):
        cat.start("dance")


def test_drill_record_round_trip(cat: Catalog) -> None:
    op = cat.start("drill", dataset="app", repository="nvme", started=T0)
    rec = DrillRecord(
        dataset="app", repository="nvme", started=T0, ok=False, snapshot_id="cd" * 32,
        snapshot_time=T0 - timedelta(days=9), snapshot_age=9 * 86400.0, selection="random among 3",
        bytes=10_000, files=12, restore_seconds=1.5, throughput=6666.0, ready_seconds=0.0, full_bytes=20_000,
        extrapolated_seconds=3.0, rto_seconds=600.0, rto_met=True,
        checks=[{"name": "c", "ok": True, "detail": "exit 0"}], issues=["restore: /a/b: pack 1234: damaged"],
    )
    cat.record_drill(op, rec)
    (got,) = cat.drills("app")
    assert got.operation_id == op
    for f in ("dataset", "repository", "started", "ok", "snapshot_id", "snapshot_time", "snapshot_age", "selection",
              "bytes", "files", "restore_seconds", "throughput", "full_bytes", "extrapolated_seconds", "rto_seconds",
              "rto_met", "checks", "issues"):
        assert getattr(got, f) == getattr(rec, f), f
    assert cat.last_drill("app") == got
    assert cat.drills(since=T0 + timedelta(seconds=1)) == []


def test_coverage_ledger(cat: Catalog) -> None:
    cat.sync_packs("repo1", {"p1": 10, "p2": 20}, T0)
    cov = cat.coverage("repo1")
    assert set(cov) == {"p1", "p2"} and cov["p1"].last_read is None and cov["p1"].first_seen == T0
    cat.mark_read("repo1", {"p1": True, "p2": False}, T0 + timedelta(hours=1))
    cov = cat.coverage("repo1")
    assert cov["p1"].last_ok is True and cov["p2"].last_ok is False
    assert cov["p1"].last_read == T0 + timedelta(hours=1)
    # a pruned pack leaves the ledger, a new one joins unread; reads are kept
    cat.sync_packs("repo1", {"p1": 10, "p3": 30}, T0 + timedelta(hours=2))
    cov = cat.coverage("repo1")
    assert set(cov) == {"p1", "p3"} and cov["p1"].last_read is not None and cov["p3"].last_read is None
    assert cat.coverage("other") == {}


def test_two_processes_can_record_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    a, b = Catalog.open(path), Catalog.open(path)
    oa = a.start("backup", dataset="x")
    ob = b.start("check", repository="r")
    a.finish(oa, OK)
    b.finish(ob, OK)
    assert len(a.operations()) == 2
    a.close()
    b.close()
