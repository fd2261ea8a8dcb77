"""Restore drills: prove that an older snapshot restores, is intact, and is usable, and time it.

A backup that was never restored is a hope. A drill picks a snapshot the way an incident would
need one — not the newest (that one is read by every backup), but one from an age window, 7-21
days by default, chosen at random so that over many drills every part of the history is tried —
restores it into a fresh private directory, verifies every file against the content hashes
stored in the snapshot, runs the plan's checks there (a command, a file that must exist, a
minimum file count) and the source's own proof (start the database, ...), and measures how long
it all took.

This module only drills and measures; choosing the Source and recording the result is the
caller's job (``actions.drill``), and judging the RTO is policy's.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from coffer.engine.restore import RestoreOptions, RestoreResult, restore
from coffer.errors import CofferError, SourceError
from coffer.store.format.snapshot import Snapshot
from coffer.store.repository import Repository
from coffer.util.durations import human
from coffer.util.process import Command, run

MAX_LISTED_ISSUES = 200


class SourceProof(Protocol):
    """What a source's ``verify_restored`` returns (``sources.base.VerifyOutcome`` fits)."""

    ok: bool
    checks: list[tuple[str, bool, str]]
    time_to_ready: float | None


class Check(Protocol):
    """A plan drill check (``config.model.DrillCheck`` fits); ``sql`` checks belong to the source."""

    @property
    def kind(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def argv(self) -> list[str]: ...
    @property
    def expect_exit(self) -> int: ...
    @property
    def timeout(self) -> timedelta: ...
    @property
    def exists(self) -> str | None: ...
    @property
    def min_files(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    name: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(slots=True)
class DrillOutcome:
    snapshot: Snapshot
    selection: str  # how the snapshot was chosen, in words
    restore: RestoreResult
    restore_seconds: float
    checks: list[CheckOutcome] = field(default_factory=list)
    ready_seconds: float = 0.0
    issues: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.restore.ok and all(c.ok for c in self.checks) and not self.issues

    @property
    def throughput(self) -> float:
        return self.restore.bytes / self.restore_seconds if self.restore_seconds > 0 else 0.0


# ------------------------------------------------------------------------------------ choosing
def snapshot_time(s: Snapshot) -> datetime:
    return datetime.fromtimestamp(s.time_ns / 1e9, UTC)


def choose_snapshot(
    snaps: Sequence[Snapshot], now: datetime, min_age: timedelta, max_age: timedelta,
    rng: random.Random | None = None,
) -> tuple[Snapshot, str]:
    """A random snapshot aged within [min_age, max_age]; else the oldest one, saying so."""
    if not snaps:
        raise CofferError("no snapshot to drill")
    window = [s for s in snaps if min_age <= now - snapshot_time(s) <= max_age]
    if window:
        r = rng or random.SystemRandom()
        s = r.choice(sorted(window, key=lambda x: (x.time_ns, x.id)))
        return s, f"random among {len(window)} snapshot(s) {human(min_age)}-{human(max_age)} old"
    oldest = min(snaps, key=lambda x: (x.time_ns, x.id))
    age = now - snapshot_time(oldest)
    return oldest, (f"no snapshot {human(min_age)}-{human(max_age)} old: using the oldest available "
                    f"({human(age)} old)")


# ------------------------------------------------------------------------------------ drilling
def drill(
    repo: Repository,
    snap: Snapshot,
    selection: str,
    checks: Sequence[Check] = (),
    prove: Callable[[Path], SourceProof] | None = None,
    *,
    scratch: str | None = None,
    keep: bool = False,
    workers: int = 2,
) -> DrillOutcome:
    """Restore ``snap`` into a private temporary directory, verify it, run the checks, clean up.

    The restore directory is created mode 0700 under ``scratch`` (default: $TMPDIR) and removed
    afterwards unless ``keep``; nothing is ever written to the original paths. The repository's
    index must be loaded.
    """
    base = tempfile.mkdtemp(prefix="coffer-drill-", dir=scratch)
    target = os.path.join(base, "restore")
    try:
        t0 = time.monotonic()
        result = restore(repo, snap.tree, RestoreOptions(target=target, verify=True, workers=workers))
        seconds = time.monotonic() - t0
        out = DrillOutcome(snap, selection, result, seconds)
        for issue in result.errors:
            out.issues.append(f"restore: {issue.path}: {issue.message}")
        for issue in result.verify_errors:
            out.issues.append(f"verify: {issue.path}: {issue.message}")
        if len(out.issues) > MAX_LISTED_ISSUES:
            n = len(out.issues) - MAX_LISTED_ISSUES
            out.issues = [*out.issues[:MAX_LISTED_ISSUES], f"... and {n} more"]
        home = os.path.join(target, snap.paths[0].lstrip("/")) if snap.paths else target
        if not os.path.isdir(home):
            home = target
        for c in checks:
            if c.kind in ("command", "exists", "min_files"):
                out.checks.append(_run_check(c, target, home, result))
        if prove is not None:
            try:
                proof = prove(Path(target))
            except CofferError as e:
                out.checks.append(CheckOutcome("source verification", False, str(e)))
            else:
                out.ready_seconds = proof.time_to_ready if proof.time_to_ready is not None else 0.0
                out.checks.extend(CheckOutcome(n, ok, d) for n, ok, d in proof.checks)
                if not proof.ok and all(ok for _, ok, _ in proof.checks):
                    out.checks.append(CheckOutcome("source verification", False, "the source rejected the restore"))
        return out
    finally:
        if not keep:
            _remove_tree(base)


def _run_check(c: Check, target: str, home: str, result: RestoreResult) -> CheckOutcome:
    """Run one generic check. Commands start in ``home`` (the restored copy of the snapshot's first
    path), with COFFER_DRILL_ROOT (the restore directory) and COFFER_DRILL_PATH (``home``) set."""
    if c.kind == "exists":
        rel = (c.exists or "").lstrip("/")
        ok = os.path.lexists(os.path.join(target, rel))
        return CheckOutcome(c.label, ok, "present" if ok else f"{c.exists} is missing from the restore")
    if c.kind == "min_files":
        need = c.min_files or 0
        ok = result.files >= need
        return CheckOutcome(c.label, ok, f"{result.files} files restored (need {need})")
    argv = c.argv
    try:
        r = run(Command(argv=argv, cwd=home, env={"COFFER_DRILL_ROOT": target, "COFFER_DRILL_PATH": home}),
                timeout=c.timeout.total_seconds(), check=False)
    except SourceError as e:
        return CheckOutcome(c.label, False, str(e))
    ok = r.returncode == c.expect_exit
    tail = (r.stderr.strip() or r.stdout.decode("utf-8", "replace").strip()).splitlines()[-3:]
    detail = f"exit {r.returncode}" + (f" (expected {c.expect_exit})" if not ok else "")
    if tail and not ok:
        detail += ": " + " | ".join(tail)
    return CheckOutcome(c.label, ok, detail)


def _remove_tree(path: str) -> None:
    """Remove a restore, including read-only directories a snapshot may contain."""
    def onerror(func: Callable[..., object], p: str, exc: object) -> None:
        try:
            parent = os.path.dirname(p)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)
