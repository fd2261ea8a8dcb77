"""coffer status: facts from the repositories, monitoring exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from helpers.planbed import Bed

APP = """\
- name: app
  type: files
  paths: [data/app]
  schedule: "0 1 * * *"
  retention: {keep_daily: 30}
  repository: nvme
  copies: [offsite]
  rpo: 25h
  check: {read: 100%}
"""

WEB = """\
- name: web
  type: files
  paths: [data/web]
  schedule: "0 */6 * * *"
  retention: {keep_daily: 30}
  repository: nvme
  copies: [offsite]
  rpo: 7h
  check: {read: 100%}
"""


def rows(doc: dict[str, Any], dataset: str) -> dict[str, dict[str, Any]]:
    return {r["repository"]: r for r in doc["snapshots"] if r["dataset"] == dataset}


def codes(doc: dict[str, Any]) -> dict[str, str]:
    return {f"{f['subject']}|{f['code']}": f["severity"] for f in doc["findings"]}


def test_rpo_and_copy_findings_drive_the_exit_code(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("app")
    bed.data("web", files=5, seed=2)
    bed.plan(APP)
    bed.coffer("plan", "init", "plan.yaml")

    # 30 hours without a backup: older than the 25 h RPO on the primary -> CRITICAL (2)
    bed.backup("nvme", "app", age=timedelta(hours=30))
    bed.backup("offsite", "app", age=timedelta(hours=30))
    bed.coffer("check", "--plan", "plan.yaml")
    rc, doc = bed.status()
    assert rc == 2, doc
    assert doc["status"] == "CRITICAL"
    r = rows(doc, "app")
    assert r["nvme"]["status"] == "CRITICAL" and "older than the RPO" in r["nvme"]["message"]
    assert r["offsite"]["status"] == "WARNING"  # the copy lags but exists

    # a fresh backup on the primary; the offsite copy still lags by 30 h -> WARNING (1)
    bed.backup("nvme", "app")
    rc, doc = bed.status()
    assert rc == 1, doc
    r = rows(doc, "app")
    assert r["nvme"]["status"] == "OK" and r["offsite"]["status"] == "WARNING"
    assert "older than its allowed" in r["offsite"]["message"]
    assert codes(doc)["dataset app|rule321.offsite"] == "WARNING"  # only a stale copy is offsite

    # copying brings everything back in line -> OK (0)
    bed.coffer("run", "--plan", "plan.yaml", "--skip", "backup", "--skip", "retention")
    rc, doc = bed.status()
    assert rc == 0, doc
    assert all(x["status"] == "OK" for x in doc["snapshots"])

    # a dataset whose offsite copy is missing altogether -> CRITICAL (2)
    bed.plan(APP + WEB, name="plan2.yaml")
    bed.backup("nvme", "web")
    rc, doc = bed.status(plan="plan2.yaml")
    assert rc == 2, doc
    r = rows(doc, "web")
    assert r["offsite"]["status"] == "CRITICAL" and "offsite copy missing" in r["offsite"]["message"]
    assert codes(doc)["dataset web|rule321.offsite"] == "CRITICAL"
    assert rows(doc, "app")["nvme"]["status"] == "OK"


def test_text_table_prometheus_and_unknown(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("app")
    bed.plan(APP)
    bed.coffer("plan", "init", "plan.yaml")
    bed.coffer("run", "--plan", "plan.yaml")
    r = bed.coffer("status", "--plan", "plan.yaml", "--prometheus", "metrics.prom", ok=(1,))
    # packs written by the run are not checked yet: a warning names the repositories
    assert "never checked" in r.stdout
    for header in ("dataset", "repository", "role", "newest (UTC)", "max age", "oldest unverified", "last drill"):
        assert header in r.stdout
    assert "coffer status: WARNING" in r.stdout
    prom = (tmp_path / "metrics.prom").read_text()
    assert "coffer_status 1" in prom
    assert 'coffer_snapshot_age_seconds{dataset="app",repository="offsite",role="copy"}' in prom
    assert 'coffer_check_packs_never_read{repository="nvme"}' in prom

    # a repository that cannot be read: UNKNOWN (3), the others are still judged
    (tmp_path / "repos" / "offsite" / "config").rename(tmp_path / "offsite-config")
    rc, doc = bed.status()
    assert rc == 3, doc
    assert rows(doc, "app")["offsite"]["status"] == "UNKNOWN"
    assert rows(doc, "app")["nvme"]["status"] == "OK"

    # an invalid plan: UNKNOWN for a monitor, with the reason on stderr
    (tmp_path / "bad.yaml").write_text("repositories: []\n")
    r = bed.coffer("status", "--plan", "bad.yaml", ok=(3,))
    assert "UNKNOWN" in r.stderr
