"""coffer restores what restic 0.14 backed up: content and metadata equal to the source, and equal
to what ``restic restore`` itself produces (also with --include / --exclude)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from coffer.engine.restore import RestoreOptions, RestoreResult, restore
from coffer.store.backend.local import LocalBackend
from coffer.store.repository import Repository
from helpers.sourcetree import make_tree, write_random, write_text
from helpers.treecompare import assert_trees_equal, snapshot_tree

pytestmark = [
    pytest.mark.restic,
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic binary not installed"),
]

PASSWORD = "compat-restore"
MiB = 1024 * 1024
IS_ROOT = os.geteuid() == 0


def restic(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(repo))
    proc = subprocess.run(["restic", "--no-cache", "--quiet", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, f"restic {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def build_source(root: Path) -> Path:
    make_tree(root)  # sizes, odd names, symlinks, a hard-link pair, setuid, sticky, FIFO, xattr
    os.mkdir(root / "setgid-dir")
    os.chmod(root / "setgid-dir", 0o2750)
    (root / "setgid-dir" / "inner.txt").write_text("inner")
    os.utime(root / "setgid-dir" / "inner.txt", ns=(1_500_000_000_000_000_001, 1_500_000_000_999_999_999))
    bad = os.fsencode(str(root)) + b"/dir-\xe9"
    os.mkdir(bad)
    with open(bad + b"/\x01ctl\nnewline", "wb") as f:
        f.write(b"control characters in a name")
    os.link(root / "sub" / "deeper" / "r.bin", root / "r-link.bin")
    os.link(root / "sub" / "deeper" / "r.bin", root / "setgid-dir" / "r-link2.bin")
    (root / "empty-dir").mkdir()
    write_text(root / "sub" / "compressible.txt", 3 * MiB, 9)
    write_random(root / "sub" / "random.bin", 5 * MiB + 3, 10)
    with open(root / "holey.img", "wb") as f:
        f.write(os.urandom(100_000))
        f.seek(20 * MiB, os.SEEK_CUR)
        f.write(b"tail")
    try:
        os.setxattr(root / "sub", "user.dirattr", b"on a directory")
        os.setxattr(root / "text.log", "user.bin", b"\x00\x01\xff")
    except OSError:
        pass
    if IS_ROOT:
        os.chown(root / "small.txt", 1234, 5678)
        os.lchown(root / "link", 4321, 8765)
        os.chown(root / "sub", 111, 222)
        os.mknod(root / "nulldev", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(root / "nulldev", 0o620)
    os.utime(root / "link", ns=(1_400_000_000_000_000_007, 1_400_000_000_000_000_007), follow_symlinks=False)
    os.utime(root / "sticky", ns=(1_300_000_000_000_000_003, 1_300_000_000_000_000_003))
    return root


@pytest.fixture(scope="module")
def restic_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """(repository, source, root tree ID) of a restic 0.14 backup of the varied tree."""
    base = tmp_path_factory.mktemp("restore-compat")
    src = build_source(base / "src")
    repo = base / "repo"
    restic(repo, "init")
    restic(repo, "backup", "--pack-size", "4", str(src))
    snaps = json.loads(restic(repo, "snapshots", "--json"))
    assert len(snaps) == 1
    return repo, src, bytes.fromhex(snaps[0]["tree"])


def coffer_restore(repo_dir: Path, tree: bytes, target: Path, **kw: object) -> RestoreResult:
    repo = Repository.open(LocalBackend(str(repo_dir)), PASSWORD)
    repo.load_index()
    res = restore(repo, tree, RestoreOptions(target=str(target), **kw))  # type: ignore[arg-type]
    assert res.errors == [] and res.verify_errors == [], (res.errors, res.verify_errors)
    return res


def inside(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


def test_coffer_restores_a_restic_snapshot_exactly(restic_repo: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    repo, src, tree = restic_repo
    res = coffer_restore(repo, tree, tmp_path / "out", verify=True)
    out = inside(tmp_path / "out", src)
    assert_trees_equal(src, out, ignore_root_times=False)
    assert res.hardlinks == 3 and res.files_verified == res.files - res.hardlinks
    if IS_ROOT:
        assert os.stat(out / "small.txt").st_uid == 1234
        assert os.lstat(out / "nulldev").st_rdev == os.makedev(1, 3)
    # restic records atime = mtime; that is what a restore gives back
    s = os.stat(out / "small.txt")
    assert s.st_atime_ns == s.st_mtime_ns == 1_600_000_000_123_456_789


def test_same_result_as_restic_restore(restic_repo: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    repo, _src, tree = restic_repo
    restic(repo, "restore", "latest", "--target", str(tmp_path / "restic"))
    coffer_restore(repo, tree, tmp_path / "coffer", sparse=True)
    a, b = snapshot_tree(tmp_path / "restic"), snapshot_tree(tmp_path / "coffer")
    assert_trees_equal(a, b, ignore_root_times=True)


@pytest.mark.parametrize(
    ("flag", "patterns"),
    [
        ("--include", ["{src}/sub/deeper"]),
        ("--include", ["*.txt"]),
        ("--include", ["{src}/small.txt", "r.bin"]),
        ("--exclude", ["*.bin", "{src}/sticky"]),
        ("--exclude", ["sub"]),
    ],
)
def test_filters_match_restic(
    restic_repo: tuple[Path, Path, bytes], tmp_path: Path, flag: str, patterns: list[str]
) -> None:
    repo, src, tree = restic_repo
    pats = [p.format(src=src) for p in patterns]
    args = [x for p in pats for x in (flag, p)]
    restic(repo, "restore", "latest", "--target", str(tmp_path / "restic"), *args)
    kw = {"includes": pats} if flag == "--include" else {"excludes": pats}
    coffer_restore(repo, tree, tmp_path / "coffer", **kw)
    a, b = snapshot_tree(tmp_path / "restic"), snapshot_tree(tmp_path / "coffer")
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    assert_trees_equal(a, b, ignore_root_times=True)


def test_sparse_restore_of_a_restic_snapshot(restic_repo: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    repo, src, tree = restic_repo
    coffer_restore(repo, tree, tmp_path / "out", sparse=True, verify=True, includes=[str(src / "holey.img")])
    out = inside(tmp_path / "out", src) / "holey.img"
    s = os.stat(out)
    assert s.st_size == os.path.getsize(src / "holey.img")
    assert s.st_blocks * 512 < 2 * MiB
    assert out.read_bytes() == (src / "holey.img").read_bytes()
