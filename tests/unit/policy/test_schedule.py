"""When is a dataset due? Pure decisions from the schedule, the last runs and seen changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coffer.policy.schedule import decide

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_never_backed_up_is_due() -> None:
    d = decide(kind="cron", now=NOW, last_ok=None, last_failed=None, next_firing=None, changed=None)
    assert d.due and "never" in d.reason


def test_cron_waits_for_its_next_firing() -> None:
    last = NOW - timedelta(hours=2)
    assert not decide(kind="cron", now=NOW, last_ok=last, last_failed=None,
                      next_firing=NOW + timedelta(minutes=5), changed=None).due
    d = decide(kind="cron", now=NOW, last_ok=last, last_failed=None, next_firing=NOW - timedelta(minutes=1),
               changed=None)
    assert d.due and "scheduled" in d.reason


def test_failure_backs_off_then_retries() -> None:
    last_ok = NOW - timedelta(days=1)
    recent_fail = NOW - timedelta(minutes=3)
    d = decide(kind="interval", now=NOW, last_ok=last_ok, last_failed=recent_fail,
               next_firing=NOW - timedelta(hours=1), changed=None)
    assert not d.due and "retrying in" in d.reason
    d = decide(kind="interval", now=NOW, last_ok=last_ok, last_failed=NOW - timedelta(minutes=20),
               next_firing=NOW + timedelta(hours=1), changed=None)
    assert d.due and "failed" in d.reason


def test_on_change_follows_the_data() -> None:
    last = NOW - timedelta(minutes=10)
    assert not decide(kind="on-change", now=NOW, last_ok=last, last_failed=None, next_firing=None, changed=False).due
    assert decide(kind="on-change", now=NOW, last_ok=last, last_failed=None, next_firing=None, changed=True).due
    assert decide(kind="on-change", now=NOW, last_ok=last, last_failed=None, next_firing=None, changed=None).due
