"""MariaDB logical backups against real servers: dump, restore into a fresh instance, drill, failures."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from fixtures.databases import (
    COFFER,
    coffer_env,
    make_repo,
    mariadb_server,
    mariadb_source_server,
    my_fingerprint,
    my_query,
    run_coffer,
    snapshot_ids,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mariadb_source() -> Iterator[Any]:
    with mariadb_source_server() as server:
        yield server


def _args(srv) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--socket", srv.socket, "--user", "root"]


def test_dump_restores_with_identical_checksums_and_restic_reads_it(mariadb_source, tmp_path, restic):  # type: ignore[no-untyped-def]
    srv = mariadb_source
    repo = make_repo(tmp_path / "repo")
    run_coffer(repo, "backup-db", "mysql", *_args(srv), "--tag", "nightly")
    snaps = json.loads(run_coffer(repo, "snapshots", "--json").stdout)
    assert len(snaps) == 1
    assert sorted(snaps[0]["paths"]) == ["/MANIFEST.json", "/crm.sql", "/shop.sql", "/users.sql"]
    assert {"mysql", "dump", "dataset=mysql", "nightly"} <= set(snaps[0]["tags"])

    target = tmp_path / "restored"
    restic("restore", "latest", "--target", str(target), repo=repo)  # restic restores coffer's dump files
    assert (target / "shop.sql").read_text().rstrip().endswith("-- Dump completed")

    from coffer.sources.mysql import load_dump_dir

    fresh = mariadb_server()
    try:
        loaded = load_dump_dir(fresh.conn, str(target))
        assert sorted(loaded) == ["crm", "shop"]
        assert my_fingerprint(fresh.conn, ["shop", "crm"]) == my_fingerprint(srv.conn, ["shop", "crm"])
        assert my_query(fresh.conn, "SELECT count(*) FROM mysql.user WHERE user = 'shopapp'") == "1"
        my_query(fresh.conn, "INSERT INTO items VALUES (99999, 'new', 1.00, NULL)", "shop")
        assert my_query(fresh.conn, "SELECT count(*) FROM log", "shop") == "3001"  # the trigger came along
        assert my_query(fresh.conn, "SELECT double_it(21)", "shop") == "42"
    finally:
        fresh.cleanup()


def test_drill_starts_mariadb_runs_checks_and_times_it(mariadb_source, tmp_path):  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path / "repo")
    run_coffer(repo, "backup-db", "mysql", *_args(mariadb_source), "-d", "shop")
    r = run_coffer(repo, "--json", "drill-db", "latest", "--check-database", "shop",
                   "--sql", "SELECT count(*) FROM items", "--expect", "3000", "--min-rows", "legacy=300")
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["ok"], out
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["mariadb-check"]["ok"] and checks["tables in shop"]["ok"]
    assert checks["rows in legacy >= 300"]["ok"]
    assert out["ready_seconds"] > 0


def test_killed_dump_leaves_no_snapshot(mariadb_source, tmp_path):  # type: ignore[no-untyped-def]
    srv = mariadb_source
    repo = make_repo(tmp_path / "repo")
    p = subprocess.Popen([COFFER, "backup-db", "mysql", *_args(srv), "-d", "shop", "--no-globals"],
                         env=coffer_env(repo, {"COFFER_FAILPOINT": "db_dump_first_chunk=sleep:4"}),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        parent = psutil.Process(p.pid)
        killed = False
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline:
            for c in parent.children(recursive=True):
                try:
                    if c.name() in ("mariadb-dump", "mysqldump"):
                        c.send_signal(signal.SIGKILL)
                        killed = True
                except psutil.Error:
                    pass
            time.sleep(0.05)
        assert killed
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    assert "killed by signal 9" in err.decode(), err.decode()
    assert snapshot_ids(repo) == []
