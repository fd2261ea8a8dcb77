"""Index files: pack ID -> blobs (ID, type, offset, length, uncompressed_length)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format.index import IndexFile, IndexPack
from coffer.store.format.pack import BlobType, PackedBlob

ids = st.binary(min_size=32, max_size=32)
blobs = st.builds(
    PackedBlob,
    type=st.sampled_from(BlobType),
    id=ids,
    offset=st.integers(0, 1 << 40),
    length=st.integers(32, 1 << 33),
    uncompressed_length=st.one_of(st.just(0), st.integers(1, 1 << 33)),
)
indexes = st.builds(
    IndexFile,
    packs=st.lists(st.builds(IndexPack, id=ids, blobs=st.lists(blobs, max_size=5)), max_size=5),
    supersedes=st.lists(ids, max_size=3),
)


def expected_obj(idx: IndexFile) -> dict[str, Any]:
    """What the JSON must say, built independently of ``to_json``."""
    obj: dict[str, Any] = {}
    if idx.supersedes:
        obj["supersedes"] = [s.hex() for s in idx.supersedes]
    obj["packs"] = []
    for p in idx.packs:
        bl = []
        for b in p.blobs:
            e: dict[str, Any] = {"id": b.id.hex(), "type": b.type.label, "offset": b.offset, "length": b.length}
            if b.uncompressed_length:
                e["uncompressed_length"] = b.uncompressed_length
            bl.append(e)
        obj["packs"].append({"id": p.id.hex(), "blobs": bl})
    return obj


@settings(max_examples=100)
@given(indexes)
def test_round_trip(idx: IndexFile) -> None:
    raw = idx.to_json()
    assert IndexFile.from_json(raw) == idx
    assert IndexFile.from_json(raw).to_json() == raw


@settings(max_examples=100)
@given(indexes)
def test_bytes_are_go_json_encoder_output(idx: IndexFile) -> None:
    raw = idx.to_json()
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1  # json.Encoder: compact plus one newline
    # Same bytes as a compact dump of the expected object (field order included).
    assert raw == json.dumps(expected_obj(idx), separators=(",", ":")).encode() + b"\n"


def test_example() -> None:
    a, b, p = "aa" * 32, "bb" * 32, "cc" * 32
    raw = (
        '{"packs":[{"id":"%s","blobs":[{"id":"%s","type":"data","offset":0,"length":38},'
        '{"id":"%s","type":"tree","offset":38,"length":550,"uncompressed_length":1048}]}]}\n' % (p, a, b)
    ).encode()
    idx = IndexFile.from_json(raw)
    assert idx.packs[0].blobs[1] == PackedBlob(BlobType.TREE, bytes.fromhex(b), 38, 550, 1048)
    assert idx.to_json() == raw


def test_empty_forms() -> None:
    assert IndexFile().to_json() == b'{"packs":[]}\n'
    for raw in (b'{"packs":[]}', b"{}", b'{"packs":null}', b"[]", b'{"packs":[],"supersedes":null}'):
        assert IndexFile.from_json(raw) == IndexFile()


def test_legacy_bare_array() -> None:
    p = {"id": "cc" * 32, "blobs": [{"id": "aa" * 32, "type": "data", "offset": 0, "length": 40}]}
    idx = IndexFile.from_json(json.dumps([p]).encode())
    blob = PackedBlob(BlobType.DATA, bytes.fromhex("aa" * 32), 0, 40)
    assert idx.packs == [IndexPack(bytes.fromhex("cc" * 32), [blob])]


def test_unknown_fields_ignored() -> None:
    raw = b'{"packs":[{"id":"' + b"cc" * 32 + b'","blobs":[],"x":1}],"future":true}'
    assert IndexFile.from_json(raw).packs == [IndexPack(bytes.fromhex("cc" * 32), [])]


def _idx(**blob: Any) -> bytes:
    b: dict[str, Any] = {"id": "aa" * 32, "type": "data", "offset": 0, "length": 40}
    b.update(blob)
    b = {k: v for k, v in b.items() if v is not None}
    return json.dumps({"packs": [{"id": "cc" * 32, "blobs": [b]}]}).encode()


HOSTILE = [
    _idx(type="blob"), _idx(type=None), _idx(type=0), _idx(type=["data"]),
    _idx(offset=-1), _idx(offset=True), _idx(offset=1.5), _idx(offset="0"), _idx(offset=None),
    _idx(length=31), _idx(length=False), _idx(length=None), _idx(uncompressed_length=-5),
    _idx(uncompressed_length=2.5), _idx(uncompressed_length="9"),
    _idx(id="zz" * 32), _idx(id="aa" * 31), _idx(id="AA"), _idx(id=None), _idx(id=5),
    json.dumps({"packs": [{"id": "cc" * 31, "blobs": []}]}).encode(),
    json.dumps({"packs": [{"id": "cc" * 32}]}).encode(),
    json.dumps({"packs": [{"id": "cc" * 32, "blobs": None}]}).encode(),
    json.dumps({"packs": [{"id": "cc" * 32, "blobs": [5]}]}).encode(),
    json.dumps({"packs": [5]}).encode(),
    json.dumps({"packs": {"a": 1}}).encode(),
    json.dumps({"packs": "x"}).encode(),
    json.dumps({"packs": [], "supersedes": ["xx"]}).encode(),
    json.dumps({"packs": [], "supersedes": [5]}).encode(),
    json.dumps({"packs": [], "supersedes": "abc"}).encode(),
    b"null", b"5", b'"index"', b"", b"{", b"\xff\xfe\x00",
    _idx().replace(b'"offset": 0', b'"offset": NaN'),
    _idx().replace(b'"offset": 0', b'"offset": Infinity'),
    _idx().replace(b'"offset": 0', b'"offset": 1e999'),
    _idx().replace(b'"offset": 0', b'"offset": ' + b"7" * 1_000_000),
    b"[" * 100_000 + b"]" * 100_000,
    b'{"packs":' * 100_000 + b"[]" + b"}" * 100_000,
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile(raw: bytes) -> None:
    with pytest.raises(FormatError):
        IndexFile.from_json(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["data", "tree", "aa" * 32]),
    lambda c: st.lists(c, max_size=3)
    | st.dictionaries(st.sampled_from(["packs", "blobs", "id", "type", "offset", "length", "uncompressed_length",
                                       "supersedes"]), c, max_size=4),
    max_leaves=15,
)


@settings(max_examples=200)
@given(json_values)
def test_fuzz_only_format_error(obj: Any) -> None:
    try:
        idx = IndexFile.from_json(json.dumps(obj).encode())
    except FormatError:
        return
    assert IndexFile.from_json(idx.to_json()) == idx


@settings(max_examples=100)
@given(indexes.filter(lambda i: bool(i.packs)), st.data())
def test_byte_flips_only_format_error(idx: IndexFile, data: st.DataObject) -> None:
    raw = bytearray(idx.to_json())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    try:
        again = IndexFile.from_json(bytes(raw))
    except FormatError:
        return
    assert IndexFile.from_json(again.to_json()) == again


# --- storage IDs ----------------------------------------------------------------------------------


def test_id_names() -> None:
    from coffer.store.format import ids

    good = "0123456789abcdef" * 4
    assert ids.is_id_hex(good) and ids.from_hex(good) == bytes.fromhex(good)
    for bad in (good + "\n", good.upper(), good[:-1], good + "0", " " + good, good[:-1] + "g", ""):
        assert not ids.is_id_hex(bad)  # regression: re.match with "$" accepted a trailing newline
        with pytest.raises(ValueError):
            ids.from_hex(bad)
    assert ids.short(bytes.fromhex(good)) == "01234567"
    assert ids.hash_bytes(b"") == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
