"""coffer check on real repositories: clean ones pass, every kind of damage is found and named."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.engine.backup import Archiver, BackupRequest
from coffer.errors import UsageError
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.local import LocalBackend
from coffer.store.format import crypto, kdf, pack
from coffer.store.format.index import IndexFile, IndexPack
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.store.format.tree import Node
from coffer.store.maintenance.check import (
    CheckResult,
    Finding,
    Subset,
    check,
    check_packs,
    implied_pack_size,
    load_check_index,
    parse_subset,
)
from coffer.store.repository import Repository
from coffer.util import gotime
from helpers.sourcetree import make_tree, write_random

PW = "pw"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)
KiB = 1024
MiB = 1024 * KiB


# ------------------------------------------------------------------------------------------ fixtures
def _backup(repo: Repository, path: Path, time_ns: int) -> bytes:
    # A relative target: the snapshot then holds only "src", not the directories above it, whose
    # metadata changes whenever anything else creates a temporary directory next to ours.
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        return Archiver(repo, BackupRequest(paths=[path.name], time_ns=time_ns)).run().snapshot.id
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A repository with two snapshots of the same tree (shared trees) and a third of other data."""
    base = tmp_path_factory.mktemp("check-template")
    src = make_tree(base / "src", special=False)
    write_random(src / "sub" / "two-mib.bin", 2 * MiB + 5, 99)
    other = base / "other"
    other.mkdir()
    write_random(other / "unique.bin", 1 * MiB + 3, 7)
    repo_dir = base / "repo"
    repo = Repository.init(LocalBackend(str(repo_dir)), PW, params=FAST_KDF)
    repo.pack_size = 256 * KiB
    repo.load_index()
    _backup(repo, src, 1_700_000_000_000_000_000)
    _backup(repo, src, 1_700_000_100_000_000_000)
    _backup(repo, other, 1_700_000_200_000_000_000)
    repo.close()
    return repo_dir, src


@pytest.fixture
def repo_dir(template: tuple[Path, Path], tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    shutil.copytree(template[0], d)
    return d


def open_repo(d: Path) -> Repository:
    return Repository.open(LocalBackend(str(d)), PW)


def pack_path(d: Path, pid: bytes) -> Path:
    return d / "data" / pid.hex()[:2] / pid.hex()


def flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o600)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def errors(res: CheckResult | list[Finding]) -> list[Finding]:
    fs = res.findings if isinstance(res, CheckResult) else res
    return [f for f in fs if f.severity == "error"]


def kinds(fs: list[Finding]) -> set[str]:
    return {f.kind for f in fs}


def packs_of(repo: Repository, t: BlobType) -> dict[bytes, list[PackedBlob]]:
    ci = load_check_index(repo)
    return {p: bl for p, bl in ci.packs.items() if bl[0].type == t}


def packs_read(repo: Repository, subset: str, seed: int | None = None) -> tuple[CheckResult, list[bytes]]:
    got: list[bytes] = []
    rng = random.Random(seed) if seed is not None else None
    res = check(repo, read_data_subset=subset, rng=rng, on_pack_done=lambda p, _n: got.append(p))
    return res, got


def snapshots_by_time(repo: Repository) -> list[bytes]:
    return [s.id for s in sorted(repo.list_snapshots(), key=lambda s: s.time_ns)]


