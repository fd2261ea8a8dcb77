"""The compiled chunker against a literal pure-Python port of restic's, plus known answers.

The compiled scanner finds cuts differently from restic's loop (stateless window fingerprints,
several digests at once, see _chunker.c), so most tests here compare it with chunker_ref, which
follows restic/chunker's chunker.go line by line, on data shaped to hit every boundary: sizes
around min/max/read sizes, zero runs (fingerprint 0: cut at min), constant runs (no content cut:
cut at max) and cuts at the scanner's internal lane edges.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import coffer._chunker as _chunker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store import chunker_ref as ref
from coffer.store.chunker import (
    MAX_SIZE,
    MIN_SIZE,
    SPLIT_MASK,
    Chunker,
    is_irreducible,
    pol_degree,
    random_polynomial,
)

TEST_POL = 0x3DA3358B4DC173  # restic/chunker's testPol
KAT_POL = 0x2BE2BFCD548C01  # chunker_polynomial of a repository made by restic 0.14 (see test_known_answer)
LANE_SPAN = 4 * 8192  # LANES * LANE_LEN in _chunker.c: one round of the interleaved search

SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def pseudo_random(seed: int | str, n: int) -> bytes:
    return hashlib.shake_256(str(seed).encode()).digest(n)


def chunks_by_cuts(data: bytes, cuts: list[int]) -> list[bytes]:
    return [data[a:b] for a, b in zip([0, *cuts], cuts)]


# --- configurations and data --------------------------------------------------------------------

# (min_size, max_size): tiny ones, one whose search range spans several interleaved rounds.
SMALL_CONFIGS = [
    (64, 64),
    (64, 65),
    (64, 1000),
    (100, 3000),
    (1024, 8192),
    (4096, 4096 * 3),
    (4096, 65536),
    (64, LANE_SPAN * 3 + 100),
]
AVERAGE_BITS = [0, 1, 3, 6, 8, 10, 12, 13, 14, 16, 20]


def interesting_sizes(min_size: int, max_size: int, read_size: int | None = None) -> list[int]:
    sizes = [0, 1, 63, 64, 65]
    for base in (min_size, max_size, 2 * max_size, min_size + max_size, min_size + LANE_SPAN):
        sizes += [base - 1, base, base + 1]
    if read_size is not None:
        for k in (1, 2, 3):
            sizes += [k * read_size - 1, k * read_size, k * read_size + 1]
    return [s for s in sizes if s >= 0]


@st.composite
def shaped_data(draw: st.DrawFn, min_size: int, max_size: int, read_size: int | None = None) -> bytes:
    """Random bytes with zero runs, constant runs and periodic stretches, of an interesting length."""
    limit = min(4 * max_size + 1000, 150_000)
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["random", "zeros", "byte", "pattern"]))
        length = draw(st.one_of(st.integers(0, limit // 2), st.sampled_from([1, 63, 64, 65, min_size, max_size])))
        if kind == "random":
            parts.append(pseudo_random(draw(st.integers(0, 2**32)), length))
        elif kind == "zeros":
            parts.append(bytes(length))
        elif kind == "byte":
            parts.append(bytes([draw(st.integers(1, 255))]) * length)
        else:
            unit = pseudo_random(draw(st.integers(0, 2**32)), draw(st.sampled_from([2, 3, 32, 64, 100])))
            parts.append((unit * (length // len(unit) + 1))[:length])
    body = b"".join(parts)
    how = draw(st.sampled_from(["uniform", "uniform", "interesting", "body"]))
    if how == "uniform":
        size = draw(st.randoms(use_true_random=False)).randrange(limit + 1)  # flat, not small-biased
    elif how == "interesting":
        size = draw(st.sampled_from(interesting_sizes(min_size, max_size, read_size)))
    else:
        size = len(body)
    size = min(size, limit)
    if len(body) < size:
        body += pseudo_random(draw(st.integers(0, 2**32)), size - len(body))
    return body[:size]


@st.composite
def config_and_data(draw: st.DrawFn) -> tuple[int, int, int, bytes]:
    min_size, max_size = draw(st.sampled_from(SMALL_CONFIGS))
    bits = draw(st.sampled_from(AVERAGE_BITS))
    return min_size, max_size, bits, draw(shaped_data(min_size, max_size))


# --- compiled vs reference ----------------------------------------------------------------------


def test_tables_match_reference() -> None:
    for pol in (TEST_POL, KAT_POL):
        out, mod = _chunker.Scanner(pol, MIN_SIZE, MAX_SIZE, SPLIT_MASK).tables()
        ref_out, ref_mod = ref.tables(pol)
        assert list(out) == list(ref_out)
        assert list(mod) == list(ref_mod)


@settings(SLOW, max_examples=400)
@given(config_and_data(), st.sampled_from([TEST_POL, KAT_POL]), st.integers(1, 70_000))
def test_split_matches_reference(case: tuple[int, int, int, bytes], pol: int, block: int) -> None:
    min_size, max_size, bits, data = case
    expected = ref.split(data, pol, min_size=min_size, max_size=max_size, average_bits=bits, block_size=block)
    got = Chunker(pol, min_size=min_size, max_size=max_size, average_bits=bits).split(data)
    assert got == expected


def seeded_case(rnd: random.Random) -> tuple[int, int, int, bytes]:
    """Like config_and_data, but flat-random: hypothesis favours small inputs, this favours big ones."""
    min_size, max_size = rnd.choice(SMALL_CONFIGS)
    bits = rnd.choice(AVERAGE_BITS)
    limit = min(4 * max_size + 1000, 150_000)
    parts: list[bytes] = []
    while sum(map(len, parts)) < limit:
        n = rnd.randrange(limit // 2)
        kind = rnd.choice(["random", "random", "zeros", "byte"])
        if kind == "random":
            parts.append(rnd.randbytes(n))
        else:
            parts.append(bytes([0 if kind == "zeros" else rnd.randrange(1, 256)]) * n)
    return min_size, max_size, bits, b"".join(parts)[: rnd.randrange(limit + 1)]


@pytest.mark.parametrize("seed", range(40))
def test_split_matches_reference_seeded(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(3):
        min_size, max_size, bits, data = seeded_case(rnd)
        pol = rnd.choice([TEST_POL, KAT_POL])
        expected = ref.split(
            data, pol, min_size=min_size, max_size=max_size, average_bits=bits, block_size=rnd.randrange(1, 70_000)
        )
        assert Chunker(pol, min_size=min_size, max_size=max_size, average_bits=bits).split(data) == expected


@pytest.mark.parametrize(
    "lane_offset",
    [
        0,
        1,
        2,
        8191,
        8192,
        8193,
        16383,
        16384,
        24575,
        24576,
        32767,
        32768,
        32769,
        40959,
        40960,
        65535,
        65536,
        65537,
        70000,
    ],
)
@pytest.mark.parametrize("run", [64, 65, 200])
def test_cut_at_lane_edges(lane_offset: int, run: int) -> None:
    """A zero run puts the first content cut exactly at min_size + lane_offset (its first all-zero window)."""
    min_size, max_size, bits = 1024, 100_000, 30  # 2^-30: random data never cuts by itself
    cut = min_size + lane_offset
    data = pseudo_random("lanes-a", cut - 64) + bytes(run) + pseudo_random("lanes-b", 20_000)
    chunker = Chunker(TEST_POL, min_size=min_size, max_size=max_size, average_bits=bits)
    got = chunker.split(data)
    assert got[0] == cut
    assert got == ref.split(data, TEST_POL, min_size=min_size, max_size=max_size, average_bits=bits)


def test_split_matches_reference_with_restic_sizes() -> None:
    """Real min/max: small average_bits keep the reference (which skips min-64 bytes) fast."""
    for bits in (8, 13, 15, 16):
        data = pseudo_random(f"real-{bits}", 3 * MIN_SIZE + 150_000)
        expected = ref.split(data, KAT_POL, average_bits=bits)
        assert Chunker(KAT_POL, average_bits=bits).split(data) == expected
        assert len(expected) >= 3
    for size in (0, 1, MIN_SIZE - 1, MIN_SIZE, MIN_SIZE + 1, MIN_SIZE + 70_000):
        data = pseudo_random("sizes", size)
        assert Chunker(KAT_POL).split(data) == ref.split(data, KAT_POL)


# --- known answers -------------------------------------------------------------------------------


def test_zeros_cut_at_min_size() -> None:
    """restic/chunker's chunks2: the fingerprint of 64 zero bytes is 0, so zeros cut at MinSize."""
    data = bytes(4 * MIN_SIZE)
    assert Chunker(TEST_POL).split(data) == [MIN_SIZE, 2 * MIN_SIZE, 3 * MIN_SIZE, 4 * MIN_SIZE]
    chunks = list(Chunker(TEST_POL).iter_chunks(io.BytesIO(data)))
    assert [hashlib.sha256(c).hexdigest() for c in chunks] == [
        "07854d2fef297a06ba81685e660c332de36d5d18d546927d30daad6d7fda1541"
    ] * 4


