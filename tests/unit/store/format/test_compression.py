"""zstd for blobs and for v2 "unpacked" files, always capped at the declared length."""

from __future__ import annotations

import struct
import threading
import time

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format import compression

payloads = st.one_of(
    st.binary(min_size=1, max_size=4096),
    st.binary(min_size=1, max_size=64).map(lambda b: b * 200),  # compressible
)


def frame_claiming(size: int, payload: bytes = b"hello") -> bytes:
    """A valid zstd frame header declaring ``size`` bytes of content, then one raw block."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x58]) + struct.pack("<Q", size)  # FCS 8 bytes + window
    block = struct.pack("<I", (len(payload) << 3) | 1)[:3]  # last block, raw
    return header + block + payload


def frame_without_size(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=False).compress(data)


# --- blobs ----------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(payloads, st.sampled_from([1, 3, 19]))
def test_blob_round_trip(data: bytes, level: int) -> None:
    frame = compression.compress(data, level)
    assert zstandard.frame_content_size(frame) == len(data)  # restic's frames declare their size
    assert not zstandard.get_frame_parameters(frame).has_checksum
    assert compression.decompress_blob(frame, len(data)) == data
    assert compression.decompress_blob(memoryview(frame), len(data)) == data


@settings(max_examples=50)
@given(payloads, st.integers(1, 10_000))
def test_blob_wrong_declared_length(data: bytes, other: int) -> None:
    if other == len(data):
        return
    with pytest.raises(FormatError):
        compression.decompress_blob(compression.compress(data), other)
    with pytest.raises(FormatError):
        compression.decompress_blob(frame_without_size(data), other)


@settings(max_examples=30)
@given(payloads)
def test_blob_without_content_size_still_decodes(data: bytes) -> None:
    assert compression.decompress_blob(frame_without_size(data), len(data)) == data


def test_blob_expanding_beyond_plain_len_is_refused_without_allocating() -> None:
    # A frame (no declared size) that inflates to 64 MiB, declared in the index as 1 KiB.
    bomb = frame_without_size(bytes(64 << 20))
    assert len(bomb) < 64 * 1024
    t0 = time.monotonic()
    with pytest.raises(FormatError):
        compression.decompress_blob(bomb, 1024)
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("claimed", [1 << 40, (1 << 64) - 2, 6])
def test_blob_frame_claiming_more_than_plain_len(claimed: int) -> None:
    """A frame that declares a huge size: FormatError, not MemoryError or a 1 TiB buffer."""
    with pytest.raises(FormatError):
        compression.decompress_blob(frame_claiming(claimed), 5)


def test_blob_frame_claiming_exact_size_decodes() -> None:
    assert compression.decompress_blob(frame_claiming(5), 5) == b"hello"


@pytest.mark.parametrize("plain_len", [0, -1, 1 << 32, 1 << 40])
def test_blob_invalid_plain_len(plain_len: int) -> None:
    with pytest.raises(FormatError):
        compression.decompress_blob(compression.compress(b"x"), plain_len)


@settings(max_examples=200)
@given(st.binary(max_size=300), st.integers(1, 5000))
def test_blob_garbage_only_format_error(data: bytes, plain_len: int) -> None:
    try:
        out = compression.decompress_blob(data, plain_len)
    except FormatError:
        return
    assert len(out) == plain_len


@settings(max_examples=60)
@given(payloads, st.data())
def test_blob_truncated_frame(data: bytes, draw: st.DataObject) -> None:
    frame = compression.compress(data)
    cut = draw.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(FormatError):
        compression.decompress_blob(frame[:cut], len(data))


def test_compressors_are_per_thread() -> None:
    data = [bytes([i]) * 100_000 + bytes(range(256)) * i for i in range(8)]
    expected = [compression.compress(d) for d in data]
    results: dict[int, list[bytes]] = {}

    def work(i: int) -> None:
        results[i] = [compression.compress(d) for d in data for _ in range(3)][::3]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


# --- unpacked files -------------------------------------------------------------------------------


@settings(max_examples=100)
@given(st.binary(max_size=2048))
def test_unpacked_v1_is_identity(data: bytes) -> None:
    assert compression.encode_unpacked(data, 1) == data
    assert compression.decode_unpacked(data, 1) == data


@settings(max_examples=100)
@given(st.binary(max_size=2048))
def test_unpacked_v2_round_trip(data: bytes) -> None:
    enc = compression.encode_unpacked(data, 2)
    assert enc[0] == 0x02
    assert compression.decode_unpacked(enc, 2) == data


@settings(max_examples=100)
@given(st.sampled_from(b"{["), st.binary(max_size=512))
def test_unpacked_v2_legacy_json(first: int, rest: bytes) -> None:
    plain = bytes([first]) + rest
    assert compression.decode_unpacked(plain, 2) == plain


@settings(max_examples=100)
@given(st.integers(0, 255).filter(lambda b: b not in (0x02, 0x5B, 0x7B)), st.binary(max_size=64))
def test_unpacked_v2_unknown_first_byte(first: int, rest: bytes) -> None:
    with pytest.raises(FormatError):
        compression.decode_unpacked(bytes([first]) + rest, 2)


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_unpacked_v2_garbage_after_marker(rest: bytes) -> None:
    try:
        compression.decode_unpacked(b"\x02" + rest, 2)
    except FormatError:
        pass


def test_unpacked_frame_without_size() -> None:
    assert compression.decode_unpacked(b"\x02" + frame_without_size(b'{"a":1}'), 2) == b'{"a":1}'


def test_unpacked_truncated_frame_refused() -> None:
    frame = compression.compress(b'{"packs":[]}\n' * 50)
    with pytest.raises(FormatError):
        compression.decode_unpacked(b"\x02" + frame[:-3], 2)


@pytest.mark.parametrize("claimed", [compression.MAX_UNPACKED + 1, 1 << 40, (1 << 64) - 2])
def test_unpacked_declared_size_over_limit(claimed: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(FormatError):
        compression.decode_unpacked(b"\x02" + frame_claiming(claimed), 2)
    assert time.monotonic() - t0 < 0.5


def test_unpacked_limit_applies_to_frames_without_size() -> None:
    bomb = frame_without_size(bytes(8 << 20))
    t0 = time.monotonic()
    with pytest.raises(FormatError):
        compression.decompress_unpacked(bomb, limit=1 << 20)
    assert time.monotonic() - t0 < 0.5
    assert len(compression.decompress_unpacked(bomb, limit=8 << 20)) == 8 << 20


def test_unpacked_limit_applies_to_frames_with_size() -> None:
    frame = compression.compress(bytes(1 << 20))
    with pytest.raises(FormatError):
        compression.decompress_unpacked(frame, limit=(1 << 20) - 1)
    assert compression.decompress_unpacked(frame, limit=1 << 20) == bytes(1 << 20)


def test_unpacked_empty() -> None:
    assert compression.decode_unpacked(b"", 2) == b""
    assert compression.decode_unpacked(b"\x02" + compression.compress(b""), 2) == b""
