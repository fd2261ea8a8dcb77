"""engine.diff on hand-built trees: modifiers, paths, statistics, and skipping identical subtrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffer.engine.diff import Change, Differ, diff, nodes_equal
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf
from coffer.store.format.pack import BlobType
from coffer.store.format.tree import GO_DIR, GO_SYMLINK, Node
from coffer.store.repository import Repository

PW = "pw"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)
T0 = "2024-01-01T00:00:00Z"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository.init(LocalBackend(str(tmp_path / "repo")), PW, params=FAST_KDF)
    r.load_index()
    return r


def data(repo: Repository, payload: bytes) -> bytes:
    return repo.save_blob(BlobType.DATA, payload)[0]


def f(repo: Repository, name: str, *chunks: bytes, mtime: str = T0, mode: int = 0o644) -> Node:
    content = [data(repo, c) for c in chunks]
    return Node(name=name.encode(), type="file", mode=mode, mtime=mtime, atime=mtime, ctime=mtime,
                size=sum(map(len, chunks)), content=content)


def d(repo: Repository, name: str, *children: Node, mtime: str = T0) -> Node:
    sub = repo.save_tree(sorted(children, key=lambda n: n.name))
    return Node(name=name.encode(), type="dir", mode=GO_DIR | 0o755, mtime=mtime, atime=mtime, ctime=mtime,
                subtree=sub)


def link(name: str, target: str) -> Node:
    return Node(name=name.encode(), type="symlink", mode=GO_SYMLINK | 0o777, mtime=T0, atime=T0, ctime=T0,
                linktarget=target.encode())


def root(repo: Repository, *children: Node) -> bytes:
    tid = repo.save_tree(sorted(children, key=lambda n: n.name))
    repo.flush()
    return tid


def as_text(changes: list[Change]) -> list[str]:
    return [f"{c.modifier} {c.path.decode()}" for c in changes]


def test_added_removed_modified_and_type_changes(repo: Repository) -> None:
    shared = d(repo, "shared", f(repo, "s.bin", b"shared data"))
    t1 = root(
        repo,
        f(repo, "a.txt", b"one"),
        f(repo, "gone.txt", b"gone"),
        d(repo, "olddir", f(repo, "x", b"x"), d(repo, "inner", f(repo, "y", b"y"))),
        f(repo, "kind", b"was a file"),
        shared,
    )
    t2 = root(
        repo,
        f(repo, "a.txt", b"one, changed"),
        d(repo, "newdir", f(repo, "n", b"n")),
        link("kind", "a.txt"),
        shared,
    )
    changes, st = diff(repo, t1, t2)
    assert as_text(changes) == [
        "M /a.txt",
        "- /gone.txt",
        "T /kind",
        "+ /newdir/",
        "+ /newdir/n",
        "- /olddir/",
        "- /olddir/inner/",
        "- /olddir/inner/y",
        "- /olddir/x",
    ]
    assert st.changed_files == 1
    assert (st.added.files, st.added.dirs, st.added.others) == (1, 1, 0)
    assert (st.removed.files, st.removed.dirs, st.removed.others) == (3, 2, 0)
    # data blobs: added "one, changed" and "n"; removed "one", "gone", "x", "y", "was a file"
    assert st.added.data_blobs == 2 and st.removed.data_blobs == 5
    assert st.added.bytes >= len(b"one, changed") + 1
    # trees: new root + newdir; old root + olddir + inner (shared/ is the same on both sides)
    assert st.added.tree_blobs == 2 and st.removed.tree_blobs == 3
    # reversed direction swaps the roles
    back, st2 = diff(repo, t2, t1)
    assert "+ /gone.txt" in as_text(back) and "- /newdir/" in as_text(back)
    assert (st2.added.files, st2.removed.files) == (st.removed.files, st.added.files)
    assert (st2.added.bytes, st2.removed.bytes) == (st.removed.bytes, st.added.bytes)


def test_identical_subtrees_are_not_compared(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    big = d(repo, "big", *[f(repo, f"f{i}", b"%d" % i) for i in range(20)],
            d(repo, "deep", f(repo, "z", b"z")))
    t1 = root(repo, big, f(repo, "a", b"old a"))
    t2 = root(repo, big, f(repo, "a", b"new a"))
    loads: list[bytes] = []
    orig = Repository.load_tree

    def counting(self: Repository, tree_id: bytes) -> list[Node]:
        loads.append(tree_id)
        return orig(self, tree_id)

    monkeypatch.setattr(Repository, "load_tree", counting)
    d_ = Differ(repo)
    assert as_text(list(d_.changes(t1, t2))) == ["M /a"]
    # roots once each for the comparison; the shared subtree and its child only once, to note their blobs
    assert big.subtree is not None and loads.count(big.subtree) == 1
    assert len(loads) == 4
    # shared blobs count as neither added nor removed
    assert d_.stats.added.data_blobs == 1 and d_.stats.removed.data_blobs == 1
    assert d_.stats.added.tree_blobs == 1 and d_.stats.removed.tree_blobs == 1


def test_same_tree_is_empty_diff(repo: Repository) -> None:
    t = root(repo, f(repo, "a", b"1"), d(repo, "x", f(repo, "b", b"2")))
    changes, st = diff(repo, t, t)
    assert changes == []
    assert st.added.bytes == st.removed.bytes == 0
    assert st.added.data_blobs == st.removed.tree_blobs == 0


def test_metadata_changes_only_with_flag(repo: Repository) -> None:
    t1 = root(repo, f(repo, "m", b"same", mtime="2024-01-01T00:00:00Z"), d(repo, "dd", f(repo, "c", b"c")))
    t2 = root(repo, f(repo, "m", b"same", mtime="2024-02-01T00:00:00Z"),
              d(repo, "dd", f(repo, "c", b"c"), mtime="2024-03-01T00:00:00Z"))
    assert diff(repo, t1, t2)[0] == []
    assert as_text(diff(repo, t1, t2, metadata=True)[0]) == ["U /dd/", "U /m"]


def test_content_change_wins_over_metadata_and_type_plus_metadata(repo: Repository) -> None:
    t1 = root(repo, f(repo, "a", b"1", mtime="2024-01-01T00:00:00Z"), f(repo, "k", b"k"))
    t2 = root(repo, f(repo, "a", b"2", mtime="2024-05-01T00:00:00Z"), link("k", "a"))
    assert as_text(diff(repo, t1, t2, metadata=True)[0]) == ["M /a", "TU /k"]


def test_empty_versus_null_content_is_a_modification(repo: Repository) -> None:
    a = Node(name=b"e", type="file", mtime=T0, atime=T0, ctime=T0, content=[])
    b = Node(name=b"e", type="file", mtime=T0, atime=T0, ctime=T0, content=None)
    t1 = root(repo, a)
    t2 = root(repo, b)
    assert as_text(diff(repo, t1, t2)[0]) == ["M /e"]


def test_nodes_equal_compares_times_as_instants() -> None:
    a = Node(name=b"n", type="file", mtime="2024-01-01T01:00:00+01:00", atime=T0, ctime=T0, content=[])
    b = Node(name=b"n", type="file", mtime="2024-01-01T00:00:00Z", atime=T0, ctime=T0, content=[])
    assert nodes_equal(a, b)
    c = Node(name=b"n", type="file", mtime="2024-01-01T00:00:00.000000001Z", atime=T0, ctime=T0, content=[])
    assert not nodes_equal(a, c)
    x1 = Node(name=b"n", type="file", mtime=T0, atime=T0, ctime=T0, xattrs=[("user.a", b"1"), ("user.b", b"2")])
    x2 = Node(name=b"n", type="file", mtime=T0, atime=T0, ctime=T0, xattrs=[("user.b", b"2"), ("user.a", b"1")])
    assert nodes_equal(x1, x2)
    x3 = Node(name=b"n", type="file", mtime=T0, atime=T0, ctime=T0, xattrs=[("user.a", b"1")])
    assert not nodes_equal(x1, x3)


def test_missing_blob_size_is_warned_not_fatal(repo: Repository) -> None:
    ghost = bytes(range(32))
    t1 = root(repo, f(repo, "a", b"1"))
    t2 = root(repo, Node(name=b"a", type="file", mtime=T0, atime=T0, ctime=T0, size=5, content=[ghost]))
    warnings: list[str] = []
    d_ = Differ(repo, warn=warnings.append)
    assert as_text(list(d_.changes(t1, t2))) == ["M /a"]
    loc = repo.index.lookup(BlobType.TREE, t2)
    assert loc is not None
    assert d_.stats.added.data_blobs == 1 and d_.stats.added.bytes == loc.blob.plain_length  # the root tree only
    assert warnings == [f"unable to find blob size for <data/{ghost.hex()[:8]}>"]


def test_deeply_nested_trees(repo: Repository) -> None:
    """Directory nesting far beyond Python's default recursion limit (1000 frames)."""
    depth = 1500

    def chain(leaf: bytes) -> bytes:
        node = f(repo, "leaf", leaf)
        for i in range(depth):
            node = d(repo, f"l{i}", node)
        return root(repo, node)

    t1, t2 = chain(b"old leaf"), chain(b"new leaf")
    changes, st = diff(repo, t1, t2)
    assert len(changes) == 1 and changes[0].modifier == "M"
    assert changes[0].path.count(b"/") == depth + 1
    assert st.added.tree_blobs == st.removed.tree_blobs == depth + 1
    from coffer.engine.find import NameFinder, NameQuery
    from coffer.engine.stats import collect
    from coffer.store.format.snapshot import Snapshot

    snap = Snapshot(time=T0, tree=t1, paths=["/"])
    assert collect(repo, [snap]).total_file_count == depth + 1
    assert collect(repo, [snap], "raw-data").total_blob_count == depth + 2
    hits = list(NameFinder(repo, NameQuery(["leaf"])).search(t1))
    assert len(hits) == 1
