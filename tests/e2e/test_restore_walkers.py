"""The forked restore workers: the same files, links and metadata as one process and as restic.

A whole-snapshot (or subpath) restore without include patterns runs in workers forked during the
lock's wait: each restores the subtrees it is given (or takes from a busy one), a hard-link group
met by two workers is written once and linked at the end. These tests compare that path with the
thread-only engine (``COFFER_RESTORE_PROCESSES=0``) and with restic.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import Runner
from helpers.repos import damage_data_blob
from helpers.sourcetree import make_tree, write_random, write_text
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic

WALKERS = {"COFFER_RESTORE_PROCESSES": "2"}
THREADS = {"COFFER_RESTORE_PROCESSES": "0"}
PAIRS = 12


def source(root: Path) -> Path:
    """Two large directories and nothing else at the top (one per worker: the second is given away
    while the first is being made), files in the second hard-linked to files in the first, shared
    content, the metadata variety of make_tree."""
    a, b = root / "a", root / "b"
    make_tree(a)
    for d in (a, b):
        for k in range(3):
            (d / f"sub{k}").mkdir(parents=True)
    for i in range(60):
        write_text(a / f"sub{i % 3}" / f"f{i:02d}.txt", 700 + 31 * i, seed=i)
        write_random(b / f"sub{i % 3}" / f"g{i:02d}.bin", 5000 + i, seed=100 + i)
    for i in range(PAIRS):  # each group's two names are restored by different workers
        os.link(a / f"sub{i % 3}" / f"f{i:02d}.txt", b / f"sub{i % 3}" / f"link{i:02d}.txt")
    os.utime(b / "sub1", ns=(1_600_000_000_000_000_001, 1_600_000_000_000_000_001))
    os.utime(b, ns=(1_600_000_000_000_000_002, 1_600_000_000_000_000_002))
    return root


def summary(r: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert d["message_type"] == "summary"
    return d


COUNTS = ("files_restored", "dirs_restored", "others_restored", "bytes_restored", "files_skipped", "total_errors")


def tmp_leftovers(root: Path) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if "coffer-tmp" in n]


def test_walkers_restore_what_threads_and_restic_restore(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = source(tmp_path / "src")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    log = tmp_path / "sites"
    w = summary(coffer("--json", "restore", "latest", "--target", str(tmp_path / "w"), repo=repo,
                       env={**WALKERS, "COFFER_FAILPOINT_LOG": str(log)}))
    sites = log.read_text().split()
    assert "walk_gift" in sites, "no worker took work from the other"
    assert "restore_link_elsewhere" in sites, "no hard-link group was split between the workers"
    t = summary(coffer("--json", "restore", "latest", "--target", str(tmp_path / "t"), repo=repo, env=THREADS))
    restic("restore", "latest", "--target", str(tmp_path / "r"), repo=repo)
    assert {k: w[k] for k in COUNTS} == {k: t[k] for k in COUNTS}
    assert_trees_equal(src, tmp_path / "w" / "src")
    assert_trees_equal(tmp_path / "t" / "src", tmp_path / "w" / "src")
    assert_trees_equal(tmp_path / "r" / "src", tmp_path / "w" / "src")
    out = tmp_path / "w" / "src"
    for i in range(PAIRS):
        first, link = out / "a" / f"sub{i % 3}" / f"f{i:02d}.txt", out / "b" / f"sub{i % 3}" / f"link{i:02d}.txt"
        assert first.stat().st_ino == link.stat().st_ino and first.stat().st_nlink == 2
    # the links were made last, and their directories' times set again after them
    assert (out / "b" / "sub1").stat().st_mtime_ns == 1_600_000_000_000_000_001
    assert (out / "b").stat().st_mtime_ns == 1_600_000_000_000_000_002
    assert not tmp_leftovers(tmp_path / "w")


def test_subpath_excludes_and_no_overwrite_as_with_threads(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    source(tmp_path / "src")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    args = ["restore", "latest:/src/b", "--exclude", "*.bin", "--exclude", "/sub2"]
    w = summary(coffer("--json", *args, "--target", str(tmp_path / "w"), repo=repo, env=WALKERS))
    t = summary(coffer("--json", *args, "--target", str(tmp_path / "t"), repo=repo, env=THREADS))
    assert {k: w[k] for k in COUNTS} == {k: t[k] for k in COUNTS}
    assert_trees_equal(tmp_path / "t", tmp_path / "w")
    names = sorted(p.name for p in (tmp_path / "w").rglob("*"))
    assert "sub2" not in names and not [n for n in names if n.endswith(".bin")] and "link01.txt" in names
    mine = tmp_path / "w" / "sub0" / "link00.txt"
    os.unlink(mine)  # not a link to the other copy any more: a file of its own, changed
    mine.write_text("changed here")
    again = summary(coffer("--json", *args, "--no-overwrite", "--target", str(tmp_path / "w"), repo=repo,
                           env=WALKERS))
    assert mine.read_text() == "changed here"
    assert again["files_skipped"] == t["files_restored"] and again["files_restored"] == 0


def test_a_damaged_file_fails_its_links_in_the_other_worker_too(
    tmp_path: Path, repo: Path, coffer: Runner
) -> None:
    src = source(tmp_path / "src")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    victim = src / "a" / "sub1" / "f01.txt"  # hard-linked as b/sub1/link01.txt
    damage_data_blob(repo, victim.read_bytes())
    out = coffer("restore", "latest", "--target", str(tmp_path / "w"), repo=repo, env=WALKERS, check=False)
    err = out.stderr.decode(errors="replace")
    assert out.returncode != 0
    assert "f01.txt" in err and "link01.txt" in err, err
    w = tmp_path / "w" / "src"
    assert not (w / "a" / "sub1" / "f01.txt").exists() and not (w / "b" / "sub1" / "link01.txt").exists()
    assert (w / "a" / "sub2" / "f02.txt").read_bytes() == (src / "a" / "sub2" / "f02.txt").read_bytes()
    assert (w / "b" / "sub2" / "link02.txt").stat().st_ino == (w / "a" / "sub2" / "f02.txt").stat().st_ino
    assert not tmp_leftovers(tmp_path / "w")
