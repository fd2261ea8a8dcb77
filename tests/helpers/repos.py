"""Repositories with a known history, for the prune, crash, concurrency and disk-full tests.

A :class:`History` backs up a source directory several times with changes in between and records,
for every snapshot, a manifest of the source (``treecompare.snapshot_tree``) taken right after the
backup. Any snapshot can later be restored by coffer or restic and compared with its manifest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffer.engine.backup import Archiver, BackupRequest
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf
from coffer.store.repository import Repository
from conftest import COFFER, PASSWORD, Runner, _env
from helpers.treecompare import EntryMeta, assert_trees_equal, snapshot_tree

FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)


def init_repo(path: Path, version: int = 2) -> Path:
    """A new repository with cheap key derivation (every coffer/restic run derives the key)."""
    Repository.init(LocalBackend(str(path)), PASSWORD, version=version, params=FAST_KDF)
    return path


def damage_data_blob(repo: Path, content: bytes) -> None:
    """Flip one byte inside the stored data blob whose plaintext is ``content`` (a local repository)."""
    import hashlib

    from coffer.store.format.pack import BlobType

    r = Repository.open(LocalBackend(str(repo)), PASSWORD)
    r.load_index()
    loc = r.index.lookup(BlobType.DATA, hashlib.sha256(content).digest())
    assert loc is not None, "no such blob"
    pack = repo / "data" / loc.pack_id.hex()[:2] / loc.pack_id.hex()
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.seek(loc.blob.offset + 40)
        byte = f.read(1)
        f.seek(loc.blob.offset + 40)
        f.write(bytes([byte[0] ^ 0xFF]))


def repo_size(path: Path) -> int:
    """Bytes in the repository's files (what a prune must make smaller)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def snapshot_ids(repo: Path) -> set[str]:
    return {p.name for p in (repo / "snapshots").iterdir() if len(p.name) == 64}


def pack_files(repo: Path) -> dict[str, Path]:
    return {p.name: p for p in (repo / "data").glob("*/*") if len(p.name) == 64}


def write_random(path: Path, size: int, rnd: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rnd.randbytes(size))


@dataclass
class Snap:
    id: str
    manifest: dict[bytes, EntryMeta]
    unique: set[str] = field(default_factory=set)  # files (relative) that only this snapshot has


@dataclass
class History:
    """``src`` backed up after each change; ``snaps`` in backup order."""

    repo: Path
    work: Path
    snaps: list[Snap] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # relative name -> size of the current version

    @property
    def src(self) -> Path:
        return self.work / "src"

    def backup_in_process(self, repo: Repository) -> Snap:
        """The same backup through the library (no interpreter start): for templates built in bulk."""
        cwd = os.getcwd()
        os.chdir(self.work)
        try:
            sid = Archiver(repo, BackupRequest(paths=["src"], host="testhost")).run().snapshot.id.hex()
        finally:
            os.chdir(cwd)
        snap = Snap(sid, snapshot_tree(self.src))
        self.snaps.append(snap)
        return snap

    def backup(self, *, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Snap:
        r = subprocess.run([COFFER, "backup", "--json", *args, "src"], cwd=self.work,
                           env=_env(self.repo, PASSWORD, extra_env), capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()
        summary = [json.loads(x) for x in r.stdout.splitlines() if b'"summary"' in x][-1]
        sid = next(s for s in snapshot_ids(self.repo) if s.startswith(summary["snapshot_id"]))
        snap = Snap(sid, snapshot_tree(self.src))
        self.snaps.append(snap)
        return snap


def make_history(repo: Path, work: Path, *, versions: int = 6, seed: int = 1, file_size: int = 300_000,
                 pack_size: str = "1", extra_env: dict[str, str] | None = None, in_process: bool = False) -> History:
    """``versions`` snapshots of a source where each version adds two random files, rewrites one
    and deletes one, so every snapshot holds data no other snapshot has.

    ``in_process`` backs up through the library instead of the CLI (``pack_size`` in KiB then, e.g. "256k").
    """
    rnd = random.Random(seed)
    h = History(repo, work)
    lib: Repository | None = None
    if in_process:
        lib = Repository.open(LocalBackend(str(repo)), PASSWORD)
        lib.pack_size = int(pack_size.rstrip("kK")) * 1024 if pack_size.lower().endswith("k") \
            else int(pack_size) * 1024 * 1024
        lib.load_index()
    h.src.mkdir(parents=True, exist_ok=True)
    write_random(h.src / "base" / "common.bin", file_size * 2, rnd)
    (h.src / "base" / "small.txt").write_text("stays the same\n")
    for v in range(versions):
        for k in range(2):
            write_random(h.src / f"v{v}" / f"new{k}.bin", file_size + rnd.randrange(file_size), rnd)
        write_random(h.src / "rewritten.bin", file_size, rnd)
        old = h.src / f"v{v - 2}" if v >= 2 else None
        if old is not None and old.exists():
            shutil.rmtree(old)
        if lib is not None:
            h.backup_in_process(lib)
        else:
            h.backup(extra_env=extra_env, args=("--pack-size", pack_size) if pack_size else ())
    if lib is not None:
        lib.close()
    return h


def restore_and_compare(run: Runner, repo: Path, snap: Snap, target: Path, *, restic: bool = False) -> None:
    """Restore ``snap`` with coffer (or restic) and compare it with the manifest taken at backup time."""
    shutil.rmtree(target, ignore_errors=True)
    run("restore", snap.id, "--target", str(target), repo=repo)
    assert_trees_equal(snap.manifest, target / "src")
    shutil.rmtree(target, ignore_errors=True)


def snapshots_json(run: Runner, repo: Path) -> list[dict[str, Any]]:
    out = json.loads(run("snapshots", "--json", repo=repo).stdout or b"[]")
    assert isinstance(out, list)
    return out
