"""RPO, RTO, retention and proof-of-restore: the targets a plan promises, judged on values.

Two kinds of questions live here. *Can the plan meet its targets at all?* (a daily schedule cannot
meet a 1 h RPO; a retention of 5 days cannot serve drills that want 7-21 day old snapshots). And
*is it meeting them now?* (how old is the newest snapshot, when was every pack last read, did the
last drill pass and restore fast enough). Callers gather the facts; these functions only compare,
and every answer carries its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from coffer.policy.findings import Finding, Severity
from coffer.util.durations import human
from coffer.util.sizes import human_seconds

DAY = timedelta(days=1)


# ------------------------------------------------------------------------------------ plan feasibility
def rpo_feasibility(dataset: str, schedule: str, gap: timedelta | None, rpo: timedelta | None) -> Finding:
    """Can a schedule whose longest gap between runs is ``gap`` meet the RPO?

    A gap equal to the RPO leaves no room for the backup's own duration or a late start (the seed's
    "daily backups, alert after 25 h" is this margin made explicit), so it is a warning.
    """
    subject = f"dataset {dataset}"
    if rpo is None:
        return Finding(Severity.INFO, "rpo.unset", subject, "no RPO set: backup age is not judged")
    if gap is None:
        return Finding(Severity.INFO, "rpo.on_change", subject,
                       f"schedule {schedule}: backups follow changes; RPO {human(rpo)} holds while the change "
                       f"watcher or a periodic `coffer run` is running")
    if gap > rpo:
        return Finding(Severity.CRITICAL, "rpo.infeasible", subject,
                       f"schedule {schedule} leaves up to {human(gap)} between backups: RPO {human(rpo)} cannot be met")
    if gap == rpo:
        return Finding(Severity.WARNING, "rpo.no_margin", subject,
                       f"schedule {schedule} runs every {human(gap)}, exactly the RPO: any delay or a slow backup "
                       f"misses it (allow a margin, e.g. RPO {human(gap * 25 / 24)})")
    return Finding(Severity.OK, "rpo.feasible", subject,
                   f"schedule {schedule} (every {human(gap)} at most) meets RPO {human(rpo)}")


def retention_horizon(
    *, gap: timedelta | None, last: int = 0, hourly: int = 0, daily: int = 0, weekly: int = 0, monthly: int = 0,
    yearly: int = 0, within: timedelta | None = None, within_hourly: timedelta | None = None,
    within_daily: timedelta | None = None, within_weekly: timedelta | None = None,
    within_monthly: timedelta | None = None, within_yearly: timedelta | None = None,
) -> timedelta | None:
    """About how far back retention keeps snapshots, given backups at most ``gap`` apart.

    An estimate for planning (restic's buckets are calendar-based; a month counts 30 days here).
    ``keep-daily 7`` on a backup every 2 days reaches back 14 days, hence ``max(bucket, gap)``.
    None: no rule bounds the age (only tags, which we cannot predict).
    """
    step = gap or timedelta(0)
    spans = [
        last * step,
        hourly * max(timedelta(hours=1), step),
        daily * max(DAY, step),
        weekly * max(7 * DAY, step),
        monthly * max(30 * DAY, step),
        yearly * max(365 * DAY, step),
    ]
    spans += [w for w in (within, within_hourly, within_daily, within_weekly, within_monthly, within_yearly) if w]
    best = max(spans, default=timedelta(0))
    return best if best > timedelta(0) else None


def retention_covers_drills(
    dataset: str, horizon: timedelta | None, min_age: timedelta, max_age: timedelta
) -> Finding:
    """Drills restore a snapshot from an age window; retention must keep snapshots that old."""
    subject = f"dataset {dataset}"
    window = f"{human(min_age)}-{human(max_age)}"
    if horizon is None:
        return Finding(Severity.INFO, "retention.drill_window_unknown", subject,
                       f"retention keeps by tag only: cannot tell whether {window} old snapshots exist for drills")
    if horizon < min_age:
        return Finding(Severity.WARNING, "retention.drill_window", subject,
                       f"retention keeps about {human(horizon)}, but drills want {window} old snapshots: "
                       f"they will fall back to the oldest one")
    if horizon < max_age:
        return Finding(Severity.INFO, "retention.drill_window_partial", subject,
                       f"retention keeps about {human(horizon)}: drills choose from {human(min_age)}-{human(horizon)}")
    return Finding(Severity.OK, "retention.drill_window", subject,
                   f"retention keeps about {human(horizon)}: covers the {window} drill window")


def drills_planned(dataset: str, has_drill: bool, rto: timedelta | None) -> Finding | None:
    subject = f"dataset {dataset}"
    if has_drill:
        return None
    if rto is not None:
        return Finding(Severity.WARNING, "drill.missing", subject,
                       f"RTO {human(rto)} but no restore drill: the restore time is never measured")
    return Finding(Severity.WARNING, "drill.missing", subject,
                   "no restore drill: nothing proves these backups restore")


# ------------------------------------------------------------------------------------ status from facts
def _age(now: datetime, t: datetime) -> timedelta:
    return max(timedelta(0), now - t)


def backup_age(
    dataset: str, repository: str, newest: datetime | None, now: datetime, rpo: timedelta | None
) -> Finding:
    """The newest snapshot on the primary repository against the RPO."""
    subject = f"dataset {dataset} @ {repository}"
    if newest is None:
        return Finding(Severity.CRITICAL, "backup.none", subject, f"no snapshot of {dataset} in {repository}")
    age = _age(now, newest)
    if rpo is None:
        return Finding(Severity.OK, "backup.age", subject, f"newest snapshot {human(age)} old (no RPO set)")
    if age > rpo:
        return Finding(Severity.CRITICAL, "backup.rpo_missed", subject,
                       f"newest snapshot is {human(age)} old, older than the RPO of {human(rpo)}")
    return Finding(Severity.OK, "backup.age", subject, f"newest snapshot {human(age)} old (RPO {human(rpo)})")


def copy_age(
    dataset: str, repository: str, newest: datetime | None, now: datetime, limit: timedelta | None, offsite: bool
) -> Finding:
    """The newest snapshot on a copy repository against the copy's allowed lag.

    A copy that is missing altogether is CRITICAL (the copy does not exist, whatever the plan says);
    one that lags beyond its limit is a WARNING, and CRITICAL beyond twice the limit.
    """
    where = "offsite copy" if offsite else "copy"
    subject = f"dataset {dataset} @ {repository}"
    if newest is None:
        return Finding(Severity.CRITICAL, "copy.missing", subject,
                       f"{where} missing: no snapshot of {dataset} in {repository}")
    age = _age(now, newest)
    if limit is None:
        return Finding(Severity.OK, "copy.age", subject, f"{where}: newest snapshot {human(age)} old")
    if age > 2 * limit:
        return Finding(Severity.CRITICAL, "copy.stale", subject,
                       f"{where} is {human(age)} old, more than twice its allowed {human(limit)}")
    if age > limit:
        return Finding(Severity.WARNING, "copy.stale", subject,
                       f"{where} is {human(age)} old, older than its allowed {human(limit)}")
    return Finding(Severity.OK, "copy.age", subject,
                   f"{where}: newest snapshot {human(age)} old (limit {human(limit)})")


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the check ledger says about one repository's packs."""

    packs: int  # packs the repository's index names now
    never_read: int  # of those, packs no check has read yet
    failed: int  # packs whose last read found damage
    oldest_unverified: timedelta | None  # longest time any pack has gone unread (None: unknown)
    last_check: datetime | None  # when a check last ran (None: never)


def check_coverage(repository: str, cov: Coverage, period: timedelta) -> Finding:
    """Is every pack read within ``period``, and did the reads find damage?"""
    subject = f"repository {repository}"
    if cov.failed:
        return Finding(Severity.CRITICAL, "check.damage", subject,
                       f"{cov.failed} pack(s) failed verification on their last read: run `coffer check --read-data`")
    if cov.packs == 0:
        return Finding(Severity.OK, "check.coverage", subject, "no packs to verify")
    if cov.last_check is None:
        return Finding(Severity.WARNING, "check.never", subject,
                       f"never checked: {cov.packs} packs unverified (run `coffer check --plan`)")
    age = cov.oldest_unverified
    if age is None:
        return Finding(Severity.WARNING, "check.coverage", subject,
                       f"{cov.never_read} of {cov.packs} packs not read yet; coverage period {human(period)}")
    if age > 2 * period:
        return Finding(Severity.CRITICAL, "check.coverage", subject,
                       f"oldest unverified pack unread for {human(age)}, twice the coverage period {human(period)}")
    if age > period:
        return Finding(Severity.WARNING, "check.coverage", subject,
                       f"oldest unverified pack unread for {human(age)}, longer than the coverage period "
                       f"{human(period)}")
    note = f", {cov.never_read} new pack(s) queued" if cov.never_read else ""
    return Finding(Severity.OK, "check.coverage", subject,
                   f"oldest unverified pack {human(age)} (period {human(period)}){note}")


@dataclass(frozen=True, slots=True)
class DrillFact:
    """The last drill as the catalog recorded it."""

    when: datetime
    ok: bool
    rto_met: bool | None
    summary: str


def drill_status(dataset: str, last: DrillFact | None, now: datetime, interval: timedelta | None) -> Finding:
    subject = f"dataset {dataset}"
    if interval is None:
        return Finding(Severity.OK, "drill.unplanned", subject, "no drills planned")
    if last is None:
        return Finding(Severity.WARNING, "drill.never", subject,
                       f"never drilled (planned every {human(interval)}): run `coffer drill {dataset}`")
    age = _age(now, last.when)
    if not last.ok:
        return Finding(Severity.CRITICAL, "drill.failed", subject,
                       f"last drill {human(age)} ago FAILED: {last.summary}")
    if age > interval:
        return Finding(Severity.WARNING, "drill.overdue", subject,
                       f"last drill {human(age)} ago, planned every {human(interval)}")
    if last.rto_met is False:
        return Finding(Severity.WARNING, "drill.rto_missed", subject, f"last drill {human(age)} ago: {last.summary}")
    return Finding(Severity.OK, "drill.ok", subject, f"last drill {human(age)} ago passed: {last.summary}")


# ------------------------------------------------------------------------------------ RTO
@dataclass(frozen=True, slots=True)
class RtoJudgement:
    measured: float  # seconds the drill's restore (plus time to ready) took
    extrapolated: float  # seconds a restore of the full dataset would take at the measured speed
    target: float | None
    met: bool | None  # None: no RTO set
    reason: str


def judge_rto(
    rto: timedelta | None, seconds: float, restored_bytes: int, full_bytes: int, ready_seconds: float = 0.0
) -> RtoJudgement:
    """Measured restore time, and that time scaled to the dataset's full size, against the RTO.

    A drill often restores a snapshot smaller than today's data; scaling by bytes at the measured
    throughput says what a restore of everything would take (start-up time is not scaled).
    """
    measured = seconds + ready_seconds
    scale = full_bytes / restored_bytes if restored_bytes > 0 and full_bytes > restored_bytes else 1.0
    extrapolated = seconds * scale + ready_seconds
    if rto is None:
        return RtoJudgement(measured, extrapolated, None, None,
                            f"restore took {_secs(measured)}, full size would take {_secs(extrapolated)} "
                            f"(no RTO set)")
    target = rto.total_seconds()
    met = measured <= target and extrapolated <= target
    verdict = "met" if met else "MISSED"
    return RtoJudgement(measured, extrapolated, target, met,
                        f"RTO {human(rto)} {verdict}: restore took {_secs(measured)}, full size "
                        f"would take {_secs(extrapolated)}")


def _secs(s: float) -> str:
    return human_seconds(s)
