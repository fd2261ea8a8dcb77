"""Reading the WAL archive in a repository quickly: cached snapshot metadata, file contents.

``wal-push`` and ``wal-fetch`` run once per segment, so listing the archive must not mean loading
every snapshot file every time. Snapshot files never change (their name is the hash of their
bytes), so what a snapshot says (time, tags, paths) is cached by ID in
``<cache dir>/<repository ID>/wal-snapshots.json``; each call lists the snapshot IDs and loads only
the new ones. A missing or unreadable cache costs time, never correctness: a cache entry is only
used for an ID the repository lists right now.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import secrets
from collections.abc import Iterator

from coffer.errors import BackendError, FormatError, RestoreError
from coffer.sources.postgres.wal import SnapMeta
from coffer.store.backend.base import FileType
from coffer.store.backend.cache import default_cache_dir
from coffer.store.format.pack import BlobType
from coffer.store.format.tree import Node
from coffer.store.repository import Repository

CACHE_NAME = "wal-snapshots.json"
CACHE_VERSION = 1


def _cache_path(repo: Repository, cache_dir: str | None) -> str:
    return os.path.join(cache_dir or default_cache_dir(), repo.config.id, CACHE_NAME)


def _read_cache(path: str) -> dict[str, SnapMeta]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw.get("version") != CACHE_VERSION:
            return {}
        return {k: SnapMeta(k, int(v[0]), tuple(v[1]), tuple(v[2]), str(v[3])) for k, v in raw["snapshots"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}


def _write_cache(path: str, metas: dict[str, SnapMeta]) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": CACHE_VERSION,
                       "snapshots": {k: [m.time_ns, list(m.tags), list(m.paths), m.hostname]
                                     for k, m in metas.items()}}, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)


def snapshot_metas(repo: Repository, cache_dir: str | None = None, *, use_cache: bool = True) -> list[SnapMeta]:
    """Metadata of every readable snapshot, loading only the ones not cached yet."""
    ids = [i.hex() for i in repo.list_ids(FileType.SNAPSHOT)]
    path = _cache_path(repo, cache_dir)
    cached = _read_cache(path) if use_cache else {}
    have = {i: cached[i] for i in ids if i in cached}
    missing = [i for i in ids if i not in have]

    def load(i: str) -> SnapMeta | None:
        try:
            s = repo.load_snapshot(bytes.fromhex(i))
        except (FormatError, BackendError):
            return None
        return SnapMeta(i, s.time_ns, tuple(s.tags), tuple(s.paths), s.hostname)

    if missing:
        with cf.ThreadPoolExecutor(max(2, repo.backend.properties.connections)) as ex:
            for i, m in zip(missing, ex.map(load, missing)):
                if m is not None:
                    have[i] = m
    if use_cache and (missing or len(have) != len(cached)):
        _write_cache(path, have)
    return list(have.values())


def remember(repo: Repository, meta: SnapMeta, cache_dir: str | None = None) -> None:
    """Add a snapshot we just wrote, so the next call need not load it."""
    path = _cache_path(repo, cache_dir)
    metas = _read_cache(path)
    metas[meta.id] = meta
    _write_cache(path, metas)


# ---------------------------------------------------------------------------------------- file contents
def root_file(repo: Repository, tree_id: bytes, name: str) -> Node:
    for n in repo.load_tree(tree_id):
        if n.name == name.encode() and n.type == "file":
            return n
    raise RestoreError(f"{name} is not in the snapshot's tree")


def iter_content(repo: Repository, node: Node, ahead: int = 4) -> Iterator[bytes]:
    """The file's bytes, blob by blob, with a few blobs fetched ahead in parallel (each one verified)."""
    ids = list(node.content or [])
    if not ids:
        return
    with cf.ThreadPoolExecutor(max(2, min(ahead, 8))) as ex:
        futs: list[cf.Future[bytes]] = []
        pos = 0
        while pos < len(ids) or futs:
            while pos < len(ids) and len(futs) < ahead:
                futs.append(ex.submit(repo.load_blob, BlobType.DATA, ids[pos]))
                pos += 1
            yield futs.pop(0).result()


def write_file(repo: Repository, node: Node, dest: str, mode: int = 0o600) -> int:
    """Restore one file to ``dest`` through a temporary name (a crash leaves no partial ``dest``)."""
    tmp = f"{dest}.coffer-tmp-{secrets.token_hex(4)}"
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as f:
            for chunk in iter_content(repo, node):
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if size != node.size:
            raise RestoreError(f"{node.name.decode(errors='replace')}: restored {size} bytes, expected {node.size}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return size


class ContentReader:
    """A file-like view of a stored file (for tarfile's stream mode)."""

    def __init__(self, repo: Repository, node: Node) -> None:
        self._it = iter_content(repo, node)
        self._buf = memoryview(b"")
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        want = n if n >= 0 else 1 << 62
        while want > 0:
            if not self._buf:
                try:
                    self._buf = memoryview(next(self._it))
                except StopIteration:
                    break
            take = self._buf[:want]
            parts.append(bytes(take))
            self._buf = self._buf[len(take):]
            want -= len(take)
        out = b"".join(parts)
        self.consumed += len(out)
        return out

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
