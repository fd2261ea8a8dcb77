"""Concurrency around prune: backups side by side, prune against a running backup, a lapsed lock.

* two coffer backups and a restic backup into one repository at once, then a prune: every snapshot
  restores and restic's ``check --read-data`` passes (T34);
* prune (and forget) while a backup runs: exit 11 at once, or, with ``--retry-lock``, wait for the
  backup and then prune; the running backup's packs are never deleted (T35), and restic's prune and
  coffer's refuse each other's running backups (T39);
* a backup paused past the stale limit (SIGSTOP, limits shortened through the environment) while a
  prune removes its unindexed packs: on resuming it refuses to write its snapshot (exit 11), so the
  repository never gets a snapshot with missing data (T36, restic #2715);
* a backup running longer than the stale limit keeps its lock fresh, so prune still stays out;
* a prune paused past the stale limit after writing its new index stops before deleting anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import COFFER, PASSWORD, Runner, _env, need_tool
from helpers.repos import init_repo, make_history, pack_files, snapshot_ids, snapshots_json
from helpers.sourcetree import make_tree
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic

SHORT_LOCKS = {"COFFER_LOCK_STALE_SECONDS": "3", "COFFER_LOCK_REFRESH_SECONDS": "1"}


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class StreamBackup:
    """A backup reading --stdin from a pipe we feed (and close) when we like."""

    def __init__(self, argv: list[str], repo: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.repo = repo
        self.p = subprocess.Popen(argv, env=_env(repo, PASSWORD, env), cwd=cwd, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sent = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(data)
        self.p.stdin.flush()
        self.sent.update(data)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.p.pid, signal.SIGCONT)
            self.p.kill()
        self.p.wait()


@contextlib.contextmanager
def stream_backup(tool: str, repo: Path, cwd: Path, env: dict[str, str] | None = None) -> Iterator[StreamBackup]:
    if tool == "coffer":
        argv = [COFFER, "--pack-size", "256k", "backup", "--stdin", "--stdin-filename", "stream.bin"]
    else:
        argv = [need_tool("restic"), "backup", "--stdin", "--stdin-filename", "stream.bin"]
    b = StreamBackup(argv, repo, cwd, env)
    try:
        yield b
    finally:
        b.kill()


def locks(repo: Path) -> set[str]:
    return {p.name for p in (repo / "locks").iterdir()}


def wait_for_packs(repo: Path, before: set[str], b: StreamBackup, n: int = 2) -> set[str]:
    """Pack files the running backup has uploaded so far (at least ``n``)."""
    def new() -> set[str] | None:
        if b.p.poll() is not None:
            raise AssertionError(f"the backup ended early: {b.finish()[2]}")
        got = set(pack_files(repo)) - before
        return got if len(got) >= n else None

    found: set[str] = wait_for(new, 60, f"{n} packs from the running backup")
    return found


def restore_stream(run: Runner, repo: Path, snap_id: str, target: Path) -> str:
    run("restore", snap_id, "--target", str(target), repo=repo)
    return hashlib.sha256((target / "stream.bin").read_bytes()).hexdigest()


@pytest.fixture
def garbage_repo(tmp_path: Path, coffer: Runner) -> tuple[Path, Any]:
    """A repository with six snapshots, the first four forgotten: a prune has real work to do."""
    h = make_history(init_repo(tmp_path / "repo"), tmp_path / "work", versions=6, file_size=200_000,
                     pack_size="256k", in_process=True)
    coffer("forget", *[s.id for s in h.snaps[:4]], repo=h.repo)
    return h.repo, h


# ---------------------------------------------------------------------------------------------- side by side


def test_two_coffer_backups_and_a_restic_backup_at_once_then_prune(
    tmp_path: Path, coffer: Runner, restic: Runner
) -> None:
    repo = init_repo(tmp_path / "repo")
    trees = {name: make_tree(tmp_path / name / "src", seed=i, special=False) for i, name in enumerate("abc")}
    shared = os.urandom(1_500_000)  # the same data in all three: they race to store it
    for t in trees.values():
        (t / "shared.bin").write_bytes(shared)
    procs = [
        subprocess.Popen([COFFER, "backup", "src"], cwd=trees["a"].parent, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(repo, PASSWORD, {"COFFER_HOSTNAME": "host-a"})),
        subprocess.Popen([COFFER, "backup", "src"], cwd=trees["b"].parent, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(repo, PASSWORD, {"COFFER_HOSTNAME": "host-b"})),
        subprocess.Popen([need_tool("restic"), "backup", "--host", "host-c", "src"], cwd=trees["c"].parent,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(repo, PASSWORD, None)),
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()
    assert locks(repo) == set()
    restic("check", "--read-data", repo=repo)
    # prune must not take anything a snapshot needs (the racing writers left duplicates, not holes)
    coffer("prune", "--max-unused", "0", repo=repo)
    restic("check", "--read-data", repo=repo)
    snaps = {s["hostname"]: s["id"] for s in snapshots_json(coffer, repo)}
    assert set(snaps) == {"host-a", "host-b", "host-c"}
    for host, name in (("host-a", "a"), ("host-b", "b"), ("host-c", "c")):
        target = tmp_path / f"restored-{name}"
        (restic if name == "a" else coffer)("restore", snaps[host], "--target", str(target), repo=repo)
        assert_trees_equal(trees[name], target / "src")


# ---------------------------------------------------------------------------------------------- prune vs backup


def test_prune_and_forget_fail_with_exit_11_while_a_backup_runs(
    tmp_path: Path, garbage_repo: tuple[Path, Any], coffer: Runner, restic: Runner
) -> None:
    repo, _h = garbage_repo
    before = set(pack_files(repo))
    with stream_backup("coffer", repo, tmp_path) as b:
        b.feed(os.urandom(12 << 20))  # the chunker reads 4 MiB blocks: this makes packs upload now
        uploaded = wait_for_packs(repo, before, b)
        for args in (["prune"], ["forget", "--keep-last", "1", "--prune"], ["repair", "index"]):
            r = coffer(*args, repo=repo, check=False)
            assert r.returncode == 11, (args, r.stderr.decode())
            err = r.stderr.decode()
            assert "locked" in err and "Traceback" not in err, err
        # restic honours coffer's lock too (T39)
        r = restic("prune", repo=repo, check=False)
        assert r.returncode != 0 and "locked" in r.stderr.decode()
        assert uploaded <= set(pack_files(repo)), "a prune deleted packs of the running backup"
        b.feed(os.urandom(1 << 20))
        rc, _, err = b.finish()
    assert rc == 0, err
    restic("check", "--read-data", repo=repo)
    new = snapshot_ids(repo) - {x.id for x in _h.snaps}
    assert len(new) == 1
    got = restore_stream(restic, repo, new.pop(), tmp_path / "restored")
    assert got == b.sent.hexdigest()


def test_coffer_prune_refuses_while_restic_backs_up(tmp_path: Path, garbage_repo: tuple[Path, Any],
                                                    coffer: Runner) -> None:
    repo, _h = garbage_repo
    with stream_backup("restic", repo, tmp_path) as b:
        b.feed(os.urandom(1 << 20))
        wait_for(lambda: locks(repo), 30, "restic's lock")
        r = coffer("prune", repo=repo, check=False)
        assert r.returncode == 11, r.stderr.decode()
        rc, _, err = b.finish()
    assert rc == 0, err


def test_prune_with_retry_lock_waits_for_the_backup(
    tmp_path: Path, garbage_repo: tuple[Path, Any], coffer: Runner, restic: Runner
) -> None:
    repo, h = garbage_repo
    before = set(pack_files(repo))
    with stream_backup("coffer", repo, tmp_path) as b:
        b.feed(os.urandom(12 << 20))  # the chunker reads 4 MiB blocks: this makes packs upload now
        uploaded = wait_for_packs(repo, before, b)
        prune = subprocess.Popen([COFFER, "--retry-lock", "2m", "prune", "--max-unused", "0"], cwd=tmp_path,
                                 env=_env(repo, PASSWORD, None), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2.5)  # the prune is waiting now: it must not have touched anything
        assert prune.poll() is None, prune.communicate()
        assert uploaded <= set(pack_files(repo))
        assert before <= set(pack_files(repo)), "prune deleted packs while the backup held its lock"
        b.feed(os.urandom(1 << 20))
        rc, _, err = b.finish()
        assert rc == 0, err
        out, perr = prune.communicate(timeout=120)
    assert prune.returncode == 0, perr.decode()
    assert b"done" in out
    assert set(pack_files(repo)) != before, "the prune had work to do once it got the lock"
    restic("check", "--read-data", repo=repo)
    new = snapshot_ids(repo) - {s.id for s in h.snaps}
    assert len(new) == 1
    assert restore_stream(coffer, repo, new.pop(), tmp_path / "restored") == b.sent.hexdigest()
    for s in h.snaps[4:]:
        target = tmp_path / f"r-{s.id[:8]}"
        restic("restore", s.id, "--target", str(target), repo=repo)
        assert_trees_equal(s.manifest, target / "src")


# ---------------------------------------------------------------------------------------------- lapsed lock


def test_backup_paused_past_the_stale_limit_refuses_to_write_its_snapshot(
    tmp_path: Path, garbage_repo: tuple[Path, Any], coffer: Runner, restic: Runner
) -> None:
    """restic #2715: the backup's lock went stale, a prune deleted its packs, the backup went on."""
    repo, h = garbage_repo
    before = set(pack_files(repo))
    with stream_backup("coffer", repo, tmp_path, SHORT_LOCKS) as b:
        b.feed(os.urandom(12 << 20))  # the chunker reads 4 MiB blocks: this makes packs upload now
        uploaded = wait_for_packs(repo, before, b)
        os.kill(b.p.pid, signal.SIGSTOP)
        try:
            time.sleep(4)  # past the 3 s stale limit
            # an administrator sees a stale lock, removes it (T36: unlock, then prune), and the prune
            # removes the unindexed packs
            assert coffer("prune", "--max-unused", "0", repo=repo, env=SHORT_LOCKS, check=False).returncode == 11
            coffer("unlock", repo=repo, env=SHORT_LOCKS)
            r = coffer("prune", "--max-unused", "0", repo=repo, env=SHORT_LOCKS)
            assert r.returncode == 0, r.stderr.decode()
            assert not uploaded & set(pack_files(repo)), "the prune was expected to delete the orphaned packs"
        finally:
            os.kill(b.p.pid, signal.SIGCONT)
        with contextlib.suppress(BrokenPipeError):
            b.feed(os.urandom(1 << 20))
        rc, out, err = b.finish()
    assert rc == 11, err
    assert "lock" in err.lower() and "Traceback" not in err
    assert "saved" not in out
    assert snapshot_ids(repo) == {s.id for s in h.snaps[4:]}, "a snapshot was written without its lock"
    restic("check", "--read-data", repo=repo)
    # and the next backup works
    with stream_backup("coffer", repo, tmp_path) as b2:
        b2.feed(os.urandom(1 << 20))
        rc, _, err = b2.finish()
    assert rc == 0, err
    restic("check", repo=repo)


