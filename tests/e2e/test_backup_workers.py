"""The backup's worker processes: same repository content as the threads, and no harm when one dies.

Every test forces the workers on from the first file (``COFFER_BACKUP_PROCESS_THRESHOLD=0``); by
default they start only once a backup has handed 32 MiB to its threads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from coffer.store.backend.local import LocalBackend
from coffer.store.repository import Repository
from conftest import COFFER, PASSWORD, Runner, _env
from helpers.procs import child_pids
from helpers.sourcetree import make_tree, write_random, write_text
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic

WORKERS = {"COFFER_BACKUP_PROCESS_THRESHOLD": "0", "COFFER_BACKUP_PROCESSES": "2"}
THREADS = {"COFFER_BACKUP_PROCESSES": "0"}


def source(root: Path) -> Path:
    """Many small files, content repeated across directories (deduplicated between workers), two
    multi-chunk files, and the metadata variety of make_tree (xattrs, special files, odd names)."""
    make_tree(root)
    for d in range(8):
        sub = root / f"dir{d}"
        sub.mkdir()
        for f in range(25):
            write_text(sub / f"f{f}.txt", 1000 + 97 * f, seed=f)  # the same 25 files in every dir
        write_random(sub / "own.bin", 40_000, seed=100 + d)
    write_random(root / "large.bin", 9 * 1024 * 1024 + 5, seed=7)
    shutil.copy(root / "large.bin", root / "dir3" / "large-copy.bin")
    write_text(root / "large.txt", 6 * 1024 * 1024, seed=8)
    os.setxattr(root / "dir1" / "f1.txt", "user.worker", b"read through the open file")
    return root


def summary(r: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert d["message_type"] == "summary"
    return d


def blob_list(restic: Runner, repo: Path) -> list[str]:
    return restic("list", "blobs", repo=repo).stdout.decode().split("\n")


def test_workers_store_the_same_tree_as_threads_and_no_blob_twice(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = source(tmp_path / "src")
    log = tmp_path / "sites"
    threads = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path, env=THREADS))
    forced = summary(coffer("backup", "src", "--json", "--force", repo=repo, cwd=tmp_path,
                            env={**WORKERS, "COFFER_FAILPOINT_LOG": str(log)}))
    assert "backup_worker_file" in log.read_text(), "the workers did not run"
    snaps = json.loads(coffer("snapshots", "--json", repo=repo).stdout)
    tree = {sid: next(s["tree"] for s in snaps if s["id"].startswith(sid))
            for sid in (threads["snapshot_id"], forced["snapshot_id"])}
    assert tree[forced["snapshot_id"]] == tree[threads["snapshot_id"]]
    assert forced["data_blobs"] == 0 and forced["files_new"] + forced["files_changed"] == threads["files_new"]

    fresh = tmp_path / "fresh"
    Repository.init(LocalBackend(str(fresh)), PASSWORD)
    s = summary(coffer("backup", "src", "--json", repo=fresh, cwd=tmp_path, env=WORKERS))
    blobs = [b for b in blob_list(restic, fresh) if b]
    assert len(blobs) == len(set(blobs)), "a blob was stored twice"
    assert s["data_blobs"] == sum(1 for b in blobs if b.startswith("data "))
    restic("check", "--read-data", repo=fresh)
    restic("restore", s["snapshot_id"], "--target", str(tmp_path / "r"), repo=fresh)
    assert_trees_equal(src, tmp_path / "r" / "src")
    coffer("restore", s["snapshot_id"], "--target", str(tmp_path / "c"), repo=fresh)
    assert_trees_equal(src, tmp_path / "c" / "src")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def test_a_killed_worker_fails_the_backup_and_the_repository_stays_valid(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    """A worker killed from outside (the OOM killer, say): the backup stops with the reason, no
    snapshot is written, the repository checks clean, and the next run succeeds."""
    source(tmp_path / "src")
    env = _env(repo, PASSWORD, {**WORKERS, "COFFER_FAILPOINT": "backup_worker_file:5=sleep:60"})
    p = subprocess.Popen([COFFER, "backup", "src"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(kids := child_pids(p.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(kids) >= 2, "the workers never started"
    time.sleep(0.5)
    os.kill(min(kids), signal.SIGKILL)
    _, err_b = p.communicate(timeout=60)
    err = err_b.decode(errors="replace")
    assert p.returncode == 1, err
    assert "backup worker process" in err and "killed by signal 9" in err, err
    assert json.loads(coffer("snapshots", "--json", repo=repo).stdout) == []
    restic("check", "--read-data", repo=repo)
    s = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path, env=WORKERS))
    restic("check", "--read-data", repo=repo)
    restic("restore", s["snapshot_id"], "--target", str(tmp_path / "r"), repo=repo)
    assert_trees_equal(tmp_path / "src", tmp_path / "r" / "src")


def test_killing_the_backup_kills_its_workers(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    source(tmp_path / "src")
    env = _env(repo, PASSWORD, {**WORKERS, "COFFER_FAILPOINT": "backup_worker_file=sleep:60"})
    p = subprocess.Popen([COFFER, "backup", "src"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(kids := child_pids(p.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(kids) >= 2, "the workers never started"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(k) for k in kids), "a worker outlived the backup"
    coffer("unlock", repo=repo)  # the killed backup's lock
    restic("check", repo=repo)
    s = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path, env=WORKERS))
    restic("check", "--read-data", repo=repo)
    assert s["snapshot_id"]


def test_an_unreadable_file_in_a_worker_is_a_warning_and_exit_3(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "big.bin", 2 * 1024 * 1024, seed=3)
    (src / "ok.txt").write_text("readable")
    secret = src / "secret.txt"
    secret.write_text("unreadable")
    secret.chmod(0)
    cmd = [COFFER, "backup", "src"]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    r = subprocess.run(cmd, env=_env(repo, PASSWORD, WORKERS), cwd=tmp_path, capture_output=True)
    assert r.returncode == 3, r.stderr
    assert b"secret.txt" in r.stderr and b"permission denied" in r.stderr.lower()
    ls = coffer("ls", "latest", repo=repo).stdout
    assert b"ok.txt" in ls and b"big.bin" in ls and b"secret.txt" not in ls
    restic("check", "--read-data", repo=repo)
