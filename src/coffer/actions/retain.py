"""The retention step of a plan run: the dataset's keep rules, applied to one repository.

The decision is ``policy.retention`` (restic's forget rules, exactly); the deletion is
``actions.forget``. This module only translates the plan's rules into that policy and scopes it to
the dataset: its snapshots are the ones tagged ``dataset=<name>``, grouped by host, so that a
dataset whose paths changed is still one history (restic's default grouping by paths would keep
the old-path group forever).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

from coffer.actions.forget import ForgetRequest, apply_forget, plan_forget
from coffer.actions.session import RepoAccess, open_repo
from coffer.config.model import Retention
from coffer.engine.snapshots import SnapshotFilter
from coffer.policy.retention import Duration, GroupBy, RetentionPolicy

LOCK_WAIT = 120.0  # seconds to wait for backups of other datasets to release the repository


def _duration(td: timedelta | None) -> Duration:
    """A plan duration as restic's calendar duration (days and hours; finer units round down)."""
    if td is None:
        return Duration()
    return Duration(days=td.days, hours=td.seconds // 3600)


def to_policy(r: Retention) -> RetentionPolicy:
    return RetentionPolicy(
        last=r.keep_last or 0, hourly=r.keep_hourly or 0, daily=r.keep_daily or 0, weekly=r.keep_weekly or 0,
        monthly=r.keep_monthly or 0, yearly=r.keep_yearly or 0, within=_duration(r.keep_within),
        within_hourly=_duration(r.keep_within_hourly), within_daily=_duration(r.keep_within_daily),
        within_weekly=_duration(r.keep_within_weekly), within_monthly=_duration(r.keep_within_monthly),
        within_yearly=_duration(r.keep_within_yearly),
        keep_tags=tuple(tuple(t.split(",")) for t in r.keep_tags),
    )


@dataclass
class RetentionOutcome:
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def apply_retention(access: RepoAccess, dataset_tag: str, rules: Retention, *, dry_run: bool = False,
                    now_ns: int | None = None) -> RetentionOutcome:
    """Forget the dataset's snapshots in one repository that its rules no longer keep."""
    req = ForgetRequest(policy=to_policy(rules), group_by=GroupBy(host=True, paths=False, tags=False),
                        filter=SnapshotFilter.build(tags=[dataset_tag]))
    out = RetentionOutcome()
    locked = replace(access, retry_lock=max(access.retry_lock, LOCK_WAIT))
    with open_repo(locked, "none" if dry_run else "exclusive") as repo:
        fplan = plan_forget(repo, req, now_ns=now_ns)
        out.warnings.extend(fplan.messages)
        if fplan.decision is not None:
            out.warnings.extend(fplan.decision.warnings)
            out.kept = [s.id.hex() for s in fplan.decision.keep]
        remove = fplan.remove
        if remove and not dry_run:
            out.removed = [sid.hex() for sid in apply_forget(repo, remove)]
        else:
            out.removed = [s.id.hex() for s in remove]
    return out
