"""Content-defined chunking, bit-for-bit the same as restic's (restic/chunker v0.4, restic 0.14).

Files are split where a Rabin fingerprint of the last 64 bytes, taken modulo the repository's
random irreducible polynomial, has its low 20 bits zero, with chunks between 512 KiB and 8 MiB.
Because the cut points depend only on content and on the polynomial stored in the repository's
config, a chunk that restic (or an earlier coffer run) already stored gets the same blob ID and is
not uploaded again: that is the whole reason this module has to match restic exactly.

The byte scanning lives in the C extension :mod:`coffer._chunker` (``_chunker.c``), which drops
the GIL while it scans, so several threads can chunk different files in parallel. This module
validates the polynomial, owns the read buffer and hands out the chunks. The polynomial helpers
(:func:`random_polynomial`, :func:`is_irreducible`) are pure Python: they run once per ``init``
or once per opened repository.
"""

from __future__ import annotations

import secrets
import typing
from collections.abc import Iterator
from functools import lru_cache

import coffer._chunker as _chunker
from coffer.errors import FormatError

__all__ = [
    "DEFAULT_AVERAGE_BITS",
    "MAX_SIZE",
    "MIN_SIZE",
    "POL_DEGREE",
    "READ_SIZE",
    "SPLIT_MASK",
    "WINDOW_SIZE",
    "Chunker",
    "check_polynomial",
    "is_irreducible",
    "pol_degree",
    "random_polynomial",
]

MIN_SIZE = 512 * 1024
MAX_SIZE = 8 * 1024 * 1024
DEFAULT_AVERAGE_BITS = 20
SPLIT_MASK = (1 << DEFAULT_AVERAGE_BITS) - 1
WINDOW_SIZE = 64
POL_DEGREE = 53
#: Default block size for :meth:`Chunker.iter_chunks` reads: large enough that per-call overhead
#: (Python, syscalls, GIL hand-offs) vanishes next to the scan, small next to ``MAX_SIZE``.
READ_SIZE = 4 * 1024 * 1024

_RAND_POL_MAX_TRIES = 1_000_000  # restic's randPolMaxTries


def pol_degree(pol: int) -> int:
    """Degree of a GF(2) polynomial stored as an int (bit i = coefficient of x^i); -1 for 0."""
    if pol < 0:
        raise ValueError(f"a GF(2) polynomial is a non-negative integer, got {pol}")
    return pol.bit_length() - 1


def _mod(x: int, m: int) -> int:
    """x mod m over GF(2)."""
    dm = m.bit_length()
    while (shift := x.bit_length() - dm) >= 0:
        x ^= m << shift
    return x


def _mul_mod(a: int, b: int, m: int) -> int:
    """a*b mod m over GF(2), with a and b already reduced (shift-and-add, reducing as we go)."""
    result = 0
    top = 1 << pol_degree(m)
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a & top:
            a ^= m
    return result


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, _mod(a, b)
    return a


