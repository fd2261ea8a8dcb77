"""`coffer ls`, `find` and `diff` as processes, on a repository with two known snapshots.

The repository is made in-process (cheap scrypt settings) and filled with the real `coffer backup`
command; everything is then checked through the CLI: exit codes, restic 0.14's text layout and
its JSON shapes. Glob matching (restic's filter.Match) is also tested directly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffer.engine.find import GlobPattern, child_match, match
from coffer.errors import UsageError
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf
from coffer.store.repository import Repository

COFFER = str(Path(sys.executable).parent / "coffer")
PW = "pw"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
    env.update(COFFER_REPOSITORY=str(repo), COFFER_PASSWORD=PW, COFFER_HOSTNAME="testhost", TZ="UTC")
    r = subprocess.run([COFFER, *args], env=env, capture_output=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"coffer {' '.join(args)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}")
    return r


def out(repo: Path, *args: str) -> str:
    return run(repo, *args).stdout.decode("utf-8", "surrogateescape")


@dataclass
class Fixture:
    repo: Path
    src: Path
    snap1: str
    snap2: str
    other: str  # a third snapshot, other host and tag


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    base = tmp_path_factory.mktemp("lfd")
    repo = base / "repo"
    Repository.init(LocalBackend(str(repo)), PW, params=FAST_KDF)
    src = base / "src"
    (src / "docs" / "deep").mkdir(parents=True)
    (src / "keep" / "inner").mkdir(parents=True)
    (src / "docs" / "Readme.TXT").write_text("readme")
    (src / "docs" / "deep" / "notes.txt").write_text("notes v1")
    (src / "keep" / "inner" / "same.bin").write_bytes(os.urandom(5000))
    (src / "gone.txt").write_text("to be removed")
    (src / "kind").write_text("file now, symlink later")
    (src / "meta.txt").write_text("metadata only")
    (src / "empty").write_bytes(b"")
    os.symlink("docs", src / "link")
    with open(os.fsencode(str(src)) + b"/bad-\xff-name", "wb") as f:
        f.write(b"bad name")
    os.utime(src / "meta.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    run(repo, "backup", str(src), "--time", "2024-01-01 10:00:00")

    (src / "docs" / "deep" / "notes.txt").write_text("notes v2, longer")
    (src / "gone.txt").unlink()
    (src / "kind").unlink()
    os.symlink("meta.txt", src / "kind")
    (src / "added").mkdir()
    (src / "added" / "new.txt").write_text("new")
    os.utime(src / "meta.txt", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    run(repo, "backup", str(src), "--time", "2024-01-02 10:00:00")
    run(repo, "backup", str(src / "keep"), "--time", "2024-01-03 10:00:00", "--host", "elsewhere", "--tag", "t1")

    snaps = sorted(json.loads(out(repo, "snapshots", "--json")), key=lambda s: s["time"])
    assert len(snaps) == 3
    return Fixture(repo, src, snaps[0]["id"], snaps[1]["id"], snaps[2]["id"])


def lines(s: str) -> list[str]:
    return s.splitlines()


# ==================================================================================== glob patterns
@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("*.txt", "/a/b/c.txt", True),
    ("*.txt", "/a/b/c.txt/d", True),  # a relative pattern matches any run of components
    ("c.txt", "/a/b/c.txt", True),
    ("b", "/a/b/c.txt", True),
    ("b/c.txt", "/a/b/c.txt", True),
    ("a/c.txt", "/a/b/c.txt", False),
    ("/a/b", "/a/b", True),
    ("/a/b", "/a/b/c.txt", True),  # an absolute pattern also matches everything below it
    ("/b", "/a/b", False),
    ("/a/*/c.txt", "/a/b/c.txt", True),
    ("/a/**/x", "/a/b/c/d/x", True),
    ("/a/**/x", "/a/x", True),
    ("**/x", "/q/r/x", True),
    ("?.txt", "/c.txt", True),
    ("?.txt", "/cc.txt", False),
    ("[a-c].txt", "/b.txt", True),
    ("[^a-c].txt", "/b.txt", False),
    ("[^a-c].txt", "/d.txt", True),
    ("\\*.txt", "/*.txt", True),
    ("\\*.txt", "/a.txt", False),
    ("", "/anything", True),
    ("tmp", "/", False),
])
def test_glob_match(pattern: str, path: str, expected: bool) -> None:
    assert match(pattern, path) is expected


def test_glob_child_match() -> None:
    assert child_match("*.txt", "/x") is True  # relative: anything can still match below
    assert child_match("/a/b/c", "/a") is True
    assert child_match("/a/b/c", "/a/b") is True
    assert child_match("/a/b/c", "/x") is False
    assert child_match("/a/**/z", "/a/q/r") is True
    assert child_match("/a/**/z", "/b/q") is False


@pytest.mark.parametrize("bad", ["[", "[]", "[a-", "x\\", "[-a]"])
def test_glob_bad_patterns_are_rejected(bad: str) -> None:
    with pytest.raises(UsageError):
        GlobPattern.compile(bad)


# ==================================================================================== ls
def test_ls_lists_every_path_in_order(fx: Fixture) -> None:
    r = run(fx.repo, "ls", fx.snap1[:8])
    text = r.stdout.decode("utf-8", "surrogateescape")
    head, *paths = lines(text)
    assert head.startswith(f"snapshot {fx.snap1[:8]} of [{fx.src}] filtered by [] at 2024-01-01 10:00:00")
    src = str(fx.src)
    assert f"{src}/docs/deep/notes.txt" in paths
    assert f"{src}/gone.txt" in paths
    assert os.fsdecode(os.fsencode(src) + b"/bad-\xff-name") in paths  # raw bytes reach stdout
    # depth first, a directory before its contents, names sorted by bytes
    assert paths.index(f"{src}/docs") < paths.index(f"{src}/docs/Readme.TXT") < paths.index(f"{src}/docs/deep")
    assert paths == [p for p in paths if p]  # no blank lines
    # every ancestor of the source is listed too (the snapshot's tree starts at "/")
    assert paths[0] == "/" + src.strip("/").split("/")[0]


def test_ls_quiet_drops_header_but_keeps_listing(fx: Fixture) -> None:
    text = out(fx.repo, "ls", "-q", fx.snap1[:10])
    assert not text.startswith("snapshot ")
    assert f"{fx.src}/gone.txt" in lines(text)


def test_ls_long_format(fx: Fixture) -> None:
    text = out(fx.repo, "ls", "-l", fx.snap1)
    meta = next(x for x in lines(text) if x.endswith("/meta.txt"))
    uid, gid = os.getuid(), os.getgid()
    assert re.fullmatch(r"-rw-r--r-- +%d +%d +13 2020-09-13 12:26:40 .*/meta\.txt" % (uid, gid), meta), meta
    link = next(x for x in lines(text) if "/link " in x)
    assert link.startswith("Lrwxrwxrwx") and link.endswith(f"{fx.src}/link -> docs")
    docs = next(x for x in lines(text) if x.endswith("/docs"))
    assert docs.startswith("d") and re.search(r" +0 \d{4}-", docs)


def test_ls_json_matches_restic_shape(fx: Fixture) -> None:
    raw = run(fx.repo, "ls", "--json", "latest", "--host", "testhost").stdout
    objs = [json.loads(x) for x in raw.splitlines()]
    snap, nodes = objs[0], objs[1:]
    assert snap["struct_type"] == "snapshot" and snap["id"] == fx.snap2
    assert snap["short_id"] == fx.snap2[:8]
    assert list(snap)[:3] == ["time", "parent", "tree"]
    by_path = {n["path"]: n for n in nodes}
    f = by_path[f"{fx.src}/docs/deep/notes.txt"]
    assert list(f) == ["name", "type", "path", "uid", "gid", "size", "mode", "permissions", "mtime", "atime",
                       "ctime", "struct_type"]
    assert f["name"] == "notes.txt" and f["size"] == len("notes v2, longer") and f["permissions"] == "-rw-r--r--"
    assert by_path[f"{fx.src}/empty"]["size"] == 0  # files always have a size
    d = by_path[f"{fx.src}/docs"]
    assert "size" not in d and d["type"] == "dir" and d["permissions"].startswith("d")
    assert by_path[f"{fx.src}/kind"]["type"] == "symlink"
    # invalid UTF-8 is written as \ufffd, as Go's encoder does
    assert b'bad-\\ufffd-name' in raw
    assert all(n["struct_type"] == "node" for n in nodes)


def test_ls_dir_filter(fx: Fixture) -> None:
    src = str(fx.src)
    flat = lines(out(fx.repo, "ls", "-q", fx.snap1, f"{src}/docs"))
    assert flat == [f"{src}/docs", f"{src}/docs/Readme.TXT", f"{src}/docs/deep"]
    deep = lines(out(fx.repo, "ls", "-q", "--recursive", fx.snap1, f"{src}/docs"))
    assert deep == [f"{src}/docs", f"{src}/docs/Readme.TXT", f"{src}/docs/deep", f"{src}/docs/deep/notes.txt"]
    two = lines(out(fx.repo, "ls", "-q", fx.snap1, f"{src}/docs/deep", f"{src}/keep/"))
    assert two == [f"{src}/docs/deep", f"{src}/docs/deep/notes.txt", f"{src}/keep", f"{src}/keep/inner"]
    assert lines(out(fx.repo, "ls", "-q", fx.snap1, f"{src}/nope")) == []


def test_ls_errors(fx: Fixture) -> None:
    r = run(fx.repo, "ls", check=False)
    assert r.returncode == 1 and b"no snapshot ID specified" in r.stderr
    r = run(fx.repo, "ls", fx.snap1, "relative/dir", check=False)
    assert r.returncode == 1 and b"must be absolute" in r.stderr
    r = run(fx.repo, "ls", "ffffffffffff", check=False)
    assert r.returncode == 1 and b"no snapshot" in r.stderr
    r = run(fx.repo, "ls", "latest", "--host", "nohost", check=False)
    assert r.returncode == 1
    r = run(fx.repo, "ls", "zz", check=False)
    assert r.returncode == 1


def test_ls_latest_honours_filters(fx: Fixture) -> None:
    assert json.loads(run(fx.repo, "ls", "--json", "latest").stdout.splitlines()[0])["id"] == fx.other
    assert json.loads(run(fx.repo, "ls", "--json", "latest", "--tag", "t1").stdout.splitlines()[0])["id"] == fx.other
    first = run(fx.repo, "ls", "--json", "latest", "--path", str(fx.src)).stdout.splitlines()[0]
    assert json.loads(first)["id"] == fx.snap2


# ==================================================================================== find
def test_find_by_base_name_across_snapshots(fx: Fixture) -> None:
    text = out(fx.repo, "find", "notes.txt")
    assert text == (
        f"Found matching entries in snapshot {fx.snap1[:8]} from 2024-01-01 10:00:00\n"
        f"{fx.src}/docs/deep/notes.txt\n\n"
        f"Found matching entries in snapshot {fx.snap2[:8]} from 2024-01-02 10:00:00\n"
        f"{fx.src}/docs/deep/notes.txt\n"
    )


def test_find_patterns(fx: Fixture) -> None:
    src = str(fx.src)
    got = lines(out(fx.repo, "find", "-q", "-s", fx.snap1, "*.txt"))
    assert got == [f"{src}/docs/deep/notes.txt", f"{src}/gone.txt", f"{src}/meta.txt"]
    got = lines(out(fx.repo, "find", "-q", "-s", fx.snap1, "-i", "*.txt"))
    assert f"{src}/docs/Readme.TXT" in got
    got = lines(out(fx.repo, "find", "-q", "-s", fx.snap1, "deep/*"))
    assert got == [f"{src}/docs/deep/notes.txt"]
    got = lines(out(fx.repo, "find", "-q", "-s", fx.snap2, "added"))  # a dir matches, and so does all below it
    assert got == [f"{src}/added", f"{src}/added/new.txt"]
    got = lines(out(fx.repo, "find", "-q", "-s", fx.snap2, f"{src}/added/*"))
    assert got == [f"{src}/added/new.txt"]
    got = lines(out(fx.repo, "find", "-q", "-s", fx.snap1, "-s", fx.snap2, "gone.txt", "new.txt"))
    assert got == [f"{src}/gone.txt", f"{src}/added/new.txt"]


def test_find_long_and_time_bounds(fx: Fixture) -> None:
    got = lines(out(fx.repo, "find", "-q", "-l", "-s", fx.snap1, "meta.txt"))
    assert len(got) == 1 and re.match(r"-rw-r--r-- +\d+ +\d+ +13 2020-09-13 12:26:40 ", got[0])
    assert out(fx.repo, "find", "-q", "-s", fx.snap1, "--newest", "2021-01-01", "meta.txt").strip().endswith("meta.txt")
    assert out(fx.repo, "find", "-q", "-s", fx.snap1, "--oldest", "2021-01-01", "meta.txt") == ""
    r = run(fx.repo, "find", "--oldest", "yesterday-ish", "x", check=False)
    assert r.returncode == 1 and b"unable to parse time" in r.stderr


def test_find_json_shape(fx: Fixture) -> None:
    doc = json.loads(run(fx.repo, "find", "--json", "*.txt").stdout)
    assert [g["snapshot"] for g in doc] == [fx.snap1, fx.snap2]
    g1 = doc[0]
    assert list(g1) == ["matches", "hits", "snapshot"] and g1["hits"] == len(g1["matches"]) == 3
    m = g1["matches"][0]
    assert list(m)[:3] == ["path", "permissions", "type"]
    assert "name" not in m and "content" not in m and "inode" not in m and "subtree" not in m
    assert run(fx.repo, "find", "--json", "no-such-file").stdout == b"[]\n"
    assert run(fx.repo, "find", "no-such-file").stdout == b""


def test_find_by_blob_tree_and_pack(fx: Fixture) -> None:
    # the blob of keep/inner/same.bin, read from the tree via `cat`
    inner_tree = run(fx.repo, "cat", "tree", f"{fx.snap1}:{fx.src}/keep/inner").stdout
    node = json.loads(inner_tree)["nodes"][0]
    blob = node["content"][0]
    doc = json.loads(run(fx.repo, "find", "--json", "--blob", blob[:10]).stdout)
    assert {d["snapshot"] for d in doc} == {fx.snap1, fx.snap2, fx.other}
    d = next(d for d in doc if d["snapshot"] == fx.snap1)
    assert d["object_type"] == "blob" and d["id"] == blob and d["path"] == f"{fx.src}/keep/inner/same.bin"
    assert list(d) == ["object_type", "id", "path", "parent_tree", "snapshot", "time"]
    text = out(fx.repo, "find", "--blob", blob, "-s", fx.snap1)
    assert text.startswith(f"Found blob {blob}\n ... in file {fx.src}/keep/inner/same.bin\n     (tree ")
    assert f" ... in snapshot {fx.snap1[:8]} (2024-01-01 10:00:00)" in text
    # the subtree of keep/inner
    keep_tree = json.loads(run(fx.repo, "cat", "tree", f"{fx.snap1}:{fx.src}/keep").stdout)
    tid = keep_tree["nodes"][0]["subtree"]
    text = out(fx.repo, "find", "--tree", tid[:12], "-s", fx.snap1, "--show-pack-id")
    assert text.startswith(f"Found tree {tid}\n ... path {fx.src}/keep/inner\n ... in snapshot {fx.snap1[:8]}")
    assert "Object belongs to pack " in text and f"<Blob (tree) {tid[:8]}, offset " in text
    # by pack: every file whose blobs sit in the pack that holds same.bin's blob
    packs = [ln for ln in out(fx.repo, "find", "--blob", blob, "--show-pack-id").splitlines()
             if ln.startswith("Object belongs to pack ")]
    pack = packs[0].split()[-1]
    text = out(fx.repo, "find", "--pack", pack[:8])
    assert f"Found blob {blob}" in text
    r = run(fx.repo, "find", "--pack", "0000ffff", check=False)
    assert r.returncode == 1 and b"unable to find pack(s): [0000ffff]" in r.stderr
    r = run(fx.repo, "find", "--blob", "--tree", "abc", check=False)
    assert r.returncode == 1 and b"cannot have several ID types" in r.stderr


def test_find_snapshot_selection(fx: Fixture) -> None:
    doc = json.loads(run(fx.repo, "find", "--json", "-s", "latest", "--host", "testhost", "*.txt").stdout)
    assert [g["snapshot"] for g in doc] == [fx.snap2]
    doc = json.loads(run(fx.repo, "find", "--json", "--tag", "t1", "*.bin").stdout)
    assert [g["snapshot"] for g in doc] == [fx.other]
    r = run(fx.repo, "find", "-s", "ffffffff", "*.txt")  # unknown IDs are skipped with a warning, like restic
    assert r.stdout == b"" and b"Ignoring" in r.stderr
    r = run(fx.repo, "find", check=False)
    assert r.returncode == 1 and b"wrong number of arguments" in r.stderr


# ==================================================================================== diff
def test_diff_text(fx: Fixture) -> None:
    text = out(fx.repo, "diff", fx.snap1[:8], fx.snap2[:8])
    src = str(fx.src)
    assert text.startswith(f"comparing snapshot {fx.snap1[:8]} to {fx.snap2[:8]}:\n\n")
    changes = [ln for ln in lines(text) if re.match(r"^[-+MTU]+ +/", ln)]
    assert changes == [
        f"+    {src}/added/",
        f"+    {src}/added/new.txt",
        f"M    {src}/docs/deep/notes.txt",
        f"-    {src}/gone.txt",
        f"T    {src}/kind",
    ]
    tail = text.split("\n\n")[-1]
    assert re.search(r"^Files: +1 new, +1 removed, +1 changed$", tail, re.M), tail
    assert re.search(r"^Dirs: +1 new, +0 removed$", tail, re.M)
    assert re.search(r"^Others: +0 new, +0 removed$", tail, re.M)
    assert re.search(r"^Data Blobs: +\d+ new, +\d+ removed$", tail, re.M)
    assert re.search(r"^Tree Blobs: +\d+ new, +\d+ removed$", tail, re.M)
    assert re.search(r"^  Added: +\d", tail, re.M) and re.search(r"^  Removed: +\d", tail, re.M)


def test_diff_metadata_and_quiet(fx: Fixture) -> None:
    text = out(fx.repo, "diff", "--metadata", fx.snap1, fx.snap2)
    src = str(fx.src)
    assert f"U    {src}/meta.txt" in lines(text)
    assert f"U    {src}/" in lines(text)  # the directory's own node changed (its subtree did)
    quiet = out(fx.repo, "diff", "-q", fx.snap1, fx.snap2)
    assert quiet.startswith("\nFiles:")


def test_diff_json(fx: Fixture) -> None:
    raw = run(fx.repo, "diff", "--json", fx.snap1[:8], "latest").stdout
    objs = [json.loads(x) for x in raw.splitlines()]
    *changes, stats = objs
    assert all(list(c) == ["message_type", "path", "modifier"] and c["message_type"] == "change" for c in changes)
    assert stats["message_type"] == "statistics"
    assert stats["source_snapshot"] == fx.snap1[:8] and stats["target_snapshot"] == "latest"
    assert list(stats) == ["message_type", "source_snapshot", "target_snapshot", "changed_files", "added", "removed"]
    assert list(stats["added"]) == ["files", "dirs", "others", "data_blobs", "tree_blobs", "bytes"]
    # latest is the "elsewhere" snapshot of keep/ only: everything else was removed
    assert {"path": f"{fx.src}/keep/inner/same.bin", "modifier": "-", "message_type": "change"} not in changes


def test_diff_same_snapshot_and_subfolders(fx: Fixture) -> None:
    text = out(fx.repo, "diff", fx.snap2, fx.snap2)
    assert "Files:           0 new,     0 removed,     0 changed" in text
    assert "  Added:   0 B" in text
    sub = out(fx.repo, "diff", "-q", f"{fx.snap1}:{fx.src}/docs", f"{fx.snap2}:{fx.src}/docs")
    assert "1 changed" in sub
    loud = out(fx.repo, "diff", f"{fx.snap1}:{fx.src}/docs", f"{fx.snap2}:{fx.src}/docs")
    assert "M    /deep/notes.txt" in lines(loud)


def test_diff_errors(fx: Fixture) -> None:
    r = run(fx.repo, "diff", fx.snap1, check=False)
    assert r.returncode == 1 and b"specify two snapshot IDs" in r.stderr
    r = run(fx.repo, "diff", fx.snap1, "ffffffff", check=False)
    assert r.returncode == 1
