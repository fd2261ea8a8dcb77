"""coffer's check and restic 0.14's ``check --read-data`` agree, on repositories either tool wrote.

A clean repository is clean for both; after one pack is damaged (a flipped byte in a blob or in
the header, truncation, deletion), both report an error that names that pack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from coffer.engine.backup import Archiver, BackupRequest
from coffer.store.backend.base import FileType
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf, pack
from coffer.store.format.pack import BlobType
from coffer.store.maintenance.check import check, load_check_index
from coffer.store.repository import Repository
from helpers.sourcetree import make_tree, write_random

pytestmark = [
    pytest.mark.restic,
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic binary not installed"),
]

MiB = 1024 * 1024
PASSWORD = "compat-check"


def restic(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(repo))
    proc = subprocess.run(["restic", "--no-cache", *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if check:
        assert proc.returncode == 0, f"restic {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = make_tree(tmp_path_factory.mktemp("check-compat") / "src")
    for i in range(3):  # enough data for several data packs
        write_random(src / f"blob{i}.bin", 6 * MiB + i, 100 + i)
    return src


@pytest.fixture(scope="module")
def restic_template(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("restic-made") / "repo"
    restic(repo, "init")
    restic(repo, "backup", "--pack-size", "4", str(sources))
    restic(repo, "backup", "--pack-size", "4", str(sources))
    return repo


@pytest.fixture(scope="module")
def coffer_template(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("coffer-made") / "repo"
    repo = Repository.init(LocalBackend(str(d)), PASSWORD, params=kdf.ScryptParams(n=1 << 12, r=8, p=1))
    repo.pack_size = 4 * MiB
    repo.load_index()
    Archiver(repo, BackupRequest(paths=[str(sources)])).run()
    repo.close()
    return d


@pytest.fixture(params=["restic", "coffer"])
def repo_dir(request: pytest.FixtureRequest, restic_template: Path, coffer_template: Path, tmp_path: Path) -> Path:
    src = restic_template if request.param == "restic" else coffer_template
    d = tmp_path / "repo"
    shutil.copytree(src, d)
    return d


def open_repo(d: Path) -> Repository:
    return Repository.open(LocalBackend(str(d)), PASSWORD)


def pack_path(d: Path, pid: bytes) -> Path:
    return d / "data" / pid.hex()[:2] / pid.hex()


def test_clean_repository_both_agree(repo_dir: Path) -> None:
    res = check(open_repo(repo_dir), read_data=True)
    assert res.ok and [f for f in res.findings if f.severity != "info"] == []
    assert res.packs_read == res.packs >= 4
    proc = restic(repo_dir, "check", "--read-data")
    assert "no errors were found" in proc.stdout


def _damage(d: Path, pid: bytes, how: str, victim_offset: int) -> None:
    p = pack_path(d, pid)
    os.chmod(p, 0o600)
    if how == "remove":
        p.unlink()
        return
    data = bytearray(p.read_bytes())
    if how == "truncate":
        p.write_bytes(bytes(data[:-7]))
        return
    if how == "flip-blob":
        off = victim_offset
    else:  # flip-header
        hlen = pack.header_length(bytes(data[-4:]), len(data))
        off = len(data) - 4 - hlen + 25
    data[off] ^= 0x01
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip-blob", "flip-header", "truncate", "remove"])
def test_damaged_pack_both_report_it(repo_dir: Path, how: str) -> None:
    repo = open_repo(repo_dir)
    ci = load_check_index(repo)
    pid, blobs = max(((p, bl) for p, bl in ci.packs.items() if bl[0].type == BlobType.DATA), key=lambda x: len(x[1]))
    victim = blobs[len(blobs) // 2]
    _damage(repo_dir, pid, how, victim.offset + victim.length // 3)

    res = check(repo, read_data=True)
    assert not res.ok
    bad_packs = {f.object for f in res.errors if f.object.startswith("pack/")}
    assert bad_packs == {f"pack/{pid.hex()}"}
    if how == "flip-blob":
        (dmg,) = [f for f in res.errors if f.kind == "pack_damaged"]
        assert dmg.blobs == (victim.id.hex(),)
    if how == "remove":
        assert any(f.kind == "blob_lost" for f in res.errors)  # the files that lost data are named

    # restic retries a missing pack for ~40 s under --read-data; its structure check names it already.
    proc = restic(repo_dir, "check", *([] if how == "remove" else ["--read-data"]), check=False)
    assert proc.returncode != 0
    assert pid.hex() in proc.stdout + proc.stderr


def test_unreferenced_pack_is_not_an_error_for_either(repo_dir: Path, tmp_path: Path) -> None:
    repo = open_repo(repo_dir)
    # A valid pack of another repository, copied in: no index names it, so both tools only warn.
    other = tmp_path / "other"
    o = Repository.init(LocalBackend(str(other)), PASSWORD, params=kdf.ScryptParams(n=1 << 10, r=8, p=1))
    o.load_index()
    o.save_blob(BlobType.DATA, b"orphan data")
    o.flush()
    (fi,) = o.list_files(FileType.PACK)
    dst = repo_dir / "data" / fi.name[:2] / fi.name
    shutil.copy(other / "data" / fi.name[:2] / fi.name, dst)
    res = check(repo, read_data=True)
    assert res.ok
    assert [(f.kind, f.object) for f in res.warnings] == [("pack_unreferenced", f"pack/{fi.name}")]
    proc = restic(repo_dir, "check", "--read-data", check=False)
    assert proc.returncode == 0, proc.stderr
