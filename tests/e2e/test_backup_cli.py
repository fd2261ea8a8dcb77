"""`coffer backup` through the CLI: every option checked by what ends up in the repository.

Outcomes are checked through `coffer ls --json`, `coffer snapshots --json`, and by restoring (with
coffer and with the reference restic) and comparing trees. Where restic 0.14 defines the
behaviour (docs/dev/restic-cli-0.14.md), restic is run with the same options as an oracle.
Reliability cases: T12 (file changing while read), T13 (entries vanishing mid-backup), T16-T19
(hard links, metadata, special files and names, symlinked roots).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from coffer.store.backend.local import LocalBackend
from coffer.store.repository import Repository
from conftest import COFFER, PASSWORD, Runner, _env
from helpers.procs import child_pids
from helpers.sourcetree import make_tree, write_random
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic

IS_ROOT = os.geteuid() == 0
SUMMARY_KEYS = [
    "message_type", "files_new", "files_changed", "files_unmodified", "dirs_new", "dirs_changed",
    "dirs_unmodified", "data_blobs", "tree_blobs", "data_added", "total_files_processed",
    "total_bytes_processed", "total_duration", "snapshot_id",
]
CACHEDIR_SIG = b"Signature: 8a477f597d28d172789f06886806bc55"


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A new repository, made in-process (no interpreter start-up; `coffer init` is tested elsewhere)."""
    r = tmp_path / "repo"
    Repository.init(LocalBackend(str(r)), PASSWORD)
    return r


