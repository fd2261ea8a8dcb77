"""``coffer check --plan``: one slice of every plan repository's packs, and the ledger updated.

Integrity checks run on their own timer, apart from backups: reading packs back is what finds
bit rot, a truncated upload or a storage bug, and it must happen whether or not anything was
backed up. Each run reads the share of packs the plan asks for (the least recently read first,
``verify.integrity``) and records, per pack, when it was read and whether it verified, so that
``status`` can say how long the least recently read pack has waited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coffer.actions import plan as planact
from coffer.actions.session import open_repo
from coffer.config.model import Plan
from coffer.errors import CofferError, UsageError
from coffer.policy.objectives import Coverage
from coffer.state.catalog import FAILED, OK, WARNING, Catalog
from coffer.verify.integrity import run_slice, summarize


@dataclass
class RepoCheck:
    repository: str
    repository_id: str = ""
    packs: int = 0
    read: int = 0
    bytes_read: int = 0
    fraction: float = 0.0
    damaged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    coverage: Coverage | None = None
    operation_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def coverage_of(catalog: Catalog, repository_id: str, packs: dict[str, int], now: datetime,
                repository: str) -> Coverage:
    """The ledger for the packs the repository holds now, reduced to a Coverage value."""
    ledger = catalog.coverage(repository_id)
    last = catalog.last("check", repository=repository)
    return summarize(
        packs,
        {p: s.first_seen for p, s in ledger.items()},
        {p: s.last_read for p, s in ledger.items()},
        {p: s.last_ok for p, s in ledger.items()},
        last.started if last is not None else None,
        now,
    )


def check_plan(plan: Plan, catalog: Catalog, repositories: Sequence[str] = (), *,
               now: datetime | None = None, on_repo: Callable[[RepoCheck], None] | None = None) -> list[RepoCheck]:
    names = list(repositories) or [r.name for r in plan.repositories]
    known = {r.name for r in plan.repositories}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown repository: {', '.join(unknown)} (the plan has: {', '.join(sorted(known))})")
    out = []
    for name in names:
        rc = _check_one(plan, catalog, name, now or datetime.now(UTC))
        out.append(rc)
        if on_repo is not None:
            on_repo(rc)
    return out


def _check_one(plan: Plan, catalog: Catalog, name: str, now: datetime) -> RepoCheck:
    rc = RepoCheck(name)
    policy = plan.check_policy(name)
    rc.fraction = policy.read
    rc.operation_id = catalog.start("check", repository=name)
    packs: dict[str, int] = {}
    try:
        with open_repo(planact.access(plan.repository(name)), "shared") as repo:
            rc.repository_id = repo.config.id
            ledger = catalog.coverage(rc.repository_id)
            res = run_slice(repo, policy.read, {p: s.last_read for p, s in ledger.items()},
                            structure=policy.structure)
        packs = res.packs
        catalog.sync_packs(rc.repository_id, packs, now)
        catalog.mark_read(rc.repository_id, res.read, now)
        rc.packs, rc.read, rc.bytes_read, rc.damaged = len(res.packs), len(res.read), res.bytes_read, res.damaged
        rc.errors = [f.message for f in res.findings if f.severity == "error"]
        rc.warnings = [f.message for f in res.findings if f.severity == "warning"]
    except CofferError as e:
        rc.errors.append(e.message)
    result = FAILED if rc.errors else (WARNING if rc.warnings else OK)
    catalog.finish(rc.operation_id, result, bytes=rc.bytes_read, files=rc.read, errors=rc.errors + rc.warnings,
                   details={"packs": rc.packs, "read": rc.read, "fraction": rc.fraction, "damaged": rc.damaged,
                            "repository_id": rc.repository_id})
    if rc.repository_id:
        rc.coverage = coverage_of(catalog, rc.repository_id, packs, now, name)
    return rc
