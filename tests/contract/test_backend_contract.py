"""One conformance suite for every storage driver, against real servers.

Written once and run against: a local directory, S3 on moto over HTTP, S3 on a real Ceph radosgw
(which checks signatures and Content-MD5), restic's REST protocol on ``rclone serve restic``, and
SFTP on a private sshd. Backends are opened the way the CLI opens them (``registry.open_backend``
with restic-style URLs), so URL parsing and the retry wrapper are part of what is tested.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffer.errors import ObjectNotFound, ShortRead
from coffer.store.backend.base import Backend, BackendProperties, FileType, Handle
from coffer.store.backend.deferred import DeferredBackend
from coffer.store.backend.registry import open_backend
from fixtures.servers import Servers, unique

DRIVERS = ["local", "local-deferred", "s3-moto", pytest.param("s3-ceph", marks=pytest.mark.slow), "rest", "sftp"]
PAGE = 7  # a small S3 page size, so a few dozen keys already need several LIST pages


def _open(kind: str, servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    opts = {"retry.base-delay": "0.01", "retry.attempts": "3"}
    if kind == "local":
        return open_backend(str(tmp_path / "repo"), opts)
    if kind == "local-deferred":  # how a forked backup worker reaches the repository
        return DeferredBackend(lambda: open_backend(str(tmp_path / "repo"), opts), BackendProperties(), "deferred")
    if kind.startswith("s3"):
        srv = servers.moto.get() if kind == "s3-moto" else servers.ceph.get()
        for k, v in srv.env().items():
            monkeypatch.setenv(k, v)
        return open_backend(srv.url(unique("contract"), "some/prefix"), {**opts, "s3.list-page-size": str(PAGE)})
    if kind == "rest":
        return open_backend(servers.rest().url(unique("contract")), opts)
    if kind == "sftp":
        ssh = servers.ssh()
        return open_backend(ssh.url(tmp_path / "sftp-repo"), {**opts, **ssh.options()})
    raise AssertionError(kind)


@pytest.fixture(params=DRIVERS)
def be(request: pytest.FixtureRequest, servers: Servers, tmp_path: Path,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    b = _open(request.param, servers, tmp_path, monkeypatch)
    b.create()
    yield b
    b.close()


def hid(i: int, salt: bytes = b"") -> str:
    return hashlib.sha256(salt + i.to_bytes(4, "big")).hexdigest()


def test_create_is_idempotent_and_starts_empty(be: Backend) -> None:
    be.create()
    for t in FileType:
        assert list(be.list(t)) == [], t
    with pytest.raises(ObjectNotFound):
        be.load(Handle(FileType.CONFIG))
    assert not be.exists(Handle(FileType.CONFIG))
    assert be.properties.connections >= 1


def test_save_load_stat_every_type(be: Backend) -> None:
    others = [Handle(t, hid(i)) for i, t in enumerate(FileType) if t is not FileType.CONFIG]
    handles = [Handle(FileType.CONFIG), *others]
    for i, h in enumerate(handles):
        be.save(h, f"content {i} of {h}".encode())
    for i, h in enumerate(handles):
        data = f"content {i} of {h}".encode()
        assert be.load(h) == data
        assert be.stat(h).size == len(data)
        assert be.exists(h)
    assert [fi.size for fi in be.list(FileType.CONFIG)] == [len(f"content 0 of {handles[0]}".encode())]
    for h in handles[1:]:
        assert [fi.name for fi in be.list(h.type)] == [h.name], h.type  # no leakage between types


def test_exact_ranges_and_short_reads(be: Backend) -> None:
    data = os.urandom(100_000)
    h = Handle(FileType.PACK, hid(1))
    be.save(h, data)
    assert be.load(h, 0, 10) == data[:10]
    assert be.load(h, 12345, 54321) == data[12345:12345 + 54321]
    assert be.load(h, 99_990, 10) == data[-10:]
    assert be.load(h, 99_000) == data[99_000:]
    assert be.load(h, 5, 0) == b""
    with pytest.raises(ShortRead):
        be.load(h, 99_990, 11)  # runs past the end: never silently shorter
    with pytest.raises(ShortRead):
        be.load(h, 200_000, 10)


def test_missing_objects(be: Backend) -> None:
    h = Handle(FileType.SNAPSHOT, hid(7))
    with pytest.raises(ObjectNotFound):
        be.load(h)
    with pytest.raises(ObjectNotFound):
        be.load(h, 10, 10)
    with pytest.raises(ObjectNotFound):
        be.stat(h)
    assert not be.exists(h)


def test_remove(be: Backend) -> None:
    h = Handle(FileType.LOCK, hid(3))
    be.save(h, b"lock")
    be.remove(h)
    assert not be.exists(h)
    assert list(be.list(FileType.LOCK)) == []
    try:
        be.remove(h)  # removing what is gone is either a no-op or ObjectNotFound, never anything else
    except ObjectNotFound:
        pass


def test_save_again_is_harmless(be: Backend) -> None:
    """A retried PUT of a content-addressed object (the first try's answer was lost) must succeed."""
    h = Handle(FileType.INDEX, hid(9))
    be.save(h, b"same bytes")
    be.save(h, b"same bytes")
    assert be.load(h) == b"same bytes"
    assert [fi.name for fi in be.list(FileType.INDEX)] == [h.name]


def test_list_many_across_pages_and_shards(be: Backend) -> None:
    n = 4 * PAGE + 3
    packs = {hid(i, b"p"): i + 1 for i in range(n)}
    index = {hid(i, b"i"): 2 * i + 1 for i in range(n)}
    jobs = [(Handle(FileType.PACK, k), v) for k, v in packs.items()] + \
           [(Handle(FileType.INDEX, k), v) for k, v in index.items()]
    with cf.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda j: be.save(j[0], b"x" * j[1]), jobs))
    assert {fi.name: fi.size for fi in be.list(FileType.PACK)} == packs
    assert {fi.name: fi.size for fi in be.list(FileType.INDEX)} == index
    assert len({k[:2] for k in packs}) > 10  # spread over many data/xx shards


