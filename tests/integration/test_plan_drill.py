"""coffer drill: a clean drill records every field; a corrupted pack fails it, naming the files."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

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
  rto: 1h
  drill:
    interval: 30d
    checks:
      - {name: index present, exists: data/app/index.txt}
      - {name: index lists files, command: ["sh", "-c", "test $(wc -l < index.txt) -eq 20"]}
      - min_files: 20
  check: {read: 100%}
"""


def drill(bed: Bed, *args: str, ok: tuple[int, ...]) -> dict[str, object]:
    r = bed.coffer("drill", "app", "--plan", "plan.yaml", "--json", *args, ok=ok)
    doc: dict[str, object] = json.loads(r.stdout)
    return doc


def test_clean_drill_records_all_fields(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("app")
    bed.plan(APP)
    bed.coffer("plan", "init", "plan.yaml")
    old = bed.backup("nvme", "app", age=timedelta(days=10))
    bed.backup("nvme", "app", age=timedelta(days=1))
    doc = drill(bed, ok=(0,))
    assert doc["ok"] is True
    assert str(doc["snapshot_id"]).startswith(old)  # the only one 7-21 days old
    assert "random among 1 snapshot(s) 7d-21d old" in str(doc["selection"])
    assert doc["files"] == 21 and int(doc["bytes"]) > 300_000  # type: ignore[call-overload]
    assert [c["ok"] for c in doc["checks"]] == [True, True, True]  # type: ignore[union-attr]
    assert doc["rto_met"] is True and doc["issues"] == []

    with bed.catalog() as cat:
        (rec,) = cat.drills("app")
        (op,) = cat.operations("drill", dataset="app")
    assert rec.ok and op.result == "ok" and rec.operation_id == op.id
    assert rec.snapshot_id.startswith(old) and rec.snapshot_time is not None
    assert 9.9 * 86400 < (rec.snapshot_age or 0) < 10.1 * 86400
    assert rec.files == 21 and rec.bytes == doc["bytes"] and rec.full_bytes >= rec.bytes
    assert rec.restore_seconds > 0 and rec.throughput > 0 and rec.extrapolated_seconds >= rec.restore_seconds
    assert rec.rto_seconds == 3600 and rec.rto_met is True
    assert [c["name"] for c in rec.checks] == ["index present", "index lists files", "at least 20 files"]
    assert rec.repository == "nvme" and rec.selection and rec.issues == []
    assert op.snapshot_ids == [rec.snapshot_id] and op.files == 21

    # no snapshot in the window for --snapshot? explicit choice; and the oldest-available fallback
    doc = drill(bed, "--repository", "nvme", "--snapshot", old, ok=(0,))
    assert doc["selection"] == "chosen with --snapshot"


def test_corrupted_pack_fails_the_drill_names_the_file_and_is_reported(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    data = bed.data("app")
    bed.plan(APP)
    bed.coffer("plan", "init", "plan.yaml")
    bed.backup("nvme", "app", age=timedelta(days=9))
    victim = data / "f007.bin"
    pack, offset = bed.pack_of("nvme", victim)
    bed.flip(pack, offset)

    doc = drill(bed, ok=(2,))
    assert doc["ok"] is False
    issues = "\n".join(doc["issues"])  # type: ignore[arg-type]
    assert str(victim) in issues and pack.name[:8] in issues
    # the failed drill is in the catalog ...
    with bed.catalog() as cat:
        (rec,) = cat.drills("app")
        (op,) = cat.operations("drill", dataset="app")
    assert not rec.ok and op.result == "failed" and any(str(victim) in i for i in rec.issues)
    # ... in the drill report (Markdown and HTML) ...
    md = bed.coffer("report", "drills", "--plan", "plan.yaml", ok=(1,)).stdout
    assert "| FAIL |" in md and str(victim) in md and "Issues found" in md
    html = bed.coffer("report", "drills", "--plan", "plan.yaml", "--format", "html", ok=(1,)).stdout
    assert "<td class=\"fail\">FAIL</td>" in html and str(victim) in html
    # ... in the compliance report ...
    comp = bed.coffer("report", "compliance", "--plan", "plan.yaml", ok=(1,)).stdout
    assert "NOT met" in comp and "1 failed" in comp
    # ... and status is CRITICAL
    r = bed.coffer("status", "--plan", "plan.yaml", ok=(2,))
    assert "last drill" in r.stdout and "FAILED" in r.stdout and str(victim) in r.stdout

    # the integrity check finds the same pack
    r = bed.coffer("check", "--plan", "plan.yaml", ok=(1,))
    assert pack.name in r.stderr


def test_failing_check_and_missing_snapshots_fail_the_drill(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("app")
    bed.plan(APP.replace("-eq 20", "-eq 99"))
    bed.coffer("plan", "init", "plan.yaml")
    doc = drill(bed, ok=(2,))  # nothing to drill yet
    assert doc["ok"] is False and "no snapshot of app" in doc["issues"][0]  # type: ignore[index]
    bed.backup("nvme", "app")
    doc = drill(bed, ok=(2,))
    assert "using the oldest available" in str(doc["selection"])
    checks = {c["name"]: c["ok"] for c in doc["checks"]}  # type: ignore[union-attr]
    assert checks == {"index present": True, "index lists files": False, "at least 20 files": True}
    with bed.catalog() as cat:
        assert [d.ok for d in cat.drills("app")] == [False, False]
