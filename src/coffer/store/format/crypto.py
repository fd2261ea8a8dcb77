"""restic's encrypt-then-MAC container: IV || AES-256-CTR(ciphertext) || Poly1305-AES tag.

Composed only of library primitives (``cryptography``): AES-CTR for the payload, AES-ECB on a
single block to derive Poly1305's one-time ``s`` from the IV, and Poly1305 for the tag. The tag
covers the ciphertext only and is verified (in constant time, by the library) before anything is
decrypted, so a tampered object never yields plaintext.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from coffer.errors import FormatError, IntegrityError

IV_SIZE = 16
MAC_SIZE = 16
OVERHEAD = IV_SIZE + MAC_SIZE
_ZERO16 = bytes(16)


@dataclass(frozen=True, slots=True)
class CryptoKey:
    """A 64-byte key: 32 for AES-256, 16 for Poly1305's AES key ``k`` and 16 for its ``r``."""

    encrypt: bytes
    mac_k: bytes
    mac_r: bytes

    def __post_init__(self) -> None:
        if len(self.encrypt) != 32 or len(self.mac_k) != 16 or len(self.mac_r) != 16:
            raise FormatError("invalid key material: wrong lengths")

    @classmethod
    def from_bytes(cls, raw: bytes) -> CryptoKey:
        if len(raw) != 64:
            raise FormatError("invalid key material: need 64 bytes")
        return cls(raw[:32], raw[32:48], raw[48:64])

    @classmethod
    def random(cls) -> CryptoKey:
        return cls.from_bytes(os.urandom(64))

    def valid(self) -> bool:
        """restic refuses keys with an all-zero part; so do we."""
        return any(self.encrypt) and any(self.mac_k) and any(self.mac_r)

    def to_json_obj(self) -> dict[str, object]:
        b64 = base64.b64encode
        return {
            "mac": {"k": b64(self.mac_k).decode(), "r": b64(self.mac_r).decode()},
            "encrypt": b64(self.encrypt).decode(),
        }

    @classmethod
    def from_json_obj(cls, obj: object) -> CryptoKey:
        try:
            assert isinstance(obj, dict)
            mac = obj["mac"]
            key = cls(
                base64.b64decode(obj["encrypt"], validate=True),
                base64.b64decode(mac["k"], validate=True),
                base64.b64decode(mac["r"], validate=True),
            )
        except (AssertionError, KeyError, TypeError, ValueError) as e:
            raise FormatError(f"invalid master key JSON: {e}") from None
        if not key.valid():
            raise FormatError("invalid master key: a part is all zeros")
        return key


_tls = threading.local()


def _poly_key(key: CryptoKey, iv: bytes) -> bytes:
    # One ECB encryptor per thread and key: ECB on single whole blocks keeps no state between
    # calls, and setting up a cipher context costs more than the block itself.
    cache: dict[bytes, Any] | None = getattr(_tls, "ecb", None)
    if cache is None:
        cache = _tls.ecb = {}
    enc = cache.get(key.mac_k)
    if enc is None:
        if len(cache) > 8:
            cache.clear()
        enc = cache[key.mac_k] = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor()
    return key.mac_r + enc.update(iv)


def _aes(key: bytes) -> algorithms.AES:
    # The algorithm object only validates and holds the key: build it once per key and thread.
    cache: dict[bytes, algorithms.AES] | None = getattr(_tls, "aes", None)
    if cache is None:
        cache = _tls.aes = {}
    alg = cache.get(key)
    if alg is None:
        if len(cache) > 8:
            cache.clear()
        alg = cache[key] = algorithms.AES(key)
    return alg


def seal(key: CryptoKey, plaintext: bytes | bytearray | memoryview, iv: bytes | None = None) -> bytes:
    """Encrypt and authenticate; the result is ``len(plaintext) + 32`` bytes."""
    return bytes(seal_buffer(key, plaintext, iv))


def seal_buffer(key: CryptoKey, plaintext: bytes | bytearray | memoryview, iv: bytes | None = None) -> bytearray:
    """``seal`` into a mutable buffer: the cipher writes straight into it, so the backup's hot path
    copies a blob once instead of three times."""
    if iv is None:
        iv = os.urandom(IV_SIZE)
    if len(iv) != IV_SIZE or iv == _ZERO16:
        raise FormatError("invalid IV")
    n = len(plaintext)
    out = bytearray(n + OVERHEAD + 15)  # update_into wants room for a block's worth of slack
    mv = memoryview(out)
    mv[:IV_SIZE] = iv
    Cipher(_aes(key.encrypt), modes.CTR(iv)).encryptor().update_into(plaintext, mv[IV_SIZE : IV_SIZE + n + 15])
    mv[IV_SIZE + n : IV_SIZE + n + MAC_SIZE] = Poly1305.generate_tag(_poly_key(key, iv), mv[IV_SIZE : IV_SIZE + n])
    mv.release()
    del out[n + OVERHEAD :]
    return out


def open_(key: CryptoKey, data: bytes | bytearray | memoryview) -> bytes:
    """Verify then decrypt. Raises IntegrityError if the data was damaged or the key is wrong."""
    if len(data) < OVERHEAD:
        raise IntegrityError("ciphertext too short")
    mv = memoryview(data)
    iv = bytes(mv[:IV_SIZE])
    ct = mv[IV_SIZE:-MAC_SIZE]
    tag = bytes(mv[-MAC_SIZE:])
    if iv == _ZERO16:
        raise IntegrityError("invalid IV (all zeros)")
    try:
        Poly1305.verify_tag(_poly_key(key, iv), ct, tag)
    except InvalidSignature:
        raise IntegrityError("ciphertext verification failed") from None
    return Cipher(_aes(key.encrypt), modes.CTR(iv)).decryptor().update(ct)


def verify(key: CryptoKey, data: bytes | bytearray | memoryview) -> bool:
    """MAC check only, without decrypting (used to try key files quickly)."""
    try:
        mv = memoryview(data)
        if len(mv) < OVERHEAD:
            return False
        iv = bytes(mv[:IV_SIZE])
        if iv == _ZERO16:
            return False
        Poly1305.verify_tag(_poly_key(key, iv), mv[IV_SIZE:-MAC_SIZE], bytes(mv[-MAC_SIZE:]))
        return True
    except InvalidSignature:
        return False
