"""Each failure a user meets first gets its own exit code and a clear message, and leaves the
repository valid (restic check agrees)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coffer.store.backend.base import FileType
from coffer.store.backend.local import LocalBackend
from coffer.store.format.lock import LockInfo
from coffer.store.repository import Repository
from coffer.util import gotime
from conftest import PASSWORD, Runner


@pytest.fixture
def repo(tmp_path: Path, coffer: Runner) -> Path:
    r = tmp_path / "repo"
    coffer("init", repo=r)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data")
    coffer("backup", str(src), repo=r)
    return r


def test_wrong_password_exits_12_with_one_line(repo: Path, coffer: Runner, restic: Runner) -> None:
    r = coffer("snapshots", repo=repo, password="wrong", check=False)
    assert r.returncode == 12
    err = r.stderr.decode().strip().splitlines()
    assert err == ["Fatal: wrong password or no key found"]
    assert not list((repo / "locks").iterdir()), "a failed open must not leave a lock behind"
    restic("check", repo=repo)


def test_missing_repository_exits_10(tmp_path: Path, coffer: Runner) -> None:
    r = coffer("snapshots", repo=tmp_path / "nope", check=False)
    assert r.returncode == 10
    assert b"does not exist" in r.stderr
    assert not (tmp_path / "nope").exists()


def test_held_lock_exits_11_naming_holder(repo: Path, tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    # Another host holds an exclusive lock (a prune elsewhere): we must not write.
    r = Repository.open(LocalBackend(str(repo)), PASSWORD)
    info = LockInfo(time=gotime.format_ns(gotime.now_ns() - 90 * 10**9), exclusive=True, hostname="otherhost",
                    username="admin", pid=4242)
    lock_id = r.save_unpacked(FileType.LOCK, info.to_json())
    src = tmp_path / "src"
    res = coffer("backup", str(src), repo=repo, check=False)
    assert res.returncode == 11
    msg = res.stderr.decode()
    assert "otherhost" in msg and "4242" in msg and "ago" in msg
    # restic honours our lock format too (it refuses to back up while the lock is held)
    rr = restic("backup", str(src), repo=repo, check=False)
    assert rr.returncode != 0 and b"locked" in rr.stderr
    os.unlink(repo / "locks" / lock_id.hex())
    snaps = coffer("snapshots", "--json", repo=repo).stdout
    assert snaps.count(b'"short_id"') == 1
    restic("check", repo=repo)


def test_unreadable_source_file_exits_3_and_writes_snapshot(
    repo: Path, tmp_path: Path, coffer: Runner, restic: Runner
) -> None:
    src = tmp_path / "src2"
    src.mkdir()
    (src / "ok.txt").write_text("readable")
    secret = src / "secret.txt"
    secret.write_text("unreadable")
    secret.chmod(0)
    args = ["backup", str(src)]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        cmd_prefix = ["--bounding-set=-dac_override,-dac_read_search"]
        import subprocess

        from conftest import COFFER, _env

        res = subprocess.run(["setpriv", *cmd_prefix, COFFER, *args], env=_env(repo, PASSWORD, None),
                             capture_output=True)
    else:
        res = coffer(*args, repo=repo, check=False)
    assert res.returncode == 3, res.stderr
    assert b"secret.txt" in res.stderr and b"permission denied" in res.stderr.lower()
    ls = coffer("ls", "latest", repo=repo, check=False)
    if ls.returncode == 0:  # ls lands with the read-only commands
        assert b"ok.txt" in ls.stdout and b"secret.txt" not in ls.stdout
    restic("check", "--read-data", repo=repo)
