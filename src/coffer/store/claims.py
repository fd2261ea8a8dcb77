"""A blob-ID set shared by the backup's worker processes: who stores a new blob.

Each worker process chunks and hashes its own files; before it compresses and stores a chunk (or
a tree) it *claims* the blob's ID here. The first claim wins and stores the blob, every later claim
(by any process) only references it. A worker that has no index of its own (spawned) gets a table
seeded with every data blob the index knows; forked workers have the index and claim only what it
lacks.

The table is an open-addressing hash set of full 32-byte IDs in a file on a RAM-backed file
system, mapped by every process; one ``flock`` on it serialises claims (a claim is a few
microseconds against the milliseconds a chunk costs to compress). When the table is three
quarters full, claims answer "store it": the cost is a duplicate blob, which the format allows
and prune removes, never a missing one.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import tempfile

_SLOT = 32
_HEADER = 64  # count of used slots (8 bytes), then padding
_EMPTY = bytes(_SLOT)


def tree_claim(tree_id: bytes) -> bytes:
    """The claim of a tree blob: kept apart from a data blob of the same bytes (same ID, other blob)."""
    return hashlib.sha256(b"coffer tree claim\0" + tree_id).digest()


def _shm_dir() -> str | None:
    d = "/dev/shm"
    return d if os.path.isdir(d) and os.access(d, os.W_OK) else None


class ClaimTable:
    def __init__(self, path: str, *, create_slots: int = 0) -> None:
        """Open the table at ``path``; ``create_slots`` (a power of two) creates it first."""
        self.path = path
        if create_slots:
            if create_slots & (create_slots - 1):
                raise ValueError("slots must be a power of two")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.ftruncate(fd, _HEADER + create_slots * _SLOT)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._fd = fd
        size = os.fstat(fd).st_size
        self._slots = (size - _HEADER) // _SLOT
        self._mask = self._slots - 1
        self._limit = self._slots * 3 // 4
        self._map = mmap.mmap(fd, size)
        self._mv = memoryview(self._map)

    @classmethod
    def create(cls, expected: int) -> ClaimTable:
        """A new table sized for ``expected`` IDs at most half full."""
        slots = 1 << max(16, (2 * max(1, expected) - 1).bit_length())
        path = os.path.join(_shm_dir() or tempfile.gettempdir(), f"coffer-claims-{os.getpid()}-{os.urandom(6).hex()}")
        return cls(path, create_slots=slots)

    @property
    def count(self) -> int:
        return int.from_bytes(self._mv[0:8], "little")

    def _insert(self, blob_id: bytes) -> bool:
        mv = self._mv
        h = int.from_bytes(blob_id[:8], "little") & self._mask
        while True:
            o = _HEADER + h * _SLOT
            cur = mv[o:o + _SLOT]
            if cur == blob_id:
                return False
            if cur == _EMPTY:
                n = int.from_bytes(mv[0:8], "little")
                if n >= self._limit:
                    return True  # full: store it (a possible duplicate, never a missing blob)
                mv[o:o + _SLOT] = blob_id
                mv[0:8] = (n + 1).to_bytes(8, "little")
                return True
            h = (h + 1) & self._mask

    def claim(self, blob_id: bytes) -> bool:
        """True when the caller is the first to claim ``blob_id`` and so must store it."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            return self._insert(blob_id)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def add_many(self, ids: list[bytes]) -> None:
        """Seed the table (before any worker claims)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            for b in ids:
                self._insert(b)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def unlink(self) -> None:
        """Remove the name; processes that opened it keep using it."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self, *, remove: bool = False) -> None:
        try:
            self._mv.release()
            self._map.close()
        finally:
            os.close(self._fd)
            if remove:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
