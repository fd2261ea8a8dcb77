"""Repository locks by restic's rules, so restic and coffer honour each other.

Shared locks (backup, restore, reading) coexist; an exclusive lock (prune, forget, key removal)
excludes every other lock. A lock is stale when it is older than 30 minutes or was made on this
host by a process that no longer exists; only the latter is passed over automatically, the former
blocks until `unlock` removes it (it may belong to a paused process). A holder refreshes its lock
every 5 minutes; if it could not refresh in time (network trouble, the process was paused, the
clock jumped) it has lost the lock and must stop writing, because a prune elsewhere may already
have judged its data garbage.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from coffer import env
from coffer.errors import BackendError, FormatError, LockConflict, LockLost, ObjectNotFound
from coffer.store.backend.base import FileType, Handle
from coffer.store.format.lock import LockInfo
from coffer.store.repository import Repository
from coffer.util import gotime

STALE_AFTER = float(os.environ.get("COFFER_LOCK_STALE_SECONDS", 30 * 60))
REFRESH_EVERY = float(os.environ.get("COFFER_LOCK_REFRESH_SECONDS", 5 * 60))
RECHECK_DELAY = 0.2


@dataclass(frozen=True, slots=True)
class FoundLock:
    id: bytes
    info: LockInfo

    def stale(self, now_ns: int | None = None) -> bool:
        """restic's rule for `unlock`: not refreshed for 30 minutes, or provably dead."""
        now_ns = gotime.now_ns() if now_ns is None else now_ns
        if now_ns - self.info.time_ns > STALE_AFTER * 1e9:
            return True
        return self.dead()

    def dead(self) -> bool:
        """Made on this host by a process that no longer exists."""
        return self.info.hostname == env.hostname() and not env.pid_alive(self.info.pid)

    def describe(self) -> str:
        age = max(0.0, (gotime.now_ns() - self.info.time_ns) / 1e9)
        kind = "exclusive" if self.info.exclusive else "shared"
        return (
            f"{kind} lock held by PID {self.info.pid} on {self.info.hostname} by {self.info.username} "
            f"(UID {self.info.uid}, GID {self.info.gid}), created at {self.info.time} ({_age(age)} ago), "
            f"storage ID {self.id.hex()[:8]}"
        )


def _age(sec: float) -> str:
    if sec < 120:
        return f"{sec:.0f}s"
    if sec < 7200:
        return f"{sec / 60:.0f}m"
    return f"{sec / 3600:.1f}h"


def list_locks(repo: Repository, warn: Callable[[str], None] | None = None) -> list[FoundLock]:
    found = []
    for lid in repo.list_ids(FileType.LOCK):
        try:
            found.append(FoundLock(lid, LockInfo.from_json(repo.load_unpacked(FileType.LOCK, lid))))
        except ObjectNotFound:
            continue  # removed while we listed
        except (FormatError, BackendError) as e:
            if warn:
                warn(f"ignoring unreadable lock {lid.hex()[:8]}: {e}")
    return found


