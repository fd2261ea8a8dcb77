"""Retention golden tests, generated on the fly with the real restic binary.

restic makes the snapshots (``restic backup --time``: dozens of timestamps over four years, three
hosts, two paths and a two-path snapshot, several tag sets, backups made in three time zones so the
stored UTC offsets differ), then every ``--keep-*`` flag and every ``--group-by`` mode is run through
``restic forget --dry-run --json`` and ``coffer forget --dry-run --json``. The two JSON documents must
be equal group for group: the same snapshots kept and removed, in the same order, with the same
reasons and counters.

The edge cases are placed on purpose: ISO week 53, year ends, the New York daylight-saving changes
(an hour that exists twice, one that does not exist), several snapshots in one hour, a latest snapshot
on the 31st of a month (so ``--keep-within 1m`` overflows into March as Go's ``AddDate`` does, in the
Local zone across a DST change), and a snapshot dated in the future (never the "latest").
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf
from coffer.store.repository import Repository
from conftest import COFFER, PASSWORD, _env, need_tool

pytestmark = pytest.mark.restic

FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)
FORGET_TZ = "America/New_York"


def _snapshot_specs() -> list[tuple[str, str, str, list[str], str]]:
    """(time, TZ of the backup, host, tags, which paths) for every snapshot."""
    rnd = random.Random(20261126)
    specs: list[tuple[str, str, str, list[str], str]] = []
    used: set[str] = set()

    def add(t: str, tz: str, host: str, tags: list[str], paths: str) -> None:
        assert t not in used  # equal times would make restic's order random
        used.add(t)
        specs.append((t, tz, host, tags, paths))

    tagsets: list[list[str]] = [[], [], ["daily"], ["weekly", "important"], ["x"], ["important"]]
    for i in range(40):
        while True:
            day = rnd.randrange(0, 4 * 365)
            y, rest = 2019 + day // 365, day % 365
            m, d = 1 + rest // 31 % 12, 1 + rest % 28
            t = f"{y}-{m:02d}-{d:02d} {rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}"
            if t not in used:
                break
        host = ("alpha", "beta")[i % 2]
        tz = FORGET_TZ if host == "alpha" else ("UTC", "Asia/Kolkata")[i % 4 // 2]
        add(t, tz, host, tagsets[i % len(tagsets)], ("p1", "p2", "p1", "both")[i % 4])
    # ISO week 53 of 2020 and the turn of the year
    for t in ("2020-12-28 08:00:00", "2020-12-31 23:30:00", "2021-01-01 00:30:00", "2021-01-03 12:00:00",
              "2021-01-04 09:00:00"):
        add(t, FORGET_TZ, "alpha", [], "p1")
    # New York DST: 01:30 happens twice on 7 November, 02:30 never on 14 March
    for t in ("2021-03-14 01:30:00", "2021-03-14 03:30:00", "2021-11-07 00:30:00", "2021-11-07 01:30:00",
              "2021-11-07 03:00:00"):
        add(t, FORGET_TZ, "alpha", ["daily"], "p1")
    # several in one hour and one day
    for t in ("2022-05-05 10:05:00", "2022-05-05 10:55:00", "2022-05-05 11:01:00", "2022-05-05 23:59:59"):
        add(t, "UTC", "beta", ["x"], "p2")
    # host gamma: latest on 31 March (EDT); 1 month back is "3 March", which is EST in Local
    for t in ("2023-03-31 22:00:00", "2023-03-03 21:30:00", "2023-03-03 22:30:00", "2023-03-02 12:00:00",
              "2023-02-28 12:00:00", "2022-03-31 12:00:00", "2021-12-31 18:00:00", "2099-01-01 00:00:00"):
        add(t, FORGET_TZ, "gamma", [], "p1")
    return specs


@pytest.fixture(scope="module")
def golden_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("forget-golden")
    for name in ("p1", "p2"):
        (base / name).mkdir()
        (base / name / "f.txt").write_text(f"tiny file in {name}\n")
    repo = base / "repo"
    Repository.init(LocalBackend(str(repo)), PASSWORD, params=FAST_KDF)  # cheap KDF: dozens of runs follow
    restic = need_tool("restic")

    def backup(spec: tuple[str, str, str, list[str], str]) -> None:
        t, tz, host, tags, which = spec
        targets = [str(base / "p1"), str(base / "p2")] if which == "both" else [str(base / which)]
        argv = [restic, "backup", "-q", "--time", t, "--host", host]
        for tag in tags:
            argv += ["--tag", tag]
        r = subprocess.run(argv + targets, env=_env(repo, PASSWORD, {"TZ": tz}), capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()

    with cf.ThreadPoolExecutor(4) as ex:
        list(ex.map(backup, _snapshot_specs()))
    return repo


def _forget_json(binary: str, repo: Path, args: list[str]) -> list[dict[str, Any]]:
    # --no-lock with --dry-run: the runs are independent and read only
    r = subprocess.run([binary, "--no-lock", "forget", "--dry-run", "--json", *args],
                       env=_env(repo, PASSWORD, {"TZ": FORGET_TZ}), capture_output=True, timeout=120)
    assert r.returncode == 0, f"{binary} forget {args}: {r.stderr.decode()}"
    out = r.stdout.decode().strip()
    return json.loads(out) if out else []


def _by_group(doc: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """restic prints groups in Go map order (random): index them by their key."""
    return {json.dumps([g["host"], g["paths"], g["tags"]]): g for g in doc}


POLICIES = [
    ["--keep-last", "3"],
    ["--keep-hourly", "5"],
    ["--keep-daily", "7"],
    ["--keep-weekly", "5"],
    ["--keep-monthly", "6"],
    ["--keep-yearly", "3"],
    ["--keep-within", "1y2m3d4h"],
    ["--keep-within", "45d"],
    ["--keep-within", "1m"],
    ["--keep-within-hourly", "3d"],
    ["--keep-within-daily", "2m"],
    ["--keep-within-weekly", "6m"],
    ["--keep-within-monthly", "1y6m"],
    ["--keep-within-yearly", "5y"],
    ["--keep-tag", "important"],
    ["--keep-tag", "daily,x", "--keep-tag", ""],
    ["-l", "2", "-H", "3", "-d", "7", "-w", "4", "-m", "12", "-y", "3"],
    ["--keep-daily", "3", "--keep-within", "30d", "--keep-tag", "important", "--keep-within-weekly", "1y"],
    ["--keep-last", "1", "--host", "alpha"],
    ["--keep-monthly", "2", "--tag", "daily", "--tag", "x"],
    ["--keep-weekly", "2", "--path", "{p1}"],
]

GROUP_BY = ["", "host", "paths", "tags", "host,tags", "paths,tags", "host,paths,tags"]


def _compare(golden_repo: Path, args: list[str]) -> None:
    args = [a.replace("{p1}", str(golden_repo.parent / "p1")) for a in args]
    with cf.ThreadPoolExecutor(2) as ex:  # both at once: each mostly waits for its own start-up
        fw = ex.submit(_forget_json, need_tool("restic"), golden_repo, args)
        fg = ex.submit(_forget_json, COFFER, golden_repo, args)
        want, got = _by_group(fw.result()), _by_group(fg.result())
    assert want, f"restic made no decision for {args}"
    assert sorted(got) == sorted(want), f"groups differ for {args}"
    for key, w in want.items():
        g = got[key]
        ids = (lambda xs: [s["short_id"] for s in xs or ()])  # noqa: E731
        assert ids(g["keep"]) == ids(w["keep"]), f"{args} group {key}: kept"
        assert ids(g["remove"]) == ids(w["remove"]), f"{args} group {key}: removed"
        assert g == w, f"{args} group {key}: JSON differs"


@pytest.mark.parametrize("args", POLICIES, ids=lambda a: " ".join(a) or "none")
def test_keep_flags_match_restic(golden_repo: Path, args: list[str]) -> None:
    _compare(golden_repo, args)


@pytest.mark.parametrize("group_by", GROUP_BY, ids=lambda g: g or "no-grouping")
def test_group_by_matches_restic(golden_repo: Path, group_by: str) -> None:
    _compare(golden_repo, ["--group-by", group_by, "-l", "2", "-d", "3", "-m", "3", "--keep-within-yearly", "2y"])


@pytest.mark.parametrize("select", [
    ["--host", "gamma", "-d", "2", "-m", "2", "--keep-tag", "x"],
    ["--host", "beta", "--path", "{p1}", "--path", "{p2}", "-w", "2", "-c"],  # two paths per snapshot: compact
    ["--host", "beta", "--path", "{p1}", "--path", "{p2}", "-y", "1", "--keep-within", "3m"],  # blank lines
], ids=["reasons", "compact", "multi-path"])
def test_text_output_matches_restic(golden_repo: Path, select: list[str]) -> None:
    """Tables, policy line and the removal list, byte for byte (one group only: restic's map order)."""
    select = [a.replace("{p1}", str(golden_repo.parent / "p1")).replace("{p2}", str(golden_repo.parent / "p2"))
              for a in select]
    args = ["--no-lock", "forget", "--dry-run", *select]
    outs = []
    for binary in (need_tool("restic"), COFFER):
        r = subprocess.run([binary, *args], env=_env(golden_repo, PASSWORD, {"TZ": FORGET_TZ}), capture_output=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        outs.append(r.stdout.decode())
    assert outs[1] == outs[0]
