"""Dump streams into a real local repository: a failed, killed or truncated dump never becomes a snapshot;
SQLite copies are consistent while a writer runs; the shared check and naming helpers."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from coffer.engine.backup import Archiver, BackupRequest
from coffer.errors import SourceError
from coffer.sources.dbcommon import (
    DumpStream,
    RowCount,
    SqlCheck,
    db_name_from_file,
    file_name_for,
    quote_dotted,
)
from coffer.store.backend.base import FileType
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf
from coffer.store.repository import Repository
from coffer.util.process import Command

FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)
PW = "pw"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository.init(LocalBackend(str(tmp_path / "repo")), PW, params=FAST_KDF)
    r.load_index()
    return r


def _backup(repo: Repository, *streams: DumpStream) -> bytes:
    req = BackupRequest(streams=[s.stream_input() for s in streams], tags=["t"])
    return Archiver(repo, req).run().snapshot.id


def sh(script: str) -> Command:
    return Command(["/bin/sh", "-c", script])


def test_a_complete_dump_is_stored(repo: Repository) -> None:
    sid = _backup(repo, DumpStream("a.sql", sh("head -c 3000000 /dev/urandom | od -x; echo '-- Dump completed'"),
                                   trailer=b"-- Dump completed"))
    assert repo.list_ids(FileType.SNAPSHOT) == [sid]


@pytest.mark.parametrize("script,match", [
    ("head -c 2000000 /dev/zero; echo 'ERROR: relation is locked' >&2; exit 3", "exit status 3.*relation is locked"),
    ("head -c 2000000 /dev/zero; kill -9 $$", "killed by signal 9"),
    ("head -c 2000000 /dev/zero", "without its completion marker"),
])
def test_a_failed_killed_or_truncated_dump_leaves_no_snapshot(repo: Repository, script: str, match: str) -> None:
    good = DumpStream("b.sql", sh("echo fine; echo '-- Dump completed'"), trailer=b"-- Dump completed")
    bad = DumpStream("a.sql", sh(script), what="dump of 'a'", trailer=b"-- Dump completed")
    with pytest.raises(SourceError, match=match) as ei:
        _backup(repo, bad, good)
    assert "no snapshot was written" in ei.value.message
    assert repo.list_ids(FileType.SNAPSHOT) == []


def test_secrets_are_masked_in_the_error(repo: Repository) -> None:
    cmd = Command(["/bin/sh", "-c", 'echo "auth failed for password $PGPASSWORD" >&2; exit 1'],
                  env={"PGPASSWORD": "hunter2-secret"}, secrets=["hunter2-secret"])
    with pytest.raises(SourceError) as ei:
        _backup(repo, DumpStream("x.pgdump", cmd))
    assert "hunter2-secret" not in ei.value.message and "****" in ei.value.message


def test_names_and_checks() -> None:
    for db in ("app", "odd/name", "..", "sp ace", "ü"):
        f = file_name_for(db, ".pgdump")
        assert "/" not in f and f not in (".", "..")
        assert db_name_from_file(f, ".pgdump") == db
    assert quote_dotted('public.we"ird') == '"public"."we""ird"'
    assert SqlCheck("x", expect="500").judge("500\n") == (True, "got '500'")
    ok, detail = SqlCheck("x", expect="1|a\n2|b").judge("1|a\n2|c")
    assert not ok and "expected" in detail
    assert SqlCheck("x", min_value=10).judge("12|z")[0]
    assert not SqlCheck("x", min_value=10).judge("9")[0]
    assert not SqlCheck("x", min_value=10).judge("")[0]
    assert RowCount("public.orders", 5).as_sql_check(quote_dotted).sql == 'SELECT count(*) FROM "public"."orders"'


def test_sqlite_copy_is_consistent_while_a_writer_runs(repo: Repository, tmp_path: Path) -> None:
    from coffer.engine.restore import RestoreOptions, restore
    from coffer.sources.sqlite import SQLiteSource, verify_dir

    db = tmp_path / "app.db"
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INTEGER)")
    c.executemany("INSERT INTO a(v) VALUES (?)", [(b"x" * 500,) for _ in range(5000)])
    c.execute("INSERT INTO b(a_id) SELECT id FROM a")
    c.commit()
    c.close()
    stop = threading.Event()

    def writer() -> None:  # every transaction keeps count(a) == count(b)
        w = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            with w:
                cur = w.execute("INSERT INTO a(v) VALUES (randomblob(400))")
                w.execute("INSERT INTO b(a_id) VALUES (?)", (cur.lastrowid,))
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        src = SQLiteSource([str(db)], dataset="lite", checks=[SqlCheck("SELECT count(*) > 0 FROM a", expect="1")])
        with src.inputs() as inp:
            req = BackupRequest(streams=inp.streams, tags=inp.tags)
            snap = Archiver(repo, req).run().snapshot
    finally:
        stop.set()
        t.join()
    assert {"sqlite", "dataset=lite"} <= set(snap.tags)
    out = tmp_path / "restored"
    res = restore(repo, snap.tree, RestoreOptions(target=str(out), verify=True))
    assert res.ok
    copy = sqlite3.connect(out / "app.db")
    na, nb = copy.execute("SELECT count(*) FROM a").fetchone()[0], copy.execute("SELECT count(*) FROM b").fetchone()[0]
    assert na == nb and na >= 5000
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    copy.close()
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["databases"][0]["tables"] == 2
    v = verify_dir(out, checks=src.checks, row_counts=[RowCount("a", 5000)])
    assert v.ok, v.checks
    assert v.time_to_ready is not None
    names = {n for n, _, _ in v.checks}
    assert "integrity_check app.db" in names and "rows in a >= 5000" in names


def test_sqlite_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    from coffer.sources.sqlite import SQLiteSource

    with pytest.raises(SourceError, match="does not exist"), SQLiteSource([str(tmp_path / "nope.db")]).inputs():
        pass


def test_launcher_runs_coffer_for_another_user() -> None:
    import subprocess

    from coffer.util.selfexec import launcher

    argv = launcher()
    r = subprocess.run([*argv, "--version"], capture_output=True, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert r.returncode == 0 and b"coffer" in r.stdout
