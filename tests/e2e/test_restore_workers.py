"""The restore's worker processes: the same files and metadata as the threads, one report per
problem, and no harm when one dies.

Every test forces the workers on (``COFFER_RESTORE_PROCESS_THRESHOLD=0``); by default they start
only when there are 32 MiB of content to write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import COFFER, PASSWORD, Runner, _env
from helpers.procs import child_pids
from helpers.repos import damage_data_blob
from helpers.sourcetree import make_tree, write_random, write_text
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic

WORKERS = {"COFFER_RESTORE_PROCESS_THRESHOLD": "0", "COFFER_RESTORE_PROCESSES": "2"}
THREADS = {"COFFER_RESTORE_PROCESSES": "0"}


def source(root: Path) -> Path:
    """Directories whose files end up with different workers, hard links between them, shared
    content, multi-chunk files, and the metadata variety of make_tree."""
    make_tree(root)
    for d in range(6):
        sub = root / f"dir{d}"
        sub.mkdir()
        for f in range(30):
            write_text(sub / f"f{f}.txt", 500 + 61 * f, seed=f)  # the same content in every directory
        write_random(sub / "own.bin", 30_000 + d, seed=200 + d)
        os.utime(sub, ns=(1_600_000_000_123_456_789 + d, 1_600_000_000_123_456_789 + d))
    write_random(root / "large.bin", 5 * 1024 * 1024 + 3, seed=9)
    os.link(root / "dir0" / "own.bin", root / "dir5" / "linked-own.bin")  # a hard link across shares
    os.setxattr(root / "dir4" / "f7.txt", "user.restore", b"set by a worker")
    os.chmod(root / "dir2" / "f3.txt", 0o640)
    return root


def test_workers_restore_what_threads_and_restic_restore(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = source(tmp_path / "src")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    log = tmp_path / "sites"
    coffer("restore", "latest", "--target", str(tmp_path / "w"), repo=repo,
           env={**WORKERS, "COFFER_FAILPOINT_LOG": str(log)})
    assert log.read_text().count("restore_worker_file") >= 150, "the workers did not write the files"
    coffer("restore", "latest", "--target", str(tmp_path / "t"), repo=repo, env=THREADS)
    spawned = tmp_path / "sites-spawned"  # fresh interpreters instead of workers forked from the CLI
    coffer("restore", "latest", "--target", str(tmp_path / "s"), repo=repo,
           env={**WORKERS, "COFFER_WORKER_FORK": "0", "COFFER_FAILPOINT_LOG": str(spawned)})
    assert spawned.read_text().count("restore_worker_file") >= 150
    restic("restore", "latest", "--target", str(tmp_path / "r"), repo=repo)
    assert_trees_equal(src, tmp_path / "w" / "src")
    assert_trees_equal(src, tmp_path / "s" / "src")
    assert_trees_equal(tmp_path / "t" / "src", tmp_path / "w" / "src")
    assert_trees_equal(tmp_path / "r" / "src", tmp_path / "w" / "src")
    a, b = (tmp_path / "w" / "src" / "dir0" / "own.bin").stat(), (tmp_path / "w/src/dir5/linked-own.bin").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert not [n for _, _, names in os.walk(tmp_path / "w") for n in names if "coffer-tmp" in n]


def test_a_damaged_blob_is_reported_once_and_the_rest_restores(
    tmp_path: Path, repo: Path, coffer: Runner
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        write_random(src / f"f{i:02d}.bin", 20_000 + i, seed=i)
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    damage_data_blob(repo, (src / "f17.bin").read_bytes())
    out = coffer("restore", "latest", "--target", str(tmp_path / "w"), repo=repo, env=WORKERS, check=False)
    err = out.stderr.decode(errors="replace")
    assert out.returncode != 0
    assert err.count("f17.bin") == 1, err
    restored = sorted(p.name for p in (tmp_path / "w" / "src").iterdir())
    assert restored == sorted(f"f{i:02d}.bin" for i in range(40) if i != 17)
    for name in restored:
        assert (tmp_path / "w" / "src" / name).read_bytes() == (src / name).read_bytes()


def test_a_killed_worker_fails_its_files_and_a_rerun_completes(
    tmp_path: Path, repo: Path, coffer: Runner
) -> None:
    """A worker killed from outside (the OOM killer, say): the restore names it and fails, and a
    second restore into the same target completes and leaves no temporary files."""
    src = source(tmp_path / "src")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    target = tmp_path / "w"
    env = _env(repo, PASSWORD, {**WORKERS, "COFFER_FAILPOINT": "restore_worker_file:3=sleep:5"})
    p = subprocess.Popen([COFFER, "restore", "latest", "--target", str(target)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(kids := child_pids(p.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(kids) >= 2, "the workers never started"
    time.sleep(1.0)  # both are in their sleep now
    os.kill(min(kids), signal.SIGKILL)
    _, err_b = p.communicate(timeout=60)
    err = err_b.decode(errors="replace")
    assert p.returncode != 0, err
    assert "restore worker process" in err and "killed by signal 9" in err, err
    coffer("restore", "latest", "--target", str(target), repo=repo, env=WORKERS)
    assert_trees_equal(src, target / "src")
    assert not [n for _, _, names in os.walk(target) for n in names if "coffer-tmp" in n]


def test_verify_and_sparse_through_the_workers(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    src = source(tmp_path / "src")
    with open(src / "holey.img", "wb") as f:  # 4 MiB of zeros around 1 MiB of data
        f.seek(2 * 1024 * 1024)
        f.write(os.urandom(1024 * 1024))
        f.truncate(7 * 1024 * 1024)
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    log = tmp_path / "sites"
    out = coffer("restore", "latest", "--target", str(tmp_path / "w"), "--verify", "--sparse", repo=repo,
                 env={**WORKERS, "COFFER_FAILPOINT_LOG": str(log)})
    assert "restore_worker_file" in log.read_text()
    inodes = {p.stat().st_ino for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
    text = (out.stdout + out.stderr).decode()
    assert f"finished verifying {len(inodes)} files" in text, text
    assert_trees_equal(src, tmp_path / "w" / "src")
    restored = tmp_path / "w" / "src" / "holey.img"
    assert restored.stat().st_blocks * 512 < 3 * 1024 * 1024  # the zeros are holes


def test_many_small_deals_while_the_trees_load(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    """Files dealt out batch by batch as their directories are read (deep tree, hard links across
    batches): the same tree as the threads write, every file by a worker, nothing left behind."""
    src = source(tmp_path / "src")
    deep = src / "deep"
    for i in range(6):
        deep = deep / f"l{i}"
        for j in range(3):
            (deep / f"s{j}").mkdir(parents=True)
            write_text(deep / f"s{j}" / "x.txt", 300 + i * 7 + j, seed=i * 3 + j)
    os.link(src / "large.bin", deep / "late-link.bin")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    log = tmp_path / "sites"
    coffer("restore", "latest", "--target", str(tmp_path / "w"), repo=repo,
           env={**WORKERS, "COFFER_RESTORE_DEAL_BYTES": "1", "COFFER_FAILPOINT_LOG": str(log)})
    coffer("restore", "latest", "--target", str(tmp_path / "t"), repo=repo, env=THREADS)
    assert_trees_equal(src, tmp_path / "w" / "src")
    assert_trees_equal(tmp_path / "t" / "src", tmp_path / "w" / "src")
    contents = {p.stat().st_ino for p in src.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size}
    assert log.read_text().count("restore_worker_file") == len(contents)  # hard links are linked, not written
    late = next((tmp_path / "w/src/deep").rglob("late-link.bin"))
    assert (tmp_path / "w/src/large.bin").stat().st_ino == late.stat().st_ino
    assert not [n for _, _, names in os.walk(tmp_path / "w") for n in names if "coffer-tmp" in n]


@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked-walkers", "spawned-early"])
def test_a_small_restore_leaves_no_process_behind(tmp_path: Path, repo: Path, coffer: Runner, fork: str) -> None:
    """Forked walkers restore even a small snapshot (they cost a fork each). Workers spawned
    before the repository is open (``COFFER_WORKER_FORK=0``) are ended unused by one too small for
    them (below the 32 MiB default), which writes in threads. Either way no process is left."""
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "a.bin", 40_000, seed=1)
    write_text(src / "b.txt", 2_000, seed=2)
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    log = tmp_path / "sites"
    p = subprocess.Popen([COFFER, "restore", "latest", "--target", str(tmp_path / "w")],
                         env=_env(repo, PASSWORD, {"COFFER_RESTORE_PROCESSES": "2", "COFFER_WORKER_FORK": fork,
                                                    "COFFER_FAILPOINT_LOG": str(log)}),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[int] = set()
    while p.poll() is None:
        seen |= set(child_pids(p.pid))
        time.sleep(0.01)
    _, err = p.communicate()
    assert p.returncode == 0, err.decode()
    assert len(seen) >= 2, "the workers were not started"
    written = log.read_text().count("restore_worker_file") if log.exists() else 0
    assert written == (2 if fork == "1" else 0)
    assert_trees_equal(src, tmp_path / "w" / "src")
    for pid in seen:  # every worker has ended (and was reaped: no zombie is left either)
        assert not Path(f"/proc/{pid}").exists()


def test_workers_started_early_and_not_needed_end_quietly(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    """The workers start while the plan is read; an include that leaves one file closes them."""
    src = source(tmp_path / "src")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    log = tmp_path / "sites"
    coffer("restore", "latest", "--target", str(tmp_path / "w"), "--include", "/src/dir2/f3.txt", repo=repo,
           env={**WORKERS, "COFFER_FAILPOINT_LOG": str(log)})
    assert not log.exists() or "restore_worker_file" not in log.read_text()
    got = [str(p.relative_to(tmp_path / "w")) for p in (tmp_path / "w").rglob("*") if p.is_file()]
    assert got == ["src/dir2/f3.txt"]
    assert (tmp_path / "w/src/dir2/f3.txt").read_bytes() == (src / "dir2" / "f3.txt").read_bytes()
