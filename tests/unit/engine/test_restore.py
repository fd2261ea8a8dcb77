"""The restore engine on real repositories: what a backup stored comes back byte- and metadata-identical.

Every test backs up a small tree with coffer's own Archiver into a fresh repository, restores it
with ``coffer.engine.restore.restore`` and compares the result with the source using
``helpers.treecompare`` (content hashes, mode incl. setuid/sticky, owner, mtime in ns, symlink
targets, hard-link groups, xattrs).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from coffer.engine import restore as restore_mod
from coffer.engine.backup import Archiver, BackupRequest
from coffer.engine.progress import Progress
from coffer.engine.restore import RestoreOptions, RestoreResult, restore
from coffer.errors import RestoreError
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf
from coffer.store.format.pack import BlobType
from coffer.store.repository import Repository
from helpers.sourcetree import make_tree, write_random, write_text
from helpers.treecompare import assert_trees_equal, snapshot_tree

PW = "pw"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)
KiB = 1024
MiB = 1024 * KiB
IS_ROOT = os.geteuid() == 0


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository.init(LocalBackend(str(tmp_path / "repo")), PW, params=FAST_KDF)
    r.load_index()
    return r


def backup(repo: Repository, *paths: Path) -> bytes:
    """Back up and return the snapshot's root tree ID (read back from a freshly opened repository)."""
    snap = Archiver(repo, BackupRequest(paths=[str(p) for p in paths])).run().snapshot
    fresh = Repository.open(repo.backend, PW)
    fresh.load_index()
    repo.index = fresh.index
    return fresh.load_snapshot(snap.id).tree


def inside(target: Path, src: Path) -> Path:
    """Where ``src`` (an absolute path that was backed up) lands in a restore target."""
    return target / str(src).lstrip("/")


def run(repo: Repository, tree: bytes, target: Path, **kw: object) -> RestoreResult:
    return restore(repo, tree, RestoreOptions(target=str(target), **kw))  # type: ignore[arg-type]


def clean(res: RestoreResult) -> RestoreResult:
    assert res.errors == [], res.errors
    assert res.verify_errors == [], res.verify_errors
    return res


