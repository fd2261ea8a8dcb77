"""coffer run: backup, copies, retention, all recorded; one dataset's failure does not stop the others."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

from helpers.planbed import REPOS, Bed

DATASETS = """\
- name: app
  type: files
  paths: [data/app]
  schedule: "0 1 * * *"
  retention: {keep_last: 2}
  repository: nvme
  copies: [nfs, offsite]
  rpo: 25h
- name: broken
  type: files
  paths: [data/missing]
  schedule: "0 1 * * *"
  retention: {keep_last: 2}
  repository: nvme
  copies: [offsite]
"""


def tags_of(bed: Bed, repo: str, dataset: str) -> list[dict[str, object]]:
    return [s for s in bed.snapshots(repo) if f"dataset={dataset}" in s.get("tags", [])]  # type: ignore[operator]


def test_run_backs_up_copies_applies_retention_and_records_everything(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("app")
    bed.plan(DATASETS)
    bed.coffer("plan", "init", "plan.yaml")
    old = [bed.backup("nvme", "app", age=timedelta(days=d)) for d in (3, 2)]

    r = bed.coffer("run", "--plan", "plan.yaml", "--json", ok=(6,))
    steps = [json.loads(x) for x in r.stdout.splitlines() if '"step"' in x]
    by = {(s["dataset"], s["step"], s["repository"]): s for s in steps}
    # the broken dataset failed, with the reason, and kept its history (retention skipped) ...
    assert by[("broken", "backup", "nvme")]["result"] == "failed"
    assert "do not exist" in by[("broken", "backup", "nvme")]["message"]
    assert by[("broken", "retention", "nvme")]["result"] == "skipped"
    # ... while app went through every step
    for key in [("app", "backup", "nvme"), ("app", "copy", "nfs"), ("app", "copy", "offsite"),
                ("app", "retention", "nvme"), ("app", "retention", "nfs"), ("app", "retention", "offsite")]:
        assert by[key]["result"] == "ok", by[key]
    new = by[("app", "backup", "nvme")]["snapshot_ids"][0]
    # keep_last 2: the oldest backdated snapshot is gone everywhere, the newest two remain
    for repo in ("nvme", "nfs", "offsite"):
        snaps = tags_of(bed, repo, "app")
        assert len(snaps) == 2, (repo, snaps)
    nvme_ids = {s["id"] for s in tags_of(bed, "nvme", "app")}
    assert nvme_ids == {new, next(i for i in nvme_ids if i.startswith(old[1]))}
    assert by[("app", "retention", "nvme")]["snapshot_ids"][0].startswith(old[0])

    with bed.catalog() as cat:
        (run_app,) = cat.operations("run", dataset="app")
        assert run_app.result == "ok" and run_app.finished is not None
        kids = {(o.kind, o.repository): o for o in cat.operations(parent=run_app.id)}
        assert set(kids) == {("backup", "nvme"), ("copy", "nfs"), ("copy", "offsite"), ("forget", "nvme"),
                             ("forget", "nfs"), ("forget", "offsite")}
        b = kids[("backup", "nvme")]
        assert b.result == "ok" and b.files == 21 and b.bytes > 0 and b.snapshot_ids == [new]
        assert b.started <= b.finished  # type: ignore[operator]
        c = kids[("copy", "offsite")]
        assert c.result == "ok" and len(c.snapshot_ids) == 3 and c.bytes > 0
        f = kids[("forget", "nvme")]
        assert f.result == "ok" and len(f.snapshot_ids) == 1
        (run_broken,) = cat.operations("run", dataset="broken")
        assert run_broken.result == "failed"
        (bb,) = cat.operations("backup", dataset="broken")
        assert bb.result == "failed" and "do not exist" in bb.errors[0]


def test_exit_code_says_what_failed(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.data("app", files=3)
    # "ghost" is in the plan but was never created: copying there fails
    repos = REPOS + "  - {name: ghost, url: repos/ghost, password_env: COFFER_TEST_PW, media: s3, offsite: true}\n"
    bed.plan(DATASETS.replace("copies: [nfs, offsite]", "copies: [nfs, ghost]"), repos=repos)
    bed.coffer("plan", "init", "plan.yaml")
    shutil.rmtree(bed.repo("ghost"))
    r = bed.coffer("run", "app", "--plan", "plan.yaml", ok=(4,))  # a copy failed
    assert "FAIL" in r.stdout and "ghost" in r.stdout
    bed.coffer("run", "broken", "--plan", "plan.yaml", ok=(6,))  # a backup failed
    bed.coffer("run", "app", "--plan", "plan.yaml", "--skip", "copy", ok=(5,))  # retention in ghost failed
    bed.coffer("run", "app", "--plan", "plan.yaml", "--skip", "copy", "--skip", "retention", ok=(0,))
    r = bed.coffer("run", "nope", "--plan", "plan.yaml", ok=(1,))
    assert "unknown dataset" in r.stderr
