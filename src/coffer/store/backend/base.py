"""The storage contract every backend driver fulfils.

Seven operations, synchronous: parallelism belongs to the store layer above. Drivers translate
their own exceptions into ``coffer.errors.BackendError`` subclasses, marking each transient or
permanent; only the retry wrapper decides to try again.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator
from dataclasses import dataclass


class FileType(enum.Enum):
    CONFIG = "config"
    KEY = "keys"
    SNAPSHOT = "snapshots"
    INDEX = "index"
    LOCK = "locks"
    PACK = "data"

    @property
    def dirname(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Handle:
    type: FileType
    name: str = ""  # 64-hex ID; empty for the config file

    def __str__(self) -> str:
        if self.type is FileType.CONFIG:
            return "config"
        if self.type is FileType.PACK:
            return f"data/{self.name[:2]}/{self.name}"
        return f"{self.type.dirname}/{self.name}"


@dataclass(frozen=True, slots=True)
class FileInfo:
    name: str
    size: int


REMOTE_READ_SIZE = 32 * 1024 * 1024  # above restic's 16 MiB packs: one request per pack and reader


@dataclass(frozen=True, slots=True)
class BackendProperties:
    connections: int = 2  # useful parallel requests
    atomic_replace: bool = True  # a save either lands whole or not at all
    # Reads up to this size are worth merging into one request: over a network each request costs a
    # round trip (and, on S3, a fee), and some servers read the whole object for every ranged GET.
    read_size: int = 4 * 1024 * 1024


class Backend(abc.ABC):
    """A place that stores named immutable objects."""

    location: str = ""

    @property
    def properties(self) -> BackendProperties:
        return BackendProperties()

    @abc.abstractmethod
    def create(self) -> None:
        """Prepare an empty repository location (directories, bucket). Idempotent."""

    @abc.abstractmethod
    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``h``, all or nothing, durable on return."""

    @abc.abstractmethod
    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (to the end when None); ShortRead otherwise."""

    @abc.abstractmethod
    def stat(self, h: Handle) -> FileInfo: ...

    @abc.abstractmethod
    def remove(self, h: Handle) -> None: ...

    @abc.abstractmethod
    def list(self, t: FileType) -> Iterator[FileInfo]:
        """Every object of the type; names that are not 64-hex IDs are skipped by callers."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def exists(self, h: Handle) -> bool:
        from coffer.errors import ObjectNotFound

        try:
            self.stat(h)
            return True
        except ObjectNotFound:
            return False

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
