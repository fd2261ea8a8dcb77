"""A wrapper that connects on first use.

A forked backup worker needs its own connections (it must never write to the sockets it inherited
from its parent), but one that finds every tree it compares in the local cache and stores nothing
new never needs any: logging in to S3 or over SSH costs tens to hundreds of milliseconds of CPU
the walk can use instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from coffer.store.backend.base import Backend, BackendProperties, FileInfo, FileType, Handle


class DeferredBackend(Backend):
    def __init__(self, connect: Callable[[], Backend], properties: BackendProperties, location: str) -> None:
        self._connect = connect
        self._properties = properties
        self.location = location
        self._inner: Backend | None = None
        self._mu = threading.Lock()

    @property
    def properties(self) -> BackendProperties:
        return self._properties

    @property
    def connected(self) -> bool:
        return self._inner is not None

    def _b(self) -> Backend:
        b = self._inner
        if b is None:
            with self._mu:
                if self._inner is None:
                    self._inner = self._connect()
                b = self._inner
        return b

    def create(self) -> None:
        self._b().create()

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        self._b().save(h, data)

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._b().load(h, offset, length)

    def stat(self, h: Handle) -> FileInfo:
        return self._b().stat(h)

    def exists(self, h: Handle) -> bool:
        return self._b().exists(h)

    def remove(self, h: Handle) -> None:
        self._b().remove(h)

    def list(self, t: FileType) -> Iterator[FileInfo]:
        return self._b().list(t)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
