"""Byte counts for people ("5.6 MiB"), in one place so messages, tables and reports agree."""

from __future__ import annotations


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def human_seconds(s: float) -> str:
    """Short times with a decimal ("0.4s", "12.0s"), longer ones in units ("3m 20s")."""
    if s < 60:
        return f"{s:.1f}s"
    from coffer.util.durations import human

    return human(s)
