"""A local cache of the repository files that are read over and over.

Keys, snapshots, index files and packs of tree blobs are what ``snapshots``, ``ls``, ``find``,
``diff`` and restore planning read on every run; against a remote repository that is most of the
run time. They are kept in ``<cache dir>/<repository ID>/<type>/...`` exactly as stored, still
encrypted, so the cache holds no plaintext and every entry can be checked cheaply: the SHA-256 of
a file's bytes is its name. An entry that fails that check (a torn write, a disk error, a
truncated file) is deleted and fetched again.

The cache speeds up reads and nothing else. It is never asked whether an object exists (``stat``
and ``list`` always go to the repository), so a stale entry cannot make a blob look present to
backup's dedup or absent to prune. After a complete listing, entries the repository no longer has
are dropped (someone else pruned). Writing the cache is best effort: a full or read-only cache
directory slows coffer down but never fails a command.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator

from coffer.store.backend.base import Backend, BackendProperties, FileInfo, FileType, Handle

CACHEDIR_TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# coffer cache: safe to delete, it refills itself\n"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ALWAYS = (FileType.KEY, FileType.SNAPSHOT, FileType.INDEX)


def default_cache_dir() -> str:
    """``$COFFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/coffer``, else ``~/.cache/coffer``."""
    explicit = os.environ.get("COFFER_CACHE_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(xdg if xdg else os.path.join(os.path.expanduser("~"), ".cache"), "coffer")


class CachedBackend(Backend):
    """Reads through a local cache; writes go to the repository first, then to the cache."""

    def __init__(
        self, inner: Backend, cache_dir: str, repo_id: str,
        is_tree_pack: Callable[[str], bool] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if not _HEX64.match(repo_id):
            raise ValueError(f"repository ID {repo_id!r} is not 64 hex digits")
        self.inner = inner
        self.location = inner.location
        self.root = cache_dir
        self.dir = os.path.join(cache_dir, repo_id)
        self.is_tree_pack = is_tree_pack or (lambda _name: False)
        self.warn = warn
        self._verified: set[str] = set()  # packs hashed once in this process
        self._locks: dict[str, threading.Lock] = {}
        self._mu = threading.Lock()
        self._write_failed = False
        self.hits = 0
        self.misses = 0
        self.dropped = 0

    @property
    def properties(self) -> BackendProperties:
        return self.inner.properties

    # ---------------------------------------------------------------- paths
    def path(self, h: Handle) -> str:
        if h.type is FileType.PACK:
            return os.path.join(self.dir, "data", h.name[:2], h.name)
        return os.path.join(self.dir, h.type.dirname, h.name)

    def _cacheable(self, h: Handle) -> bool:
        if not _HEX64.match(h.name):
            return False
        if h.type in _ALWAYS:
            return True
        return h.type is FileType.PACK and self.is_tree_pack(h.name)

    def _lock_for(self, name: str) -> threading.Lock:
        with self._mu:
            lk = self._locks.get(name)
            if lk is None:
                lk = self._locks[name] = threading.Lock()
            return lk

    # ---------------------------------------------------------------- cache files
    def _read_verified(self, h: Handle, offset: int, length: int | None) -> bytes | None:
        """The cached bytes, or None when absent or damaged (a damaged entry is deleted)."""
        p = self.path(h)
        try:
            if h.type is FileType.PACK and h.name in self._verified:
                with open(p, "rb", buffering=0) as f:
                    size = os.fstat(f.fileno()).st_size
                    want = size - offset if length is None else length
                    data = os.pread(f.fileno(), want, offset)
                if len(data) == want:
                    return data
                self._drop(p, h)
                return None
            with open(p, "rb") as f:
                whole = f.read()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        if hashlib.sha256(whole).hexdigest() != h.name:
            self._drop(p, h)
            return None
        if h.type is FileType.PACK:
            self._verified.add(h.name)
        end = None if length is None else offset + length
        data = whole[offset:end]
        if length is not None and len(data) != length:
            return None  # the caller asked past the end: let the repository answer that
        return data

    def _drop(self, p: str, h: Handle) -> None:
        self.dropped += 1
        self._verified.discard(h.name)
        if self.warn:
            self.warn(f"cache: dropping damaged entry {h}, fetching it again")
        try:
            os.unlink(p)
        except OSError:
            pass

    def _store(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        p = self.path(h)
        d = os.path.dirname(p)
        tmp = f"{p}.tmp-{secrets.token_hex(6)}"
        try:
            self._ensure_root()
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                mv = memoryview(data)
                while mv:
                    mv = mv[os.write(fd, mv):]
            finally:
                os.close(fd)
            os.rename(tmp, p)  # readers in other processes see the whole file or none
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if not self._write_failed and self.warn:
                self.warn(f"cache: cannot write to {self.root} ({e.strerror or e}); continuing without caching")
            self._write_failed = True

    def _ensure_root(self) -> None:
        tag = os.path.join(self.root, "CACHEDIR.TAG")
        if not os.path.exists(tag):
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            with open(tag, "wb") as f:
                f.write(CACHEDIR_TAG)

    # ---------------------------------------------------------------- the contract
    def create(self) -> None:
        self.inner.create()

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if not self._cacheable(h) or (h.type is FileType.PACK and offset == 0 and length is None):
            # a whole pack is read to verify or repack it: that must see the repository's bytes
            return self.inner.load(h, offset, length)
        data = self._read_verified(h, offset, length)
        if data is not None:
            self.hits += 1
            return data
        with self._lock_for(h.name):  # one download per file, however many threads want it
            data = self._read_verified(h, offset, length)
            if data is not None:
                self.hits += 1
                return data
            self.misses += 1
            whole = self.inner.load(h)
            if hashlib.sha256(whole).hexdigest() == h.name:  # never cache what is already wrong
                self._store(h, whole)
                if h.type is FileType.PACK:
                    self._verified.add(h.name)
        if offset == 0 and length is None:
            return whole
        if length is None:
            return whole[offset:]
        if offset + length > len(whole):
            return self.inner.load(h, offset, length)  # the driver raises its own ShortRead
        return whole[offset: offset + length]

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        self.inner.save(h, data)
        if h.type in _ALWAYS and _HEX64.match(h.name):
            self._store(h, data)

    def stat(self, h: Handle) -> FileInfo:
        return self.inner.stat(h)

    def remove(self, h: Handle) -> None:
        self.inner.remove(h)
        try:
            os.unlink(self.path(h))
        except OSError:
            pass

    def list(self, t: FileType) -> Iterator[FileInfo]:
        """Always the repository's listing; afterwards, cached files it no longer has are dropped."""
        seen: set[str] = set()
        for fi in self.inner.list(t):
            seen.add(fi.name)
            yield fi
        if t is not FileType.CONFIG and t is not FileType.LOCK:
            self._evict_missing(t, seen)

    def _evict_missing(self, t: FileType, present: set[str]) -> None:
        base = os.path.join(self.dir, t.dirname)
        dirs = [base]
        if t is FileType.PACK:
            try:
                dirs = [e.path for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
            except OSError:
                return
        for d in dirs:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if _HEX64.match(e.name) and e.name not in present:
                            try:
                                os.unlink(e.path)
                            except OSError:
                                pass
            except OSError:
                continue

    def close(self) -> None:
        self.inner.close()
