"""SQLite through the CLI: backup-db, restic restore, drill-db (opens the copy, checks, time to ready)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fixtures.databases import make_repo, run_coffer

pytestmark = pytest.mark.integration


def test_backup_restore_and_drill(tmp_path: Path, restic) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "inventory.sqlite"
    c = sqlite3.connect(db)
    c.executescript("""
        CREATE TABLE parts(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);
        CREATE VIEW low AS SELECT * FROM parts WHERE qty < 5;
        CREATE TRIGGER parts_qty BEFORE UPDATE ON parts BEGIN SELECT RAISE(ABORT, 'neg') WHERE NEW.qty < 0; END;
    """)
    c.executemany("INSERT INTO parts(name, qty) VALUES (?, ?)", [(f"p{i}", i % 10) for i in range(2000)])
    c.commit()
    c.close()
    repo = make_repo(tmp_path / "repo")
    run_coffer(repo, "backup-db", "sqlite", str(db), "--dataset", "inv")
    snaps = json.loads(run_coffer(repo, "snapshots", "--json").stdout)
    assert snaps[0]["paths"] == ["/MANIFEST.json", "/inventory.sqlite"] or \
        sorted(snaps[0]["paths"]) == ["/MANIFEST.json", "/inventory.sqlite"]
    restic("restore", "latest", "--target", str(tmp_path / "r"), repo=repo)
    copy = sqlite3.connect(tmp_path / "r" / "inventory.sqlite")
    assert copy.execute("SELECT count(*) FROM low").fetchone()[0] == 1000
    copy.close()
    r = run_coffer(repo, "--json", "drill-db", "latest", "--sql", "SELECT count(*) FROM parts", "--expect", "2000",
                   "--min-rows", "parts=2000")
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["ok"] and out["ready_seconds"] > 0, out
    assert {c["name"] for c in out["checks"]} >= {"integrity_check inventory.sqlite", "tables in inventory.sqlite"}
