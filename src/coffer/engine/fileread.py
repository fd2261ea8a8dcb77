"""Opening and reading one source file for backup, shared by the threads and the worker processes.

Both paths must treat a file the same way: no atime change, no following a symlink or blocking on a
FIFO that replaced the file since the walk, and a source read error is a warning for that file,
never a failed backup.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Callable, Iterator
from typing import BinaryIO

from coffer.store import chunker

_O_NOATIME = getattr(os, "O_NOATIME", 0)


class SourceReadError(Exception):
    """Reading a source item failed: a warning for that item, not a failed backup."""


class Prefixed:
    """A reader that first returns ``prefix`` and then continues with ``f``."""

    def __init__(self, prefix: bytes, f: BinaryIO) -> None:
        self._prefix = memoryview(prefix)
        self._f = f

    def readinto(self, b: memoryview | bytearray) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._f.readinto(b)  # type: ignore[attr-defined]

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            k = len(self._prefix) if n < 0 else min(n, len(self._prefix))
            out = bytes(self._prefix[:k])
            self._prefix = self._prefix[k:]
            return out
        return self._f.read(n)


def read_up_to(f: BinaryIO, n: int) -> bytes:
    parts = []
    got = 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def open_source(path: bytes) -> tuple[int, os.stat_result]:
    """An fd for reading ``path`` and its fstat; SourceReadError if it is no longer a regular file."""
    # O_NONBLOCK: if the file was replaced by a FIFO since the scan, open must not hang
    # (it has no effect on regular files). O_NOFOLLOW: nor follow a symlink put in its place.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path, flags | _O_NOATIME)
        except PermissionError:
            fd = os.open(path, flags)
    except OSError as e:
        raise SourceReadError(f"open: {e.strerror}") from None
    try:
        fs = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise SourceReadError(f"stat: {e.strerror}") from None
    if not st.S_ISREG(fs.st_mode):
        os.close(fd)
        raise SourceReadError("was replaced by something that is not a regular file while the backup ran")
    return fd, fs


def changed_while_read(before_size: int, before_mtime_ns: int, before_ctime_ns: int, after: os.stat_result,
                       size_read: int) -> bool:
    return (after.st_size != before_size or after.st_mtime_ns != before_mtime_ns
            or after.st_ctime_ns != before_ctime_ns or size_read != before_size)


def read_file(path: bytes, size: int, mtime_ns: int, ctime_ns: int,
              chunk_stream: Callable[[BinaryIO], tuple[list[bytes], int]],
              on_open: Callable[[int], None] | None = None) -> tuple[list[bytes], int, bool]:
    """(content IDs, bytes read, changed while read) of the file the walk saw with these stats.
    ``on_open`` gets the fd first (a worker reads the extended attributes through it)."""
    fd, fs = open_source(path)
    with open(fd, "rb", buffering=0) as f:
        if on_open is not None:
            on_open(fd)
        content, nread = chunk_stream(f)
        try:
            after = os.fstat(fd)
        except OSError:
            after = fs
    return content, nread, changed_while_read(size, mtime_ns, ctime_ns, after, nread)


def small_or_chunks(f: BinaryIO, ck: chunker.Chunker) -> tuple[bytes | None, Iterator[bytes]]:
    """A file up to the minimum chunk size is one chunk, read without the chunker: (its bytes, empty
    iterator). A larger one: (None, its chunks). OSError from reading becomes SourceReadError."""
    try:
        head = read_up_to(f, chunker.MIN_SIZE + 1)
    except OSError as e:
        raise SourceReadError(f"read: {e.strerror}") from None
    if len(head) <= chunker.MIN_SIZE:
        return head, iter(())
    return None, _chunks(ck.iter_chunks(Prefixed(head, f)))  # type: ignore[arg-type]


def _chunks(it: Iterator[bytes]) -> Iterator[bytes]:
    while True:
        try:
            c = next(it)
        except StopIteration:
            return
        except OSError as e:
            raise SourceReadError(f"read: {e.strerror}") from None
        yield c
