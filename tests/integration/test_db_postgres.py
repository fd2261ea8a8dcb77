"""PostgreSQL logical backups against real servers: dump, restore elsewhere, drill, failures, restic.

Every server is a throwaway PostgreSQL 15 in a temporary directory (never the system instance).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fixtures.databases import (
    COFFER,
    PASSWORD,
    coffer_env,
    make_repo,
    pg_cluster,
    pg_fingerprint,
    pg_source_server,
    psql,
    run_coffer,
    snapshot_ids,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_source() -> Iterator[Any]:
    with pg_source_server() as server:
        yield server


def _conn_args(cl) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--socket", cl.sock_dir, "--port", str(cl.port), "--user", "postgres"]


def _backup(repo: Path, cl, *extra: str, check: bool = True, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return run_coffer(repo, "backup-db", "postgres", *_conn_args(cl), *extra, check=check, env=env)


def test_dump_restores_into_a_fresh_server_identically_and_restic_reads_it(pg_source, tmp_path, restic):  # type: ignore[no-untyped-def]
    cl = pg_source
    repo = make_repo(tmp_path / "repo")
    _backup(repo, cl, "--tag", "nightly")
    snaps = json.loads(run_coffer(repo, "snapshots", "--json").stdout)
    assert len(snaps) == 1
    s = snaps[0]
    assert sorted(s["paths"]) == ["/MANIFEST.json", "/app.pgdump", "/globals.sql", "/odd%2Fname.pgdump",
                                  "/postgres.pgdump"]
    assert {"postgres", "dump", "dataset=postgres", "nightly"} <= set(s["tags"])

    # restic itself restores the dump files: they are ordinary files in the repository
    target = tmp_path / "restored"
    restic("restore", "latest", "--target", str(target), repo=repo)
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert {d["name"] for d in manifest["databases"]} == {"app", "odd/name", "postgres"}
    assert (target / "globals.sql").read_text().rstrip().endswith("-- PostgreSQL database cluster dump complete\n--")

    from coffer.sources.postgres.dump import verify_dump_dir

    fresh = pg_cluster()
    try:
        v = verify_dump_dir(target, cluster=fresh)
        assert v.ok, v.checks
        assert pg_fingerprint(fresh, "app") == pg_fingerprint(cl, "app")
        assert pg_fingerprint(fresh, "odd/name") == pg_fingerprint(cl, "odd/name")
        assert psql(fresh, "SELECT count(*) FROM pg_roles WHERE rolname = 'app_reader'") == "1"
        # the trigger still fires and the routine still answers in the restored copy
        psql(fresh, "INSERT INTO orders(customer, amount) VALUES (1, 1)", "app")
        assert psql(fresh, "SELECT count(*) FROM audit", "app") == "5001"
        assert psql(fresh, "SELECT order_total(1) > 0", "app") == "t"
    finally:
        fresh.cleanup()


def test_drill_starts_a_server_runs_checks_and_times_it(pg_source, tmp_path):  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path / "repo")
    _backup(repo, pg_source, "-d", "app")
    r = run_coffer(repo, "--json", "drill-db", "latest", "--check-database", "app",
                   "--sql", "SELECT count(*) FROM customers", "--expect", "500",
                   "--sql", "SELECT count(*) FROM big_orders", "--min-rows", "public.orders=5000")
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["ok"], out
    names = {c["name"]: c for c in out["checks"]}
    assert names["SELECT count(*) FROM customers"]["ok"]
    assert names["rows in public.orders >= 5000"]["ok"]
    assert names["pg_amcheck"]["ok"]
    assert names["tables in app"]["detail"].startswith("4 restored")
    assert out["ready_seconds"] > 0

    # a check that does not hold fails the drill, with the value it saw
    r = run_coffer(repo, "--json", "drill-db", "latest", "--check-database", "app",
                   "--sql", "SELECT count(*) FROM customers", "--expect", "501", check=False)
    assert r.returncode == 2
    out = json.loads(r.stdout.splitlines()[-1])
    bad = [c for c in out["checks"] if not c["ok"]]
    assert bad and "expected '501'" in bad[0]["detail"] and "got '500'" in bad[0]["detail"]


def test_drill_on_a_corrupted_pack_fails_with_a_clear_finding(pg_source, tmp_path):  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path / "repo")
    _backup(repo, pg_source, "-d", "app")
    packs = sorted((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim = packs[-1]  # the data pack with the dump's chunks (tree packs are small)
    os.chmod(victim, 0o600)
    with open(victim, "r+b") as f:
        f.seek(victim.stat().st_size // 3)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    r = run_coffer(repo, "--json", "drill-db", "latest", "--check-database", "app",
                   "--sql", "SELECT count(*) FROM customers", "--expect", "500", check=False)
    assert r.returncode == 2
    out = json.loads(r.stdout.splitlines()[-1])
    assert not out["ok"]
    issues = " ".join(out["issues"])
    assert "app.pgdump" in issues and ("pack" in issues or "damaged" in issues or "authentication" in issues), issues


def test_failed_dump_fails_the_run_with_its_error_and_writes_no_snapshot(pg_source, tmp_path):  # type: ignore[no-untyped-def]
    cl = pg_source
    psql(cl, "CREATE TABLE IF NOT EXISTS secret(x int)", "app")
    repo = make_repo(tmp_path / "repo")
    r = run_coffer(repo, "backup-db", "postgres", "--socket", cl.sock_dir, "--port", str(cl.port),
                   "--user", "app_reader", "-d", "app", "--no-globals", check=False)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "pg_dump of 'app'" in err and "permission denied" in err and "no snapshot was written" in err, err
    assert snapshot_ids(repo) == []


def _pg_dump_children(proc: psutil.Process) -> list[psutil.Process]:
    out = []
    for c in proc.children(recursive=True):
        try:
            if c.name() in ("pg_dump", "pg_dumpall") and c.status() != psutil.STATUS_ZOMBIE:
                out.append(c)
        except psutil.Error:
            continue
    return out


def test_killed_dump_process_leaves_no_snapshot(pg_source, tmp_path):  # type: ignore[no-untyped-def]
    cl = pg_source
    repo = make_repo(tmp_path / "repo")
    _backup(repo, cl, "-d", "app", "--no-globals")
    before = snapshot_ids(repo)
    # pause coffer after the first chunk of the dump, SIGKILL pg_dump meanwhile
    p = subprocess.Popen([COFFER, "backup-db", "postgres", *_conn_args(cl), "-d", "app", "--no-globals"],
                         env=coffer_env(repo, {"COFFER_FAILPOINT": "db_dump_first_chunk=sleep:4"}),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        parent = psutil.Process(p.pid)
        deadline = time.monotonic() + 30
        killed = False
        while time.monotonic() < deadline and not killed:
            for c in _pg_dump_children(parent):
                c.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        assert killed, "pg_dump never ran"
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    assert "killed by signal 9" in err.decode() and "no snapshot was written" in err.decode(), err.decode()
    assert snapshot_ids(repo) == before
    run_coffer(repo, "check")


def test_killed_coffer_during_a_dump_leaves_no_snapshot_and_no_dump_running(pg_source, tmp_path, restic):  # type: ignore[no-untyped-def]
    cl = pg_source
    repo = make_repo(tmp_path / "repo")
    r = run_coffer(repo, "backup-db", "postgres", *_conn_args(cl), "-d", "app", "--no-globals", check=False,
                   env={"COFFER_FAILPOINT": "db_dump_first_chunk=kill"})
    assert r.returncode == -signal.SIGKILL
    assert snapshot_ids(repo) == []

    def dumps_left() -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                if proc.info["name"] == "pg_dump" and any(cl.sock_dir in a for a in proc.info["cmdline"] or []):
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    deadline = time.monotonic() + 20
    while dumps_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not dumps_left(), "pg_dump kept running against the server after coffer died"
    run_coffer(repo, "check")  # the dead process's lock is stale on this host; nothing else is left over
    run_coffer(repo, "unlock")
    restic("check", repo=repo)
    # the next run works and is complete
    _backup(repo, cl, "-d", "app", "--no-globals")
    assert len(snapshot_ids(repo)) == 1


def test_plan_run_and_drill_use_the_postgres_source(pg_source, tmp_path):  # type: ignore[no-untyped-def]
    """Dataset type ``postgres`` through the plan: ``coffer run`` dumps, ``coffer drill`` starts the copy."""
    cl = pg_source
    repo = make_repo(tmp_path / "repo")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""
version: 1
catalog: {tmp_path / "catalog.db"}
repositories:
  - name: main
    url: {repo}
    password_file: {pw}
    media: ssd
datasets:
  - name: pgdb
    type: postgres
    repository: main
    socket: {cl.sock_dir}
    port: {cl.port}
    user: postgres
    databases: [app]
    schedule: "0 2 * * *"
    retention: {{keep_daily: 7}}
    rto: 1h
    drill:
      min_age: 1s
      checks:
        - sql: SELECT count(*) FROM customers
          expect: "500"
          database: app
""")
    env = {"COFFER_PLAN": str(plan)}
    run_coffer(repo, "run", "pgdb", env=env)
    snaps = json.loads(run_coffer(repo, "snapshots", "--json").stdout)
    assert len(snaps) == 1 and "dataset=pgdb" in snaps[0]["tags"] and "/app.pgdump" in snaps[0]["paths"]
    r = run_coffer(repo, "--json", "drill", "pgdb", "--snapshot", snaps[0]["id"][:8], env=env, check=False)
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["ok"], out
    checks = {c["name"]: c for c in out["checks"]}
    assert any(n.startswith("sql SELECT count(*) FROM customers") or n == "SELECT count(*) FROM customers"
               for n in checks), checks
    assert checks["restore app"]["ok"] and checks["pg_amcheck"]["ok"]
