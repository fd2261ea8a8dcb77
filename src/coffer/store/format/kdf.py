"""scrypt, with its cost parameters bounded before any work is done.

Key files carry their own N/r/p. A hostile or corrupt key file could ask for terabytes of memory or
hours of CPU, so both are capped before calling ``hashlib.scrypt``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from coffer.errors import FormatError

MAX_MEMORY = 512 * 1024 * 1024  # bytes of scrypt working memory we will ever allocate
MAX_WORK = 1 << 26  # N*r*p; restic's calibrated values are ~2^20


@dataclass(frozen=True, slots=True)
class ScryptParams:
    n: int
    r: int
    p: int

    def check(self) -> None:
        n, r, p = self.n, self.r, self.p
        if not (isinstance(n, int) and isinstance(r, int) and isinstance(p, int)):
            raise FormatError("scrypt parameters must be integers")
        if n <= 1 or n & (n - 1):
            raise FormatError(f"scrypt N={n} is not a power of two greater than 1")
        if r < 1 or p < 1:
            raise FormatError(f"scrypt r={r}, p={p} must be positive")
        if n.bit_length() - 1 >= 16 * r:  # RFC 7914: N < 2^(128*r/8); OpenSSL refuses otherwise
            raise FormatError(f"scrypt N={n} is too large for r={r}")
        if self.memory > MAX_MEMORY or n * r * p > MAX_WORK:
            raise FormatError(
                f"scrypt parameters N={n} r={r} p={p} exceed the safety limit",
                hint="the key file is damaged or hostile; use another key",
            )

    @property
    def memory(self) -> int:
        return 128 * self.r * (self.n + self.p + 2)


DEFAULT_PARAMS = ScryptParams(n=1 << 15, r=8, p=1)


def derive(password: bytes, salt: bytes, params: ScryptParams, length: int = 64) -> bytes:
    params.check()
    try:
        return hashlib.scrypt(
            password, salt=salt, n=params.n, r=params.r, p=params.p, dklen=length,
            maxmem=params.memory + 16 * 1024 * 1024,
        )
    except ValueError as e:  # parameters OpenSSL will not run
        raise FormatError(f"scrypt N={params.n} r={params.r} p={params.p} rejected: {e}") from None
