"""PostgreSQL base backups + WAL archiving through coffer, against a real archiving server.

archive_command is the ``wal-push`` script ``coffer wal-setup`` writes (it runs as postgres with the
repository location and password in files only postgres can read); restore-db's recovery uses the
``wal-fetch`` script the same way, from a server started with a clean environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.databases import make_repo, pg_cluster, private_tmp, psql, run_coffer, snapshot_ids

pytestmark = pytest.mark.integration

DATASET = "pgw"


@dataclass
class Archiving:
    cl: object
    repo: Path
    scripts: Path
    work: Path


@pytest.fixture(scope="module")
def archiving() -> Iterator[Archiving]:
    work = private_tmp("coffer-pitr-", "postgres")
    repo = make_repo(work / "repo", owner="postgres")
    scripts = work / "wal"
    r = run_coffer(repo, "--json", "wal-setup", "--dir", str(scripts), "--dataset", DATASET)
    setup = json.loads(r.stdout.splitlines()[-1])
    cl = pg_cluster(archive_command=setup["archive_command"])
    try:
        psql(cl, "CREATE TABLE marks(name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        psql(cl, "CREATE TABLE switches(at timestamptz DEFAULT clock_timestamp())")
        yield Archiving(cl, repo, scripts, work)
    finally:
        cl.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)


def switch_and_wait(cl, timeout: float = 90) -> str:  # type: ignore[no-untyped-def]
    """Close the current WAL segment and wait until the archiver has pushed everything up to it."""
    # something to switch away from (an empty segment is not switched), then the insert position: with
    # synchronous_commit off the write position can still sit on the previous segment's boundary
    psql(cl, "INSERT INTO switches DEFAULT VALUES")
    seg = psql(cl, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    psql(cl, "SELECT pg_switch_wal()")
    status = Path(cl.data_dir, "pg_wal", "archive_status")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = psql(cl, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        ready = [n for n in os.listdir(status) if n.endswith(".ready")]
        if last[:24] >= seg and not ready:
            return seg
        time.sleep(0.2)
    raise AssertionError(f"{seg} was not archived: {psql(cl, 'SELECT * FROM pg_stat_archiver')}")


def test_setup_files_are_private_to_postgres(archiving: Archiving) -> None:
    for name, mode in (("password", 0o600), ("repository", 0o600), ("wal-push", 0o700), ("wal-fetch", 0o700)):
        st = (archiving.scripts / name).stat()
        assert stat.S_IMODE(st.st_mode) == mode, name
        if os.geteuid() == 0:
            assert st.st_uid == Path("/var/lib/postgresql").stat().st_uid or st.st_uid != 0
    assert stat.S_IMODE(archiving.scripts.stat().st_mode) == 0o700
    assert "correct horse" not in (archiving.scripts / "wal-push").read_text()


def test_point_in_time_recovery_has_a_and_not_b(archiving: Archiving, tmp_path: Path) -> None:
    cl, repo = archiving.cl, archiving.repo
    run_coffer(repo, "pg-basebackup", "--socket", cl.sock_dir, "--port", str(cl.port), "--user", "postgres",  # type: ignore[attr-defined]
               "--dataset", DATASET)
    time.sleep(1.2)  # the backup's STOP TIME has whole seconds: let it be safely before the target
    psql(cl, "INSERT INTO marks(name) VALUES ('A')")
    time.sleep(0.3)
    target = psql(cl, "SELECT now()")
    time.sleep(0.3)
    psql(cl, "INSERT INTO marks(name) VALUES ('B')")
    switch_and_wait(cl)

    to = private_tmp("coffer-restored-") / "data"
    try:
        r = run_coffer(repo, "--json", "restore-db", DATASET, "--target-time", target, "--to", str(to), "--start")
        res = json.loads(r.stdout.splitlines()[-1])
        assert res["started"] and res["recovery_target_time"]
        rdir = Path(str(to) + ".coffer")
        assert stat.S_IMODE(rdir.stat().st_mode) == 0o700
        assert stat.S_IMODE((rdir / "password").stat().st_mode) == 0o600
        conf = (to / "postgresql.auto.conf").read_text()
        assert f"restore_command = '{rdir}/wal-fetch %f %p'" in conf and "archive_mode = 'off'" in conf
        q = ["/usr/lib/postgresql/15/bin/psql", "-X", "-At", "-h", res["socket_dir"], "-p", str(res["port"]),
             "-U", "postgres", "-d", "postgres", "-c", "SELECT string_agg(name, ',' ORDER BY name) FROM marks"]
        if os.geteuid() == 0:
            q = ["runuser", "-u", "postgres", "--", *q]
        names = subprocess.run(q, capture_output=True, check=True).stdout.decode().strip()
        assert "A" in names.split(",") and "B" not in names.split(","), names
        log = (rdir / "server.log").read_text()
        assert "restored log file" in log and "recovery stopping before commit" in log
    finally:
        ctl = ["/usr/lib/postgresql/15/bin/pg_ctl", "-D", str(to), "-m", "immediate", "-w", "stop"]
        subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + ctl, capture_output=True)
        shutil.rmtree(to.parent, ignore_errors=True)


def test_wal_fetch_script_works_with_an_empty_environment(archiving: Archiving, tmp_path: Path) -> None:
    seg = switch_and_wait(archiving.cl)
    out = private_tmp("coffer-fetch-", "postgres")
    try:
        cmd = ["env", "-i", str(archiving.scripts / "wal-fetch"), seg, str(out / "seg")]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, cwd="/")
        assert r.returncode == 0, r.stderr.decode()
        assert (out / "seg").stat().st_size == 16 << 20
        r = subprocess.run([*cmd[:-2], "0000000100000000000000FE", str(out / "none")], capture_output=True, cwd="/")
        assert r.returncode == 1, r.stderr.decode()  # not archived: PostgreSQL ends recovery normally
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("tool", ["restic", "coffer"])
def test_pushed_wal_survives_forget_prune_right_after_push(archiving: Archiving, tmp_path: Path, tool: str,
                                                           restic) -> None:  # type: ignore[no-untyped-def]
    """wal-push returns, then a typical forget --prune runs at once: the segment is still there."""
    cl, repo = archiving.cl, archiving.repo
    psql(cl, f"INSERT INTO marks(name) VALUES ('{tool}-forget')")
    seg = switch_and_wait(cl)
    policy = ["--keep-last", "1", "--keep-daily", "7", "--keep-weekly", "4", "--prune"]
    if tool == "restic":
        restic("forget", *policy, repo=repo)
    else:
        run_coffer(repo, "forget", *policy)
    if os.geteuid() == 0:  # maintenance ran as root: give postgres its repository back for the next tests
        subprocess.run(["chown", "-R", "postgres:", str(repo)], check=True)
    dest = tmp_path / "fetched"
    run_coffer(repo, "wal-fetch", "--dataset", DATASET, seg, str(dest))
    assert dest.stat().st_size == 16 << 20
    assert seg in {p.lstrip("/") for s in json.loads(run_coffer(repo, "snapshots", "--json").stdout)
                   for p in s["paths"]}
    restic("check", repo=repo)


def test_killed_wal_push_is_retried_by_postgres_and_archives(archiving: Archiving) -> None:
    cl = archiving.cl
    once = archiving.work / "kill-once"
    wrapper = archiving.work / "push-killed-once"
    wrapper.write_text(f"#!/bin/sh\nif [ -e {once} ]; then rm -f {once}\n"
                       f"  COFFER_FAILPOINT=after_pack_put=kill exec {archiving.scripts}/wal-push \"$@\"\nfi\n"
                       f"exec {archiving.scripts}/wal-push \"$@\"\n")
    os.chmod(wrapper, 0o755)
    once.touch()
    if os.geteuid() == 0:
        shutil.chown(once, "postgres")
    failed_before = int(psql(cl, "SELECT failed_count FROM pg_stat_archiver"))
    orig = psql(cl, "SHOW archive_command")
    psql(cl, f"ALTER SYSTEM SET archive_command = '{wrapper} %p'")
    psql(cl, "SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)
        psql(cl, "INSERT INTO marks(name) VALUES ('killed-push')")
        seg = switch_and_wait(cl, timeout=180)
    finally:
        psql(cl, f"ALTER SYSTEM SET archive_command = '{orig}'")
        psql(cl, "SELECT pg_reload_conf()")
    assert not once.exists(), "the kill never happened"
    # PostgreSQL saw the killed attempt (a signal or exit status > 125 restarts the archiver, which
    # does not count it in pg_stat_archiver) and archived the segment on its retry
    log = cl.log_text()  # type: ignore[attr-defined]
    assert "archive command" in log and ("signal 9" in log or "exit code 137" in log), log[-2000:]
    assert int(psql(cl, "SELECT failed_count FROM pg_stat_archiver")) >= failed_before
    snaps = json.loads(run_coffer(archiving.repo, "snapshots", "--json", "--tag", "wal").stdout)
    holders = [s for s in snaps if f"/{seg}" in s["paths"]]
    assert len(holders) == 1, holders  # stored once, by the retry; the killed attempt left no snapshot
    run_coffer(archiving.repo, "check")


@pytest.mark.slow
def test_pitr_drill_recovers_to_a_random_time_and_checks_a_marker(archiving: Archiving) -> None:
    cl, repo = archiving.cl, archiving.repo
    psql(cl, "CREATE TABLE IF NOT EXISTS heartbeat(at timestamptz PRIMARY KEY)")
    psql(cl, "INSERT INTO marks(name) VALUES ('before-pitr-base') ON CONFLICT DO NOTHING")
    run_coffer(repo, "pg-basebackup", "--socket", cl.sock_dir, "--port", str(cl.port), "--user", "postgres",  # type: ignore[attr-defined]
               "--dataset", DATASET)
    base = snapshot_ids(repo, "basebackup")[-1]
    for _ in range(12):
        psql(cl, "INSERT INTO heartbeat VALUES (clock_timestamp())")
        time.sleep(0.25)
    switch_and_wait(cl)
    r = run_coffer(repo, "--json", "drill-db", base, "--pitr",
                   "--marker-sql", "SELECT extract(epoch FROM max(at)) FROM heartbeat",
                   "--sql", "SELECT count(*) > 0 FROM marks", "--expect", "t", check=False)
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["ok"] and r.returncode == 0, json.dumps(out["checks"], indent=1)
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["recovery target"]["ok"] and checks["marker before target"]["ok"]
    assert checks["recovery stopped at the target"]["ok"]
    assert out["ready_seconds"] > 0
    # the restored marker is exactly the newest heartbeat the source committed at or before the target
    m = re.match(r"marker (\S+), target epoch (\S+)", checks["marker before target"]["detail"])
    assert m, checks["marker before target"]
    beats = [float(x) for x in psql(cl, "SELECT extract(epoch FROM at) FROM heartbeat ORDER BY at").split()]
    before = [b for b in beats if b <= float(m.group(2))]
    if m.group(1) == "none":
        assert not before, (before, m.group(2))
    else:
        assert before and abs(float(m.group(1)) - before[-1]) < 1e-5, (m.groups(), beats)


def test_base_backup_drill_starts_the_copy_without_the_archive(archiving: Archiving) -> None:
    """The plan's drill of a postgres-wal dataset: the base backup alone (its own WAL) must start."""
    cl, repo = archiving.cl, archiving.repo
    psql(cl, "INSERT INTO marks(name) VALUES ('before-base') ON CONFLICT DO NOTHING")
    run_coffer(repo, "pg-basebackup", "--socket", cl.sock_dir, "--port", str(cl.port), "--user", "postgres",  # type: ignore[attr-defined]
               "--dataset", DATASET)
    base = snapshot_ids(repo, "basebackup")[-1]
    r = run_coffer(repo, "--json", "drill-db", base, "--sql", "SELECT count(*) > 0 FROM marks WHERE name = "
                   "'before-base'", "--expect", "t")
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["ok"], json.dumps(out["checks"], indent=1)
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["server started"]["ok"] and checks["pg_amcheck"]["ok"] and out["ready_seconds"] > 0


