"""zstd for blobs and for "unpacked" files (snapshots, index, locks) in repository version 2.

Compressors are not thread-safe, so each thread gets its own. Decompression is always capped:
blobs at their declared plain length, unpacked files at a fixed ceiling, so a zstd bomb in a
hostile repository cannot exhaust memory.
"""

from __future__ import annotations

import threading

import zstandard

from coffer.errors import FormatError

# restic's "auto" is the Go encoder's SpeedDefault. C zstd level 3 made 1-2 % smaller repositories
# than restic on the benchmark corpus and cost 10-15 % more backup time; level 2 makes repositories
# within ~1 % of restic's size for less CPU, so "auto" is level 2.
DEFAULT_LEVEL = 2
MAX_UNPACKED = 512 * 1024 * 1024
UNPACKED_V2_ZSTD = 0x02

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "cctx", None)
    if cache is None:
        cache = _local.cctx = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def compress(data: bytes | bytearray | memoryview, level: int = DEFAULT_LEVEL) -> bytes:
    return _compressor(level).compress(data)


def decompress_blob(data: bytes | bytearray | memoryview, plain_len: int) -> bytes:
    try:
        if not 0 < plain_len <= 0xFFFFFFFF:  # the pack header stores it as LE32
            raise FormatError(f"zstd: invalid blob plain length {plain_len}")
        # A frame that declares its size is decoded into a buffer of that size and max_output_size
        # is ignored, so check the declaration first (a hostile frame could claim terabytes).
        declared = zstandard.frame_content_size(data)
        if declared not in (-1, plain_len):
            raise FormatError(f"zstd: blob frame declares {declared} bytes, index says {plain_len}")
        out = _decompressor().decompress(data, max_output_size=plain_len)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd: {e}") from None
    if len(out) != plain_len:
        raise FormatError(f"zstd: blob decompressed to {len(out)} bytes, index says {plain_len}")
    return out


def decompress_unpacked(data: bytes | memoryview, limit: int = MAX_UNPACKED) -> bytes:
    """One zstd frame, never producing (or allocating) more than ``limit`` bytes."""
    too_big = "zstd: decompressed file exceeds the size limit"
    try:
        declared = zstandard.frame_content_size(data)
        if declared > limit:
            raise FormatError(too_big)
        if declared >= 0:  # restic always declares the size; the buffer is allocated at that size
            return _decompressor().decompress(data)
        reader = _decompressor().stream_reader(data, read_across_frames=False)
        chunks: list[bytes] = []
        total = 0
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise FormatError(too_big)
            chunks.append(chunk)
        return b"".join(chunks)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd: {e}") from None


def encode_unpacked(json_bytes: bytes, version: int) -> bytes:
    """Plaintext of a snapshot/index/lock file for the repository version."""
    if version >= 2:
        return bytes((UNPACKED_V2_ZSTD,)) + compress(json_bytes)
    return json_bytes


def decode_unpacked(plain: bytes, version: int) -> bytes:
    """Undo ``encode_unpacked``; legacy JSON (first byte ``[`` or ``{``) is accepted in v2."""
    if version < 2 or not plain:
        return plain
    first = plain[0]
    if first in (0x5B, 0x7B):
        return plain
    if first == UNPACKED_V2_ZSTD:
        return decompress_unpacked(memoryview(plain)[1:])
    raise FormatError(f"unknown encoding byte 0x{first:02x} in repository file")