def summary(r: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    lines = r.stdout.decode().strip().splitlines()
    assert lines, f"no stdout; stderr:\n{r.stderr.decode(errors='replace')}"
    d = json.loads(lines[-1])
    assert d["message_type"] == "summary", lines[-1]
    return d


def snapshots(run: Runner, repo: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(run("snapshots", "--json", repo=repo).stdout)
    return out


def snapshot(run: Runner, repo: Path, short_id: str) -> dict[str, Any]:
    found = [s for s in snapshots(run, repo) if s["id"].startswith(short_id)]
    assert len(found) == 1, f"snapshot {short_id} not found exactly once"
    return found[0]


def ls_nodes(run: Runner, repo: Path, snap: str) -> dict[str, dict[str, Any]]:
    """Nodes of a snapshot by in-snapshot path (works for coffer and restic)."""
    r = run("ls", "--json", snap, repo=repo)
    nodes = {}
    for line in r.stdout.decode().splitlines():
        d = json.loads(line)
        if d.get("struct_type") == "node":
            nodes[d["path"]] = d
    return nodes


def ls_paths(run: Runner, repo: Path, snap: str) -> set[str]:
    return set(ls_nodes(run, repo, snap))


def repo_files(repo: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(repo)): (p.stat().st_size, p.stat().st_mtime_ns) for p in repo.rglob("*") if p.is_file()}


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def open_paths(pid: int) -> set[str]:
    """Files a process and its children (the backup's worker processes) have open right now."""
    out: set[str] = set()
    for q in [pid, *child_pids(pid)]:
        try:
            fds = os.listdir(f"/proc/{q}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                out.add(os.readlink(f"/proc/{q}/fd/{fd}"))
    return out


def popen_coffer(*args: str, repo: Path, cwd: Path, env: dict[str, str] | None = None,
                 stdin: int | None = subprocess.DEVNULL, stderr: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen([COFFER, *args], env=_env(repo, PASSWORD, env), cwd=cwd, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=stderr)


# ---------------------------------------------------------------------------------------------- excludes


def _exclude_tree(root: Path) -> None:
    for rel in [
        "keep.txt", "top.tmp", "a/x.tmp", "a/keep.txt", "a/b/deep.txt", "a/b/more/y.txt", "a/bb/z.txt",
        "c/deep.log", "c/d/e/deep.log", "other/deep.log", "UPPER.TXT", "Mixed/File.Txt", "Mixed/other.txt",
        "x.bak", "sub/y.bak", "sub/envexcluded", "sub/sp ace.txt", "n1.dat", "nx.dat", "neg/drop", "neg/keep.me",
    ]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)


def test_exclude_patterns_match_restic(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    src = tmp_path / "src"
    _exclude_tree(src)
    exfile = tmp_path / "excludes.txt"
    exfile.write_text("# a comment\n\n  *.bak  \n$EXNAME\nsp ace.txt\n")
    args = [
        "backup", "src", "--json",
        "-e", "*.tmp",  # glob at any depth
        "-e", f"{src}/a/b",  # anchored absolute path: the dir and everything below it
        "-e", "c/**/deep.log",  # ** matches zero or more components
        "-e", "n[0-9].dat",  # character class inside one component
        "-e", "neg/*", "-e", "!neg/keep.me",  # re-include
        "--iexclude", "upper.txt", "--iexclude", "MIXED/FILE.TXT",
        "--exclude-file", str(exfile),
    ]
    env = {"EXNAME": "envexcluded"}
    sid = summary(coffer(*args, repo=repo, cwd=tmp_path, env=env))["snapshot_id"]
    got = ls_paths(coffer, repo, sid)
    expected = {
        "/src", "/src/keep.txt", "/src/a", "/src/a/keep.txt", "/src/a/bb", "/src/a/bb/z.txt", "/src/c",
        "/src/c/d", "/src/c/d/e", "/src/other", "/src/other/deep.log", "/src/Mixed", "/src/Mixed/other.txt",
        "/src/sub", "/src/nx.dat", "/src/neg", "/src/neg/keep.me",
    }
    assert got == expected, f"missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"
    # restic with the very same options is the oracle
    rsid = summary(restic(*args, repo=repo, cwd=tmp_path, env=env))["snapshot_id"]
    assert ls_paths(restic, repo, rsid) == got


def test_snapshot_excludes_field_lists_only_exclude_flags(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = tmp_path / "src"
    _exclude_tree(src)
    exfile = tmp_path / "excludes.txt"
    exfile.write_text("*.bak\n")
    args = ["backup", "src", "--json", "-e", "*.tmp", "--iexclude", "upper.txt", "--exclude-file", str(exfile)]
    rsid = summary(restic(*args, repo=repo, cwd=tmp_path))["snapshot_id"]
    assert snapshot(restic, repo, rsid)["excludes"] == ["*.tmp"]
    sid = summary(coffer(*args, repo=repo, cwd=tmp_path))["snapshot_id"]
    assert snapshot(coffer, repo, sid)["excludes"] == ["*.tmp"]


def _cache_tree(src: Path) -> None:
    (src / "cache" / "sub").mkdir(parents=True)
    (src / "cache" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIG + b"\n# This file is a cache directory tag.\n")
    (src / "cache" / "junk.bin").write_bytes(b"cached")
    (src / "cache" / "sub" / "more").write_bytes(b"cached too")
    (src / "fake").mkdir()  # wrong signature: not a cache dir
    (src / "fake" / "CACHEDIR.TAG").write_bytes(b"Signature: 00000000000000000000000000000000\n")
    (src / "fake" / "data").write_bytes(b"real data")
    (src / "plain.txt").write_text("plain")


def test_exclude_caches_drops_contents_of_tagged_dirs(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    src = tmp_path / "src"
    _cache_tree(src)
    sid = summary(coffer("backup", "src", "--json", "--exclude-caches", repo=repo, cwd=tmp_path))["snapshot_id"]
    got = ls_paths(coffer, repo, sid)
    assert {"/src/cache/junk.bin", "/src/cache/sub", "/src/cache/sub/more"}.isdisjoint(got)
    assert {"/src", "/src/cache", "/src/plain.txt", "/src/fake", "/src/fake/CACHEDIR.TAG", "/src/fake/data"} <= got


def test_exclude_caches_keeps_the_tag_file_like_restic(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = tmp_path / "src"
    _cache_tree(src)
    args = ("backup", "src", "--json", "--exclude-caches")
    rsid = summary(restic(*args, repo=repo, cwd=tmp_path))["snapshot_id"]
    assert "/src/cache/CACHEDIR.TAG" in ls_paths(restic, repo, rsid)
    sid = summary(coffer(*args, repo=repo, cwd=tmp_path))["snapshot_id"]
    assert ls_paths(coffer, repo, sid) == ls_paths(restic, repo, rsid)


@contextlib.contextmanager
def tmpfs_at(path: Path) -> Iterator[None]:
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_one_file_system_keeps_mount_point_empty(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "here.txt").write_text("same fs")
    with tmpfs_at(src / "mnt"):
        (src / "mnt" / "inner").mkdir()
        (src / "mnt" / "inner" / "elsewhere.txt").write_text("other fs")
        assert os.stat(src / "mnt").st_dev != os.stat(src).st_dev
        sid = summary(coffer("backup", "src", "-x", "--json", repo=repo, cwd=tmp_path))["snapshot_id"]
        assert ls_paths(coffer, repo, sid) == {"/src", "/src/here.txt", "/src/mnt"}


# ---------------------------------------------------------------------------------------------- --files-from


def test_files_from(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    src = tmp_path / "src"
    _exclude_tree(src)
    lst = tmp_path / "list.txt"
    lst.write_text("# comment line\n\n  src/a  \nsrc/sub/sp ace.txt\n")
    sid = summary(coffer("backup", "--files-from", str(lst), "src/keep.txt", "--json", repo=repo,
                         cwd=tmp_path))["snapshot_id"]
    snap = snapshot(coffer, repo, sid)
    assert snap["paths"] == sorted([f"{src}/a", f"{src}/sub/sp ace.txt", f"{src}/keep.txt"])
    got = ls_paths(coffer, repo, sid)
    assert got == {"/src", "/src/keep.txt", "/src/a", "/src/a/x.tmp", "/src/a/keep.txt", "/src/a/b",
                   "/src/a/b/deep.txt", "/src/a/b/more", "/src/a/b/more/y.txt", "/src/a/bb", "/src/a/bb/z.txt",
                   "/src/sub", "/src/sub/sp ace.txt"}
    target = tmp_path / "restored"
    coffer("restore", sid, "--target", str(target), repo=repo)
    assert_trees_equal(src / "a", target / "src" / "a")
    assert (target / "src" / "sub" / "sp ace.txt").read_text() == "sub/sp ace.txt"


def test_files_from_lines_are_globs_like_restic(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    src = tmp_path / "src"
    _exclude_tree(src)
    lst = tmp_path / "list.txt"
    lst.write_text("src/*.dat\n")
    r = coffer("backup", "--files-from", str(lst), "--json", repo=repo, cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stderr.decode()
    assert snapshot(coffer, repo, summary(r)["snapshot_id"])["paths"] == [f"{src}/n1.dat", f"{src}/nx.dat"]


def test_files_from_globs_match_dot_files_and_warn_like_restic(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / ".hidden").write_text("dot file")
    (src / "visible").write_text("plain")
    lst = tmp_path / "list.txt"
    lst.write_text("src/*\nsrc/nomatch*\n")
    args = ("backup", "--files-from", str(lst), "--json")
    rr = restic(*args, repo=repo, cwd=tmp_path)
    assert snapshot(restic, repo, summary(rr)["snapshot_id"])["paths"] == [f"{src}/.hidden", f"{src}/visible"]
    assert b"src/nomatch*" in rr.stderr
    r = coffer(*args, repo=repo, cwd=tmp_path)
    assert b"src/nomatch*" in r.stderr, r.stderr.decode()
    assert snapshot(coffer, repo, summary(r)["snapshot_id"])["paths"] == [f"{src}/.hidden", f"{src}/visible"]


# ---------------------------------------------------------------------------------------------- snapshot fields


def test_tags_host_and_time(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    r = coffer("backup", "src", "--json", "--tag", "a,b", "--tag", "c", "--host", "h1",
               "--time", "2020-01-02 03:04:05", repo=repo, cwd=tmp_path)
    sid = summary(r)["snapshot_id"]
    for run in (coffer, restic):  # restic reads the same fields
        s = snapshot(run, repo, sid)
        assert s["tags"] == ["a", "b", "c"]
        assert s["hostname"] == "h1"
        when = datetime.fromisoformat(s["time"].replace("Z", "+00:00"))
        assert when == datetime(2020, 1, 2, 3, 4, 5).astimezone(), s["time"]  # --time is local time
        assert s["paths"] == [str(src)]


def test_parent_selection_and_force(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    src = tmp_path / "src"
    make_tree(src, big=False, special=False)
    n_files = sum(1 for p in src.rglob("*") if p.is_file() and not p.is_symlink())

    def backup(*extra: str) -> dict[str, Any]:
        return summary(coffer("backup", "src", "--json", *extra, repo=repo, cwd=tmp_path))

    first = backup()
    assert first["files_new"] == n_files and first["files_unmodified"] == 0
    second = backup()  # automatic parent: same host, same paths
    assert (second["files_new"], second["files_changed"], second["files_unmodified"]) == (0, 0, n_files)
    assert second["data_blobs"] == 0 and second["tree_blobs"] == 0

    other = backup("--host", "otherhost")  # no snapshot for that host: no parent
    assert other["files_new"] == n_files and other["files_unmodified"] == 0

    def files_line(text: str) -> tuple[int, int, int]:
        m = re.search(r"^Files: +(\d+) new, +(\d+) changed, +(\d+) unmodified$", text, re.M)
        assert m, text
        return int(m[1]), int(m[2]), int(m[3])

    text = coffer("backup", "src", "--host", "elsewhere", "--parent", first["snapshot_id"], repo=repo,
                  cwd=tmp_path).stdout.decode()
    assert f"using parent snapshot {first['snapshot_id']}\n" in text, text
    assert files_line(text) == (0, 0, n_files)

    text = coffer("backup", "src", "--force", repo=repo, cwd=tmp_path).stdout.decode()
    assert "no parent snapshot found, will read all files" in text
    assert files_line(text) == (n_files, 0, 0)  # re-read everything (and it all deduplicates)

    snaps = sorted(snapshots(coffer, repo), key=lambda x: x["time"])
    assert [x["hostname"] for x in snaps] == ["testhost", "testhost", "otherhost", "elsewhere", "testhost"]
    assert "parent" not in snaps[0] and "parent" not in snaps[2] and "parent" not in snaps[4]
    assert snaps[1]["parent"] == snaps[0]["id"] and snaps[3]["parent"] == snaps[0]["id"]


def test_dry_run_writes_nothing(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "old.bin", 50_000, 1)
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    write_random(src / "new.bin", 2_000_000, 2)
    (src / "new.txt").write_text("new text")
    before = repo_files(repo)
    text = coffer("backup", "src", "--dry-run", repo=repo, cwd=tmp_path).stdout.decode()
    assert re.search(r"Would add to the repository: [0-9.]+ MiB", text), text
    assert "saved" not in text
    r = coffer("backup", "src", "-n", "--json", repo=repo, cwd=tmp_path)
    s = summary(r)
    assert s.get("dry_run") is True and list(s)[-1] == "dry_run"
    assert s["files_new"] == 2 and s["files_unmodified"] == 1 and s["data_added"] >= 2_000_000
    assert repo_files(repo) == before, "a dry run changed files in the repository"
    assert len(snapshots(coffer, repo)) == 1


def test_text_summary_pads_sizes_like_restic(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    text = coffer("backup", "src", repo=repo, cwd=tmp_path).stdout.decode()
    assert "Added to the repository: 0 B   (0 B   stored)\n" in text, text


# ---------------------------------------------------------------------------------------------- --stdin


def test_stdin_round_trip(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    data = os.urandom(1 << 20) + b"-- SQL dump\n" * 100_000 + os.urandom(12345)
    r = coffer("backup", "--stdin", "--stdin-filename", "dump.sql", "--json", repo=repo, input=data)
    sid = summary(r)["snapshot_id"]
    snap = snapshot(coffer, repo, sid)
    assert snap["paths"] == ["/dump.sql"] and "parent" not in snap
    nodes = ls_nodes(coffer, repo, sid)
    assert set(nodes) == {"/dump.sql"}
    assert nodes["/dump.sql"]["size"] == len(data) and nodes["/dump.sql"]["permissions"] == "-rw-r--r--"
    coffer("restore", sid, "--target", str(tmp_path / "c"), repo=repo)
    assert (tmp_path / "c" / "dump.sql").read_bytes() == data
    assert restic("dump", sid, "/dump.sql", repo=repo).stdout == data


def test_stdin_with_paths_is_a_usage_error(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    (tmp_path / "src").mkdir()
    r = coffer("backup", "--stdin", "src", repo=repo, cwd=tmp_path, input=b"data", check=False)
    assert r.returncode == 1
    assert b"--stdin" in r.stderr and b"Traceback" not in r.stderr
    assert not list((repo / "snapshots").iterdir())
    assert not list((repo / "locks").iterdir())


def test_empty_stdin_is_refused_like_restic(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    r = coffer("backup", "--stdin", "--stdin-filename", "dump.sql", repo=repo, input=b"", check=False)
    assert r.returncode == 1, r.stdout.decode()
    assert not list((repo / "snapshots").iterdir())


def test_everything_excluded_is_refused_like_restic(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    r = coffer("backup", "src", "-e", "*", repo=repo, cwd=tmp_path, check=False)
    assert r.returncode == 1, r.stdout.decode()
    assert not list((repo / "snapshots").iterdir())


# ---------------------------------------------------------------------------------------------- incremental


def test_incremental_backup_reads_only_changed_files(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(4):
            write_random(src / f"d{d}" / f"f{i}.bin", 20_000 + i, d * 10 + i)
    write_random(src / "big.bin", 1_500_000, 99)
    n_files, n_dirs = 13, 4
    first = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path))
    assert (first["files_new"], first["dirs_new"]) == (n_files, n_dirs)

    second = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path))
    assert (second["files_new"], second["files_changed"], second["files_unmodified"]) == (0, 0, n_files)
    assert (second["dirs_new"], second["dirs_changed"], second["dirs_unmodified"]) == (0, 0, n_dirs)
    assert (second["data_blobs"], second["tree_blobs"], second["data_added"]) == (0, 0, 0)
    assert second["total_files_processed"] == n_files

    # same size, different content, new mtime: must be detected and re-read
    victim = src / "d1" / "f2.bin"
    st0 = victim.stat()
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st0.st_atime_ns, st0.st_mtime_ns + 1_000_000))
    third = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path))
    assert (third["files_new"], third["files_changed"], third["files_unmodified"]) == (0, 1, n_files - 1)
    assert (third["dirs_changed"], third["dirs_unmodified"]) == (2, 2)  # d1 and src changed
    assert third["data_blobs"] == 1 and third["tree_blobs"] == 3  # d1, src and the root
    coffer("restore", third["snapshot_id"], "--target", str(tmp_path / "out"), repo=repo)
    assert_trees_equal(src, tmp_path / "out" / "src")

    # restic accepts coffer's snapshot as parent and finds nothing to read (metadata recorded as restic does)
    rs = summary(restic("backup", "src", "--json", "--host", "testhost", repo=repo, cwd=tmp_path))
    assert (rs["files_new"], rs["files_changed"], rs["files_unmodified"]) == (0, 0, n_files)
    assert rs["data_blobs"] == 0 and rs["tree_blobs"] == 0, "restic encodes the same trees differently"
    # ...and coffer accepts restic's
    cs = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path))
    assert snapshot(coffer, repo, cs["snapshot_id"])["parent"].startswith(rs["snapshot_id"])
    assert cs["files_unmodified"] == n_files and cs["tree_blobs"] == 0


# ---------------------------------------------------------------------------------------------- metadata


def test_metadata_round_trips_through_restic_restore(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    src = make_tree(tmp_path / "src", big=False)
    (src / "new\nline.txt").write_text("newline in the name")
    (src / "ünïcödé ✓.txt").write_text("unicode")
    os.setxattr(src / "text.log", "user.binary", b"\x00\xff\x01value")
    os.setxattr(src / "sub", "user.on-a-dir", b"dir xattr")
    os.link(src / "sub" / "deeper" / "r.bin", src / "r-hardlink.bin")
    os.chmod(src / "sub" / "deeper", 0o2750)  # setgid dir
    os.utime(src / "sub" / "deeper" / "r.bin", ns=(1_234_567_890_987_654_321, 1_234_567_890_987_654_321))
    if IS_ROOT:
        os.chown(src / "text.log", 1234, 5678)
        os.lchown(src / "link", 4321, 8765)
        os.mknod(src / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.chown(src / "null", 1234, 5678)
    os.utime(src / "sub", ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))
    sid = summary(coffer("backup", "src", "--json", repo=repo, cwd=tmp_path))["snapshot_id"]
    restic("restore", sid, "--target", str(tmp_path / "r"), repo=repo)
    assert_trees_equal(src, tmp_path / "r" / "src")
    coffer("restore", sid, "--target", str(tmp_path / "c"), repo=repo)
    assert_trees_equal(src, tmp_path / "c" / "src")
    names = {os.fsencode(p.name) for p in (tmp_path / "r" / "src").iterdir()}
    assert b"bad-\xff\xfe-name" in names and b"new\nline.txt" in names


def test_symlinked_root_and_overlapping_targets(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    """T19: a target that is a symlink is stored as the symlink; overlapping targets give one node per name."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f.txt").write_text("f")
    os.symlink("real", tmp_path / "lnk")
    args = ("backup", "lnk", "real", "real/sub", "real/", "--json")
    sid = summary(coffer(*args, repo=repo, cwd=tmp_path))["snapshot_id"]
    nodes = ls_nodes(coffer, repo, sid)
    assert set(nodes) == {"/lnk", "/real", "/real/sub", "/real/sub/f.txt"}
    assert nodes["/lnk"]["type"] == "symlink"
    restic("restore", sid, "--target", str(tmp_path / "out"), repo=repo)
    assert os.readlink(tmp_path / "out" / "lnk") == "real"
    assert_trees_equal(real, tmp_path / "out" / "real")


# ---------------------------------------------------------------------------------------------- sources changing


def test_file_changing_while_read_is_reported(tmp_path: Path, repo: Path, coffer: Runner, restic: Runner) -> None:
    """T12: a file appended to while it is read gets a warning naming it; the backup still succeeds."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "steady.txt").write_text("steady")
    growing = src / "growing.img"
    with open(growing, "wb") as f:  # 300 MiB, mostly holes, some data every 10 MiB
        for off in range(0, 300 << 20, 10 << 20):
            f.seek(off)
            f.write(os.urandom(4096))
        f.truncate(300 << 20)
    p = popen_coffer("backup", "src", repo=repo, cwd=tmp_path)
    stop = threading.Event()
    appended = [0]

    def append() -> None:
        # start as soon as coffer has the file open, then keep appending until it exits
        while not stop.is_set() and str(growing) not in open_paths(p.pid):
            if p.poll() is not None:
                return
            time.sleep(0.001)
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(os.urandom(4096))
                f.flush()
                appended[0] += 1
                time.sleep(0.002)

    t = threading.Thread(target=append, daemon=True)
    t.start()
    try:
        out, err = p.communicate(timeout=120)
    finally:
        stop.set()
        t.join()
    assert appended[0] > 0, "the appender never saw the file open"
    assert p.returncode == 0, err.decode(errors="replace")
    msgs = [line for line in err.decode(errors="replace").splitlines() if "growing.img" in line]
    assert any("changed" in m for m in msgs), err.decode(errors="replace")
    assert not any("steady.txt" in line for line in err.decode().splitlines())
    assert b"snapshot" in out and b"saved" in out
    restic("check", "--read-data", repo=repo)


BIG = 256 << 20


def _vanish_tree(src: Path) -> None:
    src.mkdir()
    for name in ("a0.bin", "a1.bin"):  # two big sparse files keep both reader threads busy for a while
        with open(src / name, "wb") as f:
            f.write(os.urandom(4096))
            f.truncate(BIG)
    for i in range(30):
        (src / f"z{i:03d}").write_bytes(b"small %d" % i)
    (src / "zdir").mkdir()
    for i in range(10):
        (src / "zdir" / f"f{i}").write_bytes(b"in zdir %d" % i)


def _backup_while_replacing(tmp_path: Path, repo: Path, replace: Any) -> tuple[int, str]:
    """Run a backup; once a big file is being read (so the walk has already lstat'ed the small
    files after it), freeze it with its workers, let `replace` change the tree, and let it go on."""
    src = tmp_path / "src"
    big = {str(src / "a0.bin"), str(src / "a1.bin")}
    p = popen_coffer("backup", "src", repo=repo, cwd=tmp_path)
    try:
        wait_for(lambda: bool(big & open_paths(p.pid)) or p.poll() is not None, 60, "coffer to open a big file")
        assert p.poll() is None, "backup ended before the big files were read"
        frozen = [p.pid, *child_pids(p.pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            if not big & open_paths(p.pid):
                pytest.skip("timing precondition not met: the big files were read before the tree could change")
            replace(src)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, err.decode(errors="replace")


def test_files_deleted_or_replaced_by_symlinks_mid_backup(
    tmp_path: Path, repo: Path, coffer: Runner, restic: Runner
) -> None:
    """T13: files vanishing or turning into symlinks between scan and read give warnings, not a crash."""
    _vanish_tree(tmp_path / "src")

    def replace(src: Path) -> None:
        for i in range(0, 10):
            (src / f"z{i:03d}").unlink()
        for i in range(10, 20):
            (src / f"z{i:03d}").unlink()
            os.symlink("/etc/hostname", src / f"z{i:03d}")
        for f in (src / "zdir").iterdir():
            f.unlink()
        (src / "zdir").rmdir()

    rc, err = _backup_while_replacing(tmp_path, repo, replace)
    assert rc in (0, 3), err
    assert "Traceback" not in err
    assert "z000" in err and "z010" in err, "vanished files must be named in warnings"
    coffer("check", repo=repo)
    restic("check", repo=repo)
    sid = snapshots(coffer, repo)[-1]["short_id"]
    nodes = ls_nodes(coffer, repo, sid)
    assert nodes["/src/a0.bin"]["size"] == BIG
    assert "/src/z025" in nodes and "/src/z005" not in nodes
    # one node per name, never a file node for something that is now a symlink
    assert all(nodes[f"/src/z{i:03d}"]["type"] != "file" for i in range(10, 20) if f"/src/z{i:03d}" in nodes)


def test_file_replaced_by_directory_mid_backup(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    _vanish_tree(tmp_path / "src")

    def replace(src: Path) -> None:
        for i in range(20, 30):
            (src / f"z{i:03d}").unlink()
            (src / f"z{i:03d}").mkdir()

    rc, err = _backup_while_replacing(tmp_path, repo, replace)
    assert rc in (0, 3), err[-3000:]
    assert "Traceback" not in err
    coffer("check", repo=repo)


# ---------------------------------------------------------------------------------------------- output


def test_json_output_is_clean_and_summary_matches_restic(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    src = make_tree(tmp_path / "src", big=False)
    r = coffer("backup", "src", "--json", repo=repo, cwd=tmp_path)
    lines = r.stdout.decode().splitlines()
    assert lines
    objs = [json.loads(line) for line in lines]  # every line is JSON
    assert all(o["message_type"] in ("status", "summary") for o in objs)
    s = objs[-1]
    assert list(s) == SUMMARY_KEYS
    assert re.fullmatch(r"[0-9a-f]{8}", s["snapshot_id"])
    assert isinstance(s["total_duration"], float)
    assert s["files_new"] == sum(1 for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    assert s["total_files_processed"] == s["files_new"] + s["files_changed"] + s["files_unmodified"]
    assert snapshots(coffer, repo)[0]["short_id"] == s["snapshot_id"]


def test_quiet_prints_nothing_on_stdout(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    r = coffer("backup", "-q", "src", repo=repo, cwd=tmp_path)
    assert r.stdout == b""
    r = coffer("backup", "--quiet", "src", repo=repo, cwd=tmp_path)
    assert r.stdout == b"" and r.stderr == b""
    assert len(list((repo / "snapshots").iterdir())) == 2


def test_progress_line_on_a_terminal(tmp_path: Path, repo: Path) -> None:
    master, slave = pty.openpty()
    try:
        p = popen_coffer("backup", "--stdin", "--stdin-filename", "slow.bin", repo=repo, cwd=tmp_path,
                         stdin=subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)
    captured = bytearray()

    def drain() -> None:
        while True:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    b = os.read(master, 65536)
                except OSError:  # EIO once the last writer closed
                    return
                if not b:
                    return
                captured.extend(b)
            elif p.poll() is not None:
                return

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    assert p.stdin is not None
    block = os.urandom(256 << 10)
    for _ in range(12):  # about 1.5 s of slow input
        p.stdin.write(block)
        p.stdin.flush()
        time.sleep(0.125)
    p.stdin.close()
    assert p.stdout is not None
    out = p.stdout.read()
    assert p.wait(timeout=60) == 0
    t.join(timeout=10)
    os.close(master)
    text = captured.decode(errors="replace")
    status = [s for s in re.split(r"[\r\n]", text) if "files" in s and "/s" in s]
    assert status, f"no status line on the terminal: {text!r}"
    assert b"\r" not in out and b"/s" not in out, "the progress line must not go to stdout"
    assert b"snapshot" in out and b"saved" in out


# ---------------------------------------------------------------------------------------------- global options


def test_global_options_after_the_command(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    r = coffer("backup", "-r", str(repo), "-q", "src", repo=None, cwd=tmp_path)
    assert r.stdout == b""
    r = coffer("backup", "src", "--repo", str(repo), "--json", repo=None, cwd=tmp_path)
    assert summary(r)["files_unmodified"] == 1  # the first backup went to the same repository


def test_password_sources(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD + "\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong password\n")

    cases: list[tuple[tuple[str, ...], dict[str, str], str | None, Path | None]] = [
        (("backup", "-q", "src", "--password-file", str(pwfile)), {}, None, repo),
        (("snapshots", "--password-command", f"echo {PASSWORD}"), {}, None, repo),
        (("snapshots",), {"RESTIC_PASSWORD_FILE": str(pwfile)}, None, repo),
        (("snapshots", "-p", str(pwfile)), {"RESTIC_PASSWORD_FILE": str(wrong)}, PASSWORD, repo),  # flag beats env
        # COFFER_ variables take precedence over RESTIC_ ones
        (("snapshots",), {"COFFER_PASSWORD": PASSWORD, "RESTIC_PASSWORD": "wrong"}, None, repo),
        (("snapshots",), {"COFFER_REPOSITORY": str(repo), "RESTIC_REPOSITORY": str(tmp_path / "nope"),
                          "COFFER_PASSWORD_FILE": str(pwfile), "RESTIC_PASSWORD_FILE": str(wrong)}, PASSWORD, None),
    ]

    def run(case: tuple[tuple[str, ...], dict[str, str], str | None, Path | None]) -> str | None:
        args, env, password, where = case
        r = coffer(*args, repo=where, password=password, env=env, cwd=tmp_path, input=b"", check=False)
        return None if r.returncode == 0 else f"{args} {env}: exit {r.returncode}: {r.stderr.decode()}"

    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # independent read-mostly runs
        failures = [f for f in pool.map(run, cases) if f]
    assert not failures, "\n".join(failures)


def test_wrong_sources_of_password_fail_cleanly(tmp_path: Path, repo: Path, coffer: Runner) -> None:
    # RESTIC_PASSWORD_FILE with a wrong password beats a right RESTIC_PASSWORD (restic's order)
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong password\n")
    r = coffer("snapshots", env={"RESTIC_PASSWORD_FILE": str(wrong)}, repo=repo, input=b"", check=False)
    assert r.returncode == 12
    # no password anywhere and no terminal: exit 1, one clear message, nothing read from stdin
    r = coffer("backup", str(tmp_path), repo=repo, password=None, input=b"", check=False)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "password" in err.lower() and "Traceback" not in err
    assert not list((repo / "snapshots").iterdir()) and not list((repo / "locks").iterdir())
    r = coffer("snapshots", "--password-file", str(tmp_path / "missing"), repo=repo, check=False)
    assert r.returncode == 1 and b"missing" in r.stderr

