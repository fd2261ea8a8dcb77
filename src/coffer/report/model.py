"""What a person reads in the quarterly review: did each dataset meet its targets over a period?

Three questions per dataset, each answered *met*, *not met* or *n/a* with the evidence behind it:

* **Schedule (RPO)**: the longest gap between successful backups in the period, from the catalog
  (every backup coffer made) and the primary repository (every snapshot still there), against
  the RPO. Retention thins old snapshots, so the catalog keeps the gaps honest.
* **Retention**: does the primary hold as much history as the rules promise (nothing removed too
  early), and no more than they allow (retention actually applied)?
* **Restore speed (RTO)**: did drills run in the period, pass, and restore fast enough — the
  measured time and the time extrapolated to the dataset's full size?

Built from values the actions gather; the renderers (Markdown, HTML) only lay them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coffer.actions.status import RepoFacts
from coffer.config.model import AnyDataset, Plan
from coffer.state.catalog import FAILED, Catalog, DrillRecord
from coffer.util.durations import human
from coffer.verify.drills import snapshot_time

MET, NOT_MET, NA = "met", "NOT met", "n/a"


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str  # what was promised, in words
    result: str  # met, NOT met, n/a
    evidence: str  # why


@dataclass
class DatasetCompliance:
    dataset: str
    type: str
    schedule: Verdict
    retention: Verdict
    restore: Verdict

    @property
    def met(self) -> bool:
        return all(v.result in (MET, NA) for v in (self.schedule, self.retention, self.restore))


@dataclass
class ComplianceReport:
    since: datetime
    until: datetime
    datasets: list[DatasetCompliance] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return all(d.met for d in self.datasets)


@dataclass
class DrillsReport:
    since: datetime
    until: datetime
    drills: list[DrillRecord] = field(default_factory=list)
    planned: dict[str, timedelta | None] = field(default_factory=dict)  # dataset -> drill interval


# ------------------------------------------------------------------------------------ builders
def drills_report(plan: Plan, catalog: Catalog, since: datetime, until: datetime) -> DrillsReport:
    rep = DrillsReport(since, until, catalog.drills(since=since, until=until))
    for d in plan.datasets:
        rep.planned[d.name] = d.drill.interval if d.drill else None
    return rep


def compliance_report(plan: Plan, catalog: Catalog, facts: dict[str, RepoFacts], since: datetime,
                      until: datetime) -> ComplianceReport:
    rep = ComplianceReport(since, until)
    for d in plan.datasets:
        f = facts.get(d.repository)
        snaps = f.of_dataset(d.snapshot_tag) if f is not None and f.reachable else None
        times = [snapshot_time(s) for s in snaps] if snaps is not None else []
        ids = {s.id.hex() for s in snaps} if snaps is not None else set()
        rep.datasets.append(DatasetCompliance(
            d.name, d.type,
            _schedule(catalog, d, times, ids, since, until),
            _retention(catalog, d, times if snaps is not None else None, since, until),
            _restore(catalog, d, times, since, until),
        ))
    return rep


def _schedule(catalog: Catalog, d: AnyDataset, snap_times: list[datetime], snap_ids: set[str], since: datetime,
              until: datetime) -> Verdict:
    ops = catalog.operations("backup", dataset=d.name)
    # Backups whose snapshot is still in the repository count by the snapshot's own time; the
    # catalog adds those retention has removed since.
    good = [o.started for o in ops if o.result != FAILED and o.finished is not None
            and not snap_ids.intersection(o.snapshot_ids)]
    failed = [o for o in ops if o.result == FAILED and since <= o.started < until]
    everything = sorted(set(good) | set(snap_times))
    target = f"RPO {human(d.rpo)} ({d.schedule})" if d.rpo else f"schedule {d.schedule} (no RPO)"
    in_period = [t for t in everything if since <= t < until]
    fail_note = f"; {len(failed)} failed attempt(s)" if failed else ""
    if not everything or not in_period:
        return Verdict(target, NOT_MET, f"no successful backup in the period{fail_note}")
    start = since if everything[0] < since else in_period[0]
    points = [start, *in_period, until]
    gaps = [b - a for a, b in zip(points, points[1:])]
    longest = max(gaps)
    evidence = f"{len(in_period)} backup(s), longest gap {human(longest)}{fail_note}"
    if d.rpo is None:
        return Verdict(target, NA, evidence)
    return Verdict(target, MET if longest <= d.rpo else NOT_MET, evidence)


def _retention(catalog: Catalog, d: AnyDataset, snap_times: list[datetime] | None, since: datetime,
               until: datetime) -> Verdict:
    gap = d.schedule.max_gap()
    horizon = d.retention.horizon(gap)
    rules = ", ".join(f"{k} {human(v) if isinstance(v, timedelta) else v}" if not isinstance(v, list)
                      else f"{k} {','.join(v)}" for k, v in d.retention.rules().items())
    target = rules + (f" (about {human(horizon)})" if horizon else "")
    forgets = [o for o in catalog.operations("forget", dataset=d.name, repository=d.repository, since=since,
                                             until=until)]
    failed = sum(1 for o in forgets if o.result == FAILED)
    runs = f"retention applied {len(forgets) - failed}x" + (f", failed {failed}x" if failed else "")
    if snap_times is None:
        return Verdict(target, NOT_MET, f"primary repository {d.repository} could not be read; {runs}")
    if not snap_times:
        return Verdict(target, NOT_MET, f"no snapshots in {d.repository}; {runs}")
    if horizon is None:
        return Verdict(target, NA, f"{len(snap_times)} snapshots; tag-based rules; {runs}")
    backups = [o.started for o in catalog.operations("backup", dataset=d.name) if o.result != FAILED]
    first_ever = min([*backups, *snap_times])
    oldest_age = until - snap_times[0]
    expected = min(horizon, until - first_ever)
    slack = max(gap or timedelta(0), timedelta(days=1))
    evidence = f"{len(snap_times)} snapshots, oldest {human(oldest_age)} old; {runs}"
    if oldest_age + slack < expected:
        return Verdict(target, NOT_MET, f"history too short: {evidence} (expected about {human(expected)})")
    if oldest_age > horizon + 2 * slack:
        return Verdict(target, NOT_MET, f"kept too long (retention not applied?): {evidence}")
    if failed:
        return Verdict(target, NOT_MET, evidence)
    return Verdict(target, MET, evidence)


def _restore(catalog: Catalog, d: AnyDataset, snap_times: list[datetime], since: datetime,
             until: datetime) -> Verdict:
    drills = catalog.drills(d.name, since=since, until=until)
    target = (f"RTO {human(d.rto)}" if d.rto else "restore proven") + \
             (f", drill every {human(d.drill.interval)}" if d.drill else "")
    if not drills:
        if d.drill is None and d.rto is None:
            return Verdict(target, NA, "no drills planned")
        return Verdict(target, NOT_MET, "no drill in the period: restore not proven")
    failed = [x for x in drills if not x.ok]
    slow = [x for x in drills if x.rto_met is False]
    last = drills[-1]
    evidence = (f"{len(drills)} drill(s), {len(failed)} failed; last: {last.files} files, "
                f"{last.restore_seconds:.1f}s (full size ~{human(last.extrapolated_seconds)})")
    if d.drill is not None:
        backups = [o.started for o in catalog.operations("backup", dataset=d.name)]
        start = max(since, min([*backups, *snap_times], default=since))
        expected = int((until - start) / d.drill.interval)
        if len(drills) < expected:
            evidence += f"; {expected} planned"
    if failed or slow:
        why = f"{len(slow)} drill(s) missed the RTO; " if slow else ""
        return Verdict(target, NOT_MET, why + evidence)
    return Verdict(target, MET, evidence)
