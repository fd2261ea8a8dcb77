"""Pack files: encrypted blobs, then the encrypted header, then its length (LE32).

The header lists (type, stored length, [plain length], ID) for each blob in order; offsets are not
stored and follow from the lengths. Everything here is bytes in, values out: reading the tail of a
pack from storage is the repository's job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from coffer.errors import FormatError
from coffer.store.format.crypto import OVERHEAD

MAX_HEADER_SIZE = 16 * 1024 * 1024
ENTRY_PLAIN = 1 + 4 + 32
ENTRY_COMPRESSED = 1 + 4 + 4 + 32
MIN_PACK_SIZE = ENTRY_PLAIN + OVERHEAD + 4
HEADER_LENGTH_SIZE = 4


class BlobType(IntEnum):
    DATA = 0
    TREE = 1

    @property
    def label(self) -> str:
        return "data" if self is BlobType.DATA else "tree"

    @classmethod
    def parse(cls, s: str) -> BlobType:
        if s == "data":
            return cls.DATA
        if s == "tree":
            return cls.TREE
        raise FormatError(f"invalid blob type {s!r}")


@dataclass(frozen=True, slots=True)
class PackedBlob:
    """Where one blob lives inside a pack. ``uncompressed_length`` is 0 for an uncompressed blob."""

    type: BlobType
    id: bytes
    offset: int
    length: int
    uncompressed_length: int = 0

    @property
    def compressed(self) -> bool:
        return self.uncompressed_length != 0

    @property
    def plain_length(self) -> int:
        """Length of the plaintext the ID hashes."""
        return self.uncompressed_length if self.uncompressed_length else self.length - OVERHEAD


_S_PLAIN = struct.Struct("<BI32s")
_S_COMP = struct.Struct("<BII32s")


def encode_header(blobs: list[PackedBlob]) -> bytes:
    out = bytearray()
    for b in blobs:
        if b.uncompressed_length:
            out += _S_COMP.pack(2 + int(b.type), b.length, b.uncompressed_length, b.id)
        else:
            out += _S_PLAIN.pack(int(b.type), b.length, b.id)
    return bytes(out)


def decode_header(plain: bytes, version: int) -> list[PackedBlob]:
    blobs: list[PackedBlob] = []
    pos = 0
    offset = 0
    n = len(plain)
    while pos < n:
        t = plain[pos]
        if t in (0, 1):
            if pos + ENTRY_PLAIN > n:
                raise FormatError("pack header: truncated entry")
            _, length, bid = _S_PLAIN.unpack_from(plain, pos)
            ulen = 0
            pos += ENTRY_PLAIN
        elif t in (2, 3):
            if version < 2:
                raise FormatError("pack header: compressed blob in a version 1 repository")
            if pos + ENTRY_COMPRESSED > n:
                raise FormatError("pack header: truncated entry")
            _, length, ulen, bid = _S_COMP.unpack_from(plain, pos)
            pos += ENTRY_COMPRESSED
            if ulen == 0:
                raise FormatError("pack header: compressed blob with zero length")
        else:
            raise FormatError(f"pack header: invalid blob type byte {t}")
        if length < OVERHEAD:
            raise FormatError("pack header: blob shorter than the encryption overhead")
        blobs.append(PackedBlob(BlobType(t & 1), bid, offset, length, ulen))
        offset += length
    return blobs


def header_length(tail: bytes, pack_size: int) -> int:
    """Length of the encrypted header, from the pack's last 4 bytes, validated against the size."""
    if pack_size < MIN_PACK_SIZE:
        raise FormatError(f"pack file too short ({pack_size} bytes)")
    if len(tail) != HEADER_LENGTH_SIZE:
        raise FormatError("pack trailer: need 4 bytes")
    (hlen,) = struct.unpack("<I", tail)
    if hlen < OVERHEAD or hlen == 0:
        raise FormatError(f"pack header length {hlen} is too small")
    if hlen > MAX_HEADER_SIZE:
        raise FormatError(f"pack header length {hlen} exceeds the 16 MiB limit")
    if hlen + HEADER_LENGTH_SIZE > pack_size:
        raise FormatError(f"pack header length {hlen} is larger than the pack ({pack_size} bytes)")
    return hlen


def check_layout(blobs: list[PackedBlob], header_len: int, pack_size: int) -> None:
    """The blobs plus header and trailer must cover the pack exactly."""
    end = blobs[-1].offset + blobs[-1].length if blobs else 0
    if end + header_len + HEADER_LENGTH_SIZE != pack_size:
        raise FormatError(
            f"pack layout mismatch: blobs end at {end}, header {header_len} bytes, file {pack_size} bytes"
        )


def trailer(encrypted_header_len: int) -> bytes:
    return struct.pack("<I", encrypted_header_len)
