"""Looking at running processes through /proc."""

from __future__ import annotations

import contextlib
from pathlib import Path


def child_pids(pid: int) -> set[int]:
    """The direct children of ``pid`` (started by any of its threads)."""
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out |= {int(c) for c in (task / "children").read_text().split()}
    return out