def test_constant_run_cuts_at_max_size() -> None:
    """A run of one byte value has a constant fingerprint: no content cut unless it matches."""
    window = ref.RefChunker(TEST_POL)
    digest = 0
    for _ in range(64):
        digest = window._update_digest(digest, 0xAA)
    assert digest & SPLIT_MASK != 0  # so 0xAA runs only end at MAX_SIZE
    data = b"\xaa" * (2 * MAX_SIZE + 5)
    assert Chunker(TEST_POL).split(data) == [MAX_SIZE, 2 * MAX_SIZE, 2 * MAX_SIZE + 5]


KAT_LENGTHS = [800553, 1379301, 1314088, 943632, 761792, 524288, 524288, 8388608, 748268]
KAT_BLOB_IDS = [
    "fb513d2d5bf38e8ed7bb47586054d93eaced21324c26964a13bb208f5c89a95c",
    "b7b09526372b562bb9f5373c25a026f7de65daa58cace65e53814301ff537f10",
    "f899d907cfa881137bbb6ed85ff01ace91852cb1c18856441ccc775210700721",
    "1fcab6d68458301855c0a525739a2543b0b87ab3f1f5d37ce41a9de8f0b54522",
    "5703333a1a8d35e3730bc00f9ee421ea9779816a25d433365840a92523d29119",
    "af1b286d5b302ec14f47909254f1365f8bf0c2e6606b3ade338fd68e0cabb247",
    "07854d2fef297a06ba81685e660c332de36d5d18d546927d30daad6d7fda1541",
    "a35d648d1bd16c8e738b64ef1143a607ac2f558a4778228448f71c955bd6e318",
    "7ebdc055187989027efa1c5b760b81aea276dc1861243eef4130d4c6a099946b",
]


