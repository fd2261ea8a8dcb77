"""A wrapper that refuses every write: the source of ``copy`` must come out of it untouched.

A copy reads one repository and writes another; mixing the two up (a swapped flag, a bug in the
caller) must fail loudly instead of writing into the source, so the source is opened through this.
"""

from __future__ import annotations

from collections.abc import Iterator

from coffer.errors import PermissionDenied
from coffer.store.backend.base import Backend, BackendProperties, FileInfo, FileType, Handle


class ReadOnlyBackend(Backend):
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location

    @property
    def properties(self) -> BackendProperties:
        return self.inner.properties

    def _refuse(self, what: str) -> PermissionDenied:
        return PermissionDenied(f"{self.location}: {what}: refused, this repository is opened read-only")

    def create(self) -> None:
        raise self._refuse("create")

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        raise self._refuse(f"save {h}")

    def remove(self, h: Handle) -> None:
        raise self._refuse(f"remove {h}")

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.load(h, offset, length)

    def stat(self, h: Handle) -> FileInfo:
        return self.inner.stat(h)

    def list(self, t: FileType) -> Iterator[FileInfo]:
        return self.inner.list(t)

    def close(self) -> None:
        self.inner.close()