def listing(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def varied_tree(root: Path) -> Path:
    """The shared variety tree plus what this engine must handle specially."""
    make_tree(root)
    os.symlink(b"target-\xff\xfe-raw", os.fsencode(str(root)) + b"/rawlink")
    os.mkdir(root / "setgid-dir")
    os.chmod(root / "setgid-dir", 0o2750)
    (root / "setgid-dir" / "inner.txt").write_text("inner")
    os.utime(root / "setgid-dir" / "inner.txt", ns=(1_500_000_000_000_000_001, 1_500_000_000_999_999_999))
    bad_dir = os.fsencode(str(root)) + b"/dir-\xe9"
    os.mkdir(bad_dir)
    with open(bad_dir + b"/\x01ctl\nnewline", "wb") as f:
        f.write(b"control chars in a name")
    os.link(root / "sub" / "deeper" / "r.bin", root / "r-link.bin")  # a hard link across directories
    os.link(root / "sub" / "deeper" / "r.bin", root / "setgid-dir" / "r-link2.bin")
    (root / "dup1.bin").write_bytes((root / "sub" / "deeper" / "r.bin").read_bytes())  # same blob, no link
    if IS_ROOT:
        os.chown(root / "small.txt", 1234, 5678)
        os.lchown(root / "link", 4321, 8765)
        os.mknod(root / "nulldev", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(root / "nulldev", 0o620)  # mknod's mode is subject to the umask
    os.utime(root / "link", ns=(1_400_000_000_000_000_007, 1_400_000_000_000_000_007), follow_symlinks=False)
    os.utime(root / "sticky", ns=(1_300_000_000_000_000_003, 1_300_000_000_000_000_003))
    return root


# ------------------------------------------------------------------------------------------ round trips
def test_round_trip_preserves_content_and_metadata(repo: Repository, tmp_path: Path) -> None:
    src = varied_tree(tmp_path / "src")
    tree = backup(repo, src)
    target = tmp_path / "out"
    res = clean(run(repo, tree, target, verify=True))
    assert_trees_equal(src, inside(target, src), ignore_root_times=False)
    # restic stores atime = mtime, so that is what comes back
    s = os.stat(inside(target, src) / "small.txt")
    assert s.st_atime_ns == s.st_mtime_ns == 1_600_000_000_123_456_789
    assert stat.S_IMODE(os.stat(inside(target, src) / "exec.sh").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(inside(target, src) / "sticky").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(inside(target, src) / "setgid-dir").st_mode) == 0o2750
    assert os.readlink(os.fsencode(str(inside(target, src))) + b"/rawlink") == b"target-\xff\xfe-raw"
    assert os.readlink(inside(target, src) / "dangling") == "/nonexistent/target"
    assert stat.S_ISFIFO(os.lstat(inside(target, src) / "fifo").st_mode)
    assert os.path.getsize(inside(target, src) / "empty") == 0
    assert res.hardlinks == 3  # hardlink.txt, and two more links to r.bin
    assert res.files_verified == res.files - res.hardlinks
    assert res.bytes == sum(
        m.size for rel, m in snapshot_tree(src).items() if m.kind == "file" and (m.link_group in (None, rel))
    )
    # no temporary files left anywhere
    assert not [n for n in listing(target) if "coffer-tmp" in n]


@pytest.mark.skipif(not IS_ROOT, reason="device nodes and foreign owners need root")
def test_device_nodes_and_ownership_as_root(repo: Repository, tmp_path: Path) -> None:
    src = varied_tree(tmp_path / "src")
    tree = backup(repo, src)
    target = tmp_path / "out"
    clean(run(repo, tree, target))
    dev = os.lstat(inside(target, src) / "nulldev")
    assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(dev.st_mode) == 0o620
    s = os.stat(inside(target, src) / "small.txt")
    assert (s.st_uid, s.st_gid) == (1234, 5678)
    ls = os.lstat(inside(target, src) / "link")
    assert (ls.st_uid, ls.st_gid) == (4321, 8765)


def test_xattrs(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    (src / "d").mkdir()
    try:
        os.setxattr(src / "f.txt", "user.one", b"1")
        os.setxattr(src / "f.txt", "user.bin", b"\x00\xff binary")
        os.setxattr(src / "d", "user.dir", b"on a directory")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("the file system does not support user xattrs")
        raise
    if IS_ROOT:
        os.setxattr(src / "f.txt", "trusted.coffer", b"trusted")
    tree = backup(repo, src)
    target = tmp_path / "out"
    clean(run(repo, tree, target))
    out = inside(target, src)
    assert os.getxattr(out / "f.txt", "user.one") == b"1"
    assert os.getxattr(out / "f.txt", "user.bin") == b"\x00\xff binary"
    assert os.getxattr(out / "d", "user.dir") == b"on a directory"
    if IS_ROOT:
        assert os.getxattr(out / "f.txt", "trusted.coffer") == b"trusted"
    assert_trees_equal(src, out, ignore_root_times=False)


def test_hardlink_groups(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    write_random(src / "a" / "one", 100_000, 1)
    os.link(src / "a" / "one", src / "b" / "one-again")
    os.link(src / "a" / "one", src / "z-third")
    (src / "a" / "two").write_text("two")
    os.link(src / "a" / "two", src / "b" / "two-again")
    (src / "empty").write_bytes(b"")
    os.link(src / "empty", src / "empty-link")
    tree = backup(repo, src)
    target = tmp_path / "out"
    res = clean(run(repo, tree, target))
    out = inside(target, src)
    ino = os.stat(out / "a" / "one").st_ino
    assert os.stat(out / "b" / "one-again").st_ino == ino == os.stat(out / "z-third").st_ino
    assert os.stat(out / "a" / "one").st_nlink == 3
    assert os.stat(out / "a" / "two").st_ino == os.stat(out / "b" / "two-again").st_ino
    assert os.stat(out / "empty").st_ino == os.stat(out / "empty-link").st_ino
    assert res.hardlinks == 4
    assert_trees_equal(src, out, ignore_root_times=False)

    # Only one member of a group selected: it is restored as a plain file.
    target2 = tmp_path / "out2"
    clean(run(repo, tree, target2, includes=[str(src / "b" / "one-again")]))
    one = inside(target2, src) / "b" / "one-again"
    assert one.read_bytes() == (src / "a" / "one").read_bytes()
    assert os.stat(one).st_nlink == 1


def test_sparse_restore_keeps_holes(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "holey.img"
    head = os.urandom(MiB)
    tail = os.urandom(MiB)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(32 * MiB, os.SEEK_CUR)
        f.write(tail)
    size = path.stat().st_size
    tree = backup(repo, src)

    target = tmp_path / "sparse"
    res = clean(run(repo, tree, target, sparse=True, verify=True))
    out = inside(target, src) / "holey.img"
    s = os.stat(out)
    assert s.st_size == size
    assert s.st_blocks * 512 < size // 4, f"{s.st_blocks * 512} bytes allocated for {size}"
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    assert res.files_verified == 1

    dense = tmp_path / "dense"
    clean(run(repo, tree, dense, sparse=False))
    d = inside(dense, src) / "holey.img"
    assert d.read_bytes() == path.read_bytes()
    assert os.stat(d).st_blocks * 512 >= size - MiB


def test_large_multi_blob_file_and_repeated_blobs(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    block = os.urandom(3 * MiB)
    (src / "repeated.bin").write_bytes(block * 4 + b"end")  # the same blobs several times in one file
    write_text(src / "text.txt", 5 * MiB, 3)
    write_random(src / "random.bin", 9 * MiB + 17, 4)
    repo.pack_size = 2 * MiB  # many packs, so blobs of one file come from several of them
    tree = backup(repo, src)
    progress = Progress()
    target = tmp_path / "out"
    res = restore(repo, tree, RestoreOptions(target=str(target), verify=True, workers=3), progress)
    clean(res)
    assert_trees_equal(src, inside(target, src), ignore_root_times=False)
    total = sum(os.path.getsize(src / n) for n in os.listdir(src))
    assert res.bytes == total
    assert progress.total_files == 3 and progress.files_done == 3
    assert progress.total_bytes == total and progress.bytes_done == total
    assert progress.scan_finished


def test_subpath(repo: Repository, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big=False)
    tree = backup(repo, src)
    target = tmp_path / "out"
    clean(run(repo, tree, target, subpath=str(src / "sub")))
    assert listing(target) == {"deeper", "deeper/r.bin"}
    assert (target / "deeper" / "r.bin").read_bytes() == (src / "sub" / "deeper" / "r.bin").read_bytes()
    assert os.stat(target / "deeper").st_mtime_ns == os.stat(src / "sub" / "deeper").st_mtime_ns

    # a subpath naming a file restores just that file
    target2 = tmp_path / "out2"
    clean(run(repo, tree, target2, subpath=str(src / "small.txt")))
    assert listing(target2) == {"small.txt"}
    assert os.stat(target2 / "small.txt").st_mtime_ns == 1_600_000_000_123_456_789

    with pytest.raises(RestoreError, match="not found"):
        run(repo, tree, tmp_path / "out3", subpath=str(src / "nope"))
    with pytest.raises(RestoreError, match="not a directory"):
        run(repo, tree, tmp_path / "out4", subpath=str(src / "small.txt" / "x"))


def test_include(repo: Repository, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big=False)
    rel = str(src).lstrip("/")
    tree = backup(repo, src)

    t1 = tmp_path / "one-file"
    clean(run(repo, tree, t1, includes=[str(src / "sub" / "deeper" / "r.bin")]))
    parents = {"/".join(rel.split("/")[: i + 1]) for i in range(len(rel.split("/")))}
    assert listing(t1) == parents | {f"{rel}/sub", f"{rel}/sub/deeper", f"{rel}/sub/deeper/r.bin"}
    # parent directories are restored with their metadata
    assert os.stat(inside(t1, src) / "sub").st_mtime_ns == os.stat(src / "sub").st_mtime_ns
    assert os.stat(inside(t1, src)).st_mtime_ns == os.stat(src).st_mtime_ns

    t2 = tmp_path / "pattern"
    clean(run(repo, tree, t2, includes=["*.txt"]))
    got = {p[len(rel) + 1 :] for p in listing(t2) if p.startswith(rel + "/")}
    want = {n for n in os.listdir(src) if n.endswith(".txt")}
    assert got == want  # no empty directories (sub, sticky) dragged along

    t3 = tmp_path / "dir"
    clean(run(repo, tree, t3, includes=[str(src / "sub")]))
    assert (inside(t3, src) / "sub" / "deeper" / "r.bin").exists()  # inside a matched directory
    assert not (inside(t3, src) / "small.txt").exists()

    t4 = tmp_path / "icase"
    clean(run(repo, tree, t4, iincludes=["*.TXT"]))
    assert (inside(t4, src) / "small.txt").exists()


def test_exclude(repo: Repository, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big=False)
    tree = backup(repo, src)
    t1 = tmp_path / "a"
    clean(run(repo, tree, t1, excludes=["*.txt", str(src / "sub")]))
    names = set(os.listdir(inside(t1, src)))
    assert "sub" not in names and "small.txt" not in names and "hardlink.txt" not in names
    assert {"empty", "text.log", "link", "fifo", "sticky"} <= names
    # excluded and included: exclude wins
    t2 = tmp_path / "b"
    clean(run(repo, tree, t2, includes=[str(src / "sub")], excludes=["r.bin"]))
    assert (inside(t2, src) / "sub" / "deeper").is_dir()
    assert not (inside(t2, src) / "sub" / "deeper" / "r.bin").exists()


# ------------------------------------------------------------------------------------------ damage
def _flip_byte_in_blob(repo: Repository, blob_id: bytes, delta: int = 100) -> bytes:
    loc = repo.index.lookup(BlobType.DATA, blob_id)
    assert loc is not None
    backend = repo.backend
    assert isinstance(backend, LocalBackend)
    fn = backend.filename(Handle(FileType.PACK, loc.pack_id.hex()))
    os.chmod(fn, 0o600)
    with open(fn, "r+b") as f:
        f.seek(loc.blob.offset + min(delta, loc.blob.length - 17))
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    return loc.pack_id


def _content_of(repo: Repository, tree: bytes, *path: str) -> list[bytes]:
    nodes = repo.load_tree(tree)
    for i, name in enumerate(path):
        node = next(n for n in nodes if n.name == name.encode())
        if i == len(path) - 1:
            assert node.content is not None
            return node.content
        assert node.subtree is not None
        nodes = repo.load_tree(node.subtree)
    raise AssertionError("unreachable")


def _damaged_setup(repo: Repository, tmp_path: Path) -> tuple[Path, bytes]:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    write_random(src / "victim.bin", 9 * MiB, 11)  # at least two blobs whatever the polynomial (max 8 MiB)
    write_random(src / "d" / "ok1.bin", 700_000, 12)
    write_text(src / "d" / "ok2.txt", 200_000, 13)
    (src / "small.txt").write_text("fine\n")
    repo.pack_size = 512 * KiB
    return src, backup(repo, src)


def test_corrupted_blob_fails_only_the_affected_files(repo: Repository, tmp_path: Path) -> None:
    src, tree = _damaged_setup(repo, tmp_path)
    comps = [*str(src).strip("/").split("/"), "victim.bin"]
    content = _content_of(repo, tree, *comps)
    assert len(content) >= 2
    pack_id = _flip_byte_in_blob(repo, content[1])
    target = tmp_path / "out"
    res = run(repo, tree, target, verify=True)
    assert len(res.errors) == 1, res.errors
    path, msg = res.errors[0]
    assert path == "/" + "/".join(comps)
    assert pack_id.hex()[:8] in msg and content[1].hex()[:8] in msg
    out = inside(target, src)
    assert not (out / "victim.bin").exists()
    assert not [n for n in os.listdir(out) if "coffer-tmp" in n]
    assert_trees_equal(src, out, ignore_paths=[b"victim.bin"], ignore_root_times=True)
    assert res.verify_errors == []


def test_missing_pack_fails_only_the_affected_files(repo: Repository, tmp_path: Path) -> None:
    src, tree = _damaged_setup(repo, tmp_path)
    comps = [*str(src).strip("/").split("/"), "d", "ok1.bin"]
    content = _content_of(repo, tree, *comps)
    loc = repo.index.lookup(BlobType.DATA, content[0])
    assert loc is not None
    affected = {
        name for name in ("victim.bin", "d/ok1.bin", "d/ok2.txt", "small.txt")
        if any(
            (lc := repo.index.lookup(BlobType.DATA, b)) is not None and lc.pack_id == loc.pack_id
            for b in _content_of(repo, tree, *str(src).strip("/").split("/"), *name.split("/"))
        )
    }
    repo.backend.remove(Handle(FileType.PACK, loc.pack_id.hex()))
    target = tmp_path / "out"
    res = run(repo, tree, target)
    assert {p for p, _ in res.errors} == {str(src / n) for n in affected}
    assert all(loc.pack_id.hex()[:8] in m for _, m in res.errors)
    out = inside(target, src)
    for n in affected:
        assert not (out / n).exists()
    assert affected
    assert_trees_equal(src, out, ignore_paths=[n.encode() for n in affected], ignore_root_times=True)


def test_shared_damaged_blob_names_every_file(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(100_000)
    for n in ("a.bin", "b.bin", "c.bin"):
        (src / n).write_bytes(data)
    (src / "other.bin").write_bytes(os.urandom(100_000))
    tree = backup(repo, src)
    content = _content_of(repo, tree, *str(src).strip("/").split("/"), "a.bin")
    _flip_byte_in_blob(repo, content[0])
    res = run(repo, tree, tmp_path / "out")
    assert sorted(p for p, _ in res.errors) == [str(src / n) for n in ("a.bin", "b.bin", "c.bin")]
    assert (inside(tmp_path / "out", src) / "other.bin").read_bytes() == (src / "other.bin").read_bytes()


# ------------------------------------------------------------------------------------------ overwrite
def test_restore_twice_into_the_same_target(repo: Repository, tmp_path: Path) -> None:
    src = varied_tree(tmp_path / "src")
    tree = backup(repo, src)
    target = tmp_path / "out"
    clean(run(repo, tree, target))
    out = inside(target, src)
    # disturb the first restore in every way a second one must repair
    (out / "text.log").write_text("changed")
    os.chmod(out / "exec.sh", 0o600)
    os.unlink(out / "small.txt")
    os.symlink(src / "big.bin", out / "small.txt")  # a planted symlink where a file goes
    os.unlink(out / "link")
    os.mkdir(out / "link")  # a directory where a symlink goes
    (out / "link" / "junk").write_text("junk")
    shutil.rmtree(out / "sub")
    (out / "sub").write_text("a file where a directory goes")
    (out / ".empty.coffer-tmp-0123456789abcdef").write_text("left by an interrupted run")
    (target / ".coffer-tmp-fedcba9876543210").write_text("in the target itself")
    before = (src / "big.bin").read_bytes()
    res = clean(run(repo, tree, target, verify=True))
    assert_trees_equal(src, out, ignore_root_times=False)
    assert not [n for n in listing(target) if "coffer-tmp" in n]
    assert (src / "big.bin").read_bytes() == before  # nothing written through the planted symlink
    assert res.skipped == 0

    # and a third time, untouched, still fine
    clean(run(repo, tree, target))
    assert_trees_equal(src, out, ignore_root_times=False)


def test_no_overwrite_leaves_existing_items(repo: Repository, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big=False)
    tree = backup(repo, src)
    target = tmp_path / "out"
    out = inside(target, src)
    out.mkdir(parents=True)
    (out / "small.txt").write_text("mine")
    res = clean(run(repo, tree, target, overwrite=False))
    assert (out / "small.txt").read_text() == "mine"
    assert res.skipped == 1
    assert (out / "text.log").read_bytes() == (src / "text.log").read_bytes()
    # the hard link partner of small.txt is restored on its own
    assert (out / "hardlink.txt").read_bytes() == (src / "small.txt").read_bytes()


# ------------------------------------------------------------------------------------------ internals
def test_small_descriptor_caches(repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deep and wide trees with tiny fd caches: eviction and re-opening never lose a write."""
    monkeypatch.setattr(restore_mod, "DIR_FD_CACHE", 2)
    monkeypatch.setattr(restore_mod, "FILE_FD_CACHE", 1)
    src = tmp_path / "src"
    deep = src
    for i in range(12):
        deep = deep / f"level{i}"
        for j in range(3):
            (deep / f"side{j}").mkdir(parents=True)
            (deep / f"side{j}" / "f.txt").write_text(f"{i}-{j}")
    write_random(deep / "big.bin", 2 * MiB + 1, 5)
    os.link(deep / "big.bin", src / "top-link.bin")
    repo.pack_size = 256 * KiB
    tree = backup(repo, src)
    target = tmp_path / "out"
    clean(run(repo, tree, target, verify=True, workers=4))
    assert_trees_equal(src, inside(target, src), ignore_root_times=False)


def test_verify_file_detects_mismatch(tmp_path: Path) -> None:
    a, b = os.urandom(1000), os.urandom(500)
    p = tmp_path / "f"
    p.write_bytes(a + b)
    blobs = [(hashlib.sha256(a).digest(), len(a)), (hashlib.sha256(b).digest(), len(b))]
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert restore_mod._verify_file(dfd, b"f", 1500, blobs) is None
        with open(p, "r+b") as f:
            f.seek(1200)
            f.write(b"X")
        msg = restore_mod._verify_file(dfd, b"f", 1500, blobs)
        assert msg is not None and "offset 1000" in msg
        assert "size" in (restore_mod._verify_file(dfd, b"f", 1501, blobs) or "")
    finally:
        os.close(dfd)


def test_target_that_cannot_be_created(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    tree = backup(repo, src)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RestoreError, match="target"):
        run(repo, tree, tmp_path / "file" / "sub")


@pytest.mark.parametrize("name", [b"..", b".", b"", b"a/b", b"/etc", b"nul\x00"])
def test_invalid_name_predicate(name: bytes) -> None:
    assert restore_mod.invalid_name(name)


@pytest.mark.parametrize("name", [b"...", b".hidden", b"a\\b", b"\xff", b"C:x"])
def test_valid_names(name: bytes) -> None:
    assert not restore_mod.invalid_name(name)


def test_progress_warnings(repo: Repository, tmp_path: Path) -> None:
    src, tree = _damaged_setup(repo, tmp_path)
    content = _content_of(repo, tree, *str(src).strip("/").split("/"), "small.txt")
    _flip_byte_in_blob(repo, content[0], delta=20)
    seen: list[str] = []
    progress = Progress()
    progress.on_warning = lambda w: seen.append(w.path)
    res = restore(repo, tree, RestoreOptions(target=str(tmp_path / "out")), progress)
    assert seen == [str(src / "small.txt")] == [p for p, _ in res.errors]



def test_hardlinks_counted_once_in_progress(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "a", 300_000, 1)
    os.link(src / "a", src / "b")
    (src / "c").write_text("c")
    tree = backup(repo, src)
    progress = Progress()
    res = clean(restore(repo, tree, RestoreOptions(target=str(tmp_path / "out")), progress))
    assert progress.total_bytes == progress.bytes_done == res.bytes == 300_001
    assert progress.total_files == progress.files_done == 3


@pytest.mark.parametrize("as_root", [True, False])
def test_chown_eperm_is_silent_only_for_non_root(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_root: bool
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    tree = backup(repo, src)

    def eperm(*_a: object, **_k: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(restore_mod, "_IS_ROOT", as_root)
    monkeypatch.setattr(restore_mod.os, "fchown", eperm)
    res = run(repo, tree, tmp_path / "out")
    if as_root:
        assert res.errors and all("chown" in m for _, m in res.errors)
    else:
        assert res.errors == []
    assert (inside(tmp_path / "out", src) / "f").read_text() == "x"  # content restored either way


def die_on_write(monkeypatch: pytest.MonkeyPatch, n: int) -> Any:
    """Interrupt the restore (as Ctrl-C would) on the main thread's ``n``-th batch of results;
    returns the real method, to put back for the rerun."""
    calls = 0
    real_write = restore_mod._Restorer._write

    def write_then_die(self: restore_mod._Restorer, job: object, results: object) -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            raise KeyboardInterrupt
        real_write(self, job, results)  # type: ignore[arg-type]

    monkeypatch.setattr(restore_mod._Restorer, "_write", write_then_die)
    return real_write


def test_interrupted_restore_of_single_blob_files(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of one blob are written and renamed by the fetching worker itself: interrupted, every
    file under its final name is whole, no temporary file is left, and a rerun completes."""
    src = tmp_path / "src"
    for d in range(8):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(8):
            write_random(src / f"d{d}" / f"f{i}.bin", 20 * KiB + i, d * 8 + i)
    repo.pack_size = 64 * KiB  # many packs: many reads, so the interruption comes mid-way
    tree = backup(repo, src)
    whole = 0
    real_whole = restore_mod._Restorer._write_whole

    def count_whole(self: restore_mod._Restorer, f: object, data: bytes) -> str | None:
        nonlocal whole
        whole += 1
        return real_whole(self, f, data)  # type: ignore[arg-type]

    real_write = die_on_write(monkeypatch, 2)
    monkeypatch.setattr(restore_mod._Restorer, "_write_whole", count_whole)
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(repo, tree, target, workers=2)
    assert whole > 0  # the path under test was taken
    out = inside(target, src)
    for root, _, names in os.walk(out):
        assert not [n for n in names if "coffer-tmp" in n]
        for n in names:
            p = Path(root) / n
            assert p.read_bytes() == (src / p.relative_to(out)).read_bytes()
    monkeypatch.setattr(restore_mod._Restorer, "_write", real_write)
    clean(run(repo, tree, target))
    assert_trees_equal(src, out, ignore_root_times=False)


def test_interrupted_restore_leaves_no_partial_files(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T4: killed mid-way, nothing under a final name is incomplete; a rerun gives the right tree."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):  # several blobs each: finished by the main thread once all are written
        write_random(src / f"f{i}.bin", 4 * MiB + i, i)
    repo.pack_size = 512 * KiB
    tree = backup(repo, src)
    real_write = die_on_write(monkeypatch, 4)
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(repo, tree, target)
    out = inside(target, src)
    names = os.listdir(out)
    assert not [n for n in names if "coffer-tmp" in n]
    assert len(names) < 6
    for n in names:
        assert (out / n).read_bytes() == (src / n).read_bytes()
    monkeypatch.setattr(restore_mod._Restorer, "_write", real_write)
    clean(run(repo, tree, target))
    assert_trees_equal(src, out, ignore_root_times=False)
