"""The in-memory union of all index files: blob ID -> where one copy of it is stored.

A blob may be stored more than once (concurrent backups, interrupted prunes); any copy will do
for reading, so only the first one seen is kept here. Maintenance code that needs every copy reads
the index files itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from coffer.store.format.pack import BlobType, PackedBlob


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack_id: bytes
    blob: PackedBlob


class MasterIndex:
    def __init__(self) -> None:
        self._blobs: dict[bytes, tuple[bytes, PackedBlob]] = {}
        self._packs: dict[bytes, int] = {}  # pack ID -> number of blobs indexed in it
        self._lock = threading.Lock()
        self.index_ids: set[bytes] = set()

    def add_pack(self, pack_id: bytes, blobs: list[PackedBlob]) -> None:
        with self._lock:
            d = self._blobs
            for b in blobs:
                key = _key(b.type, b.id)
                if key not in d:
                    d[key] = (pack_id, b)
            self._packs[pack_id] = self._packs.get(pack_id, 0) + len(blobs)

    def lookup(self, t: BlobType, blob_id: bytes) -> BlobLocation | None:
        v = self._blobs.get(_key(t, blob_id))
        return BlobLocation(v[0], v[1]) if v else None

    def has(self, t: BlobType, blob_id: bytes) -> bool:
        return _key(t, blob_id) in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    @property
    def pack_ids(self) -> set[bytes]:
        return set(self._packs)

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._packs

    def items(self) -> Iterator[tuple[bytes, PackedBlob]]:
        """(pack ID, blob) for the first copy of each blob."""
        yield from self._blobs.values()


def _key(t: BlobType, blob_id: bytes) -> bytes:
    # Data and tree blobs with the same content are different blobs: keep their keys apart.
    return blob_id if t == BlobType.DATA else b"T" + blob_id
