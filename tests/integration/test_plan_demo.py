"""`make demo` runs green and ends with the status table and the drill report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_green_and_prints_status_and_drill_report() -> None:
    r = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                       timeout=300, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    status = out.index("$ coffer status --plan plan.yaml")
    report = out.index("$ coffer report drills --plan plan.yaml")
    assert status < report
    for header in ("dataset  repository  role", "oldest unverified", "last drill"):
        assert header in out[status:report]
    assert "coffer status: OK" in out[status:report]
    assert "# Restore drills" in out[report:] and "| PASS |" in out[report:]
    assert "random among" in out  # a drill used the 7-21 day window
    assert "every pack read at least once" in out
    assert "copy      offsite" in out
