"""Storage and blob IDs: SHA-256, 32 raw bytes inside the program, 64 lower-case hex outside."""

from __future__ import annotations

import hashlib
import re

ID_LEN = 32
_HEX64 = re.compile(r"[0-9a-f]{64}")


def hash_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def is_id_hex(name: str) -> bool:
    """True for a well-formed storage name; other names in the repository are skipped."""
    return bool(_HEX64.fullmatch(name))


def from_hex(s: str) -> bytes:
    if not _HEX64.fullmatch(s):
        raise ValueError(f"invalid ID {s!r}: expected 64 lower-case hex characters")
    return bytes.fromhex(s)


def short(id_: bytes) -> str:
    """The 8-character form restic shows in tables."""
    return id_.hex()[:8]
