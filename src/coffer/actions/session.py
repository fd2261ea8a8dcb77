"""Opening a repository for a use case: backend, key, lock — and closing it again."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from coffer.store.backend.registry import open_backend
from coffer.store.format.snapshot import Snapshot
from coffer.store.locks import RepoLock
from coffer.store.metacache import attach_cache
from coffer.store.repository import Repository

LockMode = Literal["shared", "exclusive", "none"]


@dataclass
class RepoAccess:
    """Everything needed to reach one repository (the CLI fills it from flags and env)."""

    url: str
    password: str | Callable[[], str]
    options: dict[str, str] = field(default_factory=dict)
    no_lock: bool = False
    retry_lock: float = 0.0
    compression: str = "auto"
    pack_size: int | None = None
    key_hint: str | None = None
    dry_run: bool = False  # discard every write (backup --dry-run)
    read_only: bool = False  # refuse every write, take no lock (the source of `copy`)
    warn: Callable[[str], None] | None = None

    def get_password(self) -> str:
        return self.password() if callable(self.password) else self.password


def compression_level(mode: str) -> int | None:
    from coffer.errors import UsageError
    from coffer.store.format import compression

    levels: dict[str, int | None] = {
        "auto": compression.DEFAULT_LEVEL, "off": None, "fastest": 1, "max": 19, "better": 7,
    }
    if mode not in levels:
        raise UsageError(f"invalid compression mode {mode!r} (use auto, off, fastest, better or max)")
    return levels[mode]


def load_snapshots_and_index(
    repo: Repository, on_error: Callable[[bytes, Exception], None] | None = None,
) -> list[Snapshot]:
    """The snapshots, then the index: in that order a snapshot written in between is covered by
    the index. Read-only, so it can be the ``prepare`` that runs during the lock's wait."""
    snaps = repo.list_snapshots(on_error=on_error or (lambda sid, e: None))
    repo.load_index()
    return snaps


def backend_recipe(access: RepoAccess) -> tuple[str, dict[str, str], bool] | None:
    """How a worker process opens this repository's backend again (None: it may not write)."""
    return None if access.read_only else (access.url, dict(access.options), access.dry_run)


@contextlib.contextmanager
def open_repo(
    access: RepoAccess, lock: LockMode = "shared", prepare: Callable[[Repository], None] | None = None,
) -> Iterator[Repository]:
    """The repository, opened and locked. ``prepare`` (read-only: list snapshots, load the index)
    runs before the caller gets it, during the lock's re-check wait when there is a lock to take."""
    backend = open_backend(access.url, access.options, warn=access.warn)
    if access.read_only:
        from coffer.store.backend.readonly import ReadOnlyBackend

        backend = ReadOnlyBackend(backend)
        lock = "none"
    if access.dry_run:
        from coffer.store.backend.dryrun import DryRunBackend

        backend = DryRunBackend(backend)
        lock = "none"
    try:
        repo = Repository.open(backend, access.get_password(), key_hint=access.key_hint)
        if not access.read_only:
            repo.backend_recipe = backend_recipe(access)
        if not access.dry_run:
            attach_cache(repo, access.options, access.warn)
        repo.compression_level = compression_level(access.compression)
        if access.pack_size:
            repo.pack_size = access.pack_size
        if lock == "none" or access.no_lock:
            if prepare is not None:
                prepare(repo)
            yield repo
            return
        with RepoLock(repo, exclusive=(lock == "exclusive"), retry_for=access.retry_lock, warn=access.warn,
                      while_waiting=None if prepare is None else lambda: prepare(repo)):
            try:
                yield repo
            finally:
                repo.abort_writes()
    finally:
        backend.close()