def test_long_backup_keeps_its_lock_fresh_so_prune_stays_out(
    tmp_path: Path, garbage_repo: tuple[Path, Any], coffer: Runner, restic: Runner
) -> None:
    """A backup running for longer than the stale limit refreshes its lock; prune must still wait."""
    repo, h = garbage_repo
    seen: set[str] = set()
    with stream_backup("coffer", repo, tmp_path, SHORT_LOCKS) as b:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:  # well past the 3 s stale limit
            b.feed(os.urandom(256 << 10))
            seen |= locks(repo)
            time.sleep(0.2)
        assert len(seen) >= 3, f"the lock was not refreshed: {seen}"
        r = coffer("prune", repo=repo, env=SHORT_LOCKS, check=False)
        assert r.returncode == 11, r.stderr.decode()
        rc, _, err = b.finish()
    assert rc == 0, err
    restic("check", "--read-data", repo=repo)
    new = snapshot_ids(repo) - {s.id for s in h.snaps}
    assert restore_stream(restic, repo, new.pop(), tmp_path / "restored") == b.sent.hexdigest()


def test_prune_that_lost_its_lock_stops_before_deleting(
    tmp_path: Path, garbage_repo: tuple[Path, Any], coffer: Runner, restic: Runner
) -> None:
    repo, h = garbage_repo
    packs = set(pack_files(repo))
    index = {p.name for p in (repo / "index").iterdir()}
    env = {**SHORT_LOCKS, "COFFER_FAILPOINT": "prune_after_index_put:1=sleep:2"}
    p = subprocess.Popen([COFFER, "prune", "--max-unused", "0"], cwd=tmp_path, env=_env(repo, PASSWORD, env),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the compact index is written, the old index files and the packs are still to be deleted
        wait_for(lambda: {x.name for x in (repo / "index").iterdir()} - index, 60, "the new index")
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(4)  # past the 3 s stale limit
        os.kill(p.pid, signal.SIGCONT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 11, err.decode()
    assert b"lock" in err and b"Traceback" not in err
    assert packs <= set(pack_files(repo)), "a prune without its lock deleted packs"
    assert index <= {x.name for x in (repo / "index").iterdir()}, "a prune without its lock deleted index files"
    restic("--no-lock", "check", "--read-data", repo=repo)
    coffer("prune", "--max-unused", "0", repo=repo)
    restic("check", "--read-data", repo=repo)
    for s in h.snaps[4:]:
        target = tmp_path / f"r-{s.id[:8]}"
        restic("restore", s.id, "--target", str(target), repo=repo)
        assert_trees_equal(s.manifest, target / "src")
