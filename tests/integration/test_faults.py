"""Network faults between coffer and real S3/REST servers, injected by a loopback proxy.

- ~10 % of requests answered 500/503 or reset (before forwarding, or after the server did the work):
  backup and restore complete, and the repository checks clean with coffer and with restic;
- an upload cut in the middle leaves no partial object behind;
- wrong credentials and a missing bucket fail at once with a message that says what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Runner
from fixtures.servers import Servers, unique
from helpers.faultproxy import FaultProxy
from helpers.sourcetree import make_tree
from helpers.treecompare import assert_trees_equal

pytestmark = pytest.mark.integration

FAST_RETRY = ["-o", "retry.base-delay=0.05", "-o", "retry.max-delay=0.5", "-o", "retry.attempts=8"]


class Target:
    """A repository reachable directly and through a fault proxy."""

    def __init__(self, kind: str, servers: Servers, tmp_path: Path) -> None:
        self.kind = kind
        self.env = {"COFFER_CACHE_DIR": str(tmp_path / "cache")}
        if kind == "s3-moto":
            self.s3 = servers.moto.get()
            self.name = unique("faults")
            self.env.update(self.s3.env())
            host, port = self.s3.endpoint.removeprefix("http://").split(":")
        else:
            self.rest = servers.rest()
            self.name = unique("faults")
            host, port = self.rest.base.removeprefix("http://").split(":")
        self.upstream = (host, int(port))

    def url(self, port: int | None = None) -> str:
        host = f"127.0.0.1:{port or self.upstream[1]}"
        if self.kind == "s3-moto":
            return f"s3:http://{host}/{self.name}/repo"
        return f"rest:http://{host}/{self.name}"

    def pack_objects(self) -> dict[str, bytes]:
        """Every object under data/, read straight from the server's storage."""
        out: dict[str, bytes] = {}
        if self.kind == "s3-moto":
            c = self.s3.client()
            for key in self.s3.keys(self.name):
                if "/data/" in key:
                    out[key.rsplit("/", 1)[1]] = c.get_object(Bucket=self.name, Key=key)["Body"].read()
            return out
        for root, _dirs, files in os.walk(self.rest.root / self.name / "data"):
            for f in files:
                out[f] = Path(root, f).read_bytes()
        return out


@pytest.fixture(params=["s3-moto", "rest"])
def target(request: pytest.FixtureRequest, servers: Servers, tmp_path: Path) -> Iterator[Target]:
    yield Target(request.param, servers, tmp_path)


@pytest.mark.restic
def test_backup_and_restore_through_a_flaky_network(target: Target, tmp_path: Path, coffer: Runner,
                                                    restic: Runner) -> None:
    src = make_tree(tmp_path / "src")
    # seed 5: of the first 25 requests, #6 is reset after the server answered, #9 and #15 get 503,
    # #21 gets half a body, #24 a 500 - so every kind of fault is hit in every run
    with FaultProxy(*target.upstream, rate=0.10, seed=5) as proxy:
        url = target.url(proxy.port)
        coffer(*FAST_RETRY, "init", repo=url, env=target.env)
        coffer(*FAST_RETRY, "backup", "src", repo=url, env=target.env, cwd=tmp_path)
        (src / "small.txt").write_text("changed\n")
        coffer(*FAST_RETRY, "backup", "src", repo=url, env=target.env, cwd=tmp_path)
        coffer(*FAST_RETRY, "--no-cache", "restore", "latest", "--target", str(tmp_path / "out"), repo=url,
               env=target.env)
        # again through the restore's worker processes (each its own connections, the same retries)
        coffer(*FAST_RETRY, "--no-cache", "restore", "latest", "--target", str(tmp_path / "out-workers"), repo=url,
               env={**target.env, "COFFER_RESTORE_PROCESS_THRESHOLD": "0", "COFFER_RESTORE_PROCESSES": "2"})
        faults = proxy.injected()
        total = len(proxy.log)
    assert_trees_equal(src, tmp_path / "out" / "src")
    assert_trees_equal(src, tmp_path / "out-workers" / "src")
    assert total > 25 and len(faults) >= 5, f"only {len(faults)} faults in {total} requests"
    kinds = {f.fault for f in faults}
    assert {"reset_after", "status503", "status500", "truncate_response"} <= kinds, kinds
    direct = target.url()
    coffer("check", "--read-data", repo=direct, env=target.env)
    restic("check", "--read-data", repo=direct, env=target.env)


def test_cut_in_the_middle_of_a_pack_upload_leaves_no_partial_object(target: Target, tmp_path: Path,
                                                                      coffer: Runner) -> None:
    make_tree(tmp_path / "src")
    cut: list[str] = []

    def first_pack_upload(method: str, path: str) -> str | None:
        if method in ("PUT", "POST") and "/data/" in path and not cut:
            cut.append(path)
            return "cut_upload"
        return None

    coffer("init", repo=target.url(), env=target.env)
    with FaultProxy(*target.upstream, rule=first_pack_upload) as proxy:
        url = target.url(proxy.port)
        r = coffer("-o", "retry.attempts=1", "backup", "src", repo=url, env=target.env, cwd=tmp_path, check=False)
        assert r.returncode != 0
        assert b"save data/" in r.stderr and b"connection" in r.stderr.lower(), r.stderr
    assert cut
    name = cut[0].rsplit("/", 1)[1]
    time.sleep(0.5)  # let the server finish handling the dead request
    objects = target.pack_objects()
    assert name not in objects, "the cut upload became visible"
    for n, data in objects.items():
        assert hashlib.sha256(data).hexdigest() == n, f"partial or damaged object {n}"
    # with retries (the default) the same backup goes through, and the repository is clean
    with FaultProxy(*target.upstream, rule=lambda m, p: None) as proxy:
        coffer(*FAST_RETRY, "backup", "src", repo=target.url(proxy.port), env=target.env, cwd=tmp_path)
    coffer("check", "--read-data", repo=target.url(), env=target.env)


