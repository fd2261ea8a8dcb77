"""The forked walk workers: the same snapshots as one process, work shared out, nothing read twice.

Every CLI backup of paths uses them by default (forked during the lock's wait, once the index is
loaded). These tests compare them with the thread-only engine (``COFFER_BACKUP_PROCESSES=0``) on
the same repository, where the same content must give the same tree IDs and the same counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coffer.store.backend.local import LocalBackend
from coffer.store.repository import Repository
from conftest import PASSWORD, Runner
from helpers.sourcetree import make_tree, write_random, write_text
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic

THREADS = {"COFFER_BACKUP_PROCESSES": "0"}
WALKERS = {"COFFER_BACKUP_PROCESSES": "2"}
SPAWNED = {"COFFER_BACKUP_PROCESSES": "2", "COFFER_WORKER_FORK": "0", "COFFER_BACKUP_PROCESS_THRESHOLD": "0"}


def source(root: Path) -> tuple[int, int]:
    """A lopsided tree: one deep and wide part (the work an idle worker must take from a busy one),
    a few small ones, content repeated across directories, two multi-chunk files and the metadata
    variety of make_tree. Returns (regular files, directories below the root)."""
    make_tree(root)
    for top in range(3):
        for mid in range(4 if top else 12):
            d = root / f"t{top}" / f"m{mid:02d}" / "leaf"
            d.mkdir(parents=True)
            for f in range(6):
                write_text(d / f"f{f}.txt", 500 + 37 * f, seed=f)  # the same 6 files everywhere
            write_random(d.parent / "own.bin", 3000, seed=100 * top + mid)
    write_random(root / "t0" / "large.bin", 5 * 1024 * 1024 + 3, seed=7)
    shutil.copy(root / "t0" / "large.bin", root / "t2" / "large-copy.bin")
    os.setxattr(root / "t1" / "m01" / "leaf" / "f1.txt", "user.walker", b"read through the open file")
    files = dirs = 0
    for _, ds, fs in os.walk(root):
        dirs += len(ds)
        files += sum(1 for f in fs if os.path.isfile(os.path.join(_, f)) and not os.path.islink(os.path.join(_, f)))
    return files, dirs


def summary(r: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert d["message_type"] == "summary"
    return d


def tree_of(coffer: Runner, repo: Path, short_id: str) -> str:
    snaps = json.loads(coffer("snapshots", "--json", repo=repo).stdout)
    tree: str = next(s["tree"] for s in snaps if s["id"].startswith(short_id))
    return tree


COUNTS = ("files_new", "files_changed", "files_unmodified", "dirs_new", "dirs_changed", "dirs_unmodified",
          "total_files_processed", "total_bytes_processed")


@pytest.mark.parametrize("mode", [WALKERS, SPAWNED], ids=["forked-walkers", "spawned-data-workers"])
def test_workers_store_the_same_tree_as_threads_and_no_blob_twice(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner, mode: dict[str, str]
) -> None:
    src = tmp_path / "src"
    source(src)
    log = tmp_path / "sites"
    threads = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path, env=THREADS))
    forced = summary(coffer("backup", "src", "--json", "--force", repo=repo, cwd=tmp_path,
                            env={**mode, "COFFER_FAILPOINT_LOG": str(log)}))
    sites = log.read_text().split()
    assert "backup_worker_file" in sites, "the workers did not read the files"
    if mode is WALKERS:
        assert "walk_gift" in sites, "no worker ever took work from another"
    assert tree_of(coffer, repo, forced["snapshot_id"]) == tree_of(coffer, repo, threads["snapshot_id"])
    assert forced["data_blobs"] == 0 and forced["tree_blobs"] == 0
    assert {k: forced[k] for k in COUNTS} == {k: threads[k] for k in COUNTS}

    fresh = tmp_path / "fresh"
    Repository.init(LocalBackend(str(fresh)), PASSWORD)
    s = summary(coffer("backup", "src", "--json", repo=fresh, cwd=tmp_path, env=mode))
    blobs = [b for b in restic("list", "blobs", repo=fresh).stdout.decode().split("\n") if b]
    assert len(blobs) == len(set(blobs)), "a blob was stored twice"
    assert s["data_blobs"] == sum(1 for b in blobs if b.startswith("data "))
    assert s["tree_blobs"] == sum(1 for b in blobs if b.startswith("tree "))
    restic("check", "--read-data", repo=fresh)
    restic("restore", s["snapshot_id"], "--target", str(tmp_path / "r"), repo=fresh)
    assert_trees_equal(src, tmp_path / "r" / "src")


def test_a_no_change_backup_reads_nothing_and_keeps_every_tree(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    files, dirs = source(tmp_path / "src")
    first = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path, env=WALKERS))
    log = tmp_path / "sites"
    again = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path,
                           env={**WALKERS, "COFFER_FAILPOINT_LOG": str(log)}))
    assert "backup_worker_file" not in log.read_text().split(), "an unchanged file was read"
    assert (again["files_unmodified"], again["files_new"], again["files_changed"]) == (files, 0, 0)
    # restic counts the directories below the snapshot's root entries, and the root entry itself
    assert (again["dirs_unmodified"], again["dirs_new"], again["dirs_changed"]) == (dirs + 1, 0, 0)
    assert again["data_blobs"] == 0 and again["tree_blobs"] == 0
    assert again["total_bytes_processed"] == first["total_bytes_processed"]
    assert tree_of(coffer, repo, again["snapshot_id"]) == tree_of(coffer, repo, first["snapshot_id"])


def test_changes_deep_in_the_tree_count_and_store_as_with_threads(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    """Changed, new and vanished entries spread over the tree: the walkers' snapshot and counts equal
    what one process makes from the same parent."""
    src = tmp_path / "src"
    source(src)
    base = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path, env=WALKERS))["snapshot_id"]
    write_text(src / "t0" / "m07" / "leaf" / "f2.txt", 900, seed=99)  # changed content
    (src / "t1" / "m02" / "leaf" / "new.txt").write_text("new file")
    (src / "t0" / "m11" / "fresh").mkdir()
    (src / "t0" / "m11" / "fresh" / "x").write_text("in a new directory")
    shutil.rmtree(src / "t2" / "m03")
    os.chmod(src / "t1" / "m00" / "leaf" / "f0.txt", 0o600)  # metadata only
    walkers = summary(coffer("backup", "src", "--json", "--parent", base, repo=repo, cwd=tmp_path, env=WALKERS))
    threads = summary(coffer("backup", "src", "--json", "--parent", base, repo=repo, cwd=tmp_path, env=THREADS))
    assert {k: walkers[k] for k in COUNTS} == {k: threads[k] for k in COUNTS}
    # changed: one by content, one by its ctime (chmod), which restic's change test also reads
    assert walkers["files_new"] == 2 and walkers["files_changed"] == 2 and walkers["dirs_new"] == 1
    assert tree_of(coffer, repo, walkers["snapshot_id"]) == tree_of(coffer, repo, threads["snapshot_id"])
    assert threads["data_blobs"] == 0 and threads["tree_blobs"] == 0  # the walkers stored all of it
    restic("check", "--read-data", repo=repo)
    coffer("restore", walkers["snapshot_id"], "--target", str(tmp_path / "r"), repo=repo)
    assert_trees_equal(src, tmp_path / "r" / "src")


def test_several_targets_and_files_named_on_the_command_line(
    tmp_path: Path, repo: Path, coffer: Runner
) -> None:
    """Paths given one by one (files among them, and directories under a common parent): the parent
    walks what was named, the workers everything else; the snapshot is the threads' one."""
    source(tmp_path / "src")
    targets = ["src/t0", "src/t1/m01", "src/small.txt", "src/t2/large-copy.bin", "src/sub/deeper"]
    a = summary(coffer("backup", *targets, "--json", repo=repo, cwd=tmp_path, env=WALKERS))
    b = summary(coffer("backup", *targets, "--json", "--force", repo=repo, cwd=tmp_path, env=THREADS))
    assert tree_of(coffer, repo, a["snapshot_id"]) == tree_of(coffer, repo, b["snapshot_id"])
    assert {k: a[k] for k in COUNTS} == {k: b[k] for k in COUNTS}
