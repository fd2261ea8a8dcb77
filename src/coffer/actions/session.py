"""Opening a repository for a use case: backend, key, lock — and closing it again."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from coffer.errors import CofferError
from coffer.store import keyprefetch
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.cache import CachedBackend, default_cache_dir
from coffer.store.backend.registry import local_path, open_backend
from coffer.store.format.snapshot import Snapshot
from coffer.store.keyprefetch import KeyPrefetch
from coffer.store.locks import RepoLock
from coffer.store.metacache import attach_cache, cache_enabled
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


def _cache_dir(access: RepoAccess) -> str | None:
    return access.options.get("cache-dir") or default_cache_dir() if cache_enabled(access.options) else None


def _start_key_derivation(access: RepoAccess, password: str) -> KeyPrefetch | None:
    """Derive the key from the key files this machine holds while the backend is being opened."""
    local = local_path(access.url)
    return KeyPrefetch.start(access.url, password, local_path=local,
                             cache_dir=None if local is not None else _cache_dir(access), key_hint=access.key_hint)


def _remember(access: RepoAccess, repo: Repository) -> None:
    """Which repository this URL is and the key file that opened it, so the next open can derive
    the key from the cached copy while it connects."""
    cache_dir = _cache_dir(access) if local_path(access.url) is None else None
    if cache_dir is None or not isinstance(repo.backend, CachedBackend):
        return
    keyprefetch.remember(cache_dir, access.url, repo.config.id)
    h = Handle(FileType.KEY, repo.key_id)
    if not os.path.exists(repo.backend.path(h)):
        with contextlib.suppress(CofferError):
            repo.backend.load(h)  # read through the cache, which keeps key files


def backend_recipe(access: RepoAccess) -> tuple[str, dict[str, str], bool] | None:
    """How a worker process opens this repository's backend again (None: it may not write)."""
    return None if access.read_only else (access.url, dict(access.options), access.dry_run)


@contextlib.contextmanager
def open_repo(
    access: RepoAccess, lock: LockMode = "shared", prepare: Callable[[Repository], None] | None = None,
) -> Iterator[Repository]:
    """The repository, opened and locked. ``prepare`` (read-only: list snapshots, load the index)
    runs before the caller gets it, during the lock's re-check wait when there is a lock to take."""
    password = access.get_password()
    prefetch = _start_key_derivation(access, password)  # scrypt on the other core meanwhile
    try:
        backend = open_backend(access.url, access.options, warn=access.warn)
    except BaseException:
        if prefetch is not None:
            prefetch.close()
        raise
    if access.read_only:
        from coffer.store.backend.readonly import ReadOnlyBackend

        backend = ReadOnlyBackend(backend)
        lock = "none"
    if access.dry_run:
        from coffer.store.backend.dryrun import DryRunBackend

        backend = DryRunBackend(backend)
        lock = "none"
    try:
        try:
            repo = Repository.open(backend, password, key_hint=access.key_hint, prefetch=prefetch)
        finally:
            if prefetch is not None:
                prefetch.close()  # whatever happened: no thread left running (the workers fork later)
        if not access.read_only:
            repo.backend_recipe = backend_recipe(access)
        if not access.dry_run:
            attach_cache(repo, access.options, access.warn)
            _remember(access, repo)
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