def test_large_object_parallel_reads(be: Backend) -> None:
    data = os.urandom(17 * 1024 * 1024 + 5)
    h = Handle(FileType.PACK, hashlib.sha256(data).hexdigest())
    be.save(h, data)
    assert be.stat(h).size == len(data)
    ranges = [(i * 1_000_003, 700_001) for i in range(16)]
    with cf.ThreadPoolExecutor(be.properties.connections) as ex:
        got = list(ex.map(lambda r: be.load(h, *r), ranges))
    assert got == [data[o:o + n] for o, n in ranges]
    assert hashlib.sha256(be.load(h)).hexdigest() == h.name


def test_parallel_saves_land_whole(be: Backend) -> None:
    blobs = [os.urandom(200_000 + i) for i in range(12)]
    with cf.ThreadPoolExecutor(max(2, be.properties.connections)) as ex:
        list(ex.map(lambda b: be.save(Handle(FileType.PACK, hashlib.sha256(b).hexdigest()), b), blobs))
    listed = {fi.name: fi.size for fi in be.list(FileType.PACK)}
    assert listed == {hashlib.sha256(b).hexdigest(): len(b) for b in blobs}
    for b in blobs:
        assert be.load(Handle(FileType.PACK, hashlib.sha256(b).hexdigest())) == b


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3-moto", "rest"])
def test_list_more_than_1000(kind: str, servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More keys than one S3 LIST page holds by default (1000), with the default page size."""
    b = _open(kind, servers, tmp_path, monkeypatch)
    if kind == "s3-moto":
        b.close()
        srv = servers.moto.get()
        b = open_backend(srv.url(unique("many")), {})
    b.create()
    names = [hid(i, b"many") for i in range(1005)]
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda n: b.save(Handle(FileType.SNAPSHOT, n), b"s"), names))
    assert sorted(fi.name for fi in b.list(FileType.SNAPSHOT)) == sorted(names)
    b.close()
