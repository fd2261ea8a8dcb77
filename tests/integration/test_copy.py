"""`coffer copy` from a local repository to S3 and to a REST server, judged by restic.

The destination passes ``restic check --read-data``, the copied snapshots restore byte-identically
with restic, a second copy uploads nothing, a copy killed at any commit point finishes on the next
run without a duplicate snapshot, and the source is never written to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import PASSWORD, Runner
from fixtures.servers import Servers, unique
from helpers.faultproxy import FaultProxy
from helpers.sourcetree import make_tree, write_random
from helpers.treecompare import assert_trees_equal

pytestmark = [pytest.mark.restic, pytest.mark.integration]


def _dest(kind: str, servers: Servers, port: int | None = None) -> tuple[str, dict[str, str], tuple[str, int]]:
    if kind == "s3":
        s3 = servers.moto.get()
        host, p = s3.endpoint.removeprefix("http://").split(":")
        bucket = unique("copy")
        return f"s3:http://127.0.0.1:{{port}}/{bucket}/dst", s3.env(), (host, int(p))
    rest = servers.rest()
    host, p = rest.base.removeprefix("http://").split(":")
    return f"rest:http://127.0.0.1:{{port}}/{unique('copy')}", {}, (host, int(p))


def _tree_state(path: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns)
    return out


def _snaps(run: Runner, repo: str, env: dict[str, str]) -> list[dict[str, object]]:
    out = json.loads(run("snapshots", "--json", repo=repo, env=env).stdout)
    return sorted(out, key=lambda s: str(s["time"]))


@pytest.mark.parametrize("kind", ["s3", "rest"])
def test_copy_local_to_remote(kind: str, servers: Servers, tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    src = make_tree(tmp_path / "src")
    a = str(tmp_path / "A")
    coffer("init", repo=a)
    coffer("backup", "--tag", "first", "src", repo=a, cwd=tmp_path)
    write_random(src / "more.bin", 1_500_000, 42)
    coffer("backup", "src", repo=a, cwd=tmp_path)
    url_t, env, upstream = _dest(kind, servers)
    env = {**env, "COFFER_CACHE_DIR": str(tmp_path / "cache"), "COFFER_FROM_PASSWORD": PASSWORD,
           "RESTIC_FROM_PASSWORD": PASSWORD}
    b = url_t.format(port=upstream[1])
    coffer("init", "--copy-chunker-params", "--from-repo", a, repo=b, env=env)
    before = _tree_state(Path(a))

    out = coffer("copy", "--from-repo", a, repo=b, env=env).stdout.decode()
    assert out.count(" saved") == 2 and "copy started, this may take a while..." in out, out
    assert _tree_state(Path(a)) == before, "copy wrote to the source repository"

    restic("check", "--read-data", repo=b, env=env)
    src_snaps, dst_snaps = _snaps(restic, a, env), _snaps(restic, b, env)
    assert len(dst_snaps) == 2
    for s, d in zip(src_snaps, dst_snaps):
        assert d["original"] == s["id"] and d["tree"] == s["tree"] and "parent" not in d
        ra, rb = tmp_path / f"ra-{s['short_id']}", tmp_path / f"rb-{d['short_id']}"
        restic("restore", str(s["id"]), "--target", str(ra), repo=a, env=env)
        restic("restore", str(d["id"]), "--target", str(rb), repo=b, env=env)
        assert_trees_equal(ra, rb)
    assert dst_snaps[0].get("tags") == ["first"]

    # a second copy uploads nothing: count the requests that write
    with FaultProxy(*upstream) as proxy:
        out = coffer("copy", "--from-repo", a, repo=url_t.format(port=proxy.port), env=env).stdout.decode()
        writes = [e for e in proxy.log if e.method in ("PUT", "POST") and "/locks/" not in e.path]
    assert out.count("skipping source snapshot") == 2, out
    assert writes == [], writes
    # restic agrees that everything is copied already
    assert b"skipping source snapshot" in restic("copy", "--from-repo", a, repo=b, env=env).stdout
    assert len(_snaps(restic, b, env)) == 2


@pytest.mark.parametrize("site", ["after_pack_put:1", "before_snapshot_put:1"])
def test_killed_copy_resumes_without_duplicates(site: str, servers: Servers, tmp_path: Path, coffer: Runner,
                                                restic: Runner) -> None:
    src = make_tree(tmp_path / "src", special=False)
    write_random(src / "extra.bin", 5_000_000, 7)
    a = str(tmp_path / "A")
    coffer("init", repo=a)
    coffer("backup", "src", repo=a, cwd=tmp_path)
    url_t, env, upstream = _dest("s3", servers)
    b = url_t.format(port=upstream[1])
    env = {**env, "COFFER_CACHE_DIR": str(tmp_path / "cache"), "COFFER_FROM_PASSWORD": PASSWORD}
    coffer("init", "--copy-chunker-params", "--from-repo", a, repo=b, env=env)

    killed = coffer("--pack-size", "4", "copy", "--from-repo", a, repo=b,
                    env={**env, "COFFER_FAILPOINT": f"{site}=kill"}, check=False)
    assert killed.returncode == -9, killed.stderr
    assert _snaps(coffer, b, env) == []
    out = coffer("copy", "--from-repo", a, repo=b, env=env).stdout.decode()
    assert " saved" in out, out
    out = coffer("copy", "--from-repo", a, repo=b, env=env).stdout.decode()
    assert "skipping source snapshot" in out, out
    snaps = _snaps(coffer, b, env)
    assert len(snaps) == 1
    restic("unlock", "--remove-all", repo=b, env=env)  # the killed run's lock is left behind, as after any crash
    restic("check", "--read-data", repo=b, env=env)
    target = tmp_path / "restored"
    restic("restore", "latest", "--target", str(target), repo=b, env=env)
    assert_trees_equal(src, target / "src")


def test_copy_filters_and_explicit_ids(tmp_path: Path, coffer: Runner) -> None:
    make_tree(tmp_path / "src", big=False, special=False)
    a, b = str(tmp_path / "A"), str(tmp_path / "B")
    coffer("init", repo=a)
    coffer("backup", "--tag", "keep", "src", repo=a, cwd=tmp_path)
    coffer("backup", "--tag", "skip", "src", repo=a, cwd=tmp_path, env={"COFFER_HOSTNAME": "otherhost"})
    coffer("init", repo=b)
    env = {"COFFER_FROM_PASSWORD": PASSWORD}
    coffer("copy", "--from-repo", a, "--tag", "keep", repo=b, env=env)
    assert [s["tags"] for s in _snaps(coffer, b, env)] == [["keep"]]
    coffer("copy", "--from-repo", a, "--host", "otherhost", repo=b, env=env)
    assert sorted(str(s["hostname"]) for s in _snaps(coffer, b, env)) == ["otherhost", "testhost"]
    r = coffer("copy", repo=b, env=env, check=False)
    assert r.returncode == 1 and b"--from-repo" in r.stderr
    r = coffer("copy", "--from-repo", b, repo=b, env=env, check=False)
    assert r.returncode == 1 and b"same" in r.stderr
    r = coffer("copy", "--from-repo", a, repo=b, env={"COFFER_FROM_PASSWORD": "wrong"}, check=False)
    assert r.returncode == 12 and b"wrong password" in r.stderr
