"""Repository locks between real processes: coffer with coffer, coffer with restic 0.14.

Covers reliability cases T34 (concurrent backups), T36 (lock lost under a running backup), T37
(stale-lock rules) and T39 (restic interop), plus SIGHUP survival: restic's `unlock` probes a
same-host lock holder with SIGHUP, which must not kill a running coffer backup.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer.store.backend.base import FileType
from coffer.store.backend.local import LocalBackend
from coffer.store.format.lock import LockInfo
from coffer.store.repository import Repository
from coffer.util import gotime
from conftest import COFFER, PASSWORD, Runner, _env, need_tool
from helpers.sourcetree import make_tree
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic

SHORT_LOCKS = {"COFFER_LOCK_STALE_SECONDS": "6", "COFFER_LOCK_REFRESH_SECONDS": "2"}


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A new repository, made in-process (no interpreter start-up; `coffer init` is tested elsewhere)."""
    r = tmp_path / "repo"
    Repository.init(LocalBackend(str(r)), PASSWORD)
    return r


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    s.mkdir()
    (s / "a.txt").write_text("alpha")
    (s / "b.bin").write_bytes(os.urandom(100_000))
    return s


def lock_ids(repo: Path) -> set[str]:
    """Lock files by ID; restic's temporary files (``<id>-tmp-<n>``, renamed into place a moment
    later) are not locks yet."""
    return {p.name for p in (repo / "locks").iterdir() if re.fullmatch(r"[0-9a-f]{64}", p.name)}


def snapshot_files(repo: Path) -> list[str]:
    return [p.name for p in (repo / "snapshots").iterdir()]


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def open_repository(repo: Path) -> Repository:
    return Repository.open(LocalBackend(str(repo)), PASSWORD)


def read_lock(repo: Path, lock_id: str) -> LockInfo:
    return LockInfo.from_json(open_repository(repo).load_unpacked(FileType.LOCK, bytes.fromhex(lock_id)))


def write_lock(repo: Path, *, hostname: str, pid: int, exclusive: bool, age_s: float = 0.0,
               username: str = "someone") -> str:
    info = LockInfo(time=gotime.format_ns(gotime.now_ns() - int(age_s * 1e9)), exclusive=exclusive,
                    hostname=hostname, username=username, pid=pid)
    return open_repository(repo).save_unpacked(FileType.LOCK, info.to_json()).hex()


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


