"""``coffer status``: is every dataset inside its targets right now? Facts first, then judgement.

The facts come from the repositories themselves — which snapshots of each dataset each
repository actually holds, which packs it stores — and from the catalog only for what a
repository cannot tell: when packs were last read, how the last drill went, whether the last
backup attempt failed. A catalog that says "backup OK" proves nothing if the repository has no
snapshot; the repository is asked.

The judgement is the policy layer's (``policy.objectives``, ``policy.rule321``): every row and
every finding carries its severity and reason, and the worst one becomes the exit code a
monitoring plugin returns (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from coffer.actions import plan as planact
from coffer.actions.integrity import coverage_of
from coffer.actions.session import open_repo
from coffer.config.model import AnyDataset, Plan
from coffer.errors import CofferError
from coffer.policy import objectives, rule321
from coffer.policy.findings import Finding, Severity, worst
from coffer.state.catalog import FAILED, Catalog
from coffer.store.format.snapshot import Snapshot
from coffer.util.durations import human
from coffer.util.sizes import human_seconds
from coffer.verify.drills import snapshot_time
from coffer.verify.integrity import list_packs


@dataclass
class RepoFacts:
    """What one repository holds, read from the repository (no lock, nothing written)."""

    name: str
    reachable: bool = False
    error: str = ""
    repository_id: str = ""
    snapshots: list[Snapshot] = field(default_factory=list)
    packs: dict[str, int] = field(default_factory=dict)

    def of_dataset(self, tag: str) -> list[Snapshot]:
        return sorted((s for s in self.snapshots if tag in s.tags), key=lambda s: (s.time_ns, s.id))


def gather_facts(plan: Plan, names: list[str] | None = None) -> dict[str, RepoFacts]:
    out: dict[str, RepoFacts] = {}
    for r in plan.repositories:
        if names is not None and r.name not in names:
            continue
        f = RepoFacts(r.name)
        try:
            with open_repo(planact.access(r), "none") as repo:
                f.repository_id = repo.config.id
                errors: list[str] = []

                def bad(sid: bytes, e: Exception, errors: list[str] = errors) -> None:
                    errors.append(f"{sid.hex()[:8]}: {e}")

                f.snapshots = repo.list_snapshots(on_error=bad)
                f.packs = list_packs(repo)
                f.reachable = True
                if errors:
                    f.error = f"{len(errors)} snapshot(s) unreadable: {'; '.join(errors[:3])}"
        except CofferError as e:
            f.error = e.message
        out[r.name] = f
    return out


@dataclass
class Row:
    """One dataset in one repository."""

    dataset: str
    repository: str
    role: str  # primary, copy
    snapshots: int
    newest: datetime | None
    age: timedelta | None
    limit: timedelta | None
    finding: Finding


@dataclass
class CoverageRow:
    repository: str
    period: timedelta
    coverage: objectives.Coverage | None
    finding: Finding


@dataclass
class DrillRow:
    dataset: str
    last: datetime | None
    ok: bool | None
    rto_met: bool | None
    finding: Finding


@dataclass
class StatusReport:
    now: datetime
    rows: list[Row] = field(default_factory=list)
    coverage: list[CoverageRow] = field(default_factory=list)
    drills: list[DrillRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # everything, including the rows' findings

    @property
    def severity(self) -> Severity:
        return worst(self.findings)

    @property
    def exit_code(self) -> int:
        return self.severity.exit_code

    def dataset_severity(self, dataset: str) -> Severity:
        subj = (f"dataset {dataset}", f"dataset {dataset} @ ")
        return worst(f for f in self.findings if f.subject == subj[0] or f.subject.startswith(subj[1]))

    def as_dict(self) -> dict[str, Any]:
        def ts(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        def secs(t: timedelta | None) -> float | None:
            return t.total_seconds() if t is not None else None

        return {
            "time": ts(self.now),
            "status": self.severity.label,
            "exit_code": self.exit_code,
            "snapshots": [{
                "dataset": r.dataset, "repository": r.repository, "role": r.role, "snapshots": r.snapshots,
                "newest": ts(r.newest), "age_seconds": secs(r.age), "limit_seconds": secs(r.limit),
                "status": r.finding.severity.label, "message": r.finding.message,
            } for r in self.rows],
            "checks": [{
                "repository": c.repository, "period_seconds": secs(c.period),
                "packs": c.coverage.packs if c.coverage else None,
                "never_read": c.coverage.never_read if c.coverage else None,
                "oldest_unverified_seconds": secs(c.coverage.oldest_unverified) if c.coverage else None,
                "last_check": ts(c.coverage.last_check) if c.coverage else None,
                "status": c.finding.severity.label, "message": c.finding.message,
            } for c in self.coverage],
            "drills": [{
                "dataset": d.dataset, "last": ts(d.last), "ok": d.ok, "rto_met": d.rto_met,
                "status": d.finding.severity.label, "message": d.finding.message,
            } for d in self.drills],
            "findings": [f.as_dict() for f in self.findings],
        }


def collect_status(plan: Plan, catalog: Catalog, *, now: datetime | None = None,
                   facts: dict[str, RepoFacts] | None = None) -> StatusReport:
    now = now or datetime.now(UTC)
    facts = facts if facts is not None else gather_facts(plan)
    rep = StatusReport(now)
    for name, f in facts.items():
        if not f.reachable:
            rep.findings.append(Finding(Severity.UNKNOWN, "repository.unreachable", f"repository {name}",
                                        f"cannot read the repository: {f.error}"))
        elif f.error:
            rep.findings.append(Finding(Severity.WARNING, "repository.snapshots_unreadable", f"repository {name}",
                                        f.error))
    for d in plan.datasets:
        _dataset(plan, catalog, d, facts, now, rep)
    for r in plan.repositories:
        if r.name in facts:
            _coverage(plan, catalog, facts[r.name], now, rep)
    return rep


def _archiver_findings(d: AnyDataset, subject: str) -> list[Finding]:
    """pg_stat_archiver on the live server: failing pushes are data at risk even when the newest
    archived segment still looks recent."""
    from coffer.sources.postgres import conn_from_spec
    from coffer.sources.postgres.status import archive_lag

    try:
        lag = archive_lag(None, d.name, conn=conn_from_spec(d))  # type: ignore[arg-type]
    except CofferError as e:
        return [Finding(Severity.WARNING, "wal.archiver", subject, f"cannot ask the server about archiving: {e}")]
    return [Finding(Severity.CRITICAL, "wal.archiver", subject, p) for p in lag.problems]


def _newest(snaps: list[Snapshot]) -> datetime | None:
    return snapshot_time(snaps[-1]) if snaps else None


def _dataset(plan: Plan, catalog: Catalog, d: AnyDataset, facts: dict[str, RepoFacts], now: datetime,
             rep: StatusReport) -> None:
    tag = d.snapshot_tag
    recent: list[rule321.Holder] = []
    present: list[rule321.Holder] = []
    unknown = False
    targets: list[tuple[str, str, timedelta | None]] = [(d.repository, "primary", d.rpo)]
    targets += [(c.repository, "copy", d.copy_limit(c)) for c in d.copies]
    for repo_name, role, limit in targets:
        f = facts.get(repo_name)
        holder = plan.repository(repo_name).holder
        subject = f"dataset {d.name} @ {repo_name}"
        if f is None or not f.reachable:
            finding = Finding(Severity.UNKNOWN, "backup.unknown", subject,
                              f"repository {repo_name} could not be read" + (f": {f.error}" if f else ""))
            rep.rows.append(Row(d.name, repo_name, role, 0, None, None, limit, finding))
            rep.findings.append(finding)
            unknown = True
            continue
        snaps = f.of_dataset(tag)
        if d.type == "postgres-wal":
            # With continuous archiving, what can be lost is what was not archived yet: the newest
            # archived WAL counts for the RPO, not the newest base backup.
            snaps = sorted(snaps + f.of_dataset(f"wal-dataset={d.name}"), key=lambda s: (s.time_ns, s.id))
            if role == "primary":
                rep.findings.extend(_archiver_findings(d, subject))
        newest = _newest(snaps)
        if role == "primary":
            finding = objectives.backup_age(d.name, repo_name, newest, now, limit)
        else:
            finding = objectives.copy_age(d.name, repo_name, newest, now, limit, holder.offsite)
        age = now - newest if newest else None
        rep.rows.append(Row(d.name, repo_name, role, len(snaps), newest, age, limit, finding))
        rep.findings.append(finding)
        if newest is not None:
            present.append(holder)
            if finding.severity <= Severity.INFO:
                recent.append(holder)
        if role == "primary":
            _last_backup_attempt(catalog, d.name, repo_name, newest, rep)
    if not unknown:
        rep.findings.extend(rule321.evaluate_facts(d.name, recent, present))
    # drills
    interval = d.drill.interval if d.drill is not None else None
    last = catalog.last_drill(d.name)
    fact = None
    if last is not None:
        summary = ("; ".join(last.issues[:2]) if not last.ok and last.issues else
                   _drill_summary(last.snapshot_age, last.restore_seconds, last.extrapolated_seconds,
                                  last.rto_seconds, last.rto_met))
        fact = objectives.DrillFact(last.started, last.ok, last.rto_met, summary)
    finding = objectives.drill_status(d.name, fact, now, interval)
    rep.drills.append(DrillRow(d.name, last.started if last else None, last.ok if last else None,
                               last.rto_met if last else None, finding))
    rep.findings.append(finding)


def _drill_summary(snapshot_age: float | None, restore: float, extrapolated: float, rto: float | None,
                   met: bool | None) -> str:
    s = f"snapshot {human(snapshot_age)} old restored in {human_seconds(restore)}"
    if rto is not None:
        s += f", full restore ~{human_seconds(extrapolated)} vs RTO {human(rto)} ({'met' if met else 'MISSED'})"
    return s


def _last_backup_attempt(catalog: Catalog, dataset: str, repository: str, newest: datetime | None,
                         rep: StatusReport) -> None:
    """A failed attempt newer than the newest snapshot: the schedule runs but produces nothing."""
    last = catalog.last("backup", dataset=dataset, repository=repository)
    if last is None or last.result != FAILED:
        return
    if newest is not None and last.started <= newest:
        return
    err = last.errors[0] if last.errors else "no detail recorded"
    rep.findings.append(Finding(Severity.WARNING, "backup.last_failed", f"dataset {dataset} @ {repository}",
                                f"the last backup attempt ({human(rep.now - last.started)} ago) failed: {err}"))


def _coverage(plan: Plan, catalog: Catalog, f: RepoFacts, now: datetime, rep: StatusReport) -> None:
    policy = plan.check_policy(f.name)
    period = policy.period
    if not f.reachable:
        finding = Finding(Severity.UNKNOWN, "check.unknown", f"repository {f.name}", "repository could not be read")
        rep.coverage.append(CoverageRow(f.name, period, None, finding))
        rep.findings.append(finding)
        return
    cov = coverage_of(catalog, f.repository_id, f.packs, now, f.name)
    finding = objectives.check_coverage(f.name, cov, period)
    rep.coverage.append(CoverageRow(f.name, period, cov, finding))
    rep.findings.append(finding)