def kat_data() -> bytes:
    MiB = 1024 * 1024
    return (
        hashlib.shake_256(b"coffer-kat").digest(5 * MiB + 333)
        + bytes(MiB + 100)
        + b"\xaa" * (MAX_SIZE + 4321)
        + hashlib.shake_256(b"coffer-kat-tail").digest(700_000)
    )


def test_known_answer_from_restic() -> None:
    """Blob IDs restic 0.14 stored for kat_data() in a repository whose polynomial is KAT_POL.

    Recorded once with the real binary (tests/compat checks the same live when restic exists);
    covers content cuts, min cuts in a zero run, a max cut in a constant run and the tail.
    """
    data = kat_data()
    cuts = Chunker(KAT_POL).split(data)
    assert [b - a for a, b in zip([0, *cuts], cuts)] == KAT_LENGTHS
    assert [hashlib.sha256(c).hexdigest() for c in chunks_by_cuts(data, cuts)] == KAT_BLOB_IDS
    chunks = Chunker(KAT_POL, read_size=1_000_003).iter_chunks(io.BytesIO(data))
    assert [hashlib.sha256(c).hexdigest() for c in chunks] == KAT_BLOB_IDS


def test_empty_and_tiny_inputs() -> None:
    chunker = Chunker(TEST_POL)
    assert chunker.split(b"") == []
    assert list(chunker.iter_chunks(io.BytesIO(b""))) == []
    assert chunker.split(b"x") == [1]
    assert list(chunker.iter_chunks(io.BytesIO(b"x"))) == [b"x"]
    assert chunker.split(bytearray(MIN_SIZE)) == [MIN_SIZE]
    assert chunker.split(memoryview(bytes(MIN_SIZE + 1))) == [MIN_SIZE, MIN_SIZE + 1]


# --- iter_chunks ---------------------------------------------------------------------------------


