"""Synthetic WAL segments with valid long page headers (what wal-push checks), for tests and benchmarks."""

from __future__ import annotations

import struct

SEG = 16 << 20
SYSID = 7712590482740149373


def segment(name: str, *, size: int = SEG, sysid: int = SYSID, magic: int = 0xD110, info: int = 0x0002,
            seg_size: int | None = None, pageaddr: int | None = None, tli: int | None = None,
            fill: bytes = b"") -> bytes:
    per_id = 0x100000000 // size
    segno = int(name[8:16], 16) * per_id + int(name[16:24], 16)
    hdr = struct.pack("<HHIQI", magic, info, tli if tli is not None else int(name[:8], 16),
                      segno * size if pageaddr is None else pageaddr, 0)
    hdr += b"\0" * 4 + struct.pack("<QII", sysid, size if seg_size is None else seg_size, 8192)
    body = (fill * (size // max(1, len(fill)) + 1))[: size - len(hdr)] if fill else bytes(size - len(hdr))
    return hdr + body
