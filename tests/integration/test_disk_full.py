"""The repository's disk fills up during a backup and during a prune (T6, T8).

The repository lives on a small tmpfs. In both cases the command stops with a clear error (exit 1,
"no space left on device", no traceback), leaves no partial file under a final name, the repository
still passes ``restic check --read-data`` with every snapshot restorable, and once space is freed
(the tmpfs grows, or a filler file goes) the same command succeeds. ``prune --max-repack-size 0``
is the low-space mode: it only deletes, so it frees space where a full prune cannot run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REQUIRE_ALL, Runner
from helpers.repos import init_repo, make_history, repo_size, restore_and_compare, snapshot_ids
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB at tmp_path/mnt (needs root), unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        msg = f"cannot mount a tmpfs (root needed): {r.stderr.decode().strip()}"
        if REQUIRE_ALL:
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def resize(mnt: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def no_partial_files(repo: Path) -> None:
    leftovers = [p for p in repo.rglob("*") if "-tmp-" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def fill(mnt: Path, leave: int) -> list[Path]:
    """Fill the filesystem with 64 KiB files, then delete enough of them to leave about ``leave`` bytes."""
    d = mnt / "filler"
    d.mkdir(exist_ok=True)
    files = []
    block = os.urandom(64 * 1024)
    with contextlib.suppress(OSError):
        while True:
            p = d / f"f{len(files)}"
            files.append(p)
            with open(p, "wb") as f:
                f.write(block)
    for p in files[-(leave // len(block) + 1):]:
        p.unlink(missing_ok=True)
    return [p for p in files if p.exists()]


def test_disk_full_during_backup(small_fs: Path, tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    repo = init_repo(small_fs / "repo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "first.bin").write_bytes(os.urandom(1 << 20))
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    first = snapshot_ids(repo)
    (src / "big.bin").write_bytes(os.urandom(12 << 20))  # does not fit
    r = coffer("backup", "src", repo=repo, cwd=tmp_path, check=False)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "no space left on device" in err.lower() and "Traceback" not in err, err
    assert snapshot_ids(repo) == first
    no_partial_files(repo)
    restic("--no-lock", "check", "--read-data", repo=repo)
    target = tmp_path / "restored"
    restic("--no-lock", "restore", "latest", "--target", str(target), repo=repo)
    assert (target / "src" / "first.bin").read_bytes() == (src / "first.bin").read_bytes()
    # space freed: the same backup succeeds
    resize(small_fs, "64m")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    assert len(snapshot_ids(repo)) == 2
    restic("check", "--read-data", repo=repo)
    target = tmp_path / "restored2"
    restic("restore", "latest", "--target", str(target), repo=repo)
    assert_trees_equal(src, target / "src")


def test_disk_full_during_prune(small_fs: Path, tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    h = make_history(init_repo(small_fs / "repo"), tmp_path / "work", versions=6, file_size=200_000,
                     pack_size="256k", in_process=True)
    coffer("forget", *[s.id for s in h.snaps[:3]], repo=h.repo)
    kept = h.snaps[3:]
    filler = fill(small_fs, leave=96 * 1024)  # room for a lock and an index file, not for repacking
    r = coffer("prune", "--max-unused", "0", repo=h.repo, check=False)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "repacking packs" in r.stdout.decode(), "the prune was to fail while repacking, not before"
    assert "no space left on device" in err.lower() and "Traceback" not in err, err
    no_partial_files(h.repo)
    restic("--no-lock", "check", "--read-data", repo=h.repo)
    for s in kept:
        restore_and_compare(restic, h.repo, s, tmp_path / "r")
    # low-space mode: only deletes (whole unused packs), so it runs and frees space
    before = repo_size(h.repo)
    coffer("prune", "--max-repack-size", "0", repo=h.repo)
    assert repo_size(h.repo) < before
    restic("--no-lock", "check", "--read-data", repo=h.repo)
    # space freed: the full prune succeeds
    for p in filler:
        p.unlink()
    coffer("prune", "--max-unused", "0", repo=h.repo)
    no_partial_files(h.repo)
    restic("check", "--read-data", repo=h.repo)
    for s in kept:
        restore_and_compare(restic, h.repo, s, tmp_path / "r")