class ShortReads(io.RawIOBase):
    """A file that returns fewer bytes than asked, in a seeded random pattern."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = data
        self._pos = 0
        self._rnd = random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(b), self._rnd.choice([1, 7, 64, 1000, len(b)]))
        got = self._data[self._pos : self._pos + want]
        b[: len(got)] = got
        self._pos += len(got)
        return len(got)


class ReadOnly:
    """A file-like with read() only."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int) -> bytes:
        return self._f.read(n)


def read_sizes(min_size: int, max_size: int) -> list[int]:
    return sorted(
        {
            1,
            63,
            64,
            65,
            min_size - 1,
            min_size,
            min_size + 1,
            max_size - 1,
            max_size,
            max_size + 1,
            2 * max_size + 7,
            1 << 20,
        }
        - {0}
    )


@settings(SLOW, max_examples=250)
@given(st.data())
def test_iter_chunks_matches_split(data: st.DataObject) -> None:
    min_size, max_size = data.draw(st.sampled_from(SMALL_CONFIGS))
    bits = data.draw(st.sampled_from(AVERAGE_BITS))
    read_size = data.draw(st.one_of(st.sampled_from(read_sizes(min_size, max_size)), st.integers(1, 20_000)))
    content = data.draw(shaped_data(min_size, max_size, read_size))
    reader = data.draw(st.sampled_from(["bytesio", "short", "readonly"]))
    f = {
        "bytesio": lambda: io.BytesIO(content),
        "short": lambda: ShortReads(content, len(content)),
        "readonly": lambda: ReadOnly(content),
    }[reader]()
    chunker = Chunker(TEST_POL, min_size=min_size, max_size=max_size, average_bits=bits, read_size=read_size)
    chunks = list(chunker.iter_chunks(f))  # type: ignore[arg-type]
    assert all(type(c) is bytes for c in chunks)
    assert chunks == chunks_by_cuts(content, chunker.split(content))


@pytest.mark.parametrize("read_size", [*read_sizes(1024, 8192), 3 * 8192 + 1024])
def test_iter_chunks_on_a_file_every_read_boundary(tmp_path: Path, read_size: int) -> None:
    min_size, max_size, bits = 1024, 8192, 11
    content = pseudo_random("file", 50_000) + bytes(5000) + b"\x33" * 20_000 + pseudo_random("f2", 30_000)
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    chunker = Chunker(TEST_POL, min_size=min_size, max_size=max_size, average_bits=bits, read_size=read_size)
    cuts = chunker.split(content)
    assert cuts == ref.split(content, TEST_POL, min_size=min_size, max_size=max_size, average_bits=bits)
    for _ in range(2):  # reusable across files
        with open(path, "rb") as f:
            assert list(chunker.iter_chunks(f)) == chunks_by_cuts(content, cuts)
        with open(path, "rb", buffering=0) as f:
            assert list(chunker.iter_chunks(f)) == chunks_by_cuts(content, cuts)


def test_iter_chunks_restic_sizes_read_boundaries() -> None:
    content = pseudo_random("restic-sizes", 3 * MAX_SIZE + 12345)
    chunker = Chunker(KAT_POL)
    cuts = chunker.split(content)
    for read_size in (MIN_SIZE - 1, MIN_SIZE, 1 << 20, MAX_SIZE - 1, MAX_SIZE, MAX_SIZE + 1):
        got = Chunker(KAT_POL, read_size=read_size).iter_chunks(io.BytesIO(content))
        assert [len(c) for c in got] == [b - a for a, b in zip([0, *cuts], cuts)]


def test_two_iterations_on_one_chunker_interleaved() -> None:
    a = pseudo_random("a", 200_000)
    b = pseudo_random("b", 150_000)
    chunker = Chunker(TEST_POL, min_size=1024, max_size=16384, average_bits=12, read_size=5000)
    ga, gb = chunker.iter_chunks(io.BytesIO(a)), chunker.iter_chunks(io.BytesIO(b))
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    for gen, got in [(ga, got_a), (gb, got_b)] * 20:  # alternate while both run
        chunk = next(gen, None)
        if chunk is not None:
            got.append(chunk)
    got_a += list(ga)
    got_b += list(gb)
    assert got_a == chunks_by_cuts(a, chunker.split(a))
    assert got_b == chunks_by_cuts(b, chunker.split(b))


