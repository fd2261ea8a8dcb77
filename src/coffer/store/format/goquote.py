"""Go's ``strconv.Quote``/``Unquote`` for node names.

restic stores a file name as the Go-quoted form of its raw bytes (without the outer quotes), so
any byte sequence, including invalid UTF-8, survives the trip through JSON. Both directions must
match Go exactly, or tree IDs differ from restic's and names do not round-trip.
"""

from __future__ import annotations

import re

_PLAIN = re.compile(rb"[\x20-\x21\x23-\x5b\x5d-\x7e]*")  # printable ASCII except " and \
_SHORT = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 0x22: '\\"', 0x5C: "\\\\"}


def quote(raw: bytes) -> str:
    """Go ``strconv.Quote(string(raw))`` without the surrounding quotes."""
    if _PLAIN.fullmatch(raw):  # not match(): "$" also matches before a final newline
        return raw.decode("ascii")
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b < 0x80:
            if b in _SHORT:
                out.append(_SHORT[b])
            elif b < 0x20 or b == 0x7F:
                out.append("\\x%02x" % b)
            else:
                out.append(chr(b))
            i += 1
            continue
        ch, size = _decode_rune(raw, i)
        if ch is None:
            out.append("\\x%02x" % b)
            i += 1
            continue
        if ch.isprintable():
            out.append(ch)
        else:
            cp = ord(ch)
            out.append("\\u%04x" % cp if cp < 0x10000 else "\\U%08x" % cp)
        i += size
    return "".join(out)


def _decode_rune(raw: bytes, i: int) -> tuple[str | None, int]:
    b = raw[i]
    size = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
    if size == 0 or i + size > len(raw):
        return None, 1
    try:
        ch = raw[i : i + size].decode("utf-8")
    except UnicodeDecodeError:
        return None, 1
    return ch, size


_ESC = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|[abfnrtv\\'\"])")
_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 0x5C, "'": 0x27, '"': 0x22}


def unquote(s: str) -> bytes:
    """Inverse of ``quote``: the raw name bytes. Raises ValueError on malformed escapes."""
    if "\\" not in s:
        return s.encode("utf-8", "surrogateescape")
    out = bytearray()
    pos = 0
    for m in _ESC.finditer(s):
        if m.start() < pos:
            continue
        chunk = s[pos : m.start()]
        if "\\" in chunk:
            raise ValueError(f"invalid escape in name {s!r}")
        out += chunk.encode("utf-8", "surrogateescape")
        e = m.group(1)
        c = e[0]
        if c == "x":
            out.append(int(e[1:], 16))
        elif c in "uU":
            out += chr(int(e[1:], 16)).encode("utf-8", "surrogatepass")
        elif c.isdigit():
            v = int(e, 8)
            if v > 255:
                raise ValueError(f"invalid octal escape in name {s!r}")
            out.append(v)
        else:
            out.append(_SIMPLE[c])
        pos = m.end()
    rest = s[pos:]
    if "\\" in rest:
        raise ValueError(f"invalid escape in name {s!r}")
    out += rest.encode("utf-8", "surrogateescape")
    return bytes(out)