def test_wal_status_reports_archive_lag_against_the_rpo(archiving: Archiving) -> None:
    cl = archiving.cl
    switch_and_wait(cl)
    args = ["--json", "wal-status", "--dataset", DATASET, "--ask-server", "--socket", cl.sock_dir,  # type: ignore[attr-defined]
            "--port", str(cl.port), "--user", "postgres", "--pgdata", cl.data_dir]  # type: ignore[attr-defined]
    r = run_coffer(archiving.repo, *args, "--rpo", "1h", check=False)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["status"] == "OK", json.dumps(out)
    assert out["age_seconds"] < 3600 and out["failed_count"] is not None and out["pending"] == 0
    r = run_coffer(archiving.repo, *args, "--rpo", "1s", check=False)  # nothing pending: idle is not a breach
    assert json.loads(r.stdout)["status"] == "OK"


@pytest.mark.slow
def test_a_missing_wal_segment_fails_recovery_loudly(archiving: Archiving, tmp_path: Path) -> None:
    cl, repo = archiving.cl, archiving.repo
    run_coffer(repo, "pg-basebackup", "--socket", cl.sock_dir, "--port", str(cl.port), "--user", "postgres",  # type: ignore[attr-defined]
               "--dataset", DATASET)
    base = snapshot_ids(repo, "basebackup")[-1]
    psql(cl, "INSERT INTO marks(name) VALUES ('gap-1')")
    lost = switch_and_wait(cl)
    psql(cl, "INSERT INTO marks(name) VALUES ('gap-2')")
    target = psql(cl, "SELECT now()")
    psql(cl, "INSERT INTO marks(name) VALUES ('gap-3')")
    switch_and_wait(cl)
    work = private_tmp("coffer-gap-", "postgres")
    copy = work / "repo"
    shutil.copytree(repo, copy)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:", str(copy)], check=True)
    removed = []
    for s in json.loads(run_coffer(copy, "snapshots", "--json", "--tag", "wal").stdout):
        if f"/{lost}" in s["paths"]:
            (copy / "snapshots" / s["id"]).unlink()
            removed.append(s["paths"])
    assert removed
    assert run_coffer(copy, "wal-fetch", "--dataset", DATASET, lost, str(tmp_path / "x"), check=False).returncode == 1
    try:
        r = run_coffer(copy, "--json", "drill-db", base, "--pitr", "--target-time", target, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 2, json.dumps(out, indent=1)
    failed = [c for c in out["checks"] if not c["ok"]]
    assert failed and "recovery ended before configured recovery target was reached" in failed[-1]["detail"], \
        failed[-1]["detail"]


def test_plan_runs_base_backups_expires_only_unneeded_wal_and_drills_pitr(archiving: Archiving, tmp_path: Path) -> None:
    """Dataset type ``postgres-wal`` in a plan: ``coffer run`` makes the base backup, the plan's keep rules
    thin out base backups, WAL older than the oldest kept base backup is expired (and nothing newer), and
    ``coffer drill`` starts the restored copy and recovers to a point in time through the archive."""
    from conftest import PASSWORD

    cl, repo = archiving.cl, archiving.repo
    psql(cl, "INSERT INTO marks(name) VALUES ('plan') ON CONFLICT DO NOTHING")  # for the drill's SQL check
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""
version: 1
catalog: {tmp_path / "catalog.db"}
repositories:
  - {{name: main, url: {repo}, password_file: {pw}, media: ssd}}
datasets:
  - name: {DATASET}
    type: postgres-wal
    repository: main
    socket: {cl.sock_dir}
    port: {cl.port}
    user: postgres
    schedule: every 4h
    retention: {{keep_last: 1}}
    drill:
      checks: [{{sql: "SELECT count(*) > 0 FROM marks", expect: "t"}}]
""")  # type: ignore[attr-defined]
    env = {"COFFER_PLAN": str(plan)}
    run_coffer(repo, "run", DATASET, env=env)
    bases = snapshot_ids(repo, "basebackup")
    assert len(bases) == 1  # keep_last 1 over the dataset's base backups
    assert set(snapshot_ids(repo, "wal")), "the WAL the kept base backup needs must stay"
    # commits after the base backup, archived, so the archive holds points in time past it
    for _ in range(4):
        psql(cl, "INSERT INTO switches DEFAULT VALUES")
        time.sleep(0.25)
    switch_and_wait(cl)
    r = run_coffer(repo, "--json", "drill", DATASET, "--snapshot", bases[0][:8], env=env, check=False)
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["ok"], json.dumps(out, indent=1)
    assert any(c["name"] == "server started" and c["ok"] for c in out["checks"])
    assert any(c["name"] == "pitr" and c["ok"] for c in out["checks"]), out["checks"]
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:", str(repo)], check=True)
