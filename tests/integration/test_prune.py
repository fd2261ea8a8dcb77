"""forget --prune, prune and repair on real repositories, judged by restic 0.14.

The main case: after ``coffer forget --prune`` restic's ``check --read-data`` passes, every kept
snapshot restores byte-identically with coffer and with restic, and the repository shrank by at least
the data only the removed snapshots had. Around it: prune's plan equals restic's on the same
repository, and prune refuses to run when it cannot see everything (missing pack T22, damaged
snapshot or tree T26), keeps one copy of duplicated blobs (T23), and repair index / repair snapshots
bring a damaged repository back to one that prune and restic accept (T24, T28).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from coffer.engine.backup import Archiver, BackupRequest
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.local import LocalBackend
from coffer.store.format.index import IndexFile, IndexPack
from coffer.store.format.pack import BlobType
from coffer.store.repository import Repository
from conftest import PASSWORD, Runner
from helpers.repos import (
    History,
    init_repo,
    make_history,
    pack_files,
    repo_size,
    restore_and_compare,
    snapshot_ids,
    snapshots_json,
)

pytestmark = pytest.mark.restic


@pytest.fixture(scope="module")
def history_template(tmp_path_factory: pytest.TempPathFactory) -> History:
    base = tmp_path_factory.mktemp("prune-history")
    return make_history(init_repo(base / "repo"), base / "work", versions=6)


@pytest.fixture
def hist(history_template: History, tmp_path: Path) -> History:
    """A private copy of the six-snapshot history."""
    repo = tmp_path / "repo"
    shutil.copytree(history_template.repo, repo)
    return History(repo, history_template.work, list(history_template.snaps), dict(history_template.files))


def unique_bytes(removed: list[dict[bytes, object]], kept: list[dict[bytes, object]]) -> int:
    """Bytes of file content present only in the removed snapshots' manifests."""
    keep = {m.sha256 for man in kept for m in man.values() if getattr(m, "sha256", None)}  # type: ignore[attr-defined]
    seen: dict[str, int] = {}
    for man in removed:
        for m in man.values():
            sha = getattr(m, "sha256", None)
            if sha and sha not in keep:
                seen[sha] = m.size  # type: ignore[attr-defined]
    return sum(seen.values())


def test_forget_prune_keeps_snapshots_intact_and_reclaims_space(
    hist: History, tmp_path: Path, coffer: Runner, restic: Runner
) -> None:
    before = repo_size(hist.repo)
    kept = hist.snaps[1::2]
    removed = hist.snaps[0::2]
    # --max-unused 0: every unused byte goes (the default tolerates 5 % to avoid repacking for little gain)
    r = coffer("forget", *[s.id[:12] for s in removed], "--prune", "--max-unused", "0", repo=hist.repo)
    out = r.stdout.decode()
    assert "repacking packs" in out and "removing" in out and "done" in out, out
    assert snapshot_ids(hist.repo) == {s.id for s in kept}
    restic("check", "--read-data", repo=hist.repo)
    for s in kept:
        restore_and_compare(coffer, hist.repo, s, tmp_path / "r-coffer")
        restore_and_compare(restic, hist.repo, s, tmp_path / "r-restic")
    freed = before - repo_size(hist.repo)
    unique = unique_bytes([s.manifest for s in removed], [s.manifest for s in kept])
    assert unique >= 900_000
    assert freed >= unique, (freed, unique)
    # a second prune finds nothing to do
    again = json.loads(coffer("prune", "--json", repo=hist.repo).stdout)
    assert again["plan"]["stats"]["size_unused"] == 0
    assert all(p["action"] == "keep" for p in again["plan"]["packs"])


def test_forget_policy_prune_then_restic_agrees(hist: History, tmp_path: Path, coffer: Runner,
                                                restic: Runner) -> None:
    coffer("forget", "--keep-last", "2", "--prune", repo=hist.repo)
    assert snapshot_ids(hist.repo) == {s.id for s in hist.snaps[-2:]}
    restic("check", "--read-data", repo=hist.repo)
    # restic's own prune finds nothing left to remove
    out = restic("prune", "--dry-run", repo=hist.repo).stdout.decode()
    assert re.search(r"total prune:\s+0 blobs", out), out
    for s in hist.snaps[-2:]:
        restore_and_compare(restic, hist.repo, s, tmp_path / "r")


