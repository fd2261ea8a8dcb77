"""Lock files in restic's JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format import lock
from coffer.store.format.lock import LockInfo
from coffer.util import gotime

NS = 1_000_000_000
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
locks = st.builds(
    LockInfo,
    time=st.builds(
        gotime.format_ns, st.integers(0, 4_000_000_000 * NS), st.integers(-1439, 1439).map(lambda m: m * 60)
    ),
    exclusive=st.booleans(),
    hostname=texts,
    username=texts,
    pid=st.integers(0, (1 << 31) - 1),
    uid=st.integers(0, (1 << 32) - 1),
    gid=st.integers(0, (1 << 32) - 1),
)


@settings(max_examples=200)
@given(locks)
def test_round_trip(info: LockInfo) -> None:
    raw = info.to_json()
    back = LockInfo.from_json(raw)
    assert back == info
    assert back.to_json() == raw
    keys = [k for k, _ in json.loads(raw, object_pairs_hook=list)]
    assert keys == ["time", "exclusive", "hostname", "username", "pid"] + ["uid"] * bool(info.uid) + ["gid"] * bool(
        info.gid
    )


RESTIC = (
    b'{"time":"2024-03-04T05:06:07.891011121+01:00","exclusive":false,"hostname":"vm","username":"root",'
    b'"pid":20889,"uid":1000,"gid":1000}'
)


def test_restic_lock_reencodes_identically() -> None:
    info = LockInfo.from_json(RESTIC)
    assert info == LockInfo("2024-03-04T05:06:07.891011121+01:00", False, "vm", "root", 20889, 1000, 1000)
    assert info.to_json() == RESTIC
    assert info.time_ns == gotime.parse_ns("2024-03-04T04:06:07.891011121Z")


def test_root_lock_omits_uid_gid() -> None:
    raw = LockInfo("2024-01-01T00:00:00Z", True, "h<&>", "root", 1).to_json()
    assert raw == (
        b'{"time":"2024-01-01T00:00:00Z","exclusive":true,"hostname":"h\\u003c\\u0026\\u003e",'
        b'"username":"root","pid":1}'
    )


def test_size_cap() -> None:
    padded = RESTIC[:-1] + b"," + b'"pad":"' + b"x" * lock.MAX_LOCK_SIZE + b'"}'
    with pytest.raises(FormatError, match="too large"):
        LockInfo.from_json(padded)
    with pytest.raises(FormatError, match="too large"):
        LockInfo.from_json(b" " * (lock.MAX_LOCK_SIZE + 1))
    # Exactly at the cap is fine (whitespace padding is valid JSON).
    assert LockInfo.from_json(RESTIC + b" " * (lock.MAX_LOCK_SIZE - len(RESTIC))).pid == 20889


def _lock(**over: Any) -> bytes:
    obj: dict[str, Any] = {"time": "2024-01-01T00:00:00Z", "exclusive": False, "hostname": "h", "username": "u",
                           "pid": 1}
    obj.update(over)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


HOSTILE = [
    _lock(time=...), _lock(time="now"), _lock(time=5), _lock(time=None), _lock(pid="x"), _lock(pid=[1]),
    _lock(uid=[1]), _lock(gid="x"),
    b"[]", b"null", b"", b"{", b"\xff", b'"lock"',
    _lock(pid=0).replace(b'"pid": 0', b'"pid": ' + b"5" * 1_000_000),
    _lock(pid=0).replace(b'"pid": 0', b'"pid": NaN'),
    _lock(pid=0).replace(b'"pid": 0', b'"pid": Infinity'),
    _lock(pid=0).replace(b'"pid": 0', b'"pid": 1e999'),
    b"[" * 30_000 + b"]" * 30_000,  # deep nesting, within the 64 KiB cap
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile(raw: bytes) -> None:
    with pytest.raises(FormatError):
        LockInfo.from_json(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"time": st.one_of(st.just("2024-01-01T00:00:00Z"), json_values)},
            optional={k: json_values for k in ("exclusive", "hostname", "username", "pid", "uid", "gid")},
        ),
    )
)
def test_fuzz_only_format_error(obj: Any) -> None:
    try:
        info = LockInfo.from_json(json.dumps(obj).encode())
    except FormatError:
        return
    assert LockInfo.from_json(info.to_json()).time == info.time
