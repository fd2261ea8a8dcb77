"""Copying snapshots from one repository to another, re-encrypted under the destination's key.

A snapshot is "already there" when the destination has a snapshot whose ``original`` (or ID)
equals the source's ``original`` (or ID) and whose contents are the same (restic's rule), so a
copy run any number of times, or rerun after being killed, never makes a second copy.

Every blob the destination lacks is read from the source, verified, and handed to the destination's
writer, which compresses, encrypts and packs it anew: keys differ, so packs cannot be moved as
they are. Blobs the destination already has (by ID, from its index) are skipped, so copies
deduplicate against each other and against backups made straight into the destination (with
``init --copy-chunker-params`` the chunk boundaries match too).

Write order in the destination is packs, then the index, then the snapshot; killed at any point,
the destination holds at most unreferenced packs, never a snapshot with missing data. A rerun
checks every data blob of the snapshot against the destination's index instead of trusting that
a tree it already has is complete, so an interrupted copy is always finished, not skipped.

The source is only read. The caller opens it read-only.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from coffer.errors import BlobNotFound
from coffer.store.backend.base import FileType, Handle
from coffer.store.format import tree
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.store.repository import Repository

MERGE_GAP = 256 * 1024  # read neighbouring blobs of one pack in one request if the hole is smaller
MAX_RUN = 32 * 1024 * 1024  # but never more than this in one request


def original_id(s: Snapshot) -> bytes:
    return s.original or s.id


def similar(a: Snapshot, b: Snapshot) -> bool:
    """restic's similarSnapshots: everything but ID, parent and original matches."""
    return (
        a.time_ns == b.time_ns and a.tree == b.tree and a.hostname == b.hostname and a.username == b.username
        and a.uid == b.uid and a.gid == b.gid and a.paths == b.paths and a.excludes == b.excludes
        and a.tags == b.tags
    )


def find_copied(src_snap: Snapshot, dst_snaps: Sequence[Snapshot]) -> Snapshot | None:
    """The destination snapshot that already is a copy of ``src_snap``, if any."""
    key = original_id(src_snap)
    for d in dst_snaps:
        if original_id(d) == key and similar(src_snap, d):
            return d
    return None


@dataclass
class CopyStats:
    packs_total: int = 0
    packs_done: int = 0
    trees_copied: int = 0
    data_copied: int = 0
    bytes_copied: int = 0  # plaintext bytes of copied blobs


@dataclass
class _Plan:
    trees: list[bytes] = field(default_factory=list)  # missing tree blobs, children before parents
    data: dict[bytes, list[PackedBlob]] = field(default_factory=lambda: defaultdict(list))  # src pack -> blobs


def copy_snapshot(
    src: Repository, dst: Repository, snap: Snapshot, *,
    on_progress: Callable[[CopyStats], None] | None = None,
) -> tuple[Snapshot, CopyStats]:
    """Copy one snapshot; both indexes must be loaded. Returns the saved destination snapshot."""
    stats = CopyStats()
    plan = _plan(src, dst, snap.tree)
    tree_packs = {loc.pack_id for t in plan.trees if (loc := src.index.lookup(BlobType.TREE, t)) is not None}
    stats.packs_total = len(tree_packs | set(plan.data))
    _copy_data(src, dst, plan, stats, on_progress)
    # Trees after the data they point to: with intermediate index writes, a tree never becomes
    # visible in the destination's index before its data is uploaded.
    done_packs: set[bytes] = set()
    for tid in plan.trees:
        raw = src.load_blob(BlobType.TREE, tid)
        _, new = dst.save_blob(BlobType.TREE, raw, tid)
        if new:
            stats.trees_copied += 1
            stats.bytes_copied += len(raw)
        loc = src.index.lookup(BlobType.TREE, tid)
        if loc is not None and loc.pack_id not in plan.data and loc.pack_id not in done_packs:
            done_packs.add(loc.pack_id)
            stats.packs_done += 1
            if on_progress:
                on_progress(stats)
    dst.flush()
    new_snap = replace(snap, parent=None, original=original_id(snap), id=b"",
                       paths=list(snap.paths), tags=list(snap.tags), excludes=list(snap.excludes),
                       extra=dict(snap.extra))
    dst.save_snapshot(new_snap)
    return new_snap, stats


def _plan(src: Repository, dst: Repository, root: bytes) -> _Plan:
    """Walk every tree of the snapshot in the source; note the blobs the destination lacks."""
    plan = _Plan()
    seen_trees: set[bytes] = set()
    seen_data: set[bytes] = set()
    order: list[bytes] = []
    stack: list[bytes] = [root]
    while stack:
        tid = stack.pop()
        if tid in seen_trees:
            continue
        seen_trees.add(tid)
        order.append(tid)
        for n in tree.decode_tree(src.load_blob(BlobType.TREE, tid)):
            if n.subtree is not None:
                stack.append(n.subtree)
            for bid in n.content or ():
                if bid in seen_data:
                    continue
                seen_data.add(bid)
                if dst.has_blob(BlobType.DATA, bid):
                    continue
                loc = src.index.lookup(BlobType.DATA, bid)
                if loc is None:
                    raise BlobNotFound(f"source repository: data blob {bid.hex()} not found in the index")
                plan.data[loc.pack_id].append(loc.blob)
    # parents were appended before children: reverse so children are saved first
    plan.trees = [t for t in reversed(order) if not dst.has_blob(BlobType.TREE, t)]
    return plan


def _runs(blobs: list[PackedBlob]) -> list[list[PackedBlob]]:
    """Blobs of one pack grouped into ranges worth reading in one request."""
    blobs = sorted(blobs, key=lambda b: b.offset)
    runs: list[list[PackedBlob]] = []
    for b in blobs:
        if runs:
            cur = runs[-1]
            start, end = cur[0].offset, cur[-1].offset + cur[-1].length
            if b.offset - end <= MERGE_GAP and b.offset + b.length - start <= MAX_RUN:
                cur.append(b)
                continue
        runs.append([b])
    return runs


def _copy_data(
    src: Repository, dst: Repository, plan: _Plan, stats: CopyStats,
    on_progress: Callable[[CopyStats], None] | None,
) -> None:
    mu = threading.Lock()

    def one_pack(pack_id: bytes, blobs: list[PackedBlob]) -> None:
        h = Handle(FileType.PACK, pack_id.hex())
        for run in _runs(blobs):
            start = run[0].offset
            raw = memoryview(src.backend.load(h, start, run[-1].offset + run[-1].length - start))
            for b in run:
                plain = src.decode_blob(pack_id, b, raw[b.offset - start: b.offset - start + b.length])
                _, new = dst.save_blob(BlobType.DATA, plain, b.id)
                if new:
                    with mu:
                        stats.data_copied += 1
                        stats.bytes_copied += len(plain)
        with mu:
            stats.packs_done += 1
        if on_progress:
            on_progress(stats)

    workers = max(1, src.backend.properties.connections)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy") as ex:
        futs = [ex.submit(one_pack, pid, blobs) for pid, blobs in plan.data.items()]
        try:
            for f in cf.as_completed(futs):
                f.result()
        except BaseException:
            for f in futs:
                f.cancel()
            raise
