"""The prune use case: plan (always), then execute unless it is a dry run.

The plan is a value (:class:`~coffer.store.maintenance.prune.PrunePlan`): a dry run shows it, a
report can store it, and the execution does exactly what it says. Run under an exclusive lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from coffer.store.maintenance.prune import (
    Phase,
    Progress,
    PruneOptions,
    PruneOutcome,
    PrunePlan,
    execute,
    plan_prune,
)
from coffer.store.repository import Repository


@dataclass
class PruneResult:
    plan: PrunePlan
    outcome: PruneOutcome | None  # None for a dry run


def run_prune(
    repo: Repository, opts: PruneOptions, *, dry_run: bool = False, ignore_snapshots: Iterable[bytes] = (),
    on_phase: Phase | None = None, on_progress: Progress | None = None,
    on_plan: Callable[[PrunePlan], None] | None = None,
) -> PruneResult:
    """``on_plan`` sees the plan once it is known, before anything is deleted (to print it first)."""
    plan = plan_prune(repo, opts, ignore_snapshots=ignore_snapshots, on_phase=on_phase, on_progress=on_progress)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return PruneResult(plan, None)
    return PruneResult(plan, execute(repo, plan, on_phase=on_phase, on_progress=on_progress))
