"""Is a dataset due? A pure decision, so `coffer run --due` can say why it runs or waits.

A scheduler (cron, a systemd timer) calls ``coffer run --due`` often, say every minute; this
decides per dataset from the schedule's next firing after the last successful run, a change seen
on disk (``on-change``), and a back-off after a failure so a broken dataset is retried steadily
instead of hammered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

RETRY_AFTER_FAILURE = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class DueDecision:
    due: bool
    reason: str


def decide(
    *, kind: str, now: datetime, last_ok: datetime | None, last_failed: datetime | None,
    next_firing: datetime | None, changed: bool | None, retry_after: timedelta = RETRY_AFTER_FAILURE,
) -> DueDecision:
    """``kind``: cron, interval or on-change. ``next_firing``: the schedule's first firing after
    ``last_ok`` (None for on-change). ``changed``: for on-change, whether the data changed since
    ``last_ok`` (None when it cannot be told, which counts as changed)."""
    if last_failed is not None and (last_ok is None or last_failed > last_ok) and now - last_failed < retry_after:
        wait = retry_after - (now - last_failed)
        return DueDecision(False, f"last run failed {_ago(now - last_failed)} ago; retrying in {_ago(wait)}")
    if last_ok is None:
        return DueDecision(True, "never backed up")
    if last_failed is not None and last_failed > last_ok:
        return DueDecision(True, "retrying after a failed run")
    if kind == "on-change":
        if changed is None:
            return DueDecision(True, "changes cannot be detected for this dataset: backing up")
        return DueDecision(changed, "changed since the last backup" if changed else "unchanged since the last backup")
    if next_firing is None:
        return DueDecision(True, "no next firing could be computed")
    if next_firing <= now:
        return DueDecision(True, f"scheduled at {next_firing:%Y-%m-%d %H:%M} UTC")
    return DueDecision(False, f"next at {next_firing:%Y-%m-%d %H:%M} UTC")


def _ago(td: timedelta) -> str:
    s = int(td.total_seconds())
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
