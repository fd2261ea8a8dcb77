"""Putting the local metadata cache in front of an opened repository.

The cache is keyed by the repository ID, which is inside the encrypted config, so it can only be
attached after the repository is open (reading config and key files costs a few requests). It
decides which packs to cache from the index: packs of tree blobs, which directory listings and
restore planning read again and again, and never the data packs that make up the bulk.
"""

from __future__ import annotations

from collections.abc import Callable

from coffer.store.backend.base import Backend
from coffer.store.backend.cache import CachedBackend, default_cache_dir
from coffer.store.backend.local import LocalBackend
from coffer.store.master_index import MasterIndex
from coffer.store.repository import Repository


def cache_enabled(options: dict[str, str]) -> bool:
    return options.get("cache", "on").lower() not in ("off", "false", "0", "no")


def attach_cache(repo: Repository, options: dict[str, str], warn: Callable[[str], None] | None = None) -> None:
    """Wrap ``repo.backend`` in the cache unless it is off or the repository is a local directory
    (a cache there would only copy files from one local disk to another)."""
    if not cache_enabled(options) or isinstance(_innermost(repo.backend), LocalBackend):
        return
    cache_dir = options.get("cache-dir") or default_cache_dir()
    repo.backend = CachedBackend(repo.backend, cache_dir, repo.config.id, tree_pack_predicate(repo), warn)


def _innermost(b: Backend) -> Backend:
    seen = 0
    while isinstance(getattr(b, "inner", None), Backend) and seen < 16:
        if isinstance(b, CachedBackend):
            return LocalBackend(".")  # already cached: treat as "nothing to do"
        b = b.inner  # type: ignore[attr-defined]
        seen += 1
    return b


def tree_pack_predicate(repo: Repository) -> Callable[[str], bool]:
    """True for packs the loaded index says hold tree blobs (computed once per loaded index)."""
    memo: dict[int, set[str]] = {}

    def is_tree_pack(name: str) -> bool:
        if not repo.index_loaded:
            return False
        idx: MasterIndex = repo.index
        packs = memo.get(id(idx))
        if packs is None:
            memo.clear()
            packs = memo[id(idx)] = {pid.hex() for pid in idx.tree_pack_ids()}
        return name in packs

    return is_tree_pack
