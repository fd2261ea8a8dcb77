"""The read-only commands and `key` against restic 0.14 on one repository.

restic makes the repository; restic and coffer both back up into it. Then `coffer ls --json`,
`stats --json` (restore-size, raw-data, and the other two modes), `snapshots --json`, `diff --json`
and `find --json` must agree with restic's own output, field by field wherever restic 0.14 has
the field. `coffer key add` / `key passwd` must leave a repository restic opens with the new
password (and, after passwd, not with the old one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.sourcetree import make_tree

pytestmark = [
    pytest.mark.restic,
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic binary not installed"),
]

COFFER = str(Path(sys.executable).parent / "coffer")
PW = "compat password"


def _env(repo: Path, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
    env.update(RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD=password, COFFER_HOSTNAME="testhost", TZ="UTC",
               RESTIC_CACHE_DIR=env.get("RESTIC_CACHE_DIR", "/tmp/coffer-test-restic-cache"))
    return env


def tool(
    binary: str, repo: Path, *args: str, password: str = PW, check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run([binary, *args], env=_env(repo, password), capture_output=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{binary} {' '.join(args)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}")
    return r


def restic(repo: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return tool(shutil.which("restic") or "restic", repo, *args, **kw)


def coffer(repo: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return tool(COFFER, repo, *args, **kw)


def both_json(repo: Path, *args: str) -> tuple[Any, Any]:
    return (json.loads(restic(repo, "--json", *args).stdout), json.loads(coffer(repo, "--json", *args).stdout))


def json_lines(b: bytes) -> list[Any]:
    return [json.loads(x) for x in b.splitlines() if x.strip()]


@dataclass
class Shared:
    repo: Path
    src: Path
    snaps: list[str]  # oldest first: restic, coffer, restic


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    base = tmp_path_factory.mktemp("rocompat")
    repo = base / "repo"
    src = make_tree(base / "src", big=True)
    restic(repo, "init")
    restic(repo, "backup", str(src), "--time", "2024-01-01 10:00:00")
    (src / "small.txt").write_text("changed by the second backup\n")
    (src / "new-dir").mkdir()
    (src / "new-dir" / "added.bin").write_bytes(os.urandom(20_000))
    (src / "text.log").unlink()
    coffer(repo, "backup", str(src), "--time", "2024-01-02 10:00:00")
    (src / "exec.sh").unlink()
    os.symlink("small.txt", src / "exec.sh")
    restic(repo, "backup", str(src), "--time", "2024-01-03 10:00:00", "--tag", "third")
    snaps = sorted(json.loads(restic(repo, "snapshots", "--json").stdout), key=lambda s: s["time"])
    assert len(snaps) == 3
    return Shared(repo, src, [s["id"] for s in snaps])


def test_snapshots_json_agrees(shared: Shared) -> None:
    theirs, ours = both_json(shared.repo, "snapshots")
    assert len(theirs) == len(ours) == 3
    by_id = {s["id"]: s for s in ours}
    for s in theirs:
        mine = by_id[s["id"]]
        assert {k: mine.get(k) for k in s} == s  # every field restic 0.14 prints, with its value
        assert list(mine)[: len(s) - 2] == [k for k in s if k not in ("id", "short_id")][: len(s) - 2]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_ls_json_agrees(shared: Shared, which: int) -> None:
    sid = shared.snaps[which]
    theirs = restic(shared.repo, "ls", "--json", sid).stdout
    ours = coffer(shared.repo, "ls", "--json", sid).stdout
    t, o = json_lines(theirs), json_lines(ours)
    assert len(t) == len(o) > 10
    snap_t, snap_o = t[0], o[0]
    assert {k: snap_o.get(k) for k in snap_t} == snap_t
    # nodes: identical objects, in the same order, and byte-identical lines (Go's escaping included)
    assert o[1:] == t[1:]
    assert ours.splitlines()[1:] == theirs.splitlines()[1:]


def test_ls_text_and_dir_filter_agree(shared: Shared) -> None:
    sid = shared.snaps[2]
    for args in (["ls", sid], ["ls", "-l", sid], ["ls", sid, f"{shared.src}/sub"],
                 ["ls", "--recursive", sid, str(shared.src)]):
        assert coffer(shared.repo, *args).stdout == restic(shared.repo, *args).stdout, args


@pytest.mark.parametrize("mode", ["restore-size", "raw-data", "files-by-contents", "blobs-per-file"])
def test_stats_json_agrees(shared: Shared, mode: str) -> None:
    for sel in ([], ["latest"], [shared.snaps[0]], [shared.snaps[1], shared.snaps[2]]):
        theirs, ours = both_json(shared.repo, "stats", "--mode", mode, *sel)
        assert ours == theirs, (mode, sel)
        assert list(ours) == list(theirs)


def test_stats_text_agrees(shared: Shared) -> None:
    for mode in ("restore-size", "raw-data"):
        args = ("stats", "--mode", mode)
        assert coffer(shared.repo, *args).stdout == restic(shared.repo, *args).stdout


def test_diff_agrees(shared: Shared) -> None:
    a, b = shared.snaps[0], shared.snaps[2]
    for args in (["diff", a, b], ["diff", "--metadata", b, a], ["--json", "diff", a, b]):
        assert coffer(shared.repo, *args).stdout == restic(shared.repo, *args).stdout, args


def test_find_agrees_per_snapshot(shared: Shared) -> None:
    for sid in shared.snaps:
        for args in (["find", "-s", sid, "*.txt"], ["--json", "find", "-s", sid, "*.bin", "sub"],
                     ["find", "-l", "-s", sid, "-i", "SMALL*"]):
            assert coffer(shared.repo, *args).stdout == restic(shared.repo, *args).stdout, args


def test_cat_agrees(shared: Shared) -> None:
    for args in (["cat", "config"], ["cat", "masterkey"], ["cat", "snapshot", shared.snaps[0]]):
        assert coffer(shared.repo, *args).stdout == restic(shared.repo, *args).stdout, args
    # coffer's own snapshot carries program_version, which restic 0.14 does not know and drops
    mine = json.loads(coffer(shared.repo, "cat", "snapshot", shared.snaps[1]).stdout)
    theirs = json.loads(restic(shared.repo, "cat", "snapshot", shared.snaps[1]).stdout)
    assert {k: mine.get(k) for k in theirs} == theirs
    tree = json.loads(coffer(shared.repo, "cat", "snapshot", shared.snaps[0]).stdout)["tree"]
    assert coffer(shared.repo, "cat", "blob", tree).stdout == restic(shared.repo, "cat", "blob", tree).stdout


# ------------------------------------------------------------------------------------ keys
@pytest.fixture
def keyrepo(shared: Shared, tmp_path: Path) -> Path:
    """A copy of the shared repository, so key changes do not disturb the other tests."""
    dst = tmp_path / "keyrepo"
    shutil.copytree(shared.repo, dst)
    return dst


def test_key_add_then_restic_opens_with_new_password(keyrepo: Path, tmp_path: Path) -> None:
    (tmp_path / "new").write_text("the added password\n")
    coffer(keyrepo, "key", "add", "--new-password-file", str(tmp_path / "new"))
    r = restic(keyrepo, "snapshots", "--json", password="the added password")
    assert len(json.loads(r.stdout)) == 3
    keys = json.loads(restic(keyrepo, "key", "list", "--json", password="the added password").stdout)
    assert len(keys) == 2
    restic(keyrepo, "snapshots", password=PW)  # the old password still works
    # and coffer lists what restic lists
    ours = json.loads(coffer(keyrepo, "key", "list", "--json").stdout)
    theirs = json.loads(restic(keyrepo, "key", "list", "--json").stdout)
    assert sorted(ours, key=lambda k: k["id"]) == sorted(theirs, key=lambda k: k["id"])


def test_key_passwd_then_restic_uses_only_the_new_password(keyrepo: Path, tmp_path: Path) -> None:
    (tmp_path / "new").write_text("replacement password")
    coffer(keyrepo, "key", "passwd", "--new-password-file", str(tmp_path / "new"))
    assert len(json.loads(restic(keyrepo, "snapshots", "--json", password="replacement password").stdout)) == 3
    r = restic(keyrepo, "snapshots", password=PW, check=False)
    assert r.returncode != 0 and b"wrong password" in r.stderr
    assert len(json.loads(restic(keyrepo, "key", "list", "--json", password="replacement password").stdout)) == 1
    restic(keyrepo, "check", password="replacement password")


def test_key_remove_of_a_restic_key(keyrepo: Path, tmp_path: Path) -> None:
    (tmp_path / "new").write_text("restic-made key")
    restic(keyrepo, "key", "add", "--new-password-file", str(tmp_path / "new"))
    theirs = json.loads(restic(keyrepo, "key", "list", "--json").stdout)
    other = next(k["id"] for k in theirs if not k["current"])
    coffer(keyrepo, "key", "remove", other)
    r = restic(keyrepo, "snapshots", password="restic-made key", check=False)
    assert r.returncode != 0
    restic(keyrepo, "snapshots")