class RepoLock:
    """A held lock with a refresher thread. Use as a context manager."""

    def __init__(
        self, repo: Repository, *, exclusive: bool, retry_for: float = 0.0,
        warn: Callable[[str], None] | None = None, while_waiting: Callable[[], None] | None = None,
    ) -> None:
        self.repo = repo
        # Read-only work the caller needs anyway (snapshots, index), done during the re-check's
        # wait instead of after it: our lock file is written by then, so no exclusive lock (no
        # prune) can start deleting while it runs, and a conflict found afterwards still fails.
        # It runs once per attempt, so it must replace what an earlier attempt prepared.
        self.while_waiting = while_waiting
        self.exclusive = exclusive
        self.retry_for = retry_for
        self.warn = warn
        self.lock_id: bytes | None = None
        self._last_ok_mono = 0.0
        self._last_ok_wall = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mu = threading.Lock()

    # ------------------------------------------------------------------ acquire / release
    def _conflicts(self) -> list[FoundLock]:
        out = []
        for fl in list_locks(self.repo, self.warn):
            if fl.id == self.lock_id:
                continue
            if not (self.exclusive or fl.info.exclusive):
                continue
            # Only a lock whose process is provably gone is passed over. A lock that merely went
            # unrefreshed may belong to a paused process (restic 0.14 writes its snapshot anyway when
            # it wakes up): a prune that ignored it could delete the data that snapshot needs. As with
            # restic, such locks block until someone who knows removes them with `unlock`.
            if fl.dead():
                if self.warn:
                    self.warn(f"ignoring lock of a process that is gone: {fl.describe()}")
                continue
            out.append(fl)
        return out

    def _new_info(self) -> LockInfo:
        return LockInfo(
            time=gotime.format_ns(gotime.now_ns()), exclusive=self.exclusive, hostname=env.hostname(),
            username=env.username(), pid=os.getpid(), uid=os.getuid(), gid=os.getgid(),
        )

    def acquire(self) -> RepoLock:
        deadline = time.monotonic() + self.retry_for
        delay = 1.0
        while True:
            try:
                self._try_acquire()
                break
            except LockConflict:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
        self._last_ok_mono = time.monotonic()
        self._last_ok_wall = time.time()
        self._thread = threading.Thread(target=self._refresher, name="lock-refresh", daemon=True)
        self._thread.start()
        self.repo.lock_guard = self.check
        return self

    def _try_acquire(self) -> None:
        conflicts = self._conflicts()
        if conflicts:
            raise self._conflict_error(conflicts[0])
        self.lock_id = self.repo.save_unpacked(FileType.LOCK, self._new_info().to_json())
        start = time.monotonic()
        # Again on every attempt: a conflict means an exclusive lock (a prune) may have run between
        # attempts, and an index read before it could point at packs that are gone now.
        work = self.while_waiting
        if work is not None:
            try:
                work()
            except BaseException:
                self._remove_own()
                raise
        time.sleep(max(0.0, RECHECK_DELAY - (time.monotonic() - start)))
        conflicts = self._conflicts()
        if conflicts:
            self._remove_own()
            raise self._conflict_error(conflicts[0])

    def _conflict_error(self, fl: FoundLock) -> LockConflict:
        stale = " (stale: not refreshed for over 30 minutes)" if fl.stale() else ""
        return LockConflict(
            f"unable to create lock in backend: repository is already locked: {fl.describe()}{stale}",
            hint="if that process is gone, remove the lock with `coffer unlock`; or wait with --retry-lock",
        )

    def _remove_own(self) -> None:
        if self.lock_id is not None:
            try:
                self.repo.backend.remove(Handle(FileType.LOCK, self.lock_id.hex()))
            except ObjectNotFound:
                pass
            self.lock_id = None

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._mu:
            try:
                self._remove_own()
            except BackendError as e:
                if self.warn:
                    self.warn(f"could not remove our lock: {e}")
        if self.repo.lock_guard == self.check:
            self.repo.lock_guard = None

    def __enter__(self) -> RepoLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ keeping it fresh
    def _expired(self) -> str | None:
        mono = time.monotonic() - self._last_ok_mono
        wall = time.time() - self._last_ok_wall
        limit = STALE_AFTER - min(60.0, STALE_AFTER / 10)
        if mono > limit or wall > limit or wall < -60:
            return f"the lock was last refreshed {max(mono, wall):.0f}s ago (limit {limit:.0f}s)"
        return None

    def _refresher(self) -> None:
        while not self._stop.wait(min(REFRESH_EVERY, 5.0) if self._lost is None else 3600):
            if time.monotonic() - self._last_ok_mono < REFRESH_EVERY and self._expired() is None:
                continue
            self.refresh()

    def refresh(self) -> None:
        with self._mu:
            if self._lost is not None or self.lock_id is None:
                return
            why = self._expired()
            if why:
                self._lost = why
                return
            old = self.lock_id
            try:
                if not self.repo.backend.exists(Handle(FileType.LOCK, old.hex())):
                    self._lost = "our lock file was removed by another process"
                    return
                new = self.repo.save_unpacked(FileType.LOCK, self._new_info().to_json())
                self.lock_id = new
                self.repo.backend.remove(Handle(FileType.LOCK, old.hex()))
                self._last_ok_mono = time.monotonic()
                self._last_ok_wall = time.time()
            except BackendError as e:
                if self.warn:
                    self.warn(f"could not refresh lock: {e}")

    def check(self) -> None:
        """Raise LockLost if we may no longer write (called before every commit point)."""
        with self._mu:
            if self._lost is None:
                why = self._expired()
                if why:
                    self._lost = why
                elif self.lock_id is not None and not self.repo.backend.exists(
                    Handle(FileType.LOCK, self.lock_id.hex())
                ):
                    self._lost = "our lock file was removed by another process"
            if self._lost is not None:
                raise LockLost(
                    f"repository lock lost: {self._lost}; stopping before writing anything that depends on it",
                    hint="nothing was committed; run the command again",
                )


def unlock(repo: Repository, *, remove_all: bool = False) -> list[FoundLock]:
    """Remove stale locks (or all locks). Returns the removed ones."""
    removed = []
    for fl in list_locks(repo):
        if remove_all or fl.stale():
            try:
                repo.backend.remove(Handle(FileType.LOCK, fl.id.hex()))
                removed.append(fl)
            except ObjectNotFound:
                pass
    return removed