def test_missing_bucket_fails_fast_naming_it(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    s3 = servers.moto.get()
    url = s3.url("no-such-bucket-here", "repo")
    t0 = time.monotonic()
    r = coffer("snapshots", repo=url, env=s3.env(), check=False)
    assert time.monotonic() - t0 < 15
    assert r.returncode == 10, r.stderr
    assert b"bucket 'no-such-bucket-here' does not exist" in r.stderr, r.stderr


def test_no_s3_credentials_fail_fast(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    s3 = servers.moto.get()
    env = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    env.update({k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")})
    t0 = time.monotonic()
    r = coffer("snapshots", repo=s3.url(unique("nocreds")), env=env, check=False)
    assert time.monotonic() - t0 < 15
    assert r.returncode == 1
    assert b"no S3 credentials found" in r.stderr and b"AWS_ACCESS_KEY_ID" in r.stderr, r.stderr


def test_s3_credentials_from_shared_file_and_profile(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    s3 = servers.moto.get()
    creds = tmp_path / "credentials"
    creds.write_text(f"[offsite]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n")
    env = {"HOME": str(tmp_path), "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_PROFILE": "offsite",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "COFFER_CACHE_DIR": str(tmp_path / "cache")}
    env.update({k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    url = s3.url(unique("profile"))
    coffer("init", repo=url, env=env)
    coffer("snapshots", repo=url, env=env)


def test_wrong_rest_password_fails_fast(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    srv = servers.rest_auth()
    good = srv.url(unique("auth"))
    coffer("init", repo=good)
    bad = good.replace(f":{srv.password}@", ":wrong@")
    t0 = time.monotonic()
    r = coffer("snapshots", repo=bad, check=False)
    assert time.monotonic() - t0 < 15
    assert r.returncode == 1
    assert b"HTTP 401" in r.stderr and b"user and password" in r.stderr, r.stderr
    assert b"wrong" not in r.stderr  # the password is never printed


@pytest.mark.slow
def test_wrong_s3_secret_fails_fast_on_ceph(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    """Ceph checks signatures (moto does not): a wrong secret is refused, reported, not retried."""
    ceph = servers.ceph.get()
    url = ceph.url(unique("auth"), "repo")
    coffer("init", repo=url, env={**ceph.env(), "COFFER_CACHE_DIR": str(tmp_path / "c")})
    t0 = time.monotonic()
    r = coffer("snapshots", repo=url, env={**ceph.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}, check=False)
    assert time.monotonic() - t0 < 15
    assert r.returncode == 1
    assert b"access denied" in r.stderr and b"SignatureDoesNotMatch" in r.stderr, r.stderr
    assert b"retrying" not in r.stderr


def test_sftp_unknown_host_key_is_refused(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    ssh = servers.ssh()
    url = ssh.url(tmp_path / "repo")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    opts = ["-o", f"sftp.key={ssh.client_key}", "-o", f"sftp.known-hosts={empty}"]
    t0 = time.monotonic()
    r = coffer(*opts, "init", repo=url, check=False)
    assert time.monotonic() - t0 < 15
    assert r.returncode == 1
    assert b"unknown host key" in r.stderr and b"sftp.insecure-accept-host-key" in r.stderr, r.stderr
    coffer(*opts, "-o", "sftp.insecure-accept-host-key=true", "init", repo=url)
    wrong = tmp_path / "other_known_hosts"
    other = (ssh.dir / "clientkey.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{ssh.port} {other[0]} {other[1]}\n")
    r = coffer("-o", f"sftp.key={ssh.client_key}", "-o", f"sftp.known-hosts={wrong}", "snapshots", repo=url,
               check=False)
    assert r.returncode == 1 and b"HOST KEY MISMATCH" in r.stderr, r.stderr


def test_a_body_cut_short_is_detected_and_fetched_again(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    from coffer.store.backend.base import FileType, Handle
    from coffer.store.backend.registry import open_backend
    from coffer.store.backend.retry import RetryBackend

    for k, v in target.env.items():
        monkeypatch.setenv(k, v)
    data = os.urandom(3_000_000)
    h = Handle(FileType.PACK, hashlib.sha256(data).hexdigest())
    direct = open_backend(target.url(), {})
    direct.create()
    direct.save(h, data)
    gets: list[str] = []

    def first_get_truncated(method: str, path: str) -> str | None:
        if method == "GET" and "/data/" in path:
            gets.append(path)
            return "truncate_response" if len(gets) == 1 else None
        return None

    with FaultProxy(*target.upstream, rule=first_get_truncated) as proxy:
        b = open_backend(target.url(proxy.port), {"retry.base-delay": "0.01"})
        assert isinstance(b, RetryBackend)
        assert b.load(h, 1000, 2_000_000) == data[1000:2_001_000]
        assert b.retries == 1 and len(gets) == 2
        b.close()
    direct.close()
