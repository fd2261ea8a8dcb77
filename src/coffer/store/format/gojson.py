"""JSON bytes as Go's ``encoding/json`` writes them.

Tree IDs are hashes of tree JSON, so deduplicating against restic means writing the very same
bytes: compact, fields in struct order, ``<>&`` and U+2028/9 escaped, control characters as Go
spells them. Only strings need care; numbers and booleans are already identical.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Lone surrogates stand for bytes that were not valid UTF-8 (``surrogateescape``) or for a lone
# surrogate escape in parsed JSON; Go writes each invalid byte as the six characters \ufffd.
_SAFE = re.compile(r'[^"\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]*')
_GO_FIXES = {
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
    "\\b": "\\u0008", "\\f": "\\u000c",
}
# Match whole escape pairs so that an escaped backslash followed by "b" is left alone.
_FIX_RE = re.compile(r"\\.|[<>&\u2028\u2029\ud800-\udfff]")


def _fix(m: re.Match[str]) -> str:
    s = m.group(0)
    if len(s) == 1 and "\ud800" <= s <= "\udfff":
        return "\\ufffd"
    return _GO_FIXES.get(s, s)


def string(s: str) -> str:
    """A JSON string literal exactly as Go writes it."""
    if _SAFE.fullmatch(s):  # not match(): "$" also matches before a final newline
        return '"' + s + '"'
    return _FIX_RE.sub(_fix, json.dumps(s, ensure_ascii=False))


def string_list(items: list[str]) -> str:
    return "[" + ",".join(string(s) for s in items) + "]"


def dumps(obj: Any) -> str:
    """Generic compact encoder with Go's escaping (dict order is the caller's field order)."""
    if isinstance(obj, str):
        return string(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return json.dumps(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(string(str(k)) + ":" + dumps(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    raise TypeError(f"cannot encode {type(obj).__name__}")


MAX_JSON = 256 * 1024 * 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):  # "1e999" or a 10^6-digit literal would become inf
        raise ValueError("number out of range")
    return f


# One decoder for every document: json.loads with hooks builds a new decoder (and scanner) per call,
# which showed in profiles of the parent-tree walk (tens of thousands of small trees).
_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)


def loads(data: bytes | str, what: str) -> Any:
    """Parse JSON from repository data, turning every failure into a FormatError."""
    from coffer.errors import FormatError

    if len(data) > MAX_JSON:
        raise FormatError(f"{what}: JSON document too large ({len(data)} bytes)")
    try:
        if isinstance(data, str):
            if data.startswith("\ufeff"):
                raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
            return _DECODER.decode(data)
        return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))  # as json.loads does
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise FormatError(f"{what}: invalid JSON: {str(e)[:200]}") from None
