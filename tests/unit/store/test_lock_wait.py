"""The lock's re-check wait does the caller's read-only preparation instead of sleeping through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coffer.errors import LockConflict
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.local import LocalBackend
from coffer.store.format.lock import LockInfo
from coffer.store.locks import RECHECK_DELAY, RepoLock
from coffer.store.repository import Repository
from coffer.util import gotime

PASSWORD = "lock-wait"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    backend = LocalBackend(str(tmp_path / "repo"))
    Repository.init(backend, PASSWORD)
    return Repository.open(LocalBackend(str(tmp_path / "repo")), PASSWORD)


def lock_files(repo: Repository) -> set[str]:
    return {i.name for i in repo.backend.list(FileType.LOCK)}


def foreign_exclusive_lock(repo: Repository) -> None:
    info = LockInfo(time=gotime.format_ns(gotime.now_ns()), exclusive=True, hostname="elsewhere",
                    username="someone", pid=os.getpid())  # a live PID on another host: never "dead"
    repo.save_unpacked(FileType.LOCK, info.to_json())


def test_work_runs_once_after_our_lock_is_written(repo: Repository) -> None:
    seen: list[set[str]] = []
    lock = RepoLock(repo, exclusive=False, while_waiting=lambda: seen.append(lock_files(repo)))
    with lock:
        assert len(seen) == 1 and len(seen[0]) == 1  # our own lock file, already there
        assert lock.lock_id is not None and seen[0] == {lock.lock_id.hex()}
    assert lock_files(repo) == set()


def test_a_conflict_that_appears_meanwhile_still_fails_and_removes_our_lock(repo: Repository) -> None:
    with pytest.raises(LockConflict):
        RepoLock(repo, exclusive=False, while_waiting=lambda: foreign_exclusive_lock(repo)).acquire()
    left = [LockInfo.from_json(repo.load_unpacked(FileType.LOCK, bytes.fromhex(n))) for n in lock_files(repo)]
    assert [i.hostname for i in left] == ["elsewhere"]  # ours is gone, the other one stays


def test_failing_work_removes_our_lock(repo: Repository) -> None:
    def boom() -> None:
        raise RuntimeError("index unreadable")

    with pytest.raises(RuntimeError, match="index unreadable"):
        RepoLock(repo, exclusive=True, while_waiting=boom).acquire()
    assert lock_files(repo) == set()


def test_work_runs_again_after_a_retried_attempt(repo: Repository) -> None:
    """A conflict found after the wait sends the acquisition round again; what was prepared before
    it (an index read while a prune was about to start) is stale, so the work runs again."""
    runs: list[int] = []

    def work() -> None:
        runs.append(len(lock_files(repo)))
        if len(runs) == 1:  # an exclusive lock appears during our first wait, then goes away
            foreign_exclusive_lock(repo)

    def drop_foreign(delay: float) -> None:
        if delay <= RECHECK_DELAY:  # the re-check's own wait, not the pause between attempts
            return
        for name in lock_files(repo):
            info = LockInfo.from_json(repo.load_unpacked(FileType.LOCK, bytes.fromhex(name)))
            if info.hostname == "elsewhere":
                repo.backend.remove(Handle(FileType.LOCK, name))

    lock = RepoLock(repo, exclusive=False, retry_for=30, while_waiting=work)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("coffer.store.locks.time.sleep", drop_foreign)
        with lock:
            pass
    assert len(runs) == 2, "the preparation of the first attempt was kept"
    assert lock_files(repo) == set()
