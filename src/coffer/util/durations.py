"""Durations as people write them in a plan ("25h", "7d", "1h30m", "1y") and as we print them.

One parser for the whole program, so a plan, a flag and a report agree on what "1y" means
(365 days: retention and RPO arithmetic wants a fixed length, not a calendar).
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w|y)")


def parse_duration(text: str) -> timedelta:
    """``"25h"`` -> 25 hours. Units: s, m, h, d, w, y (365 d); parts add up (``"1d12h"``).

    Raises ValueError with a message meant for a person (the plan loader shows it as is).
    """
    s = text.strip().lower().replace(" ", "")
    parts = _PART.findall(s)
    if not s or not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"not a duration: {_quote(text)} (write e.g. 30m, 25h, 7d, 1y)")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"not a positive duration: {_quote(text)}")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """The shortest exact form, parseable again: 90000 s -> ``"25h"``, 7 days -> ``"7d"``."""
    total = round(td.total_seconds())
    if total <= 0:
        return "0s"
    out = ""
    for unit in ("d", "h", "m", "s"):
        n, total = divmod(total, _UNITS[unit])
        if n:
            out += f"{n}{unit}"
    return out


def human(td: timedelta | float | None) -> str:
    """Two most significant units for reading: ``"3d 2h"``, ``"25h"`` stays ``"1d 1h"``, ``"4m 10s"``."""
    if td is None:
        return "-"
    total = round(td.total_seconds() if isinstance(td, timedelta) else td)
    if total < 0:
        return "-" + human(timedelta(seconds=-total))
    if total < 60:
        return f"{total}s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        n, total = divmod(total, _UNITS[unit])
        if n or parts:
            parts.append(f"{n}{unit}")
        if len(parts) == 2:
            break
    while len(parts) > 1 and parts[-1].startswith("0"):
        parts.pop()
    return " ".join(parts)


def _quote(text: object) -> str:
    import json

    return json.dumps(text) if isinstance(text, str) else repr(text)
