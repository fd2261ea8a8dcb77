"""What a source hands to the engine, and what drills ask of it.

A source turns live data (a directory tree, a database, a VM disk) into backup inputs, and knows
how to prove a restored copy works (start the database, run its checks). The engine never learns
which database produced a stream; the plan layer above never learns how a dump is made.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coffer.engine.backup import StreamInput
from coffer.engine.excludes import ExcludeRules


@dataclass
class BackupInputs:
    """File-system paths, or named streams (exactly one of the two is used per snapshot)."""

    paths: list[str] = field(default_factory=list)
    streams: list[StreamInput] = field(default_factory=list)
    excludes: ExcludeRules = field(default_factory=ExcludeRules)
    tags: list[str] = field(default_factory=list)


@dataclass
class VerifyOutcome:
    """What a source's own verification of a restored copy found (drills record it)."""

    ok: bool
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, passed, detail)
    time_to_ready: float | None = None  # seconds until the restored service accepted connections


class Source(abc.ABC):
    kind: str = ""

    @abc.abstractmethod
    @contextlib.contextmanager
    def inputs(self) -> Iterator[BackupInputs]:
        """Prepare (checkpoint, start dumps), yield the inputs, then finish (stop, clean up).

        An exception inside the ``with`` block (or from a failed dump) must leave no snapshot.
        """

    def verify_restored(self, restored: Path) -> VerifyOutcome:
        """Prove a restored copy is usable. The default: content hashes were already verified."""
        return VerifyOutcome(ok=True)
