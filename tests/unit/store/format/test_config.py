"""The repository ``config``: compact JSON, sealed with the master key, never compressed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format import crypto
from coffer.store.format.config import RepoConfig
from coffer.store.format.crypto import CryptoKey

configs = st.builds(
    RepoConfig,
    version=st.sampled_from([1, 2]),
    id=st.one_of(st.binary(min_size=32, max_size=32).map(bytes.hex), st.text(min_size=1, max_size=40)),
    chunker_polynomial=st.integers(0, (1 << 64) - 1),
)


@settings(max_examples=200)
@given(configs)
def test_round_trip(cfg: RepoConfig) -> None:
    raw = cfg.to_bytes()
    assert RepoConfig.from_bytes(raw) == cfg
    assert RepoConfig.from_bytes(raw).to_bytes() == raw


def test_exact_bytes() -> None:
    rid = "ab" * 32
    cfg = RepoConfig(2, rid, 0x369A569DC23853)
    assert cfg.to_bytes() == b'{"version":2,"id":"' + rid.encode() + b'","chunker_polynomial":"369a569dc23853"}'


def test_restic_style_input() -> None:
    raw = b'{"version":1,"id":"' + b"0f" * 32 + b'","chunker_polynomial":"3dea92648f6e83"}'
    cfg = RepoConfig.from_bytes(raw)
    assert (cfg.version, cfg.chunker_polynomial) == (1, 0x3DEA92648F6E83)
    assert cfg.to_bytes() == raw


@given(configs)
def test_sealed_config_is_plain_json(cfg: RepoConfig) -> None:
    key = CryptoKey.random()
    plain = crypto.open_(key, crypto.seal(key, cfg.to_bytes()))
    assert plain[:1] == b"{"  # no v2 encoding byte for the config
    assert RepoConfig.from_bytes(plain) == cfg


def test_new() -> None:
    cfg = RepoConfig.new(2, 0x3DEA92648F6E83)
    assert cfg.version == 2 and len(bytes.fromhex(cfg.id)) == 32
    assert RepoConfig.new(2, 1).id != cfg.id
    for bad in (0, 3):
        with pytest.raises(FormatError):
            RepoConfig.new(bad, 1)


def test_pretty_json() -> None:
    cfg = RepoConfig(2, "ab" * 32, 0x1F)
    assert json.loads(cfg.to_json_pretty()) == json.loads(cfg.to_bytes())


def _cfg(**over: object) -> bytes:
    obj: dict[str, object] = {"version": 2, "id": "ab" * 32, "chunker_polynomial": "3dea92648f6e83"}
    obj.update(over)
    return json.dumps({k: v for k, v in obj.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "raw",
    [
        _cfg(version=0), _cfg(version=3), _cfg(version=-1), _cfg(version="2"), _cfg(version=2.0),
        _cfg(version=True), _cfg(version=None), _cfg(version=[2]),
        _cfg(id=None), _cfg(id=""), _cfg(id=5),
        _cfg(chunker_polynomial=None), _cfg(chunker_polynomial="xyz"), _cfg(chunker_polynomial=123),
        _cfg(chunker_polynomial=""),
        b"[]", b"null", b"2", b'"config"', b"", b"{", b"\xff",
        b'{"version":NaN,"id":"x","chunker_polynomial":"1"}',
        b'{"version":1e999,"id":"x","chunker_polynomial":"1"}',
        b'{"version":' + b"9" * 1_000_000 + b',"id":"x","chunker_polynomial":"1"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(FormatError):
        RepoConfig.from_bytes(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {},
            optional={
                "version": st.one_of(st.integers(-1, 4), json_values),
                "id": st.one_of(st.text(max_size=70), json_values),
                "chunker_polynomial": st.one_of(st.integers(0, 1 << 64).map(lambda i: format(i, "x")), json_values),
            },
        ),
    )
)
def test_fuzz_only_format_error(obj: object) -> None:
    try:
        cfg = RepoConfig.from_bytes(json.dumps(obj).encode())
    except FormatError:
        return
    assert cfg.version in (1, 2) and isinstance(cfg.id, str) and cfg.id
