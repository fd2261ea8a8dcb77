"""coffer check --plan: a rotating slice per run; after ceil(1/slice) runs the ledger shows every pack read."""

from __future__ import annotations

import json
import math
from pathlib import Path

from helpers.planbed import Bed

APP = """\
- name: app
  type: files
  paths: [data/app]
  schedule: "0 1 * * *"
  retention: {keep_daily: 30}
  repository: nvme
  rpo: 25h
  check: {interval: 1d, read: 30%}
"""


def test_every_pack_is_read_within_ceil_one_over_slice_runs(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.plan(APP)
    bed.coffer("plan", "init", "plan.yaml")
    for seed in range(4):  # four backups of changed data: a dozen packs or so
        bed.data("app", files=6, size=200_000, seed=seed)
        bed.backup("nvme", "app")
    packs = {p.name for p in (tmp_path / "repos" / "nvme" / "data").glob("*/*")}
    assert len(packs) >= 8
    runs = math.ceil(1 / 0.3)

    read_per_run = []
    for i in range(runs):
        r = bed.coffer("check", "--plan", "plan.yaml", "nvme", "--json")
        doc = json.loads(r.stdout)
        assert doc["ok"] is True and doc["packs"] == len(packs)
        read_per_run.append(doc["packs_read"])
        with bed.catalog() as cat:
            (repo_id,) = {o.details["repository_id"] for o in cat.operations("check")}
            ledger = cat.coverage(repo_id)
        unread = [p for p, s in ledger.items() if s.last_read is None]
        if i == 0:
            assert len(unread) == len(packs) - math.ceil(len(packs) * 0.3)  # a slice, not everything
    # the ledger proves it: every pack of the repository has been read, and verified
    assert set(ledger) == packs
    assert all(s.last_read is not None and s.last_ok for s in ledger.values())
    assert all(n == math.ceil(len(packs) * 0.3) for n in read_per_run)
    assert sum(read_per_run) >= len(packs)

    # status shows the coverage: nothing unread, the oldest unverified age is known
    # (the status itself is CRITICAL: this plan keeps no offsite copy)
    r = bed.coffer("status", "--plan", "plan.yaml", "--json", ok=(2,))
    cov = next(c for c in json.loads(r.stdout)["checks"] if c["repository"] == "nvme")
    assert cov["never_read"] == 0 and cov["oldest_unverified_seconds"] is not None
    assert cov["period_seconds"] == 4 * 86400 and cov["status"] == "OK"


def test_a_damaged_pack_is_found_recorded_and_turns_status_critical(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    data = bed.data("app")
    bed.plan(APP.replace("read: 30%", "read: 100%"))
    bed.coffer("plan", "init", "plan.yaml")
    bed.backup("nvme", "app")
    pack, offset = bed.pack_of("nvme", data / "f003.bin")
    bed.flip(pack, offset)
    r = bed.coffer("check", "--plan", "plan.yaml", ok=(1,))
    assert "DAMAGED" in r.stdout and pack.name in r.stderr
    with bed.catalog() as cat:
        (op,) = cat.operations("check", repository="nvme")
        assert op.result == "failed" and op.details["damaged"] == [pack.name]
        ledger = cat.coverage(op.details["repository_id"])
    assert ledger[pack.name].last_ok is False
    r = bed.coffer("status", "--plan", "plan.yaml", ok=(2,))
    assert "failed verification" in r.stdout
