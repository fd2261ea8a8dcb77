"""Go encoding/json string escaping and the hardened JSON loader."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError
from coffer.store.format import gojson


def go_string_ref(s: str) -> str:
    """Go 1.19 encoding/json ``encodeState.string`` with HTML escaping (what restic 0.14 runs),
    written out rune by rune. A lone surrogate stands for an invalid UTF-8 byte."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif o < 0x20 or c in "<>&":
            out.append("\\u00%02x" % o)  # Go uses lower-case hex; \b and \f too (before Go 1.22)
        elif c in "\u2028\u2029":
            out.append("\\u%04x" % o)
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("<>&", '"\\u003c\\u003e\\u0026"'),
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ("\b\f", '"\\u0008\\u000c"'),
        ("\n\r\t", '"\\n\\r\\t"'),
        ("\x00\x01\x1b\x1f", '"\\u0000\\u0001\\u001b\\u001f"'),
        ('"\\', '"\\"\\\\"'),
        ("\\b", '"\\\\b"'),  # an escaped backslash followed by b is not a \b escape
        ("\\\\f", '"\\\\\\\\f"'),
        ("été 中文 😀 \x7f \u0085", '"été 中文 😀 \x7f \u0085"'),  # other non-ASCII (and DEL) stay raw
        ("a\n", '"a\\n"'),  # regression: a final newline used to slip through the fast path
        ("\n", '"\\n"'),
        ("r\udcffot", '"r\\ufffdot"'),  # surrogateescape'd invalid byte
        ("", '""'),
        ("plain", '"plain"'),
    ],
)
def test_vectors(s: str, expected: str) -> None:
    assert gojson.string(s) == expected
    assert go_string_ref(s) == expected


# st.text() never yields lone surrogates; add them explicitly
any_text = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=40)


@settings(max_examples=300)
@given(any_text)
def test_matches_go_reference(s: str) -> None:
    assert gojson.string(s) == go_string_ref(s)


@settings(max_examples=300)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
def test_parses_back(s: str) -> None:
    out = gojson.string(s)
    assert json.loads(out) == s
    assert not any(c in out for c in "<>&\u2028\u2029") and all(ord(c) >= 0x20 for c in out)


@settings(max_examples=200)
@given(any_text)
def test_always_encodable_as_utf8(s: str) -> None:
    gojson.string(s).encode("utf-8")


def test_string_list() -> None:
    assert gojson.string_list([]) == "[]"
    assert gojson.string_list(["a", "<"]) == '["a","\\u003c"]'


def test_dumps() -> None:
    obj = {"z": 1, "a": [True, False, None, "x&y", 1.5, -3], "m": {"k": "v"}, "t": ("p",)}
    assert gojson.dumps(obj) == '{"z":1,"a":[true,false,null,"x\\u0026y",1.5,-3],"m":{"k":"v"},"t":["p"]}'
    with pytest.raises(TypeError):
        gojson.dumps(object())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200)
@given(json_values)
def test_dumps_round_trips_through_loads(v: object) -> None:
    assert gojson.loads(gojson.dumps(v).encode(), "test") == json.loads(json.dumps(v))


# --- loads: hostile input (T33) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"1" * 1_000_000,
        b"[" + b"9" * 1_000_000 + b"]",
        b"-" + b"9" * 5000,
        b"1e999", b"-1e999", b"[" + b"1" * 400 + b".0]",
        b"NaN", b"Infinity", b"-Infinity", b'{"a":NaN}', b"[Infinity]",
        b"", b"{", b"[1,]", b"\xff\xfe\xfd", b'"\xff"', b"{'a':1}", b"nul",
    ],
)
def test_loads_hostile(raw: bytes) -> None:
    t0 = time.monotonic()
    with pytest.raises(FormatError):
        gojson.loads(raw, "test")
    assert time.monotonic() - t0 < 1.0


def test_loads_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gojson, "MAX_JSON", 10)
    with pytest.raises(FormatError, match="too large"):
        gojson.loads(b"[" + b"1," * 10 + b"1]", "test")
    assert gojson.loads(b"[1,2]", "test") == [1, 2]


def test_loads_accepts_normal_numbers() -> None:
    assert gojson.loads(b'[1, -2, 1.5, 1e300, 0.0, 4300]', "t") == [1, -2, 1.5, 1e300, 0.0, 4300]
    assert gojson.loads(b"9" * 4300, "t") == int("9" * 4300)


@settings(max_examples=200)
@given(st.binary(max_size=100))
def test_loads_fuzz_only_format_error(raw: bytes) -> None:
    try:
        gojson.loads(raw, "fuzz")
    except FormatError:
        pass
