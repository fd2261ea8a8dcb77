"""A flipped byte anywhere is found and named, and only what depends on it is lost."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from coffer.store.backend.local import LocalBackend
from coffer.store.format.pack import BlobType
from coffer.store.repository import Repository
from conftest import PASSWORD, Runner


def _flip(path: Path, offset: int) -> None:
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def setup(tmp_path: Path, coffer: Runner) -> tuple[Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(7)
    (src / "victim.bin").write_bytes(rnd.randbytes(200_000))
    for i in range(5):
        (src / f"ok{i}.txt").write_text(f"unaffected file {i}\n" * 1000)
    repo = tmp_path / "repo"
    coffer("init", repo=repo)
    coffer("backup", "src", repo=repo, cwd=tmp_path)
    return repo, src


def _victim_location(repo: Path, src: Path) -> tuple[Path, int]:
    r = Repository.open(LocalBackend(str(repo)), PASSWORD)
    r.load_index()
    import hashlib

    bid = hashlib.sha256((src / "victim.bin").read_bytes()).digest()
    loc = r.index.lookup(BlobType.DATA, bid)
    assert loc is not None
    pid = loc.pack_id.hex()
    return repo / "data" / pid[:2] / pid, loc.blob.offset + loc.blob.length // 2


def test_flipped_data_byte_found_by_read_data_and_restore_names_the_file(
    setup: tuple[Path, Path], tmp_path: Path, coffer: Runner
) -> None:
    repo, src = setup
    pack, off = _victim_location(repo, src)
    _flip(pack, off)
    assert coffer("check", repo=repo, check=False).returncode == 0  # structure is intact (as restic)
    r = coffer("check", "--read-data", repo=repo, check=False)
    assert r.returncode == 1
    assert pack.name.encode() in r.stderr, r.stderr
    assert b"repository contains errors" in r.stderr
    target = tmp_path / "out"
    r = coffer("restore", "latest", "--target", str(target), repo=repo, check=False)
    assert r.returncode == 1
    assert b"victim.bin" in r.stderr and b"There were 1 errors" in r.stderr, r.stderr
    assert not (target / "src" / "victim.bin").exists(), "a damaged file must not appear under its name"
    for i in range(5):
        assert (target / "src" / f"ok{i}.txt").read_text() == f"unaffected file {i}\n" * 1000


def test_flipped_byte_in_index_file_is_named(setup: tuple[Path, Path], coffer: Runner) -> None:
    repo, _ = setup
    idx = next((repo / "index").iterdir())
    _flip(idx, 40)
    r = coffer("check", "--read-data", repo=repo, check=False)
    assert r.returncode != 0
    assert idx.name[:8].encode() in r.stderr, r.stderr


def test_flipped_byte_in_snapshot_file_is_named(setup: tuple[Path, Path], tmp_path: Path, coffer: Runner) -> None:
    repo, _ = setup
    coffer("backup", "src", repo=repo, cwd=tmp_path)  # a second, intact snapshot
    snap = sorted((repo / "snapshots").iterdir())[0]
    _flip(snap, 20)
    r = coffer("check", "--read-data", repo=repo, check=False)
    assert r.returncode == 1
    assert snap.name.encode() in r.stderr or snap.name[:8].encode() in r.stderr, r.stderr
    listed = coffer("snapshots", "--json", repo=repo, check=False)
    assert listed.returncode == 0
    assert len(json.loads(listed.stdout)) == 1  # the intact one is still listed
    assert snap.name[:8].encode() in listed.stderr


def test_flipped_byte_in_pack_header_is_found(setup: tuple[Path, Path], coffer: Runner) -> None:
    repo, src = setup
    pack, _ = _victim_location(repo, src)
    size = pack.stat().st_size
    _flip(pack, size - 10)  # inside the encrypted header
    r = coffer("check", "--read-data", repo=repo, check=False)
    assert r.returncode == 1
    assert pack.name.encode() in r.stderr