@lru_cache(maxsize=64)
def is_irreducible(pol: int) -> bool:
    """True iff ``pol`` is irreducible over GF(2): Ben-Or's test, as restic's ``Pol.Irreducible``.

    f of degree n is irreducible iff gcd(f, x^(2^i) - x mod f) == 1 for every i <= n/2. restic
    recomputes x^(2^i) from scratch for each i with a slow ``MulMod``; squaring the previous
    value once per step gives the same answers in about a millisecond. Polynomials of degree < 1
    (0 and 1) are not irreducible; restic's loop is empty for them, but no caller wants them.
    """
    if pol < 2:  # 0, 1 and negative numbers
        return False
    n = pol_degree(pol)
    x = _mod(2, pol)  # the polynomial "x" (for degree 1 this reduces)
    power = x
    for _ in range(n // 2):
        power = _mul_mod(power, power, pol)  # x^(2^i) mod pol
        if _gcd(pol, power ^ x) != 1:
            return False
    return True


def random_polynomial() -> int:
    """A fresh random irreducible polynomial of degree 53, for a new repository's config.

    Same construction as restic's ``DerivePolynomial``: 64 random bits (little-endian, from
    the OS CSPRNG), keep bits 0..53, force bit 53 (degree 53) and bit 0 (else x divides it),
    retry until irreducible. About one candidate in 26 passes.
    """
    for _ in range(_RAND_POL_MAX_TRIES):
        f = int.from_bytes(secrets.token_bytes(8), "little")
        f &= (1 << 54) - 1
        f |= (1 << 53) | 1
        if is_irreducible(f):
            return f
    raise RuntimeError("unable to find a random irreducible polynomial")  # pragma: no cover


def check_polynomial(pol: int) -> None:
    """Raise :class:`FormatError` unless ``pol`` can be a restic chunker polynomial."""
    if isinstance(pol, bool) or not isinstance(pol, int):
        raise FormatError(f"chunker polynomial must be an integer, not {type(pol).__name__}")
    if pol < 0:
        raise FormatError(f"chunker polynomial {pol} is negative, restic requires degree {POL_DEGREE}")
    if pol_degree(pol) != POL_DEGREE:
        raise FormatError(
            f"chunker polynomial {pol:#x} has degree {pol_degree(pol)}, restic requires {POL_DEGREE}",
            hint="the repository config's chunker_polynomial is damaged",
        )
    if not is_irreducible(pol):
        raise FormatError(
            f"chunker polynomial {pol:#x} is not irreducible",
            hint="the repository config's chunker_polynomial is damaged",
        )


@lru_cache(maxsize=32)
def _scanner(pol: int, min_size: int, max_size: int, split_mask: int) -> typing.Any:
    # One C scanner (2 x 256 table entries) per configuration; immutable, so threads share it.
    return _chunker.Scanner(pol, min_size, max_size, split_mask)


class Chunker:
    """One per thread; reusable across files (tables cached per polynomial).

    ``average_bits`` and ``read_size`` exist for tests and benchmarks: restic repositories use
    the defaults (20 bits, i.e. ~1 MiB average chunks), and any other value gives chunks
    that restic would never produce, so no deduplication against restic's blobs.
    """

    def __init__(
        self,
        pol: int,
        *,
        min_size: int = MIN_SIZE,
        max_size: int = MAX_SIZE,
        average_bits: int = DEFAULT_AVERAGE_BITS,
        read_size: int = READ_SIZE,
    ) -> None:
        check_polynomial(pol)
        if not WINDOW_SIZE <= min_size <= max_size:
            raise ValueError(f"need {WINDOW_SIZE} <= min_size <= max_size, got {min_size}, {max_size}")
        if not 0 <= average_bits <= POL_DEGREE:
            raise ValueError(f"average_bits must be in 0..{POL_DEGREE}, got {average_bits}")
        if read_size < 1:
            raise ValueError(f"read_size must be positive, got {read_size}")
        self.pol = pol
        self.min_size = min_size
        self.max_size = max_size
        self.split_mask = (1 << average_bits) - 1
        self.read_size = read_size
        self._scan = _scanner(pol, min_size, max_size, self.split_mask)
        self._buf: bytearray | None = None  # allocated on first use, then kept for the next file

    def split(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Cut offsets (chunk end positions) of an in-memory buffer; last == len(data).

        Empty data has no chunks. The whole scan runs in C without the GIL.
        """
        cuts: list[int] = self._scan.split(data)
        return cuts

    def iter_chunks(self, fileobj: typing.BinaryIO) -> Iterator[bytes]:
        """Yield the chunks of ``fileobj`` in order, each as a new ``bytes``.

        Reads blocks of ``read_size`` into one buffer of ``max_size + read_size`` bytes that
        holds the chunk being built, so memory stays bounded whatever the file size. A chunk is
        handed out as soon as its cut is known; at most the partial chunk (< ``max_size``) is
        moved to the buffer's front, when the space behind it runs out. Nothing is searched twice.
        """
        cap = self.max_size + self.read_size
        buf = self._buf if self._buf is not None and len(self._buf) == cap else bytearray(cap)
        self._buf = None  # a second iter_chunks running meanwhile gets a buffer of its own
        view = memoryview(buf)
        readinto = getattr(fileobj, "readinto", None)
        find_cut = self._scan.find_cut
        start = 0  # where the current chunk begins in buf
        end = 0  # bytes of buf holding data
        scan_from = 0  # offsets below this were searched without finding a cut
        eof = False
        try:
            while True:
                cut = find_cut(buf, start, end, scan_from, eof)
                if cut >= 0:
                    yield bytes(view[start:cut])
                    start = scan_from = cut
                    continue
                if eof:
                    return
                scan_from = end + 1
                if cap - end < self.read_size:
                    # Move the partial chunk to the front (memoryview assignment is a memmove,
                    # safe for overlap); it is shorter than max_size, so a whole read_size block
                    # fits behind it afterwards.
                    n = end - start
                    view[:n] = view[start:end]
                    scan_from -= start
                    start, end = 0, n
                got = self._read(fileobj, readinto, view[end : end + self.read_size])
                eof = got == 0
                end += got
        finally:
            view.release()
            self._buf = buf

    @staticmethod
    def _read(fileobj: typing.BinaryIO, readinto: typing.Any, into: memoryview) -> int:
        """Fill some of ``into`` from the file; 0 means end of file."""
        if readinto is not None:
            got = readinto(into)
        else:  # file-likes without readinto
            block = fileobj.read(len(into))
            got = None if block is None else len(block)
            if got:
                into[:got] = block
        if got is None:
            raise BlockingIOError("non-blocking file has no data ready; chunking needs a blocking file")
        return int(got)