class SlowStdin:
    """A backup (coffer or restic) reading --stdin from a pipe we feed and close when we like."""

    def __init__(self, argv: list[str], repo: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.p = subprocess.Popen(argv, env=_env(repo, PASSWORD, env), cwd=cwd, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sent = bytearray()

    @property
    def pid(self) -> int:
        return self.p.pid

    def feed(self, data: bytes) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(data)
        self.p.stdin.flush()
        self.sent += data

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Close the pipe (end of stream) and wait for the exit."""
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.p.pid, signal.SIGCONT)
            self.p.kill()
        self.p.wait()


@contextlib.contextmanager
def slow_stdin(argv: list[str], repo: Path, cwd: Path, env: dict[str, str] | None = None) -> Iterator[SlowStdin]:
    s = SlowStdin(argv, repo, cwd, env)
    try:
        yield s
    finally:
        s.kill()


def coffer_stdin(repo: Path, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return slow_stdin([COFFER, "backup", "--stdin", "--stdin-filename", "stream.bin"], repo, cwd, env)


def wait_for_new_lock(repo: Path, before: set[str], proc: SlowStdin) -> str:
    def found() -> str | None:
        if proc.p.poll() is not None:
            raise AssertionError(f"the backup exited early: {proc.finish()[2]}")
        new = lock_ids(repo) - before
        return next(iter(new)) if new else None

    lid: str = wait_for(found, 30, "the backup's lock file")
    return lid


# ---------------------------------------------------------------------------------------------- SIGHUP, restic interop


def test_sighup_and_restic_unlock_do_not_stop_a_backup(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    host = socket.gethostname()  # restic only probes (with SIGHUP) holders on its own host
    with coffer_stdin(repo, tmp_path, {"COFFER_HOSTNAME": host}) as b:
        b.feed(os.urandom(1 << 20))
        lid = wait_for_new_lock(repo, set(), b)
        info = read_lock(repo, lid)
        assert (info.pid, info.hostname, info.exclusive) == (b.pid, host, False)
        # T39: restic parses coffer's lock file, with restic's field names
        rl = json.loads(restic("cat", "lock", lid, repo=repo).stdout)
        expected_keys = ["time", "exclusive", "hostname", "username", "pid"]
        expected_keys += [k for k, v in (("uid", os.getuid()), ("gid", os.getgid())) if v]  # omitempty
        assert list(rl) == expected_keys and rl["pid"] == b.pid
        restic("unlock", repo=repo)
        os.kill(b.pid, signal.SIGHUP)
        # T39: restic honours coffer's lock: its prune (exclusive) refuses to run
        rp = restic("prune", repo=repo, check=False)
        assert rp.returncode != 0 and b"locked" in rp.stderr, rp.stderr.decode()
        assert str(b.pid).encode() in rp.stderr
        time.sleep(0.3)
        assert b.p.poll() is None, "SIGHUP killed the backup"
        assert lid in lock_ids(repo), "restic unlock removed the lock of a live coffer process"
        b.feed(os.urandom(1 << 20))
        rc, out, err = b.finish()
        assert rc == 0, err
        assert "saved" in out
    assert lock_ids(repo) == set()
    assert len(snapshot_files(repo)) == 1
    assert restic("dump", "latest", "/stream.bin", repo=repo).stdout == bytes(b.sent)
    restic("check", repo=repo)


def test_restic_shared_lock_allows_backup_but_blocks_exclusive_key_ops(
    tmp_path: Path, repo: Path, src: Path, coffer: Runner, restic: Runner
) -> None:
    newpw = tmp_path / "newpw"
    newpw.write_text("another password\n")
    coffer("key", "add", "--new-password-file", str(newpw), repo=repo)
    keys = json.loads(coffer("key", "list", "--json", repo=repo).stdout)
    other = next(k["id"] for k in keys if not k["current"])
    argv = [need_tool("restic"), "backup", "--stdin", "--stdin-filename", "restic.bin"]
    with slow_stdin(argv, repo, tmp_path) as rb:
        rb.feed(os.urandom(1 << 20))
        wait_for_new_lock(repo, set(), rb)
        # shared + shared
        r = coffer("backup", str(src), repo=repo, check=False)
        assert r.returncode == 0, r.stderr.decode()
        # exclusive key operations must wait for restic
        for args in (("key", "remove", other), ("key", "passwd", "--new-password-file", str(newpw))):
            r = coffer(*args, repo=repo, check=False)
            assert r.returncode == 11, (args, r.stderr.decode())
            assert f"PID {rb.pid}" in r.stderr.decode(), r.stderr.decode()
            assert b"Traceback" not in r.stderr
        assert len(list((repo / "keys").iterdir())) == 2, "a refused key operation changed the keys"
        rc, _, err = rb.finish()
        assert rc == 0, err
    coffer("key", "remove", other, repo=repo)  # restic's lock is gone now
    assert len(list((repo / "keys").iterdir())) == 1
    assert len(snapshot_files(repo)) == 2


def test_terminated_backup_removes_its_lock_and_writes_no_snapshot(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    with coffer_stdin(repo, tmp_path) as b:
        b.feed(os.urandom(3 << 20))  # enough for a pack to be in flight
        wait_for_new_lock(repo, set(), b)
        time.sleep(0.3)
        os.kill(b.pid, signal.SIGTERM)  # handled like SIGINT: clean up, exit 130
        rc, out, err = b.finish()
    assert rc == 130, err
    assert "signal interrupt received" in err and "Traceback" not in err
    assert "saved" not in out
    assert lock_ids(repo) == set()
    assert snapshot_files(repo) == []
    restic("check", repo=repo)


# ---------------------------------------------------------------------------------------------- stale and held locks


def test_restic_exclusive_lock_blocks_and_is_stale_once_restic_is_killed(
    tmp_path: Path, repo: Path, src: Path, coffer: Runner, restic: Runner
) -> None:
    host = {"COFFER_HOSTNAME": socket.gethostname()}  # the host restic records in its locks
    # `restic key passwd` takes the exclusive lock, then waits for the new password on stdin
    with slow_stdin([need_tool("restic"), "key", "passwd"], repo, tmp_path) as rk:
        lid = wait_for_new_lock(repo, set(), rk)
        r = coffer("backup", str(src), repo=repo, env=host, check=False)
        assert r.returncode == 11, r.stderr.decode()
        err = r.stderr.decode()
        assert f"PID {rk.pid}" in err and "exclusive" in err and "Traceback" not in err
        coffer("unlock", repo=repo, env=host)
        assert lid in lock_ids(repo), "unlock removed the lock of a live restic"
        rk.p.kill()  # kill -9: the lock file stays behind
        rk.p.wait()
    assert lock_ids(repo) == {lid}
    # same host, PID gone: stale, so it neither blocks a backup nor survives `unlock`
    r = coffer("backup", str(src), repo=repo, env=host, check=False)
    assert r.returncode == 0, r.stderr.decode()
    coffer("unlock", repo=repo, env=host)
    assert lock_ids(repo) == set()
    restic("check", repo=repo)


def test_dead_locks_do_not_block_stale_ones_do_and_unlock_removes_both(
    tmp_path: Path, repo: Path, src: Path, coffer: Runner, restic: Runner
) -> None:
    dead = write_lock(repo, hostname="testhost", pid=dead_pid(), exclusive=True)  # our host, process gone
    r = coffer("backup", str(src), repo=repo, check=False)
    assert r.returncode == 0, r.stderr.decode()
    assert lock_ids(repo) == {dead}, "coffer must remove its own lock and only its own"
    # Not refreshed for 31 minutes, from another host: maybe dead, maybe paused (restic 0.14 writes its
    # snapshot when it wakes up). It blocks, as in restic, until someone who knows runs unlock.
    old = write_lock(repo, hostname="otherhost", pid=4242, exclusive=True, age_s=31 * 60)
    r = coffer("backup", str(src), repo=repo, check=False)
    assert r.returncode == 11, r.stderr.decode()
    assert b"stale" in r.stderr and b"coffer unlock" in r.stderr
    r = coffer("unlock", repo=repo)
    assert lock_ids(repo) == set(), (dead, old)
    coffer("backup", str(src), repo=repo)
    restic("check", repo=repo)


def test_live_exclusive_locks_block_and_only_remove_all_removes_them(
    tmp_path: Path, repo: Path, src: Path, coffer: Runner
) -> None:
    other = write_lock(repo, hostname="otherhost", pid=4242, exclusive=True, age_s=60)
    # same host name, PID alive: maybe a container with our name, or us; never stale on a PID check alone
    same = write_lock(repo, hostname="testhost", pid=os.getpid(), exclusive=True)
    r = coffer("backup", str(src), repo=repo, check=False)
    assert r.returncode == 11, r.stderr.decode()
    assert b"Traceback" not in r.stderr
    assert snapshot_files(repo) == []
    assert lock_ids(repo) == {other, same}
    coffer("unlock", repo=repo)
    assert lock_ids(repo) == {other, same}, "unlock without --remove-all removed a live lock"
    os.unlink(repo / "locks" / same)
    r = coffer("backup", str(src), repo=repo, check=False)
    assert r.returncode == 11
    err = r.stderr.decode()
    assert "otherhost" in err and "4242" in err and "exclusive" in err
    coffer("unlock", "--remove-all", repo=repo)
    assert lock_ids(repo) == set()
    coffer("backup", str(src), repo=repo)
    assert len(snapshot_files(repo)) == 1


def test_retry_lock_waits_until_the_lock_is_released(
    tmp_path: Path, repo: Path, src: Path, coffer: Runner, restic: Runner
) -> None:
    lid = write_lock(repo, hostname="otherhost", pid=4242, exclusive=True)
    timer = threading.Timer(2.0, lambda: os.unlink(repo / "locks" / lid))
    t0 = time.monotonic()
    timer.start()
    try:
        r = coffer("backup", "--retry-lock", "10s", str(src), repo=repo, check=False)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr.decode()
    assert 2.0 <= elapsed < 10, elapsed
    assert len(snapshot_files(repo)) == 1
    assert lock_ids(repo) == set()


# ---------------------------------------------------------------------------------------------- lost locks (T36)


@pytest.mark.slow
def test_backup_frozen_past_the_stale_limit_writes_no_snapshot(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    with coffer_stdin(repo, tmp_path, SHORT_LOCKS) as b:
        b.feed(os.urandom(1 << 20))
        wait_for_new_lock(repo, set(), b)
        os.kill(b.pid, signal.SIGSTOP)
        try:
            time.sleep(8)  # longer than the 6 s stale limit: a prune elsewhere may now delete its data
        finally:
            os.kill(b.pid, signal.SIGCONT)
        with contextlib.suppress(BrokenPipeError):
            b.feed(os.urandom(1 << 20))
        rc, out, err = b.finish()
    assert rc == 11, err
    assert "lock lost" in err and "Traceback" not in err
    assert lock_ids(repo) == set()
    assert "saved" not in out
    assert snapshot_files(repo) == []
    restic("check", repo=repo)


def test_lock_removed_under_a_running_backup_writes_no_snapshot(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    with coffer_stdin(repo, tmp_path, {**SHORT_LOCKS, "COFFER_LOCK_REFRESH_SECONDS": "1"}) as b:
        b.feed(os.urandom(1 << 20))
        wait_for_new_lock(repo, set(), b)
        coffer("unlock", "--remove-all", repo=repo)
        assert lock_ids(repo) == set()
        time.sleep(1.5)  # more than a refresh period: the refresher must notice, not re-create the lock
        assert lock_ids(repo) == set(), "the backup silently re-created a lock someone removed"
        b.feed(os.urandom(1 << 20))
        rc, _, err = b.finish()
    assert rc == 11, err
    assert "lock lost" in err and "Traceback" not in err
    assert lock_ids(repo) == set()
    assert snapshot_files(repo) == []
    restic("check", repo=repo)


# ---------------------------------------------------------------------------------------------- concurrency (T34)


def _popen(argv: list[str], repo: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=_env(repo, PASSWORD, env), cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _snapshot_of(coffer: Runner, repo: Path, path: Path) -> dict[str, Any]:
    snaps = json.loads(coffer("snapshots", "--json", repo=repo).stdout)
    found = [s for s in snaps if s["paths"] == [str(path)]]
    assert len(found) == 1, snaps
    return found[0]


def test_two_coffer_backups_at_once(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    a = make_tree(tmp_path / "a" / "src", seed=1)
    b = make_tree(tmp_path / "b" / "src", seed=2)
    pa = _popen([COFFER, "backup", "src"], repo, a.parent, {"COFFER_HOSTNAME": "host-a"})
    pb = _popen([COFFER, "backup", "src"], repo, b.parent, {"COFFER_HOSTNAME": "host-b"})
    for p in (pa, pb):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert lock_ids(repo) == set()
    for tree, host in ((a, "host-a"), (b, "host-b")):
        snap = _snapshot_of(coffer, repo, tree)
        assert snap["hostname"] == host
        target = tree.parent / "restored"
        coffer("restore", snap["id"], "--target", str(target), repo=repo)
        assert_trees_equal(tree, target / "src")
    restic("check", "--read-data", repo=repo)


def test_coffer_and_restic_backups_at_once(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    a = make_tree(tmp_path / "a" / "src", seed=3)
    b = make_tree(tmp_path / "b" / "src", seed=4)
    pa = _popen([COFFER, "backup", "src"], repo, a.parent)
    pb = _popen([need_tool("restic"), "backup", "src"], repo, b.parent)
    for p in (pa, pb):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert lock_ids(repo) == set()
    # each snapshot restored by the other program
    sa = _snapshot_of(coffer, repo, a)
    restic("restore", sa["id"], "--target", str(a.parent / "restored"), repo=repo)
    assert_trees_equal(a, a.parent / "restored" / "src")
    sb = _snapshot_of(coffer, repo, b)
    coffer("restore", sb["id"], "--target", str(b.parent / "restored"), repo=repo)
    assert_trees_equal(b, b.parent / "restored" / "src")
    restic("check", "--read-data", repo=repo)