def _stats_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("used:"))
    end = next(i for i, x in enumerate(lines) if x.startswith("to delete:") and "packs" in x)
    return lines[start:end + 1]


def test_prune_plan_equals_restics(hist: History, tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    """Same repository, same flags: the same counts and sizes to keep, repack and delete."""
    coffer("forget", *[s.id[:12] for s in hist.snaps[:3]], repo=hist.repo)
    copy = tmp_path / "copy"
    shutil.copytree(hist.repo, copy)
    for flags in ([], ["--max-unused", "0"], ["--max-unused", "unlimited"], ["--max-repack-size", "1M"],
                  ["--repack-small"]):
        want = restic("prune", "--dry-run", "-v", *flags, repo=hist.repo).stdout.decode()
        got = coffer("prune", "--dry-run", "-v", *flags, repo=copy).stdout.decode()
        assert _stats_block(got) == _stats_block(want), flags
    # and carried out, both leave a repository of the same size
    restic("prune", repo=hist.repo)
    coffer("prune", repo=copy)
    restic("check", "--read-data", repo=copy)
    assert abs(repo_size(copy) - repo_size(hist.repo)) < 16 * 1024


def test_dry_run_changes_nothing(hist: History, coffer: Runner) -> None:
    coffer("forget", hist.snaps[0].id[:12], repo=hist.repo)
    files = sorted(str(p.relative_to(hist.repo)) for p in hist.repo.rglob("*") if p.is_file())
    r = coffer("prune", "--dry-run", "--json", repo=hist.repo)
    plan = json.loads(r.stdout)["plan"]
    assert any(p["action"] in ("repack", "remove") for p in plan["packs"])
    assert sorted(str(p.relative_to(hist.repo)) for p in hist.repo.rglob("*") if p.is_file()) == files
    coffer("forget", "--keep-last", "1", "--prune", "--dry-run", repo=hist.repo)
    assert sorted(str(p.relative_to(hist.repo)) for p in hist.repo.rglob("*") if p.is_file()) == files


def test_max_repack_size_zero_only_deletes_unused_packs(hist: History, coffer: Runner, restic: Runner) -> None:
    coffer("forget", *[s.id[:12] for s in hist.snaps[:4]], repo=hist.repo)
    doc = json.loads(coffer("prune", "--json", "--max-repack-size", "0", repo=hist.repo).stdout)
    assert not [p for p in doc["plan"]["packs"] if p["action"] == "repack"]
    assert doc["outcome"]["packs_written"] == 0 and doc["outcome"]["packs_deleted"] > 0
    restic("check", "--read-data", repo=hist.repo)


def test_prune_compacts_the_index(hist: History, coffer: Runner, restic: Runner) -> None:
    assert len(list((hist.repo / "index").iterdir())) == len(hist.snaps)
    doc = json.loads(coffer("prune", "--json", repo=hist.repo).stdout)
    assert doc["plan"]["rewrite_index"]
    assert len(list((hist.repo / "index").iterdir())) == 1
    restic("check", repo=hist.repo)


# ---------------------------------------------------------------------------------------------- refusals


def _pack_holding(repo: Path, snap_id: str) -> Path:
    """The pack holding the first blob of a file only ``snap_id``'s version directory has."""
    r = Repository.open(LocalBackend(str(repo)), PASSWORD)
    r.load_index()
    sn = r.load_snapshot(bytes.fromhex(snap_id))
    top = r.load_tree(r.load_tree(sn.tree)[0].subtree)  # type: ignore[arg-type]
    newest = max((n for n in top if n.type == "dir" and n.name.startswith(b"v")), key=lambda n: n.name)
    files = r.load_tree(newest.subtree)  # type: ignore[arg-type]
    loc = r.index.lookup(BlobType.DATA, files[0].content[0])  # type: ignore[index]
    assert loc is not None
    return pack_files(repo)[loc.pack_id.hex()]


def test_prune_refuses_when_a_needed_pack_is_missing_then_repair_heals(
    hist: History, tmp_path: Path, coffer: Runner, restic: Runner
) -> None:
    last = hist.snaps[-1]
    victim = _pack_holding(hist.repo, last.id)
    victim.unlink()
    coffer("forget", hist.snaps[0].id[:12], repo=hist.repo)
    files = {p.name for p in hist.repo.rglob("*") if p.is_file()}
    r = coffer("prune", repo=hist.repo, check=False)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "missing" in err and "Traceback" not in err, err
    assert {p.name for p in hist.repo.rglob("*") if p.is_file()} == files, "a refused prune deleted something"
    # repair index drops the pack; repair snapshots rewrites what referenced it; then prune runs
    coffer("repair", "index", repo=hist.repo)
    r = coffer("repair", "snapshots", repo=hist.repo)
    assert "removed missing content" in r.stdout.decode()
    snaps = snapshots_json(coffer, hist.repo)
    repaired = [s for s in snaps if "repaired" in (s.get("tags") or [])]
    assert repaired and all(s["original"] in snapshot_ids(hist.repo) for s in repaired), "originals must stay"
    # running it again changes nothing
    again = coffer("repair", "snapshots", repo=hist.repo).stdout.decode()
    assert "already repaired" in again and len(snapshots_json(coffer, hist.repo)) == len(snaps)
    coffer("repair", "snapshots", "--forget", repo=hist.repo)
    assert not [s for s in snapshots_json(coffer, hist.repo) if s["id"] in {x["original"] for x in repaired}]
    coffer("prune", repo=hist.repo)
    restic("check", "--read-data", repo=hist.repo)
    # snapshots that never used the lost pack still restore completely
    for s in hist.snaps[1:-1]:
        if s.id in snapshot_ids(hist.repo):
            restore_and_compare(restic, hist.repo, s, tmp_path / "r")


def test_prune_refuses_a_damaged_snapshot(hist: History, coffer: Runner) -> None:
    f = hist.repo / "snapshots" / hist.snaps[2].id
    data = bytearray(f.read_bytes())
    data[40] ^= 1
    os.chmod(f, 0o600)
    f.write_bytes(bytes(data))
    r = coffer("prune", repo=hist.repo, check=False)
    assert r.returncode == 1
    assert "cannot read every snapshot" in r.stderr.decode()


def test_prune_refuses_an_unreadable_tree(hist: History, coffer: Runner) -> None:
    r = Repository.open(LocalBackend(str(hist.repo)), PASSWORD)
    r.load_index()
    sn = r.load_snapshot(bytes.fromhex(hist.snaps[-1].id))
    loc = r.index.lookup(BlobType.TREE, sn.tree)
    assert loc is not None
    f = pack_files(hist.repo)[loc.pack_id.hex()]
    data = bytearray(f.read_bytes())
    data[loc.blob.offset + 20] ^= 1  # inside the tree blob's ciphertext
    os.chmod(f, 0o600)
    f.write_bytes(bytes(data))
    before = {p.name for p in hist.repo.rglob("*") if p.is_file()}
    res = coffer("forget", "--keep-last", "1", "--prune", repo=hist.repo, check=False)
    assert res.returncode == 1
    assert "unable to load tree" in res.stderr.decode()
    after = {p.name for p in hist.repo.rglob("*") if p.is_file()}
    assert after <= before and before - after == set(hist.snaps[i].id for i in range(len(hist.snaps) - 1)), \
        "only the forgotten snapshot files may be gone"


def test_duplicate_blobs_keep_one_copy(tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    """Two writers that did not see each other's index store the same blobs twice (T23)."""
    repo = init_repo(tmp_path / "repo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(900_000))
    (src / "b.bin").write_bytes(os.urandom(700_000))
    r1 = Repository.open(LocalBackend(str(repo)), PASSWORD)
    r2 = Repository.open(LocalBackend(str(repo)), PASSWORD)
    for r in (r1, r2):
        r.load_index()  # both see an empty index
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        ids = [Archiver(r, BackupRequest(paths=["src"], host="h")).run().snapshot.id.hex() for r in (r1, r2)]
    finally:
        os.chdir(cwd)
    coffer("forget", ids[0][:12], repo=repo)
    doc = json.loads(coffer("prune", "--json", "--max-unused", "0", repo=repo).stdout)
    assert doc["plan"]["stats"]["blobs_duplicate"] > 0
    restic("check", "--read-data", repo=repo)
    target = tmp_path / "restored"
    restic("restore", ids[1], "--target", str(target), repo=repo)
    assert (target / "src" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    # nothing is stored twice any more
    again = json.loads(coffer("prune", "--dry-run", "--json", repo=repo).stdout)
    assert again["plan"]["stats"]["blobs_duplicate"] == 0


def test_repair_index_rebuilds_a_lost_or_damaged_index(hist: History, tmp_path: Path, coffer: Runner,
                                                       restic: Runner) -> None:
    index = sorted((hist.repo / "index").iterdir())
    index[0].unlink()  # lost
    data = bytearray(index[1].read_bytes())
    data[50] ^= 1  # damaged
    os.chmod(index[1], 0o600)
    index[1].write_bytes(bytes(data))
    r = coffer("prune", repo=hist.repo, check=False)
    assert r.returncode == 1 and "repair index" in r.stderr.decode()
    out = coffer("repair", "index", repo=hist.repo)
    assert b"adding pack file to index" in out.stderr and b"removing invalid index" in out.stderr
    assert len(list((hist.repo / "index").iterdir())) == 1
    restic("check", "--read-data", repo=hist.repo)
    for s in (hist.snaps[0], hist.snaps[-1]):
        restore_and_compare(coffer, hist.repo, s, tmp_path / "r")
    # --read-all-packs gives the same index
    before = sorted((hist.repo / "index").iterdir())[0].name
    coffer("repair", "index", "--read-all-packs", repo=hist.repo)
    restic("check", repo=hist.repo)
    assert sorted((hist.repo / "index").iterdir())[0].name != before  # a new file, same content, new IV


def test_split_index_entries_are_merged_and_none_lost(hist: History, coffer: Runner, restic: Runner) -> None:
    """One pack's entries spread over two index files (T23): the compact index holds them all."""
    r = Repository.open(LocalBackend(str(hist.repo)), PASSWORD)
    iid = r.list_ids(FileType.INDEX)[0]
    idx = r.load_index_file(iid)
    halves: tuple[list[IndexPack], list[IndexPack]] = ([], [])
    for p in idx.packs:
        k = max(1, len(p.blobs) // 2)
        halves[0].append(IndexPack(p.id, p.blobs[:k]))
        if p.blobs[k:]:
            halves[1].append(IndexPack(p.id, p.blobs[k:]))
    for h in halves:
        r.save_unpacked(FileType.INDEX, IndexFile(h).to_json())
    r.backend.remove(Handle(FileType.INDEX, iid.hex()))
    total = sum(len(p.blobs) for p in idx.packs)
    coffer("prune", repo=hist.repo)
    r2 = Repository.open(LocalBackend(str(hist.repo)), PASSWORD)
    entries = sum(len(p.blobs) for i in r2.list_ids(FileType.INDEX) for p in r2.load_index_file(i).packs)
    assert entries >= total
    restic("check", "--read-data", repo=hist.repo)


def test_prune_a_version_1_repository(tmp_path: Path, coffer: Runner, restic: Runner) -> None:
    h = make_history(init_repo(tmp_path / "repo", version=1), tmp_path / "work", versions=4, file_size=150_000,
                     pack_size="256k", in_process=True)
    coffer("forget", "--keep-last", "2", "--prune", "--max-unused", "0", repo=h.repo)
    restic("check", "--read-data", repo=h.repo)
    for s in h.snaps[-2:]:
        restore_and_compare(restic, h.repo, s, tmp_path / "r")
