"""Restore from a hostile repository never writes outside the target (reliability T31, T32).

The trees here are written directly with the repository's key, so they carry a valid MAC but
contain what no honest backup produces: names that climb (``..``), contain separators or NUL, a
symlink followed by a "file" whose name goes through it, duplicate names, hard-link groups that
mix a symlink with a file. Targets also get planted symlinks pointing at a victim directory.

After every restore the victim directory (a sibling of the target) must be unchanged, byte for
byte and in its metadata, and the directory holding both must list nothing new. Every case runs
twice: through the engine in this process, and through ``coffer restore``, whose forked restore
workers walk the trees themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffer.engine.restore import RestoreIssue, RestoreOptions, RestoreResult, restore
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf, tree
from coffer.store.format.pack import BlobType
from coffer.store.format.snapshot import Snapshot
from coffer.store.format.tree import GO_DIR, GO_SYMLINK, Node
from coffer.store.repository import Repository
from conftest import COFFER, _env
from helpers.treecompare import EntryMeta, assert_trees_equal, snapshot_tree

PW = "pw"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)
T = "2024-05-06T07:08:09.123456789Z"
PWNED = b"pwned by a hostile snapshot\n"


# ------------------------------------------------------------------------------------------ fixtures
@dataclass
class World:
    base: Path  # holds exactly "target" and "victim"
    target: Path
    victim: Path
    repo: Repository
    engine: str  # "in-process" or "forked-workers" (through the CLI)

    def check_untouched(self, before: dict[bytes, EntryMeta]) -> None:
        assert sorted(os.listdir(self.base)) == ["target", "victim"]
        assert_trees_equal(before, snapshot_tree(self.victim), ignore_root_times=False)
        assert not os.path.lexists("/etc/coffer-escape")
        assert not os.path.lexists("/coffer-escape")


@pytest.fixture(params=["in-process", "forked-workers"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    base = tmp_path / "work"
    victim = base / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (victim / "file.txt").write_text("precious\n")
    (victim / "sub" / "x").write_text("also precious\n")
    target = base / "target"
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), PW, params=FAST_KDF)
    repo.load_index()
    yield World(base, target, victim, repo, request.param)


def data(repo: Repository, content: bytes) -> list[bytes]:
    return [repo.save_blob(BlobType.DATA, content)[0]] if content else []


def fnode(repo: Repository, name: bytes, content: bytes = PWNED, *, inode: int = 0, device_id: int = 0,
          links: int = 1) -> Node:
    return Node(name=name, type="file", mode=0o644, mtime=T, atime=T, ctime=T, content=data(repo, content),
                size=len(content), inode=inode, device_id=device_id, links=links)


def dnode(name: bytes, subtree: bytes) -> Node:
    return Node(name=name, type="dir", mode=GO_DIR | 0o755, mtime=T, atime=T, ctime=T, subtree=subtree)


def lnode(name: bytes, target: bytes | str, *, inode: int = 0, device_id: int = 0, links: int = 1) -> Node:
    return Node(name=name, type="symlink", mode=GO_SYMLINK | 0o777, mtime=T, atime=T, ctime=T,
                linktarget=os.fsencode(target), inode=inode, device_id=device_id, links=links)


def save_tree(repo: Repository, nodes: list[Node], *, raw_order: bool = False) -> bytes:
    """A tree blob with a valid MAC. ``raw_order`` keeps the given order (duplicates allowed)."""
    if raw_order:
        blob = tree.encode_tree_parts([n.to_json() for n in nodes])
    else:
        blob = tree.encode_tree(sorted(nodes, key=lambda n: n.name))
    return repo.save_blob(BlobType.TREE, blob)[0]


def snapshot(repo: Repository, root: bytes) -> bytes:
    """Save a snapshot for ``root`` and return its tree ID as read back from a fresh open."""
    repo.flush()
    snap = Snapshot(time=T, tree=root, paths=["/hostile"], hostname="evil")
    repo.save_snapshot(snap)
    fresh = Repository.open(repo.backend, PW)
    fresh.load_index()
    repo.index = fresh.index
    return fresh.load_snapshot(snap.id).tree


def do_restore(w: World, root: bytes, **kw: object) -> RestoreResult:
    tree_id = snapshot(w.repo, root)
    if w.engine == "in-process":
        return restore(w.repo, tree_id, RestoreOptions(target=str(w.target), **kw))  # type: ignore[arg-type]
    assert set(kw) <= {"overwrite"}
    flags = [] if kw.get("overwrite", True) else ["--no-overwrite"]
    r = subprocess.run([COFFER, "--json", "restore", "latest", "--target", str(w.target), *flags],
                       env=_env(w.repo.backend.location, PW, {"COFFER_RESTORE_PROCESSES": "2"}),
                       capture_output=True, timeout=120)
    err = r.stderr.decode(errors="surrogateescape")
    assert "Traceback" not in err, err
    summary = json.loads(r.stdout.decode().strip().splitlines()[-1])
    res = RestoreResult(skipped=summary["files_skipped"])
    prefix = "ignoring error for "
    for line in err.splitlines():
        if line.startswith(prefix):
            path, _, msg = line[len(prefix):].partition(": ")
            res.errors.append(RestoreIssue(path, msg))
    res.errors.sort()
    return res


def invalid(res: RestoreResult) -> list[str]:
    return sorted(p for p, m in res.errors if "invalid node name" in m)


# ------------------------------------------------------------------------------------------ T31: names
def test_names_that_climb_or_contain_separators_are_refused(world: World) -> None:
    r = world.repo
    before = snapshot_tree(world.victim)
    escaped = save_tree(r, [fnode(r, b"escaped.txt"), fnode(r, b"passwd")])
    inner = save_tree(r, [fnode(r, b".."), fnode(r, b"fine.txt", b"fine\n")])
    root = save_tree(r, [
        fnode(r, b""),
        dnode(b".", escaped),
        dnode(b"..", escaped),
        fnode(r, b"../x"),
        fnode(r, b"../victim/passwd"),
        fnode(r, b"../../coffer-escape"),
        fnode(r, b"/etc/coffer-escape"),
        fnode(r, b"/coffer-escape"),
        fnode(r, b"a\x00b"),
        fnode(r, b"sub/../../x"),
        fnode(r, b"x" * 300),  # too long for any file system: an error, not a crash
        dnode(b"d", inner),
        fnode(r, b"ok.txt", b"ok\n"),
        fnode(r, b"C:\\x", b"just a name on POSIX\n"),
        fnode(r, b"..\\x", b"just a name on POSIX\n"),
    ])
    res = do_restore(world, root)
    world.check_untouched(before)
    assert invalid(res) == sorted([
        "/", "/.", "/..", "/../x", "/../victim/passwd", "/../../coffer-escape", "//etc/coffer-escape",
        "//coffer-escape", "/a\\x00b", "/sub/../../x", "/d/..",
    ])
    assert any(p == "/" + "x" * 300 for p, _ in res.errors)
    assert (world.target / "ok.txt").read_bytes() == b"ok\n"
    assert (world.target / "d" / "fine.txt").read_bytes() == b"fine\n"
    assert sorted(os.listdir(world.target)) == sorted(["ok.txt", "d", "C:\\x", "..\\x"])
    assert os.listdir(world.target / "d") == ["fine.txt"]


# ------------------------------------------------------------------------------------------ T32: symlinks
def test_symlink_then_a_name_through_it(world: World) -> None:
    r = world.repo
    before = snapshot_tree(world.victim)
    chain = save_tree(r, [lnode(b"x", "../up"), fnode(r, b"x/passwd"), fnode(r, b"x/../../file.txt")])
    root = save_tree(r, [
        lnode(b"evil", str(world.victim)),
        fnode(r, b"evil/passwd"),
        fnode(r, b"evil/sub/x"),
        lnode(b"up", "../victim"),
        dnode(b"d", chain),
    ])
    res = do_restore(world, root)
    world.check_untouched(before)
    assert invalid(res) == ["/d/x/../../file.txt", "/d/x/passwd", "/evil/passwd", "/evil/sub/x"]
    assert os.readlink(world.target / "evil") == str(world.victim)
    assert os.readlink(world.target / "up") == "../victim"
    assert os.readlink(world.target / "d" / "x") == "../up"


@pytest.mark.parametrize("overwrite", [True, False])
def test_planted_symlinks_in_the_target_are_never_followed(world: World, overwrite: bool) -> None:
    r = world.repo
    before = snapshot_tree(world.victim)
    world.target.mkdir()
    os.symlink(world.victim, world.target / "evil")  # where the snapshot has a directory
    os.symlink(world.victim / "file.txt", world.target / "file.txt")  # where it has a file
    os.symlink(world.victim / "sub", world.target / "sub")  # where it has a symlink
    (world.target / "d").mkdir()
    os.symlink(world.victim / "passwd", world.target / "d" / "passwd")  # deeper, a file again
    evil = save_tree(r, [fnode(r, b"passwd"), fnode(r, b"new-file")])
    d = save_tree(r, [fnode(r, b"passwd")])
    root = save_tree(r, [dnode(b"evil", evil), fnode(r, b"file.txt"), lnode(b"sub", "elsewhere"), dnode(b"d", d)])
    res = do_restore(world, root, overwrite=overwrite)
    world.check_untouched(before)
    t = world.target
    if overwrite:
        assert res.errors == []
        assert not (t / "evil").is_symlink() and (t / "evil").is_dir()
        assert (t / "evil" / "passwd").read_bytes() == PWNED
        assert not (t / "file.txt").is_symlink() and (t / "file.txt").read_bytes() == PWNED
        assert os.readlink(t / "sub") == "elsewhere"
        assert not (t / "d" / "passwd").is_symlink() and (t / "d" / "passwd").read_bytes() == PWNED
    else:
        assert [p for p, _ in res.errors] == ["/evil"]
        assert res.skipped == 3
        assert os.readlink(t / "evil") == str(world.victim)
        assert os.readlink(t / "file.txt") == str(world.victim / "file.txt")
        assert os.readlink(t / "d" / "passwd") == str(world.victim / "passwd")


def test_planted_symlink_as_the_parent_of_a_subtree(world: World) -> None:
    """A deeper planted symlink: target/a/b -> victim, snapshot a/b/c/passwd."""
    r = world.repo
    before = snapshot_tree(world.victim)
    (world.target / "a").mkdir(parents=True)
    os.symlink(world.victim, world.target / "a" / "b")
    c = save_tree(r, [fnode(r, b"passwd")])
    b = save_tree(r, [dnode(b"c", c), fnode(r, b"file.txt")])
    a = save_tree(r, [dnode(b"b", b)])
    res = do_restore(world, save_tree(r, [dnode(b"a", a)]))
    world.check_untouched(before)
    assert res.errors == []
    assert (world.target / "a" / "b" / "c" / "passwd").read_bytes() == PWNED


# ------------------------------------------------------------------------------------------ hard links
def test_hardlink_group_mixing_a_symlink_and_a_file(world: World) -> None:
    """A "hard link" whose source is a symlink pointing outside: never linked, never followed."""
    r = world.repo
    before = snapshot_tree(world.victim)
    root = save_tree(r, [
        lnode(b"a-link", str(world.victim / "passwd"), inode=4242, device_id=7, links=2),
        fnode(r, b"b-file", inode=4242, device_id=7, links=2),
        fnode(r, b"c-file", b"", inode=4242, device_id=7, links=2),  # same group, empty: linked to b-file
        lnode(b"d-link", str(world.victim / "file.txt"), inode=4242, device_id=7, links=2),
    ])
    res = do_restore(world, root)
    world.check_untouched(before)
    assert res.errors == []
    t = world.target
    assert os.readlink(t / "a-link") == str(world.victim / "passwd")
    assert os.readlink(t / "d-link") == str(world.victim / "file.txt")
    assert (t / "b-file").read_bytes() == PWNED and not (t / "b-file").is_symlink()
    assert os.stat(t / "c-file").st_ino == os.stat(t / "b-file").st_ino
    assert os.lstat(t / "a-link").st_ino != os.stat(t / "b-file").st_ino


def test_hardlink_into_a_planted_symlink_directory(world: World) -> None:
    r = world.repo
    before = snapshot_tree(world.victim)
    world.target.mkdir()
    os.symlink(world.victim, world.target / "d")
    d = save_tree(r, [fnode(r, b"passwd", inode=99, device_id=1, links=2)])
    root = save_tree(r, [fnode(r, b"a-primary", inode=99, device_id=1, links=2), dnode(b"d", d)])
    res = do_restore(world, root)
    world.check_untouched(before)
    assert res.errors == []
    assert os.stat(world.target / "d" / "passwd").st_ino == os.stat(world.target / "a-primary").st_ino


# ------------------------------------------------------------------------------------------ malformed trees
@pytest.mark.parametrize("dir_first", [True, False])
def test_duplicate_names(world: World, dir_first: bool) -> None:
    r = world.repo
    before = snapshot_tree(world.victim)
    evil = save_tree(r, [fnode(r, b"passwd")])
    nodes = [lnode(b"evil", str(world.victim)), dnode(b"evil", evil)]
    if dir_first:
        nodes.reverse()
    res = do_restore(world, save_tree(r, nodes, raw_order=True))
    world.check_untouched(before)
    assert [(p, "duplicate" in m) for p, m in res.errors] == [("/evil", True)]
    if dir_first:
        assert (world.target / "evil" / "passwd").read_bytes() == PWNED
    else:
        assert os.readlink(world.target / "evil") == str(world.victim)


def test_missing_blob_and_missing_subtree(world: World) -> None:
    r = world.repo
    before = snapshot_tree(world.victim)
    ghost = bytes(range(32))
    root = save_tree(r, [
        Node(name=b"ghost-file", type="file", mode=0o644, mtime=T, atime=T, ctime=T, content=[ghost], size=5),
        dnode(b"ghost-dir", bytes(reversed(range(32)))),
        Node(name=b"null-content", type="file", mode=0o644, mtime=T, atime=T, ctime=T, content=None),
        fnode(r, b"ok.txt", b"ok\n"),
    ])
    res = do_restore(world, root)
    world.check_untouched(before)
    msgs = dict(res.errors)
    assert set(msgs) == {"/ghost-file", "/ghost-dir", "/null-content"}
    assert ghost.hex() in msgs["/ghost-file"]
    assert "cannot load tree" in msgs["/ghost-dir"]
    assert (world.target / "ok.txt").read_bytes() == b"ok\n"
    assert not (world.target / "ghost-file").exists()
    assert sorted(os.listdir(world.target)) == ["ghost-dir", "ok.txt"]
