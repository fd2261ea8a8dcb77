"""restic is the judge: it must accept what coffer writes, and the two must deduplicate against
each other down to identical tree IDs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Runner
from helpers.sourcetree import make_tree
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.restic


def _snapshots(run: Runner, repo: Path) -> list[dict[str, object]]:
    out = json.loads(run("snapshots", "--json", repo=repo).stdout)
    assert isinstance(out, list)
    return sorted(out, key=lambda s: str(s["time"]))


def _summary(stdout: bytes) -> dict[str, object]:
    lines = [json.loads(x) for x in stdout.splitlines() if x.strip().startswith(b"{")]
    summaries = [x for x in lines if x.get("message_type") == "summary"]
    assert summaries, stdout
    return summaries[-1]


@pytest.mark.parametrize("version", ["1", "2"])
def test_restic_checks_and_restores_what_coffer_wrote(tmp_path: Path, coffer: Runner, restic: Runner,
                                                       version: str) -> None:
    src = make_tree(tmp_path / "src")
    repo = tmp_path / "repo"
    coffer("init", "--repository-version", version, repo=repo)
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    # a second, incremental backup after a change, so parent handling is exercised too
    (src / "small.txt").write_text("changed content\n")
    (src / "new.txt").write_text("new file\n")
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    cfg = json.loads(restic("cat", "config", repo=repo).stdout)
    assert cfg["version"] == int(version)
    restic("check", "--read-data", repo=repo)
    target = tmp_path / "restored"
    restic("restore", "latest", "--target", str(target), repo=repo)
    assert_trees_equal(src, target / "src")


def test_coffer_after_restic_adds_no_data_and_same_tree(tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    make_tree(tmp_path / "src")
    repo = tmp_path / "repo"
    restic("init", repo=repo)
    restic("backup", "--host", "testhost", "src", repo=repo, cwd=tmp_path)
    s = _summary(coffer("backup", "--json", "--force", "src", repo=repo, cwd=tmp_path).stdout)
    assert s["data_blobs"] == 0, s
    assert s["tree_blobs"] == 0, s
    snaps = _snapshots(restic, repo)
    assert len(snaps) == 2
    assert snaps[0]["tree"] == snaps[1]["tree"]
    restic("check", "--read-data", repo=repo)


def test_restic_after_coffer_adds_no_data_and_same_tree(tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    make_tree(tmp_path / "src")
    repo = tmp_path / "repo"
    coffer("init", repo=repo)
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    s = _summary(restic("backup", "--json", "--force", "--host", "testhost", "src", repo=repo, cwd=tmp_path).stdout)
    assert s["data_blobs"] == 0, s
    assert s["tree_blobs"] == 0, s
    snaps = _snapshots(coffer, repo)
    assert len(snaps) == 2
    assert snaps[0]["tree"] == snaps[1]["tree"]
    restic("check", "--read-data", repo=repo)
