"""wal-push / wal-fetch semantics on a local repository, with synthetic but well-formed segments (T44).

No server needed: the segments carry valid long page headers, which is all wal-push checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from fixtures.databases import make_repo, run_coffer
from helpers.walseg import segment

pytestmark = pytest.mark.integration
DS = ["--dataset", "pg1"]


def _pg_wal(tmp_path: Path, names: list[str], ready: bool = True) -> Path:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True, exist_ok=True)
    for n in names:
        (wal / n).write_bytes(segment(n))
        if ready:
            (wal / "archive_status" / f"{n}.ready").touch()
    return wal


def _stored(repo: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in json.loads(run_coffer(repo, "snapshots", "--json", "--tag", "wal").stdout):
        for p in s["paths"]:
            out.setdefault(p.lstrip("/"), []).append(s["id"])
    return out


def test_push_is_referenced_repush_is_idempotent_and_a_different_file_fails(tmp_path: Path, restic) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path / "repo")
    name = "000000010000000000000003"
    wal = _pg_wal(tmp_path, [name], ready=False)
    r = run_coffer(repo, "--json", "wal-push", *DS, str(wal / name))
    out = json.loads(r.stdout)
    assert out["status"] == "stored"
    snaps = json.loads(run_coffer(repo, "snapshots", "--json").stdout)
    assert len(snaps) == 1 and snaps[0]["paths"] == [f"/{name}"]
    assert {"wal", "wal-dataset=pg1", "pg-sysid=7712590482740149373"} <= set(snaps[0]["tags"])

    # the same file again: success, nothing new stored
    out = json.loads(run_coffer(repo, "--json", "wal-push", *DS, str(wal / name)).stdout)
    assert out["status"] == "already-archived"
    assert len(_stored(repo)[name]) == 1

    # different content under the same name: refused loudly, the archived one untouched
    data = bytearray(segment(name))
    data[5000] ^= 1
    (wal / name).write_bytes(bytes(data))
    r = run_coffer(repo, "wal-push", *DS, str(wal / name), check=False)
    assert r.returncode != 0 and b"already archived" in r.stderr and b"different content" in r.stderr
    dest = tmp_path / "fetched"
    run_coffer(repo, "wal-fetch", *DS, name, str(dest))
    assert dest.read_bytes() == segment(name)
    restic("check", repo=repo)
    # restic restores it as an ordinary file too
    restic("restore", snaps[0]["id"], "--target", str(tmp_path / "r"), repo=repo)
    assert (tmp_path / "r" / name).read_bytes() == segment(name)


def test_truncated_and_foreign_files_are_rejected(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    name = "000000010000000000000004"
    p = tmp_path / name
    p.write_bytes(segment(name)[: 8 << 20])
    r = run_coffer(repo, "wal-push", *DS, str(p), check=False)
    assert r.returncode != 0 and b"truncated" in r.stderr
    p.write_bytes(segment("000000010000000000000005"))
    r = run_coffer(repo, "wal-push", *DS, str(p), check=False)
    assert r.returncode != 0 and b"does not match the file name" in r.stderr
    bad = tmp_path / "notwal"
    bad.write_bytes(b"x")
    r = run_coffer(repo, "wal-push", *DS, str(bad), check=False)
    assert r.returncode != 0 and b"not a WAL file name" in r.stderr
    assert _stored(repo) == {}


def test_queued_segments_go_along_and_their_later_push_is_a_check(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    names = [f"0000000100000000000000{i:02X}" for i in range(0x10, 0x15)]
    wal = _pg_wal(tmp_path, names)
    out = json.loads(run_coffer(repo, "--json", "wal-push", *DS, "--batch", "3", str(wal / names[0])).stdout)
    assert out["status"] == "stored" and out["stored"] == names[:3]
    stored = _stored(repo)
    assert stored[names[1]] == stored[names[0]]  # one snapshot holds the batch
    # PostgreSQL then asks for the next one: it was pushed ahead, so this is only a check
    (wal / "archive_status" / f"{names[0]}.ready").rename(wal / "archive_status" / f"{names[0]}.done")
    out = json.loads(run_coffer(repo, "--json", "wal-push", *DS, "--batch", "3", str(wal / names[1])).stdout)
    assert out["status"] == "pushed-ahead"
    # ... unless the file changed since: then it is checked against the archive and refused
    data = bytearray(segment(names[2]))
    data[100000] ^= 0xFF
    (wal / names[2]).write_bytes(bytes(data))
    r = run_coffer(repo, "wal-push", *DS, str(wal / names[2]), check=False)
    assert r.returncode != 0 and b"different content" in r.stderr


def test_fetch_exit_codes_and_prefetch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    names = [f"0000000100000000000000{i:02X}" for i in range(0x20, 0x24)]
    wal = _pg_wal(tmp_path, names, ready=False)
    for n in names:
        run_coffer(repo, "wal-push", *DS, str(wal / n))
    spool = tmp_path / "spool"
    dest = tmp_path / "RECOVERYXLOG"
    r = run_coffer(repo, "-v", "wal-fetch", *DS, "--spool", str(spool), "--prefetch", "2", names[0], str(dest))
    assert b"2 prefetched" in r.stdout
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(segment(names[0])).digest()
    r = run_coffer(repo, "-v", "wal-fetch", *DS, "--spool", str(spool), names[1], str(dest))
    assert b"from spool" in r.stdout and dest.read_bytes() == segment(names[1])
    # not in the archive: exit 1, PostgreSQL ends recovery there
    r = run_coffer(repo, "wal-fetch", *DS, "0000000100000000000000FF", str(dest), check=False)
    assert r.returncode == 1
    r = run_coffer(repo, "wal-fetch", "--dataset", "other", names[0], str(dest), check=False)
    assert r.returncode == 1
    # any other failure: above 125, so PostgreSQL stops instead of promoting early
    r = run_coffer(repo, "wal-fetch", *DS, names[2], str(dest), check=False, env={"RESTIC_PASSWORD": "wrong"})
    assert r.returncode == 254 and b"wrong password" in r.stderr
    assert not [p for p in os.listdir(tmp_path) if "coffer-tmp" in p]


def test_expire_keeps_what_base_backups_need(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    names = [f"0000000100000000000000{i:02X}" for i in range(0x30, 0x34)]
    wal = _pg_wal(tmp_path, names, ready=False)
    for n in names:
        run_coffer(repo, "wal-push", *DS, str(wal / n))
    r = run_coffer(repo, "--json", "wal-expire", *DS)
    assert json.loads(r.stdout)["removed"] == []  # no base backup yet: nothing goes
    # a base backup that started in segment 0x32 (a stand-in snapshot with the tags pg-basebackup writes)
    (tmp_path / "MANIFEST.json").write_text("{}")
    run_coffer(repo, "backup", "--tag", "postgres,basebackup,dataset=pg1,pg-sysid=7712590482740149373,"
               f"pg-wal-start={names[2]}", str(tmp_path / "MANIFEST.json"))
    r = run_coffer(repo, "--json", "wal-expire", *DS, "--dry-run")
    assert len(json.loads(r.stdout)["remove"]) == 2
    run_coffer(repo, "wal-expire", *DS)
    assert sorted(_stored(repo)) == names[2:]
