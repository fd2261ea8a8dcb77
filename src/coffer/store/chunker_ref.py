"""Pure-Python reference of restic's chunker (restic/chunker v0.4), for tests only.

This is a deliberately literal port of restic/chunker's ``chunker.go`` (``Reset``/``reset``,
``fillTables``, ``slide``, ``updateDigest``, ``NextSplitPoint`` and the buffering of ``Next``),
with its per-byte loop and its state machine, so that the compiled scanner in ``_chunker.c``,
which reorganises the computation for speed, has an independent oracle to be checked against.
It is far too slow for real data: keep inputs to a few hundred KiB.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

WINDOW_SIZE = 64
MIN_SIZE = 512 * 1024
MAX_SIZE = 8 * 1024 * 1024
CHUNKER_BUF_SIZE = 512 * 1024  # restic's chunkerBufSize: the block size Next reads with
DEFAULT_AVERAGE_BITS = 20


def deg(x: int) -> int:
    """restic's ``Pol.Deg``: -1 for the zero polynomial."""
    return x.bit_length() - 1


def pol_mod(x: int, d: int) -> int:
    """restic's ``Pol.Mod`` (``DivMod``'s remainder), long division over GF(2)."""
    if x == 0:
        return 0
    if d == 0:
        raise ZeroDivisionError("division by zero polynomial")
    dd = deg(d)
    diff = deg(x) - dd
    while diff >= 0:
        x ^= d << diff
        diff = deg(x) - dd
    return x


def _append_byte(h: int, b: int, pol: int) -> int:
    return pol_mod((h << 8) | b, pol)


@lru_cache(maxsize=8)
def tables(pol: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``fillTables``: (out, mod), each 256 entries."""
    out = []
    for b in range(256):
        h = _append_byte(0, b, pol)
        for _ in range(WINDOW_SIZE - 1):
            h = _append_byte(h, 0, pol)
        out.append(h)
    k = deg(pol)
    mod = [pol_mod(b << k, pol) | (b << k) for b in range(256)]
    return tuple(out), tuple(mod)


class RefChunker:
    """restic's ``BaseChunker``: feed buffers to :meth:`next_split_point` in stream order."""

    def __init__(
        self,
        pol: int,
        *,
        min_size: int = MIN_SIZE,
        max_size: int = MAX_SIZE,
        average_bits: int = DEFAULT_AVERAGE_BITS,
    ) -> None:
        self.pol = pol
        self.min_size = min_size
        self.max_size = max_size
        self.split_mask = (1 << average_bits) - 1
        self.pol_shift = deg(pol) - 8
        self.out, self.mod = tables(pol)
        self.reset()

    def reset(self) -> None:
        self.window = [0] * WINDOW_SIZE
        self.digest = 0
        self.wpos = 0
        self.count = 0
        self.digest = self._slide(self.digest, 1)
        # do not start a new chunk unless at least MinSize bytes have been read
        self.pre = self.min_size - WINDOW_SIZE

    def _update_digest(self, digest: int, b: int) -> int:
        index = digest >> self.pol_shift
        digest = (digest << 8) & 0xFFFF_FFFF_FFFF_FFFF
        digest |= b
        return digest ^ self.mod[index]

    def _slide(self, digest: int, b: int) -> int:
        out = self.window[self.wpos]
        self.window[self.wpos] = b
        digest ^= self.out[out]
        self.wpos = (self.wpos + 1) % WINDOW_SIZE
        return self._update_digest(digest, b)

    def next_split_point(self, buf: bytes) -> int:
        """Index in ``buf`` before which to split, or -1 if the chunk goes on (``NextSplitPoint``)."""
        idx = 0
        if self.pre > 0:
            if self.pre >= len(buf):
                self.pre -= len(buf)
                self.count += len(buf)
                return -1
            buf = buf[self.pre :]
            idx = self.pre
            self.count += self.pre
            self.pre = 0

        add = self.count
        for i, b in enumerate(buf):
            digest = self._slide(self.digest, b)
            self.digest = digest
            add += 1
            if (digest & self.split_mask) == 0 or add >= self.max_size:
                if add < self.min_size:
                    continue
                self.reset()
                return idx + i + 1
        self.count += len(buf)
        return -1

    def iter_chunk_lengths(self, blocks: Iterable[bytes]) -> Iterator[int]:
        """``Next`` over a stream given as blocks (as ``io.ReadFull`` would return them)."""
        length = 0
        for block in blocks:
            pos = 0
            while pos < len(block):
                split = self.next_split_point(block[pos:])
                if split == -1:
                    length += len(block) - pos
                    break
                length += split
                pos += split
                yield length
                length = 0
        if length > 0:
            yield length


def split(
    data: bytes,
    pol: int,
    *,
    min_size: int = MIN_SIZE,
    max_size: int = MAX_SIZE,
    average_bits: int = DEFAULT_AVERAGE_BITS,
    block_size: int = CHUNKER_BUF_SIZE,
) -> list[int]:
    """Cut offsets (chunk end positions) of ``data``, read in blocks of ``block_size`` like restic."""
    chunker = RefChunker(pol, min_size=min_size, max_size=max_size, average_bits=average_bits)
    blocks = (data[i : i + block_size] for i in range(0, len(data), block_size))
    cuts: list[int] = []
    end = 0
    for length in chunker.iter_chunk_lengths(blocks):
        end += length
        cuts.append(end)
    return cuts


# --- polynomials.go, literally (slow: the tests use it as an oracle for chunker.is_irreducible) ---


def _mul_mod(x: int, f: int, g: int) -> int:
    """``Pol.MulMod``: x*f mod g, the way restic computes it."""
    if x == 0 or f == 0:
        return 0
    res = 0
    for i in range(deg(f) + 1):
        if f & (1 << i):
            a = x
            for _ in range(i):
                a = pol_mod(a << 1, g)
            res = pol_mod(res ^ a, g)
    return res


def _qp(p: int, g: int) -> int:
    """``qp``: (x^(2^p) - x) mod g."""
    num = 1 << p
    i = 1
    res = 2
    while i < num:
        res = _mul_mod(res, res, g)
        i *= 2
    return pol_mod(res ^ 2, g)


def _gcd(x: int, f: int) -> int:
    while True:
        if f == 0:
            return x
        if x == 0:
            return f
        if deg(x) < deg(f):
            x, f = f, x
        x, f = f, pol_mod(x, f)


def irreducible(x: int) -> bool:
    """``Pol.Irreducible`` (Ben-Or)."""
    return all(_gcd(x, _qp(i, x)) == 1 for i in range(1, deg(x) // 2 + 1))
