"""The metadata cache against a remote repository, counted at the wire by a pass-through proxy:
a second `ls` downloads no snapshot, index or tree pack; `--no-cache` downloads them again; a
damaged cache entry is fetched again and the answer stays right."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import Runner
from fixtures.servers import Servers, unique
from helpers.faultproxy import FaultProxy
from helpers.sourcetree import make_tree

pytestmark = pytest.mark.integration


def _gets(proxy: FaultProxy, part: str) -> int:
    return sum(1 for e in proxy.log if e.method == "GET" and f"/{part}/" in e.path)


def test_second_listing_comes_from_the_cache(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    s3 = servers.moto.get()
    bucket = unique("cache")
    host, port = s3.endpoint.removeprefix("http://").split(":")
    make_tree(tmp_path / "src", big=False, special=False)
    cache = tmp_path / "cache"
    env = {**s3.env(), "COFFER_CACHE_DIR": str(tmp_path / "unused")}
    coffer("init", repo=f"s3:{s3.endpoint}/{bucket}", env=env)
    coffer("backup", "src", repo=f"s3:{s3.endpoint}/{bucket}", env=env, cwd=tmp_path)
    shutil.rmtree(tmp_path / "unused")

    def ls(*flags: str) -> tuple[bytes, FaultProxy]:
        with FaultProxy(host, int(port)) as proxy:
            out = coffer(*flags, "ls", "latest", repo=f"s3:http://127.0.0.1:{proxy.port}/{bucket}", env=env).stdout
        return out, proxy

    first, p1 = ls("--cache-dir", str(cache))
    assert _gets(p1, "snapshots") >= 1 and _gets(p1, "index") >= 1 and _gets(p1, "data") >= 1
    second, p2 = ls("--cache-dir", str(cache))
    assert second == first
    assert (_gets(p2, "snapshots"), _gets(p2, "index"), _gets(p2, "data")) == (0, 0, 0), p2.log
    assert not (tmp_path / "unused").exists()  # --cache-dir beats the environment

    uncached, p3 = ls("--no-cache", "--cache-dir", str(cache))
    assert uncached == first and _gets(p3, "index") >= 1 and _gets(p3, "data") >= 1

    idx = next((cache).glob("*/index/*"))
    raw = bytearray(idx.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    idx.write_bytes(bytes(raw))
    again, p4 = ls("--cache-dir", str(cache))
    assert again == first
    assert _gets(p4, "index") == 1 and _gets(p4, "data") == 0
    assert idx.read_bytes() != bytes(raw)  # repaired in place


def test_check_reads_the_repository_not_the_cache(servers: Servers, tmp_path: Path, coffer: Runner) -> None:
    """A damaged file in the repository is found by `check` even when the cache holds a good copy."""
    s3 = servers.moto.get()
    bucket = unique("cachecheck")
    url = f"s3:{s3.endpoint}/{bucket}"
    make_tree(tmp_path / "src", big=False, special=False)
    env = {**s3.env(), "COFFER_CACHE_DIR": str(tmp_path / "cache")}
    coffer("init", repo=url, env=env)
    coffer("backup", "src", repo=url, env=env, cwd=tmp_path)
    coffer("ls", "latest", repo=url, env=env)  # fills the cache
    c = s3.client()
    key = next(k for k in s3.keys(bucket) if k.startswith("index/"))
    raw = bytearray(c.get_object(Bucket=bucket, Key=key)["Body"].read())
    raw[len(raw) // 2] ^= 0xFF
    c.put_object(Bucket=bucket, Key=key, Body=bytes(raw))
    r = coffer("check", repo=url, env=env, check=False)
    assert r.returncode != 0, r.stdout
    assert key.split("/")[1][:8].encode() in r.stdout + r.stderr


def test_the_key_is_derived_from_the_cached_key_file_while_connecting(
    servers: Servers, tmp_path: Path, coffer: Runner
) -> None:
    """After one command, the URL is known to be this repository and its key file is cached: the
    next command derives the key from that copy while it connects (and a wrong password still fails)."""
    s3 = servers.moto.get()
    url = f"s3:{s3.endpoint}/{unique('keys')}"
    env = {**s3.env(), "COFFER_CACHE_DIR": str(tmp_path / "cache")}
    coffer("init", repo=url, env=env)
    log = tmp_path / "sites"
    coffer("snapshots", repo=url, env={**env, "COFFER_FAILPOINT_LOG": str(log)})
    assert not log.exists() or "key_prefetched" not in log.read_text()  # nothing cached yet
    assert list((tmp_path / "cache").glob("*/keys/*")) and list((tmp_path / "cache" / "repositories").iterdir())
    coffer("snapshots", repo=url, env={**env, "COFFER_FAILPOINT_LOG": str(log)})
    assert "key_prefetched" in log.read_text()
    r = coffer("snapshots", repo=url, password="wrong", env=env, check=False)
    assert r.returncode == 12 and b"wrong password" in r.stderr
