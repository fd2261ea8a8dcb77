"""coffer plan schema|check|init and coffer report compliance, as a person or a CI job calls them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from helpers.planbed import Bed

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_plan_schema_is_json_schema(tmp_path: Path) -> None:
    r = Bed(tmp_path).coffer("plan", "schema")
    schema = json.loads(r.stdout)
    assert schema["title"] == "coffer backup plan"
    assert {"repositories", "datasets", "catalog"} <= set(schema["properties"])


@pytest.mark.parametrize("name", ["enterprise.yaml", "small-office.yaml"])
def test_example_plans_pass_plan_check(tmp_path: Path, name: str) -> None:
    r = Bed(tmp_path).coffer("plan", "check", str(REPO_ROOT / "examples" / name))
    assert "valid" in r.stdout and "plan check: OK" in r.stdout


def test_demo_plan_is_valid_and_warns_about_immutability(tmp_path: Path) -> None:
    r = Bed(tmp_path).coffer("plan", "check", str(REPO_ROOT / "examples" / "demo.yaml"), ok=(1,))
    assert "no immutable copy" in r.stdout and "0 critical" in r.stdout


def test_plan_check_reports_every_mistake_with_file_and_line(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    (tmp_path / "bad.yaml").write_text(
        "repositories:\n"
        "  - {name: a, url: /r, password_env: P, media: nvme, colour: red}\n"
        "datasets:\n"
        "  - name: app\n"
        "    type: files\n"
        "    paths: [/srv]\n"
        "    schedule: daily-ish\n"
        "    retention: {keep_daily: 7}\n"
        "    repository: a\n"
        "    rpo: fast\n"
    )
    r = bed.coffer("plan", "check", "bad.yaml", ok=(2,))
    lines = r.stdout.splitlines()
    assert 'bad.yaml:2: repositories[0].colour: unknown option "colour"' in lines
    assert any(x.startswith("bad.yaml:7: datasets[0].schedule: not a schedule") for x in lines)
    assert any(x.startswith('bad.yaml:10: datasets[0].rpo: not a duration: "fast"') for x in lines)
    doc = json.loads(bed.coffer("--json", "plan", "check", "bad.yaml", ok=(2,)).stdout)
    assert doc["valid"] is False and {p["line"] for p in doc["problems"]} == {2, 7, 10}
    # every plan-driven command refuses an invalid plan with the first problem and a hint
    r = bed.coffer("run", "--plan", "bad.yaml", ok=(1,))
    assert "bad.yaml:2:" in r.stderr and "coffer plan check" in r.stderr


def test_plan_check_findings_and_exit_codes(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "repositories:\n"
        "  - {name: a, url: /r, password_env: P, media: nvme}\n"
        "datasets:\n"
        "  - {name: app, type: files, paths: [/srv], schedule: '0 2 * * *', retention: {keep_daily: 7},\n"
        "     repository: a, rpo: 1h}\n"
    )
    r = bed.coffer("plan", "check", "p.yaml", ok=(2,))
    assert "CRITICAL dataset app: no offsite copy" in " ".join(r.stdout.split())
    assert "RPO 1h cannot be met" in r.stdout


def test_report_compliance_md_and_html(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("app")
    bed.plan("""\
- name: app
  type: files
  paths: [data/app]
  schedule: "0 1 * * *"
  retention: {keep_daily: 30}
  repository: nvme
  copies: [offsite]
  rpo: 25h
  rto: 1h
  drill: {interval: 30d}
""")
    bed.coffer("plan", "init", "plan.yaml")
    bed.backup("nvme", "app", age=timedelta(days=3))  # then a 3-day gap: the RPO was missed in the period
    bed.coffer("run", "--plan", "plan.yaml")
    bed.coffer("drill", "app", "--plan", "plan.yaml")
    md = bed.coffer("report", "compliance", "--plan", "plan.yaml", ok=(1,)).stdout
    assert "# Backup compliance" in md and "| app | files | ✗ NOT met | ✓ met | ✓ met |" in md
    assert "longest gap 3d" in md
    out = tmp_path / "c.html"
    bed.coffer("report", "compliance", "--plan", "plan.yaml", "--format", "html", "--output", str(out), ok=(1,))
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<td class=\"fail\">NOT met" in html
    # a short period that only covers the latest backup: everything met
    md = bed.coffer("report", "compliance", "--plan", "plan.yaml", "--period", "1d").stdout
    assert "all targets met" in md
