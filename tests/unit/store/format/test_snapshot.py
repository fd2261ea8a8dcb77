"""Snapshot JSON: Go field order, omitempty, and exact re-encoding of what restic wrote."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format.snapshot import Snapshot
from coffer.util import gotime

NS = 1_000_000_000
ids = st.binary(min_size=32, max_size=32)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
times = st.builds(
    gotime.format_ns, st.integers(-62135596800 * NS, 253402300799 * NS), st.integers(-1439, 1439).map(lambda m: m * 60)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(texts, c, max_size=3),
    max_leaves=8,
)
snapshots = st.builds(
    Snapshot,
    time=times,
    tree=ids,
    paths=st.lists(texts, max_size=3),
    hostname=texts,
    username=texts,
    uid=st.integers(0, (1 << 32) - 1),
    gid=st.integers(0, (1 << 32) - 1),
    excludes=st.lists(texts, max_size=3),
    tags=st.lists(texts, max_size=3),
    parent=st.none() | ids,
    original=st.none() | ids,
    program_version=texts,
    summary=st.none() | st.dictionaries(texts, json_values, min_size=1, max_size=4),
    extra=st.just({}) | st.dictionaries(st.sampled_from(["future", "zz"]), json_values, min_size=1),
)


@settings(max_examples=100)
@given(snapshots)
def test_round_trip(s: Snapshot) -> None:
    raw = s.to_json()
    assert not raw.endswith(b"\n")  # json.Marshal, not json.Encoder
    back = Snapshot.from_json(raw)
    assert back == s
    assert back.to_json() == raw


@settings(max_examples=100)
@given(snapshots)
def test_fields_in_go_order_and_omitempty(s: Snapshot) -> None:
    order = ["time", "parent", "tree", "paths", "hostname", "username", "uid", "gid", "excludes", "tags",
             "original", "program_version", "summary"]
    keys = [k for k, _ in json.loads(s.to_json(), object_pairs_hook=list)]
    known = [k for k in keys if k in order]
    assert known == sorted(known, key=order.index)
    assert ("parent" in keys) == bool(s.parent) and ("uid" in keys) == bool(s.uid)
    assert ("tags" in keys) == bool(s.tags) and ("excludes" in keys) == bool(s.excludes)
    assert "tree" in keys and "paths" in keys and "time" in keys


RESTIC_014 = (
    '{"time":"2024-05-01T12:34:56.123456789+02:00","parent":"%s","tree":"%s","paths":["/srv/data"],'
    '"hostname":"vm","username":"root","uid":1000,"gid":1000,"excludes":["*.tmp"],"tags":["a\\u003cb\\u0026c"],'
    '"original":"%s"}' % ("aa" * 32, "bb" * 32, "cc" * 32)
).encode()
RESTIC_NEW = (
    '{"time":"2025-01-01T00:00:00Z","tree":"%s","paths":["/"],"hostname":"h","username":"u",'
    '"program_version":"restic 0.18.0","summary":{"backup_start":"2025-01-01T00:00:00Z",'
    '"backup_end":"2025-01-01T00:00:01.5Z","files_new":3,"files_changed":0,"files_unmodified":0,"dirs_new":1,'
    '"dirs_changed":0,"dirs_unmodified":0,"data_blobs":3,"tree_blobs":2,"data_added":1234,'
    '"data_added_packed":800,"total_files_processed":3,"total_bytes_processed":1234}}' % ("bb" * 32)
).encode()


@pytest.mark.parametrize("raw", [RESTIC_014, RESTIC_NEW])
def test_restic_snapshots_reencode_identically(raw: bytes) -> None:
    s = Snapshot.from_json(raw, b"\x01" * 32)
    assert s.to_json() == raw
    assert s.id == b"\x01" * 32


def test_parsed_values() -> None:
    s = Snapshot.from_json(RESTIC_014)
    assert s.tags == ["a<b&c"] and s.parent == b"\xaa" * 32 and s.original == b"\xcc" * 32
    assert s.time_ns == gotime.parse_ns("2024-05-01T10:34:56.123456789Z")
    d = Snapshot.from_json(RESTIC_014, b"\x12" * 32).to_display_dict()
    assert d["id"] == "12" * 32 and d["short_id"] == "12121212" and d["tags"] == ["a<b&c"]


def test_surrogate_paths_encode_like_go() -> None:
    # A path with invalid UTF-8 (surrogateescape in Python) must encode; Go writes \ufffd.
    s = Snapshot(time="2024-01-01T00:00:00Z", tree=b"\x01" * 32, paths=["/data/bad\udcff"])
    assert b'"paths":["/data/bad\\ufffd"]' in s.to_json()


def _snap(**over: Any) -> bytes:
    obj: dict[str, Any] = {"time": "2024-01-01T00:00:00Z", "tree": "bb" * 32, "paths": ["/"]}
    obj.update(over)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


HOSTILE = [
    _snap(tree=...), _snap(tree=""), _snap(tree="zz"), _snap(tree="bb" * 31), _snap(tree=5),
    _snap(time=...), _snap(time="yesterday"), _snap(time=5), _snap(time="2024-13-01T00:00:00Z"),
    _snap(parent="xx"), _snap(original="aa"), _snap(uid="x"), _snap(uid=[1]), _snap(paths=5),
    b"[]", b"null", b'"snap"', b"", b"{", b"\xff",
    _snap(uid=0).replace(b'"uid": 0', b'"uid": ' + b"4" * 1_000_000),
    _snap(uid=0).replace(b'"uid": 0', b'"uid": NaN'),
    _snap(uid=0).replace(b'"uid": 0', b'"uid": Infinity'),
    _snap(uid=0).replace(b'"uid": 0', b'"uid": 1e999'),
    _snap(uid=0).replace(b'"uid": 0', b'"uid": ' + b"4" * 400 + b".0"),
    b"[" * 100_000 + b"]" * 100_000,
    _snap(summary=0).replace(b'"summary": 0', b'"summary": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile(raw: bytes) -> None:
    with pytest.raises(FormatError):
        Snapshot.from_json(raw)


@settings(max_examples=150)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"time": st.one_of(times, json_values), "tree": st.one_of(ids.map(bytes.hex), json_values)},
            optional={k: json_values for k in ("parent", "paths", "uid", "gid", "tags", "original", "summary", "x")},
        ),
    )
)
def test_fuzz_only_format_error(obj: Any) -> None:
    try:
        s = Snapshot.from_json(json.dumps(obj).encode())
    except FormatError:
        return
    Snapshot.from_json(s.to_json())
