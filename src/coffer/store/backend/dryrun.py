"""A wrapper that reads through and discards every write: `backup --dry-run` runs the whole
pipeline (so it reports exactly what would be added) without changing the repository."""

from __future__ import annotations

from collections.abc import Iterator

from coffer.store.backend.base import Backend, BackendProperties, FileInfo, FileType, Handle


class DryRunBackend(Backend):
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location
        self.discarded = 0

    @property
    def properties(self) -> BackendProperties:
        return self.inner.properties

    def create(self) -> None:
        pass

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        self.discarded += len(data)

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.load(h, offset, length)

    def stat(self, h: Handle) -> FileInfo:
        return self.inner.stat(h)

    def remove(self, h: Handle) -> None:
        pass

    def list(self, t: FileType) -> Iterator[FileInfo]:
        return self.inner.list(t)

    def close(self) -> None:
        self.inner.close()
