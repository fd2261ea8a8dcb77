"""restic and coffer share remote repositories: what one writes over the network the other reads.

restic 0.14 is the judge. It backs up into a bucket on an S3 server (and a REST server) and coffer
restores that byte-identically; coffer backs up and restic's ``check --read-data`` and ``restore``
accept it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Runner
from fixtures.servers import Servers, unique
from helpers.sourcetree import make_tree
from helpers.treecompare import assert_trees_equal

pytestmark = [pytest.mark.restic, pytest.mark.integration]

KINDS = ["s3-moto", "rest", pytest.param("s3-ceph", marks=pytest.mark.slow)]


def _repo(kind: str, servers: Servers, tmp_path: Path) -> tuple[str, dict[str, str]]:
    env = {"COFFER_CACHE_DIR": str(tmp_path / "coffer-cache")}
    if kind.startswith("s3"):
        srv = servers.moto.get() if kind == "s3-moto" else servers.ceph.get()
        return srv.url(unique("interop"), "repo"), {**env, **srv.env()}
    return servers.rest().url(unique("interop")), env


@pytest.mark.parametrize("kind", KINDS)
def test_coffer_restores_what_restic_wrote(kind: str, servers: Servers, tmp_path: Path, coffer: Runner,
                                           restic: Runner) -> None:
    url, env = _repo(kind, servers, tmp_path)
    src = make_tree(tmp_path / "src")
    restic("init", repo=url, env=env)
    restic("backup", "--host", "testhost", "src", repo=url, env=env, cwd=tmp_path)
    (src / "small.txt").write_text("second version\n")
    restic("backup", "--host", "testhost", "src", repo=url, env=env, cwd=tmp_path)
    coffer("check", repo=url, env=env)
    target = tmp_path / "restored"
    coffer("restore", "latest", "--target", str(target), repo=url, env=env)
    assert_trees_equal(src, target / "src")


@pytest.mark.parametrize("kind", KINDS)
def test_restic_checks_and_restores_what_coffer_wrote(kind: str, servers: Servers, tmp_path: Path,
                                                      coffer: Runner, restic: Runner) -> None:
    url, env = _repo(kind, servers, tmp_path)
    src = make_tree(tmp_path / "src")
    coffer("init", repo=url, env=env)
    coffer("backup", "src", repo=url, env=env, cwd=tmp_path)
    (src / "new.txt").write_text("added later\n")
    coffer("backup", "src", repo=url, env=env, cwd=tmp_path)
    restic("check", "--read-data", repo=url, env=env)
    target = tmp_path / "restored"
    restic("restore", "latest", "--target", str(target), repo=url, env=env)
    assert_trees_equal(src, target / "src")


def test_sftp_round_trip_with_restic(servers: Servers, tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    """coffer writes over SFTP; restic reads the same directory as a local repository, and back."""
    ssh = servers.ssh()
    repo_dir = tmp_path / "sftp-repo"
    src = make_tree(tmp_path / "src", big=False)
    coffer(*ssh.cli_options(), "init", repo=ssh.url(repo_dir))
    coffer(*ssh.cli_options(), "backup", "src", repo=ssh.url(repo_dir), cwd=tmp_path)
    restic("check", "--read-data", repo=repo_dir)
    restic("backup", "--host", "testhost", "src", repo=repo_dir, cwd=tmp_path)
    target = tmp_path / "restored"
    coffer(*ssh.cli_options(), "restore", "latest", "--target", str(target), repo=ssh.url(repo_dir))
    assert_trees_equal(src, target / "src")
