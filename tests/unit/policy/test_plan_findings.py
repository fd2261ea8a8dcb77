"""3-2-1, RPO feasibility and retention-vs-drill findings: on values, and on golden plans.

Golden plans live in ``golden/*.yaml``; the findings ``coffer plan check`` derives from each are
compared with ``golden/*.expected``. Regenerate after an intended change with
``COFFER_UPDATE_GOLDEN=1 pytest tests/unit/policy/test_plan_findings.py`` and review the diff.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coffer.actions.plan import plan_findings
from coffer.config.load import load_plan
from coffer.policy import objectives, rule321
from coffer.policy.findings import Finding, Severity, exit_code, worst

GOLDEN = Path(__file__).parent / "golden"
H = timedelta(hours=1)
D = timedelta(days=1)


def codes(findings: list[Finding]) -> dict[str, Severity]:
    return {f.code: f.severity for f in findings}


# ------------------------------------------------------------------------------------ 3-2-1 on values
NVME = rule321.Holder("nvme", "nvme", offsite=False)
NFS = rule321.Holder("nfs", "nfs", offsite=False)
USB = rule321.Holder("usb", "nvme", offsite=False)
S3 = rule321.Holder("s3", "s3", offsite=True, immutable=True)


def test_321_compliant() -> None:
    f = rule321.evaluate_plan("app", [NVME, S3])
    assert [x.code for x in f] == ["rule321.met"] and worst(f) == Severity.OK


def test_321_missing_offsite_is_critical() -> None:
    f = codes(rule321.evaluate_plan("app", [NVME, NFS]))
    assert f["rule321.offsite"] == Severity.CRITICAL
    assert "rule321.media" not in f and "rule321.copies" not in f


def test_321_single_medium() -> None:
    f = codes(rule321.evaluate_plan("app", [NVME, USB]))
    assert f["rule321.media"] == Severity.WARNING
    assert f["rule321.offsite"] == Severity.CRITICAL
    assert f["rule321.immutable"] == Severity.WARNING


def test_321_one_backup_only() -> None:
    f = codes(rule321.evaluate_plan("app", [S3]))
    assert f["rule321.copies"] == Severity.WARNING and f["rule321.media"] == Severity.WARNING
    assert "rule321.offsite" not in f


def test_321_facts_stale_copies_only_warn() -> None:
    # the offsite copy exists but lags: a warning; it does not exist at all: critical
    assert worst(rule321.evaluate_facts("app", [NVME, NFS], [NVME, NFS, S3])) == Severity.WARNING
    assert worst(rule321.evaluate_facts("app", [NVME, NFS], [NVME, NFS])) == Severity.CRITICAL
    assert worst(rule321.evaluate_facts("app", [NVME, S3], [NVME, S3])) == Severity.OK


# ------------------------------------------------------------------------------------ objectives on values
def test_rpo_feasibility() -> None:
    assert objectives.rpo_feasibility("x", "0 2 * * *", D, H).severity == Severity.CRITICAL
    assert objectives.rpo_feasibility("x", "0 2 * * *", D, D).severity == Severity.WARNING  # no margin
    assert objectives.rpo_feasibility("x", "0 2 * * *", D, 25 * H).severity == Severity.OK
    assert objectives.rpo_feasibility("x", "on-change", None, H).severity == Severity.INFO
    assert objectives.rpo_feasibility("x", "0 2 * * *", D, None).severity == Severity.INFO


def test_retention_horizon_and_drill_window() -> None:
    assert objectives.retention_horizon(gap=D, daily=7) == 7 * D
    assert objectives.retention_horizon(gap=2 * D, daily=7) == 14 * D  # backups every other day
    assert objectives.retention_horizon(gap=12 * H, last=3) == 36 * H
    assert objectives.retention_horizon(gap=D, within=5 * D, monthly=2) == 60 * D
    assert objectives.retention_horizon(gap=D) is None
    assert objectives.retention_covers_drills("x", 5 * D, 7 * D, 21 * D).severity == Severity.WARNING
    assert objectives.retention_covers_drills("x", 14 * D, 7 * D, 21 * D).severity == Severity.INFO
    assert objectives.retention_covers_drills("x", 90 * D, 7 * D, 21 * D).severity == Severity.OK


def test_status_judgements() -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    assert objectives.backup_age("a", "r", now - 2 * H, now, 25 * H).severity == Severity.OK
    assert objectives.backup_age("a", "r", now - 26 * H, now, 25 * H).severity == Severity.CRITICAL
    assert objectives.backup_age("a", "r", None, now, 25 * H).severity == Severity.CRITICAL
    assert objectives.copy_age("a", "r", None, now, 25 * H, True).severity == Severity.CRITICAL
    assert objectives.copy_age("a", "r", now - 30 * H, now, 25 * H, True).severity == Severity.WARNING
    assert objectives.copy_age("a", "r", now - 60 * H, now, 25 * H, True).severity == Severity.CRITICAL
    cov = objectives.Coverage(packs=10, never_read=0, failed=0, oldest_unverified=3 * D, last_check=now)
    assert objectives.check_coverage("r", cov, 7 * D).severity == Severity.OK
    assert objectives.check_coverage("r", cov, 2 * D).severity == Severity.WARNING
    assert objectives.check_coverage("r", cov, D).severity == Severity.CRITICAL
    broken = objectives.Coverage(packs=10, never_read=0, failed=1, oldest_unverified=D, last_check=now)
    assert objectives.check_coverage("r", broken, 7 * D).severity == Severity.CRITICAL
    never = objectives.Coverage(packs=10, never_read=10, failed=0, oldest_unverified=None, last_check=None)
    assert objectives.check_coverage("r", never, 7 * D).severity == Severity.WARNING
    fact = objectives.DrillFact(now - 3 * D, ok=True, rto_met=True, summary="fine")
    assert objectives.drill_status("a", fact, now, 30 * D).severity == Severity.OK
    assert objectives.drill_status("a", fact, now, 2 * D).severity == Severity.WARNING
    assert objectives.drill_status("a", None, now, 30 * D).severity == Severity.WARNING
    failed = objectives.DrillFact(now - D, ok=False, rto_met=None, summary="broken pack")
    assert objectives.drill_status("a", failed, now, 30 * D).severity == Severity.CRITICAL


def test_rto_judgement_extrapolates_to_the_full_size() -> None:
    j = objectives.judge_rto(timedelta(minutes=10), seconds=60, restored_bytes=1 << 30, full_bytes=20 << 30)
    assert j.measured == 60 and j.extrapolated == 1200 and j.met is False
    j = objectives.judge_rto(timedelta(hours=1), seconds=60, restored_bytes=1 << 30, full_bytes=20 << 30,
                             ready_seconds=30)
    assert j.extrapolated == 1230 and j.met is True
    assert objectives.judge_rto(None, 5, 1, 1).met is None


def test_monitoring_exit_codes() -> None:
    def f(s: Severity) -> Finding:
        return Finding(s, "c", "s", "m")

    assert exit_code([]) == 0
    assert exit_code([f(Severity.OK), f(Severity.INFO)]) == 0
    assert exit_code([f(Severity.WARNING)]) == 1
    assert exit_code([f(Severity.WARNING), f(Severity.CRITICAL)]) == 2
    assert exit_code([f(Severity.WARNING), f(Severity.UNKNOWN)]) == 3
    assert exit_code([f(Severity.UNKNOWN), f(Severity.CRITICAL)]) == 2


# ------------------------------------------------------------------------------------ golden plans
def render(findings: list[Finding]) -> str:
    return "".join(f"{f.severity.label} {f.code} {f.subject}: {f.message}\n" for f in findings)


@pytest.mark.parametrize("name", ["compliant", "missing_offsite", "single_medium", "rpo_infeasible"])
def test_golden_plan(name: str) -> None:
    got = render(plan_findings(load_plan(GOLDEN / f"{name}.yaml")))
    expected_file = GOLDEN / f"{name}.expected"
    if os.environ.get("COFFER_UPDATE_GOLDEN") == "1":
        expected_file.write_text(got)
    assert got == expected_file.read_text()


def test_golden_verdicts() -> None:
    """What each golden plan is about, independent of message wording."""
    def plan_codes(name: str) -> dict[tuple[str, str], Severity]:
        fs = plan_findings(load_plan(GOLDEN / f"{name}.yaml"))
        return {(f.subject.split()[-1], f.code): f.severity for f in fs}

    assert worst(plan_findings(load_plan(GOLDEN / "compliant.yaml"))) == Severity.OK
    assert plan_codes("missing_offsite")[("app", "rule321.offsite")] == Severity.CRITICAL
    assert plan_codes("single_medium")[("app", "rule321.media")] == Severity.WARNING
    rpo = plan_codes("rpo_infeasible")
    assert rpo[("db", "rpo.infeasible")] == Severity.CRITICAL
    assert rpo[("queue", "rpo.no_margin")] == Severity.WARNING
    assert rpo[("queue", "retention.drill_window")] == Severity.WARNING
    assert rpo[("scratch", "drill.missing")] == Severity.WARNING
