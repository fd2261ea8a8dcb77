"""Pack headers: entries of (type, stored length, [plain length], ID), then the LE32 trailer."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format import compression, crypto, pack
from coffer.store.format.crypto import CryptoKey
from coffer.store.format.pack import BlobType, PackedBlob

U32 = (1 << 32) - 1


@st.composite
def headers(draw: st.DrawFn, compressed: bool = True) -> list[PackedBlob]:
    n = draw(st.integers(0, 10))
    out = []
    offset = 0
    for _ in range(n):
        length = draw(st.integers(crypto.OVERHEAD, U32))
        ulen = draw(st.one_of(st.just(0), st.integers(1, U32))) if compressed else 0
        out.append(PackedBlob(draw(st.sampled_from(BlobType)), draw(st.binary(min_size=32, max_size=32)),
                              offset, length, ulen))
        offset += length
    return out


def entry_sizes(blobs: list[PackedBlob]) -> list[int]:
    return [pack.ENTRY_COMPRESSED if b.compressed else pack.ENTRY_PLAIN for b in blobs]


@settings(max_examples=100)
@given(headers())
def test_header_round_trip_v2(blobs: list[PackedBlob]) -> None:
    raw = pack.encode_header(blobs)
    assert len(raw) == sum(entry_sizes(blobs))
    assert pack.decode_header(raw, 2) == blobs


@settings(max_examples=100)
@given(headers(compressed=False))
def test_header_round_trip_v1(blobs: list[PackedBlob]) -> None:
    raw = pack.encode_header(blobs)
    assert pack.decode_header(raw, 1) == blobs
    assert pack.decode_header(raw, 2) == blobs


@settings(max_examples=50)
@given(headers())
def test_v1_rejects_compressed_entries(blobs: list[PackedBlob]) -> None:
    raw = pack.encode_header(blobs)
    if any(b.compressed for b in blobs):
        with pytest.raises(FormatError):
            pack.decode_header(raw, 1)
    else:
        assert pack.decode_header(raw, 1) == blobs


def test_entry_layout() -> None:
    bid = bytes(range(32))
    assert pack.encode_header([PackedBlob(BlobType.DATA, bid, 0, 100)]) == b"\x00" + struct.pack("<I", 100) + bid
    assert pack.encode_header([PackedBlob(BlobType.TREE, bid, 0, 100)]) == b"\x01" + struct.pack("<I", 100) + bid
    assert pack.encode_header([PackedBlob(BlobType.DATA, bid, 0, 100, 500)]) == (
        b"\x02" + struct.pack("<II", 100, 500) + bid
    )
    assert pack.encode_header([PackedBlob(BlobType.TREE, bid, 0, 100, 500)]) == (
        b"\x03" + struct.pack("<II", 100, 500) + bid
    )


@settings(max_examples=50)
@given(headers().filter(bool), st.data())
def test_truncated_entries(blobs: list[PackedBlob], data: st.DataObject) -> None:
    raw = pack.encode_header(blobs)
    bounds = set()
    pos = 0
    for size in entry_sizes(blobs):
        pos += size
        bounds.add(pos)
    cut = data.draw(st.integers(1, len(raw) - 1).filter(lambda c: c not in bounds))
    with pytest.raises(FormatError):
        pack.decode_header(raw[:cut], 2)


@settings(max_examples=50)
@given(headers(), st.integers(4, 255), st.binary(max_size=60))
def test_bad_type_byte(blobs: list[PackedBlob], t: int, rest: bytes) -> None:
    with pytest.raises(FormatError):
        pack.decode_header(pack.encode_header(blobs) + bytes([t]) + rest, 2)


def test_compressed_with_zero_plain_length() -> None:
    raw = b"\x02" + struct.pack("<II", 100, 0) + bytes(32)
    with pytest.raises(FormatError):
        pack.decode_header(raw, 2)


@pytest.mark.parametrize("length", [0, 1, 31])
def test_blob_shorter_than_overhead(length: int) -> None:
    with pytest.raises(FormatError):
        pack.decode_header(b"\x00" + struct.pack("<I", length) + bytes(32), 2)


@settings(max_examples=200)
@given(st.binary(max_size=200), st.sampled_from([1, 2]))
def test_decode_garbage_only_format_error(raw: bytes, version: int) -> None:
    try:
        blobs = pack.decode_header(raw, version)
    except FormatError:
        return
    assert pack.encode_header(blobs) == raw


def test_empty_header() -> None:
    assert pack.decode_header(b"", 2) == []


# --- trailer and layout ---------------------------------------------------------------------------


def test_trailer() -> None:
    assert pack.trailer(1234) == struct.pack("<I", 1234)


@settings(max_examples=300)
@given(st.integers(0, U32), st.integers(0, 1 << 40))
def test_header_length_bounds(hlen: int, size: int) -> None:
    ok = (
        size >= pack.MIN_PACK_SIZE
        and crypto.OVERHEAD <= hlen <= pack.MAX_HEADER_SIZE
        and hlen + 4 <= size
    )
    if ok:
        assert pack.header_length(pack.trailer(hlen), size) == hlen
    else:
        with pytest.raises(FormatError):
            pack.header_length(pack.trailer(hlen), size)


@pytest.mark.parametrize(
    ("hlen", "size", "good"),
    [
        (0, 1000, False),
        (31, 1000, False),
        (32, 1000, True),
        (69, 73, True),  # the smallest pack: one 37-byte entry + 32 + 4
        (69, 72, False),
        (996, 1000, True),
        (997, 1000, False),
        (pack.MAX_HEADER_SIZE, 1 << 30, True),
        (pack.MAX_HEADER_SIZE + 1, 1 << 30, False),
        (U32, 1 << 40, False),
    ],
)
def test_header_length_examples(hlen: int, size: int, good: bool) -> None:
    if good:
        assert pack.header_length(pack.trailer(hlen), size) == hlen
    else:
        with pytest.raises(FormatError):
            pack.header_length(pack.trailer(hlen), size)


@pytest.mark.parametrize("tail", [b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
def test_header_length_needs_four_bytes(tail: bytes) -> None:
    with pytest.raises(FormatError):
        pack.header_length(tail, 1000)


@settings(max_examples=50)
@given(headers(), st.integers(32, 5000))
def test_check_layout(blobs: list[PackedBlob], hlen: int) -> None:
    end = blobs[-1].offset + blobs[-1].length if blobs else 0
    pack.check_layout(blobs, hlen, end + hlen + 4)
    for wrong in (end + hlen + 3, end + hlen + 5):
        with pytest.raises(FormatError):
            pack.check_layout(blobs, hlen, wrong)


# --- whole packs ----------------------------------------------------------------------------------


def build_pack(key: CryptoKey, items: list[tuple[BlobType, bytes, bool]]) -> tuple[bytes, list[PackedBlob]]:
    """Blobs sealed one by one, then the sealed header and its length, as restic lays them out."""
    body = bytearray()
    blobs = []
    for t, plain, compress in items:
        payload = compression.compress(plain) if compress and plain else plain
        sealed = crypto.seal(key, payload)
        ulen = len(plain) if compress and plain else 0
        blobs.append(PackedBlob(t, hashlib.sha256(plain).digest(), len(body), len(sealed), ulen))
        body += sealed
    header = crypto.seal(key, pack.encode_header(blobs))
    return bytes(body + header + pack.trailer(len(header))), blobs


def read_pack(key: CryptoKey, data: bytes, version: int) -> list[tuple[PackedBlob, bytes]]:
    hlen = pack.header_length(data[-4:], len(data))
    header = crypto.open_(key, data[-4 - hlen : -4])
    blobs = pack.decode_header(header, version)
    pack.check_layout(blobs, hlen, len(data))
    out = []
    for b in blobs:
        plain = crypto.open_(key, data[b.offset : b.offset + b.length])
        if b.compressed:
            plain = compression.decompress_blob(plain, b.uncompressed_length)
        assert len(plain) == b.plain_length
        assert hashlib.sha256(plain).digest() == b.id
        out.append((b, plain))
    return out


items = st.lists(
    st.tuples(st.sampled_from(BlobType), st.binary(max_size=300), st.booleans()), min_size=1, max_size=8
)


@settings(max_examples=40)
@given(items)
def test_whole_pack_round_trip(its: list[tuple[BlobType, bytes, bool]]) -> None:
    key = CryptoKey.random()
    data, blobs = build_pack(key, its)
    got = read_pack(key, data, 2)
    assert [b for b, _ in got] == blobs
    assert [p for _, p in got] == [plain for _, plain, _ in its]
    if not any(b.compressed for b in blobs):
        assert [b for b, _ in read_pack(key, data, 1)] == blobs


def test_packed_blob_lengths() -> None:
    plain = PackedBlob(BlobType.DATA, bytes(32), 0, 132)
    assert not plain.compressed and plain.plain_length == 100
    comp = PackedBlob(BlobType.TREE, bytes(32), 0, 132, 5000)
    assert comp.compressed and comp.plain_length == 5000


def test_blob_type_names() -> None:
    assert BlobType.parse("data") is BlobType.DATA and BlobType.DATA.label == "data"
    assert BlobType.parse("tree") is BlobType.TREE and BlobType.TREE.label == "tree"
    for bad in ("Data", "", "blob", "0"):
        with pytest.raises(FormatError):
            BlobType.parse(bad)
