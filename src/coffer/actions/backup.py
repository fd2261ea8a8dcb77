"""The backup use case: pick the parent, run the engine, return values for the front-end."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from coffer import __version__, env
from coffer.actions.session import load_snapshots_and_index
from coffer.engine import snapshots as snapsel
from coffer.engine.backup import Archiver, BackupRequest, BackupResult
from coffer.engine.progress import Progress
from coffer.store.format.snapshot import Snapshot
from coffer.store.repository import Repository


@dataclass
class BackupPlan:
    request: BackupRequest
    parent_spec: str | None = None  # --parent ID (or None for automatic)
    force: bool = False  # read every file even if the parent says it is unchanged


def run_backup(
    repo: Repository, plan: BackupPlan, progress: Progress | None = None,
    on_parent: Callable[[Snapshot | None], None] | None = None, *, count_totals: bool = True,
    snapshots: list[Snapshot] | None = None,
) -> BackupResult:
    """``snapshots``: what ``load_snapshots_and_index`` returned when it already ran (during the lock's wait)."""
    req = plan.request
    req.host = req.host or env.hostname()
    req.program_version = req.program_version or f"coffer {__version__}"
    snaps = load_snapshots_and_index(repo) if snapshots is None else snapshots
    if plan.force:
        req.parent = None
    elif plan.parent_spec:
        req.parent = snapsel.find(snaps, plan.parent_spec)
    elif req.paths:
        cwd = os.getcwd()
        abs_paths = sorted({os.path.normpath(os.path.join(cwd, p)) for p in req.paths})
        req.parent = snapsel.find_parent(snaps, req.host, abs_paths, req.time_ns)
    if on_parent is not None:
        on_parent(req.parent)
    archiver = Archiver(repo, req, progress)
    archiver.count_totals = count_totals
    return archiver.run()

