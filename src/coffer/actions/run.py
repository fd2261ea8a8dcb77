"""``coffer run``: carry out the plan for some or all datasets, and record every step.

For each dataset, in plan order: back up to the primary repository, copy the dataset's snapshots
to each copy repository, then apply retention in every repository that holds it. Each step is an
operation in the catalog (start, end, bytes, files, snapshot IDs, result, errors) under one ``run``
operation per dataset.

One dataset's failure never stops the others: an exception in a step is recorded and the run
goes on. Within a dataset, a failed backup still lets the copies run (older snapshots still need
their copies), but skips retention: never thin out the history on a day no new snapshot was made.

The exit code says what failed, the most serious first:
6 a backup failed (no snapshot), 4 a copy failed, 5 retention failed, 3 a snapshot was written but
some files could not be read, 0 everything succeeded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from coffer import env
from coffer.actions import plan as planact
from coffer.actions.backup import BackupPlan, BackupPrep, run_backup
from coffer.actions.copy import run_copy
from coffer.actions.retain import LOCK_WAIT, apply_retention
from coffer.actions.session import open_repo
from coffer.config.model import AnyDataset, Plan
from coffer.engine.backup import BackupRequest
from coffer.engine.snapshots import SnapshotFilter
from coffer.errors import EXIT_PARTIAL, CofferError, UsageError
from coffer.policy import schedule as schedule_policy
from coffer.sources import registry
from coffer.state.catalog import FAILED, OK, WARNING, Catalog
from coffer.store.format.snapshot import Snapshot
from coffer.store.maintenance.copy import CopyStats
from coffer.util.sizes import human_size

EXIT_COPY_FAILED = 4
EXIT_RETENTION_FAILED = 5
EXIT_BACKUP_FAILED = 6
STEPS = ("backup", "copy", "retention")
MAX_RECORDED_ERRORS = 100


@dataclass
class StepResult:
    step: str  # backup, copy, retention
    repository: str
    result: str  # ok, warning, failed, skipped
    message: str = ""
    snapshot_ids: list[str] = field(default_factory=list)
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    operation_id: int | None = None


@dataclass
class DatasetRun:
    dataset: str
    steps: list[StepResult] = field(default_factory=list)
    operation_id: int | None = None

    def failed(self, step: str) -> bool:
        return any(s.step == step and s.result == FAILED for s in self.steps)

    @property
    def result(self) -> str:
        if any(s.result == FAILED for s in self.steps):
            return FAILED
        return WARNING if any(s.result == WARNING for s in self.steps) else OK


@dataclass
class RunReport:
    datasets: list[DatasetRun] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(d.failed("backup") for d in self.datasets):
            return EXIT_BACKUP_FAILED
        if any(d.failed("copy") for d in self.datasets):
            return EXIT_COPY_FAILED
        if any(d.failed("retention") for d in self.datasets):
            return EXIT_RETENTION_FAILED
        if any(s.step == "backup" and s.result == WARNING for d in self.datasets for s in d.steps):
            return EXIT_PARTIAL
        return 0


def select_datasets(plan: Plan, names: Sequence[str]) -> list[AnyDataset]:
    if not names:
        return list(plan.datasets)
    known = {d.name for d in plan.datasets}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown dataset(s): {', '.join(unknown)} (the plan has: {', '.join(sorted(known))})")
    return [d for d in plan.datasets if d.name in names]


@dataclass
class DueDataset:
    name: str
    due: bool
    reason: str


def due_datasets(plan: Plan, catalog: Catalog, *, now: datetime | None = None) -> list[DueDataset]:
    """Which datasets their schedules say should run now (and why, or why not)."""
    now = now or datetime.now(UTC)
    out = []
    for d in plan.datasets:
        runs = [op for op in catalog.operations("run", dataset=d.name) if op.result != "running"]
        ok = [op.started for op in runs if op.result in ("ok", "warning")]
        failed = [op.started for op in runs if op.result == "failed"]
        last_ok = max(ok) if ok else None
        changed: bool | None = None
        if d.schedule.kind == "on-change" and last_ok is not None:
            probe = getattr(_source_or_none(d), "changed_since", None)
            changed = probe(last_ok.timestamp()) if probe is not None else None
        decision = schedule_policy.decide(
            kind=d.schedule.kind, now=now, last_ok=last_ok, last_failed=max(failed) if failed else None,
            next_firing=d.schedule.next_after(last_ok) if last_ok is not None else None, changed=changed,
        )
        out.append(DueDataset(d.name, decision.due, decision.reason))
    return out


def _source_or_none(d: AnyDataset) -> object | None:
    try:
        return registry.create(d)
    except CofferError:
        return None


def run_plan(
    plan: Plan, catalog: Catalog, names: Sequence[str] = (), *, skip: Sequence[str] = (),
    on_step: Callable[[str, StepResult], None] | None = None,
) -> RunReport:
    """Run the plan for ``names`` (all datasets when empty), skipping the steps named in ``skip``."""
    for s in skip:
        if s not in STEPS:
            raise UsageError(f"unknown step {s!r} (use {', '.join(STEPS)})")
    report = RunReport()
    for d in select_datasets(plan, names):
        dr = DatasetRun(d.name)
        dr.operation_id = catalog.start("run", dataset=d.name)
        runner = _DatasetRunner(plan, catalog, d, dr, on_step)
        try:
            runner.run(skip)
        finally:
            errors = [f"{s.step} {s.repository}: {s.message}" for s in dr.steps if s.result == FAILED]
            catalog.finish(dr.operation_id, dr.result, bytes=sum(s.bytes for s in dr.steps if s.step == "backup"),
                           files=sum(s.files for s in dr.steps if s.step == "backup"),
                           snapshot_ids=[i for s in dr.steps if s.step == "backup" for i in s.snapshot_ids],
                           errors=errors, details={"steps": [(s.step, s.repository, s.result) for s in dr.steps]})
        report.datasets.append(dr)
    return report


class _DatasetRunner:
    def __init__(self, plan: Plan, catalog: Catalog, d: AnyDataset, dr: DatasetRun,
                 on_step: Callable[[str, StepResult], None] | None) -> None:
        self.plan, self.catalog, self.d, self.dr, self.on_step = plan, catalog, d, dr, on_step

    def run(self, skip: Sequence[str]) -> None:
        d = self.d
        backup_ok = True
        if "backup" not in skip:
            backup_ok = self._step("backup", d.repository, self._backup).result != FAILED
        if "copy" not in skip:
            for c in d.copies:
                self._step("copy", c.repository, functools.partial(self._copy, repository=c.repository))
        if "retention" not in skip:
            for repo in d.all_repositories:
                if not backup_ok:
                    self._skipped("retention", repo, "skipped: the backup failed, so no snapshot is removed")
                    continue
                self._step("retention", repo, functools.partial(self._retain, repository=repo))

    def _skipped(self, step: str, repository: str, message: str) -> None:
        st = StepResult(step, repository, "skipped", message)
        self.dr.steps.append(st)
        if self.on_step is not None:
            self.on_step(self.d.name, st)

    def _step(self, step: str, repository: str, fn: Callable[[StepResult], None]) -> StepResult:
        kind = {"retention": "forget"}.get(step, step)
        st = StepResult(step, repository, OK)
        st.operation_id = self.catalog.start(kind, dataset=self.d.name, repository=repository,
                                             parent=self.dr.operation_id)
        t0 = time.monotonic()
        details: dict[str, Any] = {}
        try:
            fn(st)
        except (CofferError, OSError) as e:
            st.result = FAILED
            st.message = getattr(e, "message", None) or str(e)
            st.errors.append(st.message)
        except Exception as e:  # a bug in one dataset's step must not stop the other datasets
            st.result = FAILED
            st.message = f"internal error: {type(e).__name__}: {e}"
            st.errors.append(st.message)
        st.seconds = time.monotonic() - t0
        details["seconds"] = round(st.seconds, 3)
        details["message"] = st.message
        self.catalog.finish(st.operation_id, st.result, bytes=st.bytes, files=st.files,
                            snapshot_ids=st.snapshot_ids, errors=st.errors[:MAX_RECORDED_ERRORS], details=details)
        self.dr.steps.append(st)
        if self.on_step is not None:
            self.on_step(self.d.name, st)
        return st

    # -------------------------------------------------------------- steps
    def _backup(self, st: StepResult) -> None:
        d = self.d
        source = registry.create(d)
        access = planact.access(self.plan.repository(d.repository))
        with source.inputs() as inp:
            req = BackupRequest(
                paths=inp.paths, streams=inp.streams, excludes=inp.excludes,
                tags=list(dict.fromkeys([d.snapshot_tag, *d.tags, *inp.tags])),
                host=self.plan.host_for(d) or env.hostname(),
            )
            with BackupPrep(req) as prep, open_repo(access, "shared", prep) as repo:
                result = run_backup(repo, BackupPlan(req), count_totals=False, prep=prep)
        s = result.summary
        st.snapshot_ids = [result.snapshot.id.hex()]
        st.bytes, st.files = s.total_bytes_processed, s.total_files_processed
        st.errors = [f"{w.path}: {w.message}" if w.path else w.message for w in result.warnings]
        st.message = (f"snapshot {result.snapshot.id.hex()[:8]}: {s.total_files_processed} files, "
                      f"{human_size(s.data_added)} added")
        if result.partial:
            st.result = WARNING
            st.message += f"; {len(result.warnings)} item(s) could not be read"

    def _copy(self, st: StepResult, repository: str) -> None:
        d = self.d
        reporter = _CopyLog()
        summary = run_copy(planact.access(self.plan.repository(d.repository)),
                           planact.access(self.plan.repository(repository)), reporter,
                           flt=SnapshotFilter.build(tags=self._copy_tags()))
        st.snapshot_ids = [new.id.hex() for _, new in summary.copied]
        st.bytes = summary.stats.bytes_copied
        st.files = summary.stats.data_copied
        st.errors = reporter.warnings
        st.message = (f"{len(summary.copied)} snapshot(s) copied, {len(summary.skipped)} already there, "
                      f"{human_size(summary.stats.bytes_copied)} sent")
        if reporter.warnings:
            st.result = WARNING

    def _copy_tags(self) -> list[str]:
        """Tag groups (OR-ed) of the snapshots that make up the dataset: with WAL archiving, the
        archived segments travel with the base backups, or the copy cannot recover to a point in time."""
        d = self.d
        return [d.snapshot_tag, f"wal-dataset={d.name}"] if d.type == "postgres-wal" else [d.snapshot_tag]

    def _retain(self, st: StepResult, repository: str) -> None:
        d = self.d
        rules = d.retention
        for c in d.copies:
            if c.repository == repository and c.retention is not None:
                rules = c.retention
        access = planact.access(self.plan.repository(repository))
        out = apply_retention(access, d.snapshot_tag, rules)
        st.snapshot_ids = out.removed
        st.errors = out.warnings
        st.message = f"{len(out.kept)} kept, {len(out.removed)} removed"
        if d.type == "postgres-wal":
            # WAL follows the base backups the rules kept: everything older than the oldest of them goes.
            from coffer.actions.wal import expire_wal

            # Exclusive like retention, so it waits as long for the server's wal-push (shared) locks.
            exp = expire_wal(replace(access, retry_lock=max(access.retry_lock, LOCK_WAIT)), d.name)
            st.snapshot_ids += exp.removed
            st.message += f", {len(exp.removed)} WAL snapshot(s) no longer needed"
        if out.warnings:
            st.result = WARNING


class _CopyLog:
    """A copy reporter that keeps only what the catalog records (warnings)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def snapshot(self, s: Snapshot) -> None:
        pass

    def skipped(self, s: Snapshot, existing: Snapshot) -> None:
        pass

    def started(self, s: Snapshot) -> None:
        pass

    def progress(self, stats: CopyStats, elapsed: float) -> None:
        pass

    def saved(self, s: Snapshot, new: Snapshot, stats: CopyStats, elapsed: float) -> None:
        pass

    def warn(self, text: str) -> None:
        self.warnings.append(text)
