"""The backup use case: pick the parent, run the engine, return values for the front-end."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coffer import __version__, env
from coffer.actions.session import load_snapshots_and_index
from coffer.engine import snapshots as snapsel
from coffer.engine.backup import Archiver, BackupRequest, BackupResult
from coffer.engine.progress import Progress
from coffer.store.format.snapshot import Snapshot
from coffer.store.repository import Repository

if TYPE_CHECKING:
    from coffer.engine.walkpool import WalkPool


@dataclass
class BackupPlan:
    request: BackupRequest
    parent_spec: str | None = None  # --parent ID (or None for automatic)
    force: bool = False  # read every file even if the parent says it is unchanged


class BackupPrep:
    """What a backup reads and starts before it walks, done in the lock's wait (see RepoLock): the
    snapshots, then the index, then the forked walk workers, which start with that index in their
    memory. Pass it to ``open_repo`` as ``prepare`` and to ``run_backup``; as a context manager it
    ends workers the backup never got to use."""

    def __init__(self, request: BackupRequest) -> None:
        self.request = request
        self.snapshots: list[Snapshot] | None = None
        self.walkers: WalkPool | None = None

    def __call__(self, repo: Repository) -> None:
        self.close()  # a retried lock prepares again: the earlier index may be stale
        self.snapshots = load_snapshots_and_index(repo)
        if not self.request.streams:
            from coffer.engine.walkpool import WalkPool

            n = env.env_int("COFFER_BACKUP_PROCESSES", min(4, os.cpu_count() or 1))
            self.walkers = WalkPool.fork(repo, self.request.excludes, n)

    def take_walkers(self) -> WalkPool | None:
        walkers, self.walkers = self.walkers, None
        return walkers

    def close(self) -> None:
        walkers = self.take_walkers()
        if walkers is not None:
            walkers.close(kill=True)

    def __enter__(self) -> BackupPrep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_backup(
    repo: Repository, plan: BackupPlan, progress: Progress | None = None,
    on_parent: Callable[[Snapshot | None], None] | None = None, *, count_totals: bool = True,
    prep: BackupPrep | None = None,
) -> BackupResult:
    """``prep``: the preparation that already ran (during the lock's wait), if any."""
    req = plan.request
    req.host = req.host or env.hostname()
    req.program_version = req.program_version or f"coffer {__version__}"
    snaps = prep.snapshots if prep is not None and prep.snapshots is not None else load_snapshots_and_index(repo)
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
    archiver = Archiver(repo, req, progress, walkers=prep.take_walkers() if prep is not None else None)
    archiver.count_totals = count_totals
    return archiver.run()