# ------------------------------------------------------------------------------------------ clean
def test_clean_repository(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    phases: list[str] = []
    res = check(repo, on_phase=phases.append)
    assert res.ok and res.findings == []
    assert res.snapshots == 3
    assert res.packs > 5 and res.trees > 3 and res.data_blobs > 5
    assert res.blobs == res.trees + res.data_blobs  # every blob is used
    assert res.unused_blobs == 0
    assert res.packs_read == 0 and res.bytes_read == 0
    assert phases == ["load snapshots", "load indexes", "check packs", "check snapshots, trees and blobs"]


def test_clean_repository_read_data(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    done: list[tuple[bytes, int]] = []
    threads: set[int] = set()

    def on_pack(pid: bytes, n: int) -> None:
        done.append((pid, n))
        threads.add(threading.get_ident())

    res = check(repo, read_data=True, on_pack_done=on_pack)
    assert res.ok and res.findings == []
    sizes = {bytes.fromhex(fi.name): fi.size for fi in repo.list_files(FileType.PACK)}
    assert res.packs_read == len(sizes) == res.packs
    assert res.bytes_read == sum(sizes.values())
    assert dict(done) == sizes and len(done) == len(sizes)
    assert threads == {threading.get_ident()}  # callbacks come from the calling thread


def test_shared_trees_are_checked_once(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    full = check(repo)
    # Drop the second snapshot of the same tree: same trees, same blobs, nothing new to visit.
    second = snapshots_by_time(repo)[1]
    os.unlink(repo_dir / "snapshots" / second.hex())
    less = check(repo)
    assert (less.trees, less.data_blobs, less.snapshots) == (full.trees, full.data_blobs, 2)


def test_unused_blobs_are_only_counted(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    third = snapshots_by_time(repo)[2]
    os.unlink(repo_dir / "snapshots" / third.hex())
    res = check(repo)
    assert res.ok
    assert res.unused_blobs >= 3  # the unique file's blob, its dir tree and the root tree
    (info,) = [f for f in res.findings if f.kind == "blobs_unused"]
    assert info.severity == "info" and str(res.unused_blobs) in info.message


# ------------------------------------------------------------------------------------------ damage
def test_flipped_byte_in_data_blob(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    pid, blobs = next(iter(packs_of(repo, BlobType.DATA).items()))
    victim = blobs[-1]
    flip(pack_path(repo_dir, pid), victim.offset + victim.length // 2)

    # restic's documented behaviour: the structure check does not read data, so it passes.
    assert check(repo).ok

    res = check(repo, read_data=True)
    (err,) = errors(res)
    assert err.kind == "pack_damaged" and err.object == f"pack/{pid.hex()}"
    assert err.blobs == (victim.id.hex(),)
    assert victim.id.hex() in err.message and "authentication failed" in err.message
    assert "does not match its ID" in err.message  # the pack's own hash is wrong too


def test_flipped_byte_in_pack_header(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    pid, _ = next(iter(packs_of(repo, BlobType.DATA).items()))
    p = pack_path(repo_dir, pid)
    size = p.stat().st_size
    hlen = pack.header_length(p.read_bytes()[-4:], size)
    flip(p, size - 4 - hlen + 20)  # inside the encrypted header
    assert check(repo).ok
    (err,) = errors(check(repo, read_data=True))
    assert err.object == f"pack/{pid.hex()}" and "pack header: authentication failed" in err.message
    assert err.blobs == ()  # every blob still verifies through the index


def test_flipped_byte_in_index_file(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    iid = repo.list_ids(FileType.INDEX)[0]
    flip(repo_dir / "index" / iid.hex(), 50)
    res = check(repo)
    assert not res.ok
    bad = [f for f in res.findings if f.kind == "index_unreadable"]
    assert [f.object for f in bad] == [f"index/{iid.hex()}"]
    assert iid.hex() in bad[0].message and bad[0].severity == "error"
    # Packs that only this index named are now unreferenced (warnings), their blobs missing (errors).
    assert "pack_unreferenced" in kinds(res.findings)


def test_flipped_byte_in_snapshot_file(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    sid = snapshots_by_time(repo)[0]
    flip(repo_dir / "snapshots" / sid.hex(), 40)
    res = check(repo)
    (err,) = errors(res)
    assert err.kind == "snapshot_unreadable" and err.object == f"snapshot/{sid.hex()}"
    assert sid.hex() in err.message
    assert res.snapshots == 2  # the others are still checked


def test_flipped_byte_in_root_tree(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    snaps = sorted(repo.list_snapshots(), key=lambda s: s.time_ns)
    root = snaps[0].tree
    assert snaps[1].tree == root  # the same data: the same tree
    loc = load_check_index(repo).blobs.lookup(BlobType.TREE, root)
    assert loc is not None
    flip(pack_path(repo_dir, loc.pack_id), loc.blob.offset + 40)
    res = check(repo)
    tree_errs = [f for f in errors(res) if f.kind == "tree_unreadable"]
    assert [f.object for f in tree_errs] == [f"tree/{root.hex()}"]
    msg = tree_errs[0].message
    assert snaps[0].id.hex()[:8] in msg and snaps[1].id.hex()[:8] in msg and snaps[2].id.hex()[:8] not in msg
    # With read_data the pack holding the tree is named as well.
    res = check(repo, read_data=True)
    damaged = [f for f in errors(res) if f.kind == "pack_damaged"]
    assert [f.object for f in damaged] == [f"pack/{loc.pack_id.hex()}"] and damaged[0].blobs == (root.hex(),)


def test_flipped_byte_in_subtree_names_path(repo_dir: Path, template: tuple[Path, Path]) -> None:
    repo = open_repo(repo_dir)
    repo.load_index()
    snap = min(repo.list_snapshots(), key=lambda s: s.time_ns)
    tid = snap.tree
    for part in (template[1].name, "sub"):
        (node,) = [n for n in repo.load_tree(tid) if n.name == part.encode()]
        assert node.subtree is not None
        tid = node.subtree
    sub_path = f"/{template[1].name}/sub"
    loc = repo.index.lookup(BlobType.TREE, tid)
    assert loc is not None
    flip(pack_path(repo_dir, loc.pack_id), loc.blob.offset + loc.blob.length - 5)  # the MAC
    (err,) = errors(check(repo))
    assert err.kind == "tree_unreadable" and err.object == f"tree/{tid.hex()}"
    assert err.path == sub_path and sub_path in err.message


def test_missing_pack(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    pid, blobs = next(iter(packs_of(repo, BlobType.DATA).items()))
    os.unlink(pack_path(repo_dir, pid))
    res = check(repo, read_data=True)
    errs = errors(res)
    missing = [f for f in errs if f.kind == "pack_missing"]
    assert [f.object for f in missing] == [f"pack/{pid.hex()}"] and "does not exist" in missing[0].message
    assert set(missing[0].blobs) == {b.id.hex() for b in blobs}
    # The files that need its blobs are named too; the pack is not reported a second time.
    lost = [f for f in errs if f.kind == "blob_lost"]
    assert lost and all(f.path and f.blobs[0] in {b.id.hex() for b in blobs} for f in lost)
    assert kinds(errs) == {"pack_missing", "blob_lost"}
    assert res.packs_read == res.packs - 1


def test_missing_pack_with_copies_elsewhere(repo_dir: Path) -> None:
    """Duplicate blobs are fine: with one copy's pack gone, the trees are read from the other."""
    repo = open_repo(repo_dir)
    repo.load_index()
    root = min(repo.list_snapshots(), key=lambda s: s.time_ns).tree
    ci = load_check_index(repo)
    loc = ci.blobs.lookup(BlobType.TREE, root)
    assert loc is not None
    # Re-store every blob of the root tree's pack in a new pack (new IVs, so a new pack ID) and index it.
    copies: list[PackedBlob] = []
    body = bytearray()
    for b in ci.packs[loc.pack_id]:
        sealed = crypto.seal(repo.key, repo.load_blob(b.type, b.id))
        copies.append(PackedBlob(b.type, b.id, len(body), len(sealed)))
        body += sealed
    header = crypto.seal(repo.key, pack.encode_header(copies))
    raw = bytes(body) + header + pack.trailer(len(header))
    new_pid = hashlib.sha256(raw).digest()
    repo.backend.save(Handle(FileType.PACK, new_pid.hex()), raw)
    repo.save_unpacked(FileType.INDEX, IndexFile([IndexPack(new_pid, copies)]).to_json())
    assert check(repo, read_data=True).findings == []
    # Remove whichever copy the master index would read first: the other one must be used.
    first = load_check_index(repo).blobs.lookup(BlobType.TREE, root)
    assert first is not None
    os.unlink(pack_path(repo_dir, first.pack_id))
    res = check(repo, read_data=True)
    assert [(f.kind, f.object) for f in errors(res)] == [("pack_missing", f"pack/{first.pack_id.hex()}")]
    assert res.trees == check(open_repo(repo_dir)).trees > 0


def _orphan_pack(repo: Repository) -> tuple[bytes, bytes]:
    data = b"nobody indexed me"
    blob = crypto.seal(repo.key, data)
    bid = hashlib.sha256(data).digest()
    header = crypto.seal(repo.key, pack.encode_header([PackedBlob(BlobType.DATA, bid, 0, len(blob))]))
    raw = blob + header + pack.trailer(len(header))
    pid = hashlib.sha256(raw).digest()
    repo.backend.save(Handle(FileType.PACK, pid.hex()), raw)
    return pid, bid


def test_unreferenced_pack_is_a_warning(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    pid, _ = _orphan_pack(repo)
    res = check(repo, read_data=True)
    assert res.ok
    (w,) = res.warnings
    assert w.kind == "pack_unreferenced" and w.object == f"pack/{pid.hex()}"
    assert "not referenced in any index" in w.message
    # Explicitly asked for, it is read and verified against its own header.
    fs = check_packs(repo, [pid])
    assert [(f.severity, f.kind) for f in fs] == [("warning", "pack_unreferenced")]


def test_truncated_pack(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    pid, _ = next(iter(packs_of(repo, BlobType.DATA).items()))
    p = pack_path(repo_dir, pid)
    os.chmod(p, 0o600)
    size = p.stat().st_size
    os.truncate(p, size - 10)
    res = check(repo)
    (err,) = errors(res)
    assert err.kind == "pack_size" and f"got {size - 10}, expected {size}" in err.message
    errs = errors(check(repo, read_data=True))
    damaged = [f for f in errs if f.kind == "pack_damaged"]
    assert [f.object for f in damaged] == [f"pack/{pid.hex()}"] and "pack header" in damaged[0].message


def test_truncated_tree_pack_keeps_the_readable_trees(repo_dir: Path) -> None:
    """Neighbouring trees are read in one request; a short pack still fails only the trees it cut."""
    repo = open_repo(repo_dir)
    repo.load_index()
    leaves = [
        repo.save_tree([Node(name=b"link", type="symlink", linktarget=f"target-{i}".encode())]) for i in range(8)
    ]
    repo.flush()  # the eight leaves share one pack, in this order
    dirs = [Node(name=b"d%d" % i, type="dir", mode=0o755 | (1 << 31), subtree=t) for i, t in enumerate(leaves)]
    root = repo.save_tree(dirs)
    repo.flush()
    sid = repo.save_snapshot(Snapshot(time=gotime.format_ns(1_800_000_000_000_000_000), tree=root, paths=["/x"]))
    ci = load_check_index(repo)
    loc = ci.blobs.lookup(BlobType.TREE, leaves[-1])
    assert loc is not None and len(ci.packs[loc.pack_id]) == 8
    p = pack_path(repo_dir, loc.pack_id)
    os.chmod(p, 0o600)
    os.truncate(p, loc.blob.offset + loc.blob.length // 2)
    res = check(repo)
    (err,) = [f for f in res.findings if f.kind == "tree_unreadable"]
    assert err.object == f"tree/{leaves[-1].hex()}" and err.path == "/d7" and sid.hex()[:8] in err.message
    assert kinds(errors(res)) == {"pack_size", "tree_unreadable"}


def test_zero_length_pack(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    pid, _ = next(iter(packs_of(repo, BlobType.TREE).items()))
    p = pack_path(repo_dir, pid)
    os.chmod(p, 0o600)
    os.truncate(p, 0)
    res = check(repo, read_data=True)
    assert {"pack_size", "pack_damaged", "tree_unreadable"} <= kinds(errors(res))
    (d,) = [f for f in res.findings if f.kind == "pack_damaged"]
    assert "too short" in d.message


def test_header_disagrees_with_index(repo_dir: Path) -> None:
    """A pack whose header is authentic but lists other blobs than the index says (e.g. swapped)."""
    repo = open_repo(repo_dir)
    data_packs = packs_of(repo, BlobType.DATA)
    pid, blobs = next((p, bl) for p, bl in data_packs.items() if len(bl) >= 2)
    p = pack_path(repo_dir, pid)
    raw = p.read_bytes()
    hlen = pack.header_length(raw[-4:], len(raw))
    body = raw[: len(raw) - 4 - hlen]
    swapped = [blobs[1], blobs[0], *blobs[2:]]
    header = crypto.seal(repo.key, pack.encode_header(swapped))
    os.chmod(p, 0o600)
    p.write_bytes(body + header + pack.trailer(len(header)))
    (err,) = errors(check(repo, read_data=True))
    assert err.object == f"pack/{pid.hex()}"
    assert "not contained in index or position is incorrect" in err.message
    assert {blobs[0].id.hex(), blobs[1].id.hex()} <= set(err.blobs)


def test_bad_tree_contents(repo_dir: Path) -> None:
    """Hand-made nodes: wrong size (warning), null content, dir without subtree, unknown blob."""
    repo = open_repo(repo_dir)
    repo.load_index()
    ci = load_check_index(repo)
    _, good_blobs = next(iter(packs_of(repo, BlobType.DATA).items()))
    good = good_blobs[0]
    ghost = hashlib.sha256(b"ghost").digest()
    nodes = [
        Node(name=b"dir-no-subtree", type="dir", mode=0o755 | (1 << 31)),
        Node(name=b"ghost.bin", type="file", content=[good.id, ghost], size=good.plain_length + 5),
        Node(name=b"null-content", type="file", content=None),
        Node(name=b"wrong-size", type="file", content=[good.id], size=good.plain_length + 1),
    ]
    root = repo.save_tree(nodes)
    repo.flush()
    snap = Snapshot(time=gotime.format_ns(1_800_000_000_000_000_000), tree=root, paths=["/x"])
    sid = repo.save_snapshot(snap)
    res = check(repo)
    by_kind = {f.kind: f for f in res.findings}
    assert by_kind["dir_no_subtree"].path == "/dir-no-subtree"
    assert by_kind["file_no_content"].path == "/null-content"
    miss = by_kind["blob_missing"]
    assert miss.path == "/ghost.bin" and miss.blobs == (ghost.hex(),) and miss.object == f"blob/{ghost.hex()}"
    assert sid.hex()[:8] in miss.message
    size = by_kind["size_mismatch"]
    assert size.severity == "warning" and size.path == "/wrong-size"
    assert f"metadata size ({good.plain_length + 1}) and sum of blob sizes ({good.plain_length})" in size.message
    # A file with a missing blob has no meaningful blob-size sum: no size warning for it.
    assert [f.path for f in res.findings if f.kind == "size_mismatch"] == ["/wrong-size"]
    assert kinds(errors(res)) == {"dir_no_subtree", "file_no_content", "blob_missing"}
    assert len(ci.packs) + 1 == len(load_check_index(repo).packs)  # the new tree pack


def test_tree_not_in_index(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    ghost = hashlib.sha256(b"no such tree").digest()
    sid = repo.save_snapshot(Snapshot(time=gotime.format_ns(1_800_000_000_000_000_000), tree=ghost, paths=["/x"]))
    (err,) = errors(check(repo))
    assert err.kind == "tree_unreadable" and err.object == f"tree/{ghost.hex()}"
    assert "not found in index" in err.message and sid.hex()[:8] in err.message


# ------------------------------------------------------------------------------------------ check_packs
def test_check_packs_explicit_list(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    ci = load_check_index(repo)
    all_packs = sorted(ci.packs)
    seen: list[bytes] = []
    assert check_packs(repo, all_packs[:3], index=ci, on_pack_done=lambda p, n: seen.append(p)) == []
    assert sorted(seen) == all_packs[:3]
    victim = all_packs[1]
    flip(pack_path(repo_dir, victim), 10)
    fs = check_packs(repo, all_packs[:3])  # loads the index itself
    assert [(f.kind, f.object) for f in fs] == [("pack_damaged", f"pack/{victim.hex()}")]
    ghost = hashlib.sha256(b"no pack").digest()
    (f,) = check_packs(repo, [ghost], index=ci)
    assert (f.severity, f.kind, f.object) == ("error", "pack_missing", f"pack/{ghost.hex()}")


def test_implied_size_matches_real_packs(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    ci = load_check_index(repo)
    for pid, blobs in ci.packs.items():
        assert implied_pack_size(blobs) == pack_path(repo_dir, pid).stat().st_size


# ------------------------------------------------------------------------------------------ subsets
def test_bucket_subsets_cover_every_pack_once(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    all_packs = set(load_check_index(repo).packs)
    for t in (1, 2, 3, 7):
        got: list[bytes] = []
        for n in range(1, t + 1):
            res, part = packs_read(repo, f"{n}/{t}")
            assert res.ok
            got += part
        assert sorted(got) == sorted(all_packs)  # every pack, exactly once


def test_percent_and_size_subsets_are_random(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    sizes = load_check_index(repo).pack_sizes()
    n = len(sizes)
    picks = set()
    for seed in range(8):
        res, got = packs_read(repo, "50%", seed)
        assert res.ok and len(got) == max(1, n // 2) and res.packs_read == len(got)
        picks.add(frozenset(got))
    assert len(picks) > 1
    budget = sum(sizes.values()) // 3
    picks = set()
    for seed in range(8):
        res, got = packs_read(repo, f"{budget}", seed)
        assert res.ok and 1 <= len(got) < n and res.bytes_read <= budget
        picks.add(frozenset(got))
    assert len(picks) > 1
    # A size below the smallest pack still reads one pack; 100% reads all.
    assert check(repo, read_data_subset="1", rng=random.Random(1)).packs_read == 1
    assert check(repo, read_data_subset="100%").packs_read == n


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1/1", Subset("1/1", "bucket", bucket=1, total=1)),
        ("3/256", Subset("3/256", "bucket", bucket=3, total=256)),
        ("10%", Subset("10%", "percent", percent=10.0)),
        ("2.5%", Subset("2.5%", "percent", percent=2.5)),
        ("100%", Subset("100%", "percent", percent=100.0)),
        ("50M", Subset("50M", "size", size=50 * MiB)),
        ("1G", Subset("1G", "size", size=1 << 30)),
        ("1t", Subset("1t", "size", size=1 << 40)),
        ("4096", Subset("4096", "size", size=4096)),
        ("12k", Subset("12k", "size", size=12 * KiB)),
        ("7b", Subset("7b", "size", size=7)),
    ],
)
def test_parse_subset(spec: str, expected: Subset) -> None:
    assert parse_subset(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", "0/3", "4/3", "1/0", "1/257", "1/2/3", "a/b", "-1/2", "0%", "101%", "-5%", "%", "x%", "nan%", "inf%",
     "0", "0M", "-1M", "1.5G", "5X", "M", "1 2", "1e3%", "50 %"],
)
def test_parse_subset_rejects(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_subset(spec)


def test_bad_arguments_raise(repo_dir: Path) -> None:
    repo = open_repo(repo_dir)
    with pytest.raises(UsageError):
        check(repo, read_data=True, read_data_subset="1/2")
    with pytest.raises(UsageError, match="invalid read-data subset"):
        check(repo, read_data_subset="1/0")


@settings(max_examples=200, deadline=None)
@given(
    packs=st.dictionaries(st.binary(min_size=32, max_size=32), st.integers(1, 1 << 27), max_size=60),
    total=st.integers(1, 256),
)
def test_buckets_partition_any_pack_set(packs: dict[bytes, int], total: int) -> None:
    got: list[bytes] = []
    for n in range(1, total + 1):
        got += parse_subset(f"{n}/{total}").select(packs)
    assert sorted(got) == sorted(packs)


@settings(max_examples=200, deadline=None)
@given(
    packs=st.dictionaries(st.binary(min_size=32, max_size=32), st.integers(1, 1 << 27), min_size=1, max_size=60),
    pct=st.floats(min_value=0.001, max_value=100.0),
    size=st.integers(1, 1 << 32),
    seed=st.integers(0, 1 << 30),
)
def test_random_subsets_are_bounded(packs: dict[bytes, int], pct: float, size: int, seed: int) -> None:
    by_pct = parse_subset(f"{pct:.3f}%").select(packs, random.Random(seed))
    assert len(set(by_pct)) == len(by_pct) == max(1, int(len(packs) * round(pct, 3) / 100.0))
    assert set(by_pct) <= set(packs)
    by_size = parse_subset(str(size)).select(packs, random.Random(seed))
    assert by_size and len(set(by_size)) == len(by_size) and set(by_size) <= set(packs)
    total = sum(packs[p] for p in by_size)
    assert total <= size or len(by_size) == 1


@given(n=st.integers(1, 256), t=st.integers(1, 256), pct=st.floats(0.01, 100.0), size=st.integers(1, 1 << 50),
       unit=st.sampled_from(["", "b", "k", "K", "m", "M", "g", "G", "t", "T"]))
def test_parse_subset_roundtrip(n: int, t: int, pct: float, size: int, unit: str) -> None:
    if n <= t:
        s = parse_subset(f"{n}/{t}")
        assert (s.kind, s.bucket, s.total) == ("bucket", n, t)
    else:
        with pytest.raises(UsageError):
            parse_subset(f"{n}/{t}")
    spec = f"{pct:.2f}%"
    if float(f"{pct:.2f}") > 0:
        assert parse_subset(spec).percent == float(f"{pct:.2f}")
    mult = {"": 1, "b": 1, "k": KiB, "m": MiB, "g": 1 << 30, "t": 1 << 40}[unit.lower()]
    assert parse_subset(f"{size}{unit}").size == size * mult


@given(st.text(max_size=12))
def test_parse_subset_never_crashes(spec: str) -> None:
    try:
        s = parse_subset(spec)
    except UsageError:
        return
    assert (s.kind == "bucket" and 1 <= s.bucket <= s.total <= 256) or (
        s.kind == "percent" and 0 < s.percent <= 100) or (s.kind == "size" and s.size > 0)
