"""The in-memory union of all index files: blob ID -> where one copy of it is stored.

A blob may be stored more than once (concurrent backups, interrupted prunes); any copy will do
for reading, so only the first one seen is kept here. Maintenance code that needs every copy reads
the index files itself.

Entries are kept compact (a pack number and a 17-byte record per blob, objects made only on
lookup): the index is in memory for every backup and restore, and a repository holds millions of
blobs.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from coffer.store.format.crypto import OVERHEAD
from coffer.store.format.pack import BlobType, PackedBlob

_REC = struct.Struct("<IIIIB")  # pack number, offset, length, uncompressed length, type
_TYPES = (BlobType.DATA, BlobType.TREE)  # by value: indexing is cheaper than calling the enum


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack_id: bytes
    blob: PackedBlob


class MasterIndex:
    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._pack_ids: list[bytes] = []
        self._pack_num: dict[bytes, int] = {}
        self._pack_blobs: list[int] = []  # blobs indexed per pack number
        self._lock = threading.Lock()
        self.index_ids: set[bytes] = set()

    def add_pack(self, pack_id: bytes, blobs: list[PackedBlob]) -> None:
        with self._lock:
            num = self._pack_num.get(pack_id)
            if num is None:
                num = self._pack_num[pack_id] = len(self._pack_ids)
                self._pack_ids.append(pack_id)
                self._pack_blobs.append(0)
            self._pack_blobs[num] += len(blobs)
            d = self._blobs
            pack = _REC.pack
            for b in blobs:
                key = b.id if b.type == BlobType.DATA else b"T" + b.id
                if key not in d:
                    d[key] = pack(num, b.offset, b.length, b.uncompressed_length, b.type)

    def _location(self, key: bytes, rec: bytes) -> BlobLocation:
        num, off, length, ulen, t = _REC.unpack(rec)
        bid = key if len(key) == 32 else key[1:]
        return BlobLocation(self._pack_ids[num], PackedBlob(_TYPES[t], bid, off, length, ulen))

    def lookup_raw(self, t: BlobType, blob_id: bytes) -> tuple[bytes, int, int, int] | None:
        """(pack ID, offset, length, uncompressed length) without making objects: the restore
        looks up every data blob once and sends plain tuples to its workers."""
        rec = self._blobs.get(_key(t, blob_id))
        if rec is None:
            return None
        num, off, length, ulen, _t = _REC.unpack(rec)
        return self._pack_ids[num], off, length, ulen

    def lookup(self, t: BlobType, blob_id: bytes) -> BlobLocation | None:
        key = _key(t, blob_id)
        rec = self._blobs.get(key)
        return self._location(key, rec) if rec is not None else None

    def plain_length(self, t: BlobType, blob_id: bytes) -> int | None:
        """The blob's plaintext length, or None when the index does not know it (no objects made)."""
        rec = self._blobs.get(_key(t, blob_id))
        if rec is None:
            return None
        _num, _off, length, ulen, _t = _REC.unpack(rec)
        return ulen if ulen else length - OVERHEAD

    def has(self, t: BlobType, blob_id: bytes) -> bool:
        return _key(t, blob_id) in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    @property
    def pack_ids(self) -> set[bytes]:
        return set(self._pack_ids)

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._pack_num

    def tree_pack_ids(self) -> set[bytes]:
        """Packs holding (the indexed copy of) a tree blob: the packs worth caching."""
        unpack_num = struct.Struct("<I").unpack_from
        ids = self._pack_ids
        return {ids[unpack_num(rec)[0]] for key, rec in list(self._blobs.items()) if len(key) == 33}

    def data_blob_ids(self) -> list[bytes]:
        return [k for k in list(self._blobs) if len(k) == 32]

    def items(self) -> Iterator[tuple[bytes, PackedBlob]]:
        """(pack ID, blob) for the first copy of each blob."""
        for key, rec in list(self._blobs.items()):
            loc = self._location(key, rec)
            yield loc.pack_id, loc.blob


def _key(t: BlobType, blob_id: bytes) -> bytes:
    # Data and tree blobs with the same content are different blobs: keep their keys apart.
    return blob_id if t == BlobType.DATA else b"T" + blob_id
