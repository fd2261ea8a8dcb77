"""``coffer drill DATASET``: prove one dataset restores, within its RTO, and record the evidence.

Chooses the snapshot (``--snapshot`` or a random one from the plan's age window), restores and
verifies it through ``verify.drills`` with the dataset's Source (from the registry) as the
proof of usability, judges the RTO with ``policy.objectives``, and writes everything to the
catalog — also when the drill could not even start (no snapshot, repository unreachable): a
drill that could not run is a failed drill, and reports must show it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from coffer.actions import plan as planact
from coffer.actions.session import open_repo
from coffer.config.model import DrillPolicy, Plan
from coffer.engine import snapshots as snapsel
from coffer.engine.stats import collect as collect_stats
from coffer.errors import CofferError, UsageError
from coffer.policy.objectives import RtoJudgement, judge_rto
from coffer.sources import registry
from coffer.state.catalog import FAILED, OK, WARNING, Catalog, DrillRecord
from coffer.verify import drills
from coffer.verify.drills import SourceProof

EXIT_RTO_MISSED = 1
EXIT_DRILL_FAILED = 2


@dataclass
class DrillReport:
    record: DrillRecord
    rto: RtoJudgement | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if not self.record.ok:
            return EXIT_DRILL_FAILED
        return EXIT_RTO_MISSED if self.record.rto_met is False else 0


def run_drill(
    plan: Plan, catalog: Catalog, dataset: str, *, snapshot: str | None = None, repository: str | None = None,
    now: datetime | None = None, rng: random.Random | None = None, keep: bool = False,
    on_phase: Callable[[str], None] | None = None,
) -> DrillReport:
    try:
        d = plan.dataset(dataset)
    except KeyError:
        names = ", ".join(x.name for x in plan.datasets)
        raise UsageError(f"unknown dataset {dataset!r} (the plan has: {names})") from None
    policy = d.drill or DrillPolicy()
    repo_name = repository or policy.repository or d.repository
    if repo_name not in d.all_repositories:
        raise UsageError(f"repository {repo_name!r} does not hold dataset {dataset} "
                         f"(use one of: {', '.join(d.all_repositories)})")
    started = now or datetime.now(UTC)
    op = catalog.start("drill", dataset=d.name, repository=repo_name, started=started)

    def phase(text: str) -> None:
        if on_phase is not None:
            on_phase(text)

    notes: list[str] = []
    try:
        with open_repo(planact.access(plan.repository(repo_name)), "shared") as repo:
            phase(f"listing snapshots of {d.name} in {repo_name}")
            snaps = snapsel.sort_by_time(s for s in repo.list_snapshots(on_error=lambda sid, e: None)
                                         if d.snapshot_tag in s.tags)
            if not snaps:
                raise CofferError(f"no snapshot of {d.name} in repository {repo_name}")
            if snapshot:
                snap = snapsel.find(snaps, snapshot)
                selection = "chosen with --snapshot"
            else:
                snap, selection = drills.choose_snapshot(snaps, started, policy.min_age, policy.max_age, rng)
            repo.load_index()
            full = d.full_size
            if full is None:
                try:
                    full = collect_stats(repo, [snaps[-1]]).total_size
                except CofferError as e:
                    notes.append(f"full size unknown (newest snapshot unreadable: {e.message})")
                    full = 0
            prove = _source_proof(d, notes)
            phase(f"restoring snapshot {snap.id.hex()[:8]} ({selection})")
            outcome = drills.drill(repo, snap, selection, policy.checks, prove, scratch=policy.scratch, keep=keep)
    except CofferError as e:
        rec = DrillRecord(dataset=d.name, repository=repo_name, started=started, ok=False, issues=[e.message],
                          rto_seconds=d.rto.total_seconds() if d.rto else None)
        _record(catalog, op, rec, notes)
        return DrillReport(rec, None, notes)
    if d.type == "postgres-wal":
        phase("point-in-time recovery to a random moment of the WAL archive")
        outcome.checks.append(_pitr_check(plan, d.name, repo_name, d, rng))
    rto = judge_rto(d.rto, outcome.restore_seconds, outcome.restore.bytes, full, outcome.ready_seconds)
    snap_time = drills.snapshot_time(outcome.snapshot)
    issues = list(outcome.issues)
    issues += [f"check failed: {c.name}: {c.detail}" for c in outcome.checks if not c.ok]
    rec = DrillRecord(
        dataset=d.name, repository=repo_name, started=started, ok=outcome.ok,
        snapshot_id=outcome.snapshot.id.hex(), snapshot_time=snap_time,
        snapshot_age=(started - snap_time).total_seconds(), selection=outcome.selection,
        bytes=outcome.restore.bytes, files=outcome.restore.files, restore_seconds=outcome.restore_seconds,
        throughput=outcome.throughput, ready_seconds=outcome.ready_seconds, full_bytes=max(full, outcome.restore.bytes),
        extrapolated_seconds=rto.extrapolated, rto_seconds=rto.target, rto_met=rto.met,
        checks=[c.as_dict() for c in outcome.checks], issues=issues,
    )
    _record(catalog, op, rec, [*notes, rto.reason])
    return DrillReport(rec, rto, notes)


def _pitr_check(plan: Plan, dataset: str, repo_name: str, d: registry.DatasetSpec,
                rng: random.Random | None) -> drills.CheckOutcome:
    """The base backup alone proves little for a WAL dataset: recover to a random time through the
    archive (wal-fetch) in a throwaway server, as an emergency would."""
    from coffer.actions.wal import pitr_drill

    try:
        base, verified = pitr_drill(planact.access(plan.repository(repo_name)), dataset,
                                    source=registry.create(d), rng=rng)
    except CofferError as e:
        return drills.CheckOutcome("pitr", False, e.message)
    ready = f", ready in {verified.time_to_ready:.1f}s" if verified.time_to_ready is not None else ""
    failed = [f"{name}: {detail}" for name, ok, detail in verified.checks if not ok]
    detail = f"recovered from base backup {base.id[:8]} through the WAL archive{ready}"
    return drills.CheckOutcome("pitr", verified.ok, detail + (f"; {'; '.join(failed)}" if failed else ""))


def _source_proof(d: registry.DatasetSpec, notes: list[str]) -> Callable[[Path], SourceProof] | None:
    """The source's own verification of a restored copy; without a runtime for the type, none."""
    try:
        source = registry.create(d)
    except CofferError as e:
        notes.append(f"no source verification: {e.message}")
        return None
    return source.verify_restored


def _record(catalog: Catalog, op: int, rec: DrillRecord, notes: list[str]) -> None:
    result = FAILED if not rec.ok else (WARNING if rec.rto_met is False else OK)
    catalog.finish(op, result, bytes=rec.bytes, files=rec.files,
                   snapshot_ids=[rec.snapshot_id] if rec.snapshot_id else [], errors=rec.issues,
                   details={"selection": rec.selection, "restore_seconds": rec.restore_seconds,
                            "rto_met": rec.rto_met, "notes": notes},
                   finished=datetime.fromtimestamp(time.time(), UTC))
    catalog.record_drill(op, rec)