class Endless(io.RawIOBase):
    """``size`` pseudo-random bytes made on the fly, so the test itself holds no big buffer."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._left)
        self._calls += 1
        b[:n] = pseudo_random(f"endless-{self._calls}", n)
        self._left -= n
        return n


def test_iter_chunks_memory_is_bounded() -> None:
    size = 64 * 1024 * 1024
    chunker = Chunker(TEST_POL, average_bits=22)  # mostly long chunks, many at max size
    tracemalloc.start()
    try:
        total = 0
        longest = 0
        for chunk in chunker.iter_chunks(Endless(size)):  # type: ignore[arg-type]
            total += len(chunk)
            longest = max(longest, len(chunk))
            del chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert longest == MAX_SIZE
    # one buffer (max_size + read_size) + the chunk handed out + the reader's temporary block
    assert peak < MAX_SIZE + chunker.read_size + MAX_SIZE + chunker.read_size + (1 << 20)


# --- threads -------------------------------------------------------------------------------------


def test_scan_releases_the_gil() -> None:
    """While one thread scans a big buffer in C, another thread keeps running Python code."""
    data = pseudo_random("gil", 48 * 1024 * 1024)
    chunker = Chunker(TEST_POL, min_size=64, max_size=len(data), average_bits=53)  # hash every byte
    inside = threading.Event()
    done = threading.Event()
    result: list[list[int]] = []

    def work() -> None:
        inside.set()
        result.append(chunker.split(data))
        done.set()

    ticks = 0
    thread = threading.Thread(target=work)
    thread.start()
    inside.wait()
    while not done.is_set():
        ticks += 1
    thread.join()
    assert result == [[len(data)]]
    assert ticks > 1000, "the main thread could not run while the other thread was scanning"


def test_threads_share_a_chunker_configuration() -> None:
    blobs = [pseudo_random(f"t{i}", 3_000_000) for i in range(4)]
    expected = [Chunker(TEST_POL, average_bits=14).split(b) for b in blobs]
    results: dict[int, list[int]] = {}

    def work(i: int) -> None:
        results[i] = Chunker(TEST_POL, average_bits=14).split(blobs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(4)] == expected


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pol", [0, 1, TEST_POL >> 1, TEST_POL << 1, (1 << 64) | 1, -TEST_POL])
def test_wrong_degree_is_a_format_error(pol: int) -> None:
    with pytest.raises(FormatError, match="degree"):
        Chunker(pol)


def test_reducible_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="not irreducible"):
        Chunker(0x38F1E565E288DF)
    with pytest.raises(FormatError, match="not irreducible"):
        Chunker(TEST_POL ^ 1)  # divisible by x
    with pytest.raises(FormatError, match="not irreducible"):
        Chunker(1 << 53)


def test_non_integer_polynomial_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        Chunker("3da3358b4dc173")  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        Chunker(True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_size": 63},
        {"min_size": 2000, "max_size": 1999},
        {"average_bits": -1},
        {"average_bits": 54},
        {"read_size": 0},
    ],
)
def test_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Chunker(TEST_POL, **kwargs)


def test_scanner_guards() -> None:
    scanner = _chunker.Scanner(TEST_POL, 64, 128, 0xFF)
    with pytest.raises(ValueError):
        scanner.find_cut(b"abc", 0, 4, 0, False)
    with pytest.raises(ValueError):
        scanner.find_cut(b"abc", 2, 1, 0, False)
    with pytest.raises(RuntimeError):
        scanner.__init__(TEST_POL, 64, 128, 0xFF)
    with pytest.raises(RuntimeError):
        _chunker.Scanner.__new__(_chunker.Scanner).split(b"abc")
    with pytest.raises(ValueError):
        _chunker.Scanner(TEST_POL >> 1, 64, 128, 0xFF)
    with pytest.raises(OverflowError):
        _chunker.Scanner(-TEST_POL, 64, 128, 0xFF)
    with pytest.raises(TypeError):
        scanner.split("text")


def test_find_cut_contract() -> None:
    """-1 while the chunk could still grow; a cut as soon as it is decided."""
    scanner = _chunker.Scanner(TEST_POL, 64, 100, 0)  # mask 0: every offset >= min is a cut
    buf = bytes(300)
    assert scanner.find_cut(buf, 0, 63, 0, False) == -1
    assert scanner.find_cut(buf, 0, 64, 0, False) == 64
    assert scanner.find_cut(buf, 10, 50, 0, True) == 50
    assert scanner.find_cut(buf, 50, 50, 0, True) == -1
    never = _chunker.Scanner(TEST_POL, 64, 100, (1 << 53) - 1)
    data = pseudo_random("fc", 300)
    assert never.find_cut(data, 0, 99, 0, False) == -1
    assert never.find_cut(data, 0, 100, 0, False) == 100


# --- polynomials ---------------------------------------------------------------------------------

# restic/chunker polynomials_test.go polIrredTests
POL_IRRED_TESTS = [
    (0x38F1E565E288DF, False),
    (0x3DA3358B4DC173, True),
    (0x30A8295B9D5C91, False),
    (0x255F4350B962CB, False),
    (0x267F776110A235, False),
    (0x2F4DAE10D41227, False),
    (0x2482734CACCA49, True),
    (0x312DAF4B284899, False),
    (0x29DFB6553D01D1, False),
    (0x3548245EB26257, False),
    (0x3199E7EF4211B3, False),
    (0x362F39017DAE8B, False),
    (0x200D57AA6FDACB, False),
    (0x35E0A4EFA1D275, False),
    (0x2CED55B026577F, False),
    (0x260B012010893D, False),
    (0x2DF29CBCD59E9D, False),
    (0x3F2AC7488BD429, False),
    (0x3E5CB1711669FB, False),
    (0x226D8DE57A9959, False),
    (0x3C8DE80AAF5835, False),
    (0x2026A59EFB219B, False),
    (0x39DFA4D13FB231, False),
    (0x3143D0464B3299, False),
]


@pytest.mark.parametrize(("pol", "irreducible"), POL_IRRED_TESTS)
def test_restic_irreducibility_table(pol: int, irreducible: bool) -> None:
    assert is_irreducible(pol) is irreducible
    assert ref.irreducible(pol) is irreducible


def _brute_force_irreducible(f: int) -> bool:
    n = pol_degree(f)
    return n >= 1 and all(ref.pol_mod(f, g) != 0 for g in range(2, 1 << (n // 2 + 1)) if 1 <= pol_degree(g) <= n // 2)


def test_irreducible_small_degrees_brute_force() -> None:
    for f in range(1 << 11):
        assert is_irreducible(f) is _brute_force_irreducible(f), hex(f)
    # known counts of irreducible polynomials over GF(2) by degree 1..10
    counts = [sum(is_irreducible(f) for f in range(1 << d, 1 << (d + 1))) for d in range(1, 11)]
    assert counts == [2, 1, 2, 3, 6, 9, 18, 30, 56, 99]


@settings(deadline=None, max_examples=25)
@given(st.integers(0, (1 << 53) - 1))
def test_irreducible_matches_restic_algorithm(low: int) -> None:
    pol = (1 << 53) | low
    assert is_irreducible(pol) is ref.irreducible(pol)


def test_random_polynomial() -> None:
    seen = set()
    for _ in range(10):
        pol = random_polynomial()
        assert pol_degree(pol) == 53
        assert pol & 1
        assert ref.irreducible(pol)
        Chunker(pol)
        seen.add(pol)
    assert len(seen) == 10


def test_random_polynomial_follows_restic_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 random bits little-endian, masked to bits 0..53, bits 53 and 0 set, first irreducible wins."""
    reducible_draw = (0x38F1E565E288DF | (0xFF << 56)).to_bytes(8, "little")  # high junk is dropped
    # TEST_POL with bit 53 and bit 0 cleared and junk in bits 54..63: the construction restores it
    good_draw = ((TEST_POL & ~((1 << 53) | 1)) | (0xAB << 56) | (1 << 54)).to_bytes(8, "little")
    draws: Iterator[bytes] = iter([reducible_draw, good_draw])
    monkeypatch.setattr("coffer.store.chunker.secrets.token_bytes", lambda n: next(draws))
    assert random_polynomial() == TEST_POL


def test_pol_degree() -> None:
    assert pol_degree(0) == -1
    assert pol_degree(1) == 0
    assert pol_degree(TEST_POL) == 53
