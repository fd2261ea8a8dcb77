"""Go strconv.Quote / Unquote for node names (without the outer quotes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.store.format import goquote

SHORT = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 0x22: '\\"', 0x5C: "\\\\"}


def go_quote_byte(b: int) -> str:
    """Go's rule for a lone byte, written out independently."""
    if b in SHORT:
        return SHORT[b]
    if 0x20 <= b < 0x7F:
        return chr(b)
    return "\\x%02x" % b  # control chars, DEL, and any byte >= 0x80 that is not valid UTF-8 on its own


# restic-format.md section 8, plus Go behaviour for the edge cases
VECTORS = [
    (b"tab\tname.txt", "tab\\tname.txt"),
    (b'we"ird\\name.txt', 'we\\"ird\\\\name.txt'),
    (b"ctl\x01\x1bname", "ctl\\x01\\x1bname"),
    (b"\a\b\f\n\r\t\v", "\\a\\b\\f\\n\\r\\t\\v"),
    (b"\x00\x7f", "\\x00\\x7f"),
    (b"plain-ASCII name (1).txt", "plain-ASCII name (1).txt"),
    (b"'single'", "'single'"),
    ("été 中文 😀".encode(), "été 中文 😀"),
    (b"bad\xff\xfename", "bad\\xff\\xfename"),
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # UTF-8-encoded surrogate: invalid, byte by byte
    (b"\xc0\x80", "\\xc0\\x80"),  # overlong
    (b"\xe2\x82", "\\xe2\\x82"),  # truncated sequence
    (b"\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"),  # beyond U+10FFFF
    ("\u2028\u2029".encode(), "\\u2028\\u2029"),  # line/paragraph separators are not printable in Go
    ("\u00a0".encode(), "\\u00a0"),  # no-break space: only ASCII space is printable
    ("\u0085".encode(), "\\u0085"),  # C1 control
    ("\u200b".encode(), "\\u200b"),  # format character (Cf)
    ("\ue000".encode(), "\\ue000"),  # private use
    ("\U000f0000".encode(), "\\U000f0000"),
    ("\ufffd".encode(), "\ufffd"),  # a real U+FFFD is printable
    (b"<>&", "<>&"),  # HTML escaping is JSON's business, not Quote's
    (b"", ""),
]


@pytest.mark.parametrize(("raw", "quoted"), VECTORS)
def test_vectors(raw: bytes, quoted: str) -> None:
    assert goquote.quote(raw) == quoted
    assert goquote.unquote(quoted) == raw


def test_every_single_byte() -> None:
    for b in range(256):
        assert goquote.quote(bytes([b])) == go_quote_byte(b), b
        assert goquote.unquote(go_quote_byte(b)) == bytes([b]), b


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=40), st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_round_trip_any_bytes(raw: bytes) -> None:
    q = goquote.quote(raw)
    assert goquote.unquote(q) == raw
    # The quoted form has no control characters, no bare quote, and every backslash starts an escape.
    assert all(c.isprintable() for c in q)
    assert '"' not in q.replace('\\"', "").replace("\\\\", "")


@settings(max_examples=200)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E).filter(lambda c: c not in '"\\')))
def test_printable_ascii_unchanged(s: str) -> None:
    assert goquote.quote(s.encode()) == s


@given(st.text(st.characters(exclude_categories=["Cs", "Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs"])))
def test_printable_unicode_unchanged(s: str) -> None:
    assert goquote.quote(s.encode()) == s.replace("\\", "\\\\").replace('"', '\\"')


def test_trailing_newline_is_escaped() -> None:
    # regression: the fast path used re.match with "$", which also matches before a final "\n"
    assert goquote.quote(b"name\n") == "name\\n"
    assert goquote.quote(b"\n") == "\\n"


def test_unquote_accepts_other_go_escapes() -> None:
    assert goquote.unquote("\\101\\x41\\u0041\\U00000041") == b"AAAA"
    assert goquote.unquote("\\u00e9") == "é".encode()
    assert goquote.unquote("\\xff\\xfe") == b"\xff\xfe"


@pytest.mark.parametrize(
    "bad", ["\\", "a\\", "\\q", "\\x4", "\\xzz", "\\u12", "\\U0001f60", "\\400", "\\8", "ok\\ then", "\\U00110000"]
)
def test_unquote_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        goquote.unquote(bad)
