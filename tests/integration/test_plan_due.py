"""coffer run --due: a frequent timer runs each dataset when its schedule (or a change) says so."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from helpers.planbed import Bed

DATASETS = """\
- name: etc
  type: files
  paths: [data/etc]
  schedule: on-change
  retention: {keep_last: 50}
  repository: nvme
- name: app
  type: files
  paths: [data/app]
  schedule: "every 1d"
  retention: {keep_last: 50}
  repository: nvme
"""


def _due(bed: Bed) -> dict[str, dict[str, object]]:
    r = bed.coffer("run", "--due", "--plan", "plan.yaml", "--json")
    return {x["dataset"]: x for x in (json.loads(line) for line in r.stdout.splitlines())
            if x.get("message_type") == "due"}


def _count(bed: Bed, dataset: str) -> int:
    return sum(1 for s in bed.snapshots("nvme") if f"dataset={dataset}" in s.get("tags", []))  # type: ignore[operator]


def test_run_due_follows_schedules_and_changes(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("etc")
    bed.data("app")
    bed.plan(DATASETS)
    bed.coffer("plan", "init", "plan.yaml")
    first = _due(bed)
    assert first["etc"]["due"] and first["app"]["due"]  # never backed up
    assert _count(bed, "etc") == 1 and _count(bed, "app") == 1
    second = _due(bed)
    assert not second["etc"]["due"] and "unchanged" in str(second["etc"]["reason"])
    assert not second["app"]["due"] and "next at" in str(second["app"]["reason"])
    assert _count(bed, "etc") == 1 and _count(bed, "app") == 1
    time.sleep(0.05)
    changed = next(p for p in (tmp_path / "data" / "etc").rglob("*") if p.is_file())
    changed.write_text("edited\n")
    os.utime(changed)
    third = _due(bed)
    assert third["etc"]["due"] and "changed" in str(third["etc"]["reason"])
    assert not third["app"]["due"]
    assert _count(bed, "etc") == 2 and _count(bed, "app") == 1
