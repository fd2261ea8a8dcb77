"""Text and JSON formatting shared by the read-only commands, spelled the way restic 0.14 spells it.

Go's ``os.FileMode.String``, ``time.Time.String``, restic's ``formatBytes`` and ``formatNode``,
and ``json.MarshalIndent``: output people and scripts already parse from restic.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Sequence
from typing import Any

from coffer.cli.output import Printer
from coffer.store.format import gojson
from coffer.store.format.tree import (
    GO_CHAR_DEVICE,
    GO_DEVICE,
    GO_DIR,
    GO_NAMED_PIPE,
    GO_SOCKET,
    GO_SYMLINK,
    Node,
)
from coffer.util import gotime

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # restic's TimeFormat "2006-01-02 15:04:05"
_MODE_LETTERS = "dalTLDpSugct?"

_TYPE_BITS = {
    "file": 0, "dir": GO_DIR, "symlink": GO_SYMLINK, "dev": GO_DEVICE, "chardev": GO_DEVICE | GO_CHAR_DEVICE,
    "fifo": GO_NAMED_PIPE, "socket": GO_SOCKET,
}


def mode_string(mode: int) -> str:
    """Go's ``os.FileMode.String()``, e.g. ``drwxr-xr-x``, ``Lrwxrwxrwx``, ``dtrwxrwxrwx``."""
    out = [c for i, c in enumerate(_MODE_LETTERS) if mode & (1 << (31 - i))]
    if not out:
        out.append("-")
    rwx = "rwxrwxrwx"
    out.extend(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate(rwx))
    return "".join(out)


def text(b: bytes) -> str:
    """A path or name for text output: raw bytes survive (see ``raw_text_output``)."""
    return b.decode("utf-8", "surrogateescape")


def json_text(b: bytes) -> str:
    """A path or name for JSON output; ``go_json`` writes its invalid bytes as ``\\ufffd``."""
    return b.decode("utf-8", "surrogateescape")


_SURROGATE = re.compile("[\udc80-\udcff]")


def fix_invalid_utf8(json_str: str) -> str:
    """Write each byte of invalid UTF-8 (a surrogate from ``json_text``) as ``\\ufffd``, as Go does."""
    return _SURROGATE.sub(r"\\ufffd", json_str) if _SURROGATE.search(json_str) else json_str


def go_json(obj: Any) -> str:
    """Compact JSON as Go's encoder writes it."""
    return fix_invalid_utf8(gojson.dumps(obj))


def raw_text_output(p: Printer) -> None:
    """Let names that are not valid UTF-8 reach stdout as their original bytes, as restic prints them."""
    out = p.out
    if isinstance(out, io.TextIOWrapper) and out.errors != "surrogateescape":
        try:
            out.reconfigure(errors="surrogateescape")
        except (ValueError, io.UnsupportedOperation):
            pass


def local_time(go_time: str) -> str:
    """A Go time string shown in local time as ``2006-01-02 15:04:05``."""
    try:
        ns = gotime.parse_ns(go_time)
    except ValueError:
        return go_time
    return time.strftime(TIME_FORMAT, time.localtime(ns // 1_000_000_000))


def go_time_string(go_time: str) -> str:
    """Go's ``time.Time.String()`` of a parsed RFC3339 time: ``2006-01-02 15:04:05.999999999 -0700 MST``."""
    try:
        t = gotime.parse(go_time)
    except ValueError:
        return go_time
    sec, frac = divmod(t.ns, gotime.NS)
    tm = time.gmtime(sec + t.offset)
    s = time.strftime("%Y-%m-%d %H:%M:%S", tm)
    if frac:
        s += ("." + "%09d" % frac).rstrip("0")
    sign = "+" if t.offset >= 0 else "-"
    h, m = divmod(abs(t.offset) // 60, 60)
    off = "%s%02d%02d" % (sign, h, m)
    if go_time.endswith(("Z", "z")):
        zone = "UTC"
    else:
        lt = time.localtime(sec)
        zone = lt.tm_zone if lt.tm_gmtoff == t.offset and lt.tm_zone else off
    return f"{s} {off} {zone}"


def format_bytes(n: int) -> str:
    """restic's formatBytes (note: exactly 1024 is still "1024 B")."""
    b = float(n)
    if n > 1 << 40:
        return "%.3f TiB" % (b / (1 << 40))
    if n > 1 << 30:
        return "%.3f GiB" % (b / (1 << 30))
    if n > 1 << 20:
        return "%.3f MiB" % (b / (1 << 20))
    if n > 1 << 10:
        return "%.3f KiB" % (b / (1 << 10))
    return "%d B" % n


def format_node(path: bytes, node: Node, long: bool) -> str:
    """One line of ``ls``/``find`` output (restic's formatNode)."""
    if not long:
        return text(path)
    target = " -> " + text(node.linktarget) if node.type == "symlink" else ""
    mode = _TYPE_BITS.get(node.type, 0) | node.mode
    return "%s %5d %5d %6d %s %s%s" % (
        mode_string(mode), node.uid, node.gid, node.size, local_time(node.mtime), text(path), target)


# Already what Go writes: no trailing zeros in the fraction, and a zero offset spelled "Z".
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{0,8}[1-9])?(?:Z|[+-](?!00:00)\d\d:\d\d)\Z")


def canonical_time(go_time: str) -> str:
    """A time string as Go re-marshals it after parsing (``+00:00`` becomes ``Z``)."""
    if _CANONICAL.match(go_time):
        return go_time
    try:
        t = gotime.parse(go_time)
    except ValueError:
        return go_time
    return t.format()


def go_indent(obj: Any, level: int = 0) -> str:
    """``json.MarshalIndent(obj, "", "  ")`` with Go's string escaping."""
    pad = "  " * (level + 1)
    end = "  " * level
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{gojson.string(str(k))}: {go_indent(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        return "[\n" + ",\n".join(pad + go_indent(v, level + 1) for v in obj) + "\n" + end + "]"
    return gojson.dumps(obj)


def write_raw(p: Printer, data: bytes) -> None:
    """Binary-safe output of object bytes (``cat blob``/``pack``/``tree``)."""
    out = p.out
    out.flush()
    buf = getattr(out, "buffer", None)
    if buf is not None:
        buf.write(data)
        buf.flush()
    else:
        out.write(data.decode("utf-8", "surrogateescape"))
        out.flush()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """restic's ui/table layout: columns two spaces apart, a rule above and below the rows."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return [fmt(headers), rule, *(fmt(r) for r in rows), rule]
