"""``coffer check`` as a library: is the repository complete, consistent and (optionally) intact?

The checks follow restic's ``check`` (0.14 ``internal/checker``), phase by phase:

1. **Snapshots, then index** (that order, so a snapshot written meanwhile has its index). Every index
   file is loaded; a damaged one is reported by name and the rest are used.
2. **Packs**: every pack the index names must exist and have the size the index implies
   (blob lengths + one header entry per blob + 32 bytes of header overhead + the 4-byte trailer).
   A pack no index names is only a warning (restic: "not referenced in any index"; prune removes it).
3. **Structure**: every tree reachable from a snapshot is loaded once (trees are shared between
   snapshots) and decoded; every file's content blobs must be in the index, a file needs a content
   list (``null`` is an error) and a directory a subtree. Blobs no snapshot uses are only counted.
   Beyond restic: when a pack is missing, the files whose blobs had no other copy are named
   (``blob_lost``), and trees with a copy in another pack are read from there.
   Tree blobs are fetched in batches by worker threads, neighbours in one pack in one request.
4. **Data** (``read_data`` / ``read_data_subset`` / :func:`check_packs`): whole packs are read and the
   SHA-256 of each must be its name, its header must decode and agree with the index, and every blob
   must authenticate, decompress and hash to its ID. Packs are read by a thread pool sized by the
   backend's useful connections and verified in the worker threads.

Problems are values (:class:`Finding`), never exceptions: a check reports as much as it can find.
Only a bad argument (a malformed subset spec) raises ``UsageError``. Locking is the caller's job
(restic 0.14 takes an exclusive lock for ``check``).

Like restic, the structure check does not read data: a flipped byte inside a data blob is found
only by reading the pack (``read_data``). Unlike restic 0.14, a file whose recorded ``size`` differs
from the sum of its blobs' lengths is reported, as a warning: restic dropped that check because
old versions wrote such files when a file changed while it was read (restic issue #1887), and
nobody can repair those snapshots, so it must not make ``check`` fail.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import hashlib
import multiprocessing
import os
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Literal

from coffer.env import env_int
from coffer.errors import BackendError, CofferError, FormatError, ObjectNotFound, UsageError
from coffer.store.backend.base import Backend, FileType, Handle
from coffer.store.format import compression, crypto, pack, tree
from coffer.store.format.index import IndexFile
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.store.master_index import MasterIndex
from coffer.store.repository import Repository
from coffer.util.failpoints import failpoint

Severity = Literal["error", "warning", "info"]

# Header bytes the index implies for a pack besides the per-blob entries: MAC/IV of the
# encrypted header plus the LE32 trailer (restic's pack.headerSize).
PACK_HEADER_OVERHEAD = crypto.OVERHEAD + pack.HEADER_LENGTH_SIZE
MAX_BUCKETS = 256  # n/t subsets use the first byte of the pack ID (restic's totalBucketsMax)
_NULL_ID = bytes(32)
_MAX_LISTED = 10  # reasons / referrers spelled out in one message


# ---------------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or remark). ``object`` names what is affected: ``pack/<id>``, ``index/<id>``,
    ``snapshot/<id>``, ``tree/<id>``, ``blob/<id>`` or ``repository``; ``blobs`` lists the full IDs
    of affected blobs where there are any, ``path`` the file or directory inside a snapshot."""

    severity: Severity
    kind: str
    object: str
    message: str
    blobs: tuple[str, ...] = ()
    path: str = ""

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass(slots=True)
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    snapshots: int = 0  # readable snapshots
    index_files: int = 0  # readable index files
    packs: int = 0  # packs named by the index
    blobs: int = 0  # distinct blobs in the index
    trees: int = 0  # distinct trees checked
    data_blobs: int = 0  # distinct data blobs referenced by snapshots
    unused_blobs: int = 0  # blobs in the index that no snapshot uses (not an error)
    packs_read: int = 0
    bytes_read: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


# ---------------------------------------------------------------------------------------- subsets
@dataclass(frozen=True, slots=True)
class Subset:
    """A ``--read-data-subset`` spec: ``n/t`` (bucket n of t), ``x%`` or a size such as ``50M``."""

    spec: str
    kind: Literal["bucket", "percent", "size"]
    bucket: int = 0
    total: int = 0
    percent: float = 0.0
    size: int = 0

    def select(self, packs: Mapping[bytes, int], rng: random.Random | None = None) -> list[bytes]:
        """The packs to read, from ``{pack ID: size}``.

        ``n/t`` is deterministic and, over n = 1..t, reads every pack exactly once: a pack belongs
        to bucket ``(first byte of its ID) % t + 1`` (restic's ``selectPacksByBucket``). ``x%`` takes
        that share of the packs at random (at least one). A size takes random packs whose sizes add
        up to at most that many bytes (at least one pack).
        """
        if self.kind == "bucket":
            return sorted(p for p in packs if p[0] % self.total == self.bucket - 1)
        if not packs:
            return []
        r = rng if rng is not None else random.SystemRandom()
        ids_ = sorted(packs)
        r.shuffle(ids_)
        if self.kind == "percent":
            n = max(1, int(len(ids_) * (self.percent / 100.0)))
            return ids_[:n]
        out: list[bytes] = []
        budget = self.size
        for p in ids_:
            if packs[p] <= budget:
                out.append(p)
                budget -= packs[p]
                if budget <= 0:
                    break
        return out or ids_[:1]


_RE_BUCKET = re.compile(r"^(\d+)/(\d+)$")
_RE_PERCENT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)%$")
_RE_SIZE = re.compile(r"^(\d+)([bBkKmMgGtT]?)$")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_subset(spec: str) -> Subset:
    """Parse and validate a subset spec as restic 0.14 does; ``UsageError`` when it is bad."""
    s = spec.strip()
    hint = "use n/t (e.g. 1/5), a percentage (e.g. 2.5%) or a size with k/M/G/T suffix (e.g. 500M)"
    m = _RE_BUCKET.match(s)
    if m:
        n, t = int(m.group(1)), int(m.group(2))
        if n == 0 or t == 0 or n > t:
            raise UsageError(f"invalid read-data subset {spec!r}: n/t must be positive integers with n <= t", hint=hint)
        if t > MAX_BUCKETS:
            raise UsageError(f"invalid read-data subset {spec!r}: t must be at most {MAX_BUCKETS}", hint=hint)
        return Subset(s, "bucket", bucket=n, total=t)
    m = _RE_PERCENT.match(s)
    if m:
        pct = float(m.group(1))
        if not 0.0 < pct <= 100.0:
            raise UsageError(f"invalid read-data subset {spec!r}: x% must be above 0% and at most 100%", hint=hint)
        return Subset(s, "percent", percent=pct)
    m = _RE_SIZE.match(s)
    if m:
        size = int(m.group(1)) * _UNITS[m.group(2).lower()]
        if size <= 0:
            raise UsageError(f"invalid read-data subset {spec!r}: the size must be above 0", hint=hint)
        return Subset(s, "size", size=size)
    raise UsageError(f"invalid read-data subset {spec!r}", hint=hint)


# ---------------------------------------------------------------------------------------- index
@dataclass(slots=True)
class CheckIndex:
    """Every index file's entries, kept per pack (all copies; the master index keeps one per blob)."""

    blobs: MasterIndex = field(default_factory=MasterIndex)
    packs: dict[bytes, list[PackedBlob]] = field(default_factory=dict)  # distinct entries, by offset
    index_ids: list[bytes] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def implied_size(self, pack_id: bytes) -> int:
        """The pack's file size as the index describes it (restic ``pack.Size``)."""
        return implied_pack_size(self.packs[pack_id])

    def pack_sizes(self) -> dict[bytes, int]:
        return {p: implied_pack_size(bl) for p, bl in self.packs.items()}


def implied_pack_size(blobs: Iterable[PackedBlob]) -> int:
    size = PACK_HEADER_OVERHEAD
    for b in blobs:
        size += b.length + (pack.ENTRY_COMPRESSED if b.uncompressed_length else pack.ENTRY_PLAIN)
    return size


def load_check_index(repo: Repository) -> CheckIndex:
    """Load every index file; a damaged one becomes an error finding and the others are used."""
    ci = CheckIndex()
    try:
        ids_ = repo.list_ids(FileType.INDEX)
    except BackendError as e:
        ci.findings.append(Finding("error", "list_failed", "repository", f"cannot list index files: {e}"))
        return ci

    def load(iid: bytes) -> IndexFile | Exception:
        try:
            return repo.load_index_file(iid)
        except (FormatError, BackendError) as e:
            return e

    entries: dict[bytes, set[PackedBlob]] = {}
    first_index: dict[bytes, bytes] = {}
    dup_packs: dict[bytes, list[bytes]] = {}
    with cf.ThreadPoolExecutor(max_workers=_workers(repo)) as ex:
        for iid, res in zip(ids_, ex.map(load, ids_)):
            if isinstance(res, Exception):
                ci.findings.append(Finding(
                    "error", "index_unreadable", f"index/{iid.hex()}", f"index {iid.hex()}: cannot be loaded: {res}",
                ))
                continue
            ci.index_ids.append(iid)
            for p in res.packs:
                s = entries.get(p.id)
                if s is None:
                    entries[p.id] = set(p.blobs)
                    first_index[p.id] = iid
                else:
                    s.update(p.blobs)
                    if first_index[p.id] != iid:
                        dup_packs.setdefault(p.id, [first_index[p.id]]).append(iid)
                ci.blobs.add_pack(p.id, p.blobs)
    for pid, s in entries.items():
        bl = sorted(s, key=lambda b: (b.offset, b.length))
        ci.packs[pid] = bl
        if bl and any(b.type != bl[0].type for b in bl):
            ci.findings.append(Finding("info", "pack_mixed", f"pack/{pid.hex()}",
                                       f"pack {pid.hex()[:8]} contains a mix of tree and data blobs"))
    for pid, idx_ids in dup_packs.items():
        names = ", ".join(i.hex()[:8] for i in dict.fromkeys(idx_ids))
        ci.findings.append(Finding(
            "info", "pack_in_several_indexes", f"pack/{pid.hex()}",
            f"pack {pid.hex()[:8]} contained in several indexes: {names} (non-critical)",
        ))
    return ci


# ---------------------------------------------------------------------------------------- check
def check(
    repo: Repository,
    *,
    read_data: bool = False,
    read_data_subset: str | Subset | None = None,
    on_pack_done: Callable[[bytes, int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    rng: random.Random | None = None,
) -> CheckResult:
    """Check the repository; with ``read_data`` (or a subset) also read and verify packs.

    ``on_phase(name)`` announces each phase ("load snapshots", "load indexes", "check packs",
    "check snapshots, trees and blobs", "read data"); ``on_pack_done(pack_id, nbytes)`` is called
    after each pack is read and verified. Both are called from the calling thread.
    """
    if read_data and read_data_subset is not None:
        raise UsageError("read_data and read_data_subset cannot be used together")
    subset = parse_subset(read_data_subset) if isinstance(read_data_subset, str) else read_data_subset

    def phase(name: str) -> None:
        if on_phase is not None:
            on_phase(name)

    res = CheckResult()
    out = res.findings

    # Snapshots first, then the index (a snapshot written meanwhile then finds its index).
    phase("load snapshots")

    def bad_snapshot(sid: bytes, e: Exception) -> None:
        out.append(Finding("error", "snapshot_unreadable", f"snapshot/{sid.hex()}",
                           f"snapshot {sid.hex()}: cannot be loaded: {e}"))

    snapshots: list[Snapshot] = []
    try:
        snapshots = repo.list_snapshots(on_error=bad_snapshot)
    except BackendError as e:
        out.append(Finding("error", "list_failed", "repository", f"cannot list snapshots: {e}"))
    res.snapshots = len(snapshots)

    phase("load indexes")
    ci = load_check_index(repo)
    out.extend(ci.findings)
    res.index_files = len(ci.index_ids)
    res.packs = len(ci.packs)
    res.blobs = len(ci.blobs)

    phase("check packs")
    missing = _check_pack_files(repo, ci, out)

    phase("check snapshots, trees and blobs")
    tree_out: list[Finding] = []
    data_out: list[Finding] = []
    walker = _TreeWalker(repo, ci, missing, tree_out)
    chosen: list[bytes] = []
    procs = 0
    if read_data or subset is not None:
        all_packs = ci.pack_sizes()
        chosen = sorted(all_packs) if subset is None else subset.select(all_packs, rng)
        chosen = [p for p in chosen if p not in missing]  # already reported as missing
        procs = _verify_processes(repo, sum(all_packs.get(p, 0) for p in chosen))
    # The walk makes millions of short-lived objects and no cycles: the cyclic collector would
    # rescan the whole index on every pass for nothing.
    gc_on = gc.isenabled()
    gc.disable()
    try:
        if procs:
            # Pack verification in worker processes that read the packs themselves, side by side
            # with the tree walk here: the walk is interpreter work, the verification C code, and
            # neither waits for the other's GIL.
            res.packs_read, res.bytes_read = _walk_beside_processes(
                repo, ci, walker, snapshots, chosen, procs, data_out, on_pack_done, phase)
        else:
            walker.run(snapshots)
    finally:
        if gc_on:
            gc.enable()
    out.extend(tree_out)
    res.trees = walker.trees
    res.data_blobs = walker.data_blobs
    res.unused_blobs = max(0, len(ci.blobs) - walker.used_in_index)
    if res.unused_blobs:
        complete = not walker.incomplete and not any(f.kind == "snapshot_unreadable" for f in out)
        note = "" if complete else " (some snapshots or trees could not be read, so this count is too high)"
        out.append(Finding("info", "blobs_unused", "repository",
                           f"{res.unused_blobs} blobs in the index are not used by any snapshot{note}"))

    if (read_data or subset is not None) and not procs:
        phase("read data")
        res.packs_read, res.bytes_read = _read_packs(repo, ci, chosen, data_out, on_pack_done)
    out.extend(data_out)
    return res


def check_packs(
    repo: Repository,
    pack_ids: Iterable[bytes],
    *,
    index: CheckIndex | None = None,
    on_pack_done: Callable[[bytes, int], None] | None = None,
) -> list[Finding]:
    """Read and verify exactly these packs (for a scheduler that covers the repository in slices).

    Without ``index`` the index files are loaded first, and problems found doing so are included.
    A pack that no index names is verified against its own header and reported as unreferenced
    (a warning); one that does not exist is an error.
    """
    out: list[Finding] = []
    if index is None:
        index = load_check_index(repo)
        out.extend(index.findings)
    _read_packs(repo, index, list(dict.fromkeys(pack_ids)), out, on_pack_done)
    return out


# ---------------------------------------------------------------------------------------- packs phase
def _check_pack_files(repo: Repository, ci: CheckIndex, out: list[Finding]) -> set[bytes]:
    """Packs the index names must exist with the implied size; others are unreferenced."""
    try:
        present = {bytes.fromhex(fi.name): fi.size for fi in repo.list_files(FileType.PACK)}
    except BackendError as e:
        out.append(Finding("error", "list_failed", "repository", f"cannot list pack files: {e}"))
        return set()
    missing: set[bytes] = set()
    for pid, blobs in ci.packs.items():
        size = present.pop(pid, None)
        if size is None:
            missing.add(pid)
            out.append(Finding("error", "pack_missing", f"pack/{pid.hex()}", f"pack {pid.hex()}: does not exist",
                               blobs=tuple(b.id.hex() for b in blobs)))
            continue
        want = implied_pack_size(blobs)
        if size != want:
            out.append(Finding("error", "pack_size", f"pack/{pid.hex()}",
                               f"pack {pid.hex()}: unexpected file size: got {size}, expected {want}"))
    for pid, size in present.items():
        out.append(Finding("warning", "pack_unreferenced", f"pack/{pid.hex()}",
                           f"pack {pid.hex()}: not referenced in any index ({size} bytes); `prune` removes it"))
    return missing


def _lost_blobs(
    ci: CheckIndex, missing: set[bytes],
) -> tuple[dict[bytes, bytes], dict[bytes, tuple[bytes, PackedBlob]]]:
    """For blobs stored in missing packs: key -> a missing pack, for those with no other copy
    (lost), and key -> another copy's location, for those the master index would fetch from a
    missing pack although an existing pack has them too."""
    if not missing:
        return {}, {}
    lost: dict[bytes, bytes] = {}
    for pid in missing:
        for b in ci.packs[pid]:
            lost[_bkey(b.type, b.id)] = pid
    alt: dict[bytes, tuple[bytes, PackedBlob]] = {}
    for pid, blobs in ci.packs.items():
        if pid in missing:
            continue
        for b in blobs:
            k = _bkey(b.type, b.id)
            if lost.pop(k, None) is not None:
                alt[k] = (pid, b)
    return lost, alt


def _bkey(t: BlobType, blob_id: bytes) -> bytes:
    return blob_id if t == BlobType.DATA else b"T" + blob_id


# ---------------------------------------------------------------------------------------- structure phase
_Ref = tuple[bytes, str]  # (snapshot ID, path inside it)
_TreeJob = tuple[bytes, _Ref, bytes, PackedBlob]  # tree ID, first referrer, pack ID, where in the pack
_TREE_BATCH = 64  # trees per worker task: few thread hand-offs, still parallel for remote backends


@dataclass(slots=True)
class _BadTree:
    reason: str
    refs: list[_Ref]
    more: int = 0

    def add(self, ref: _Ref) -> None:
        if len(self.refs) < _MAX_LISTED:
            self.refs.append(ref)
        else:
            self.more += 1


class _TreeWalker:
    """Visits every tree reachable from the snapshots once; loads run in a thread pool."""

    def __init__(self, repo: Repository, ci: CheckIndex, missing: set[bytes], out: list[Finding]) -> None:
        self.repo = repo
        self.ci = ci
        self.out = out
        self.lost, self.alt = _lost_blobs(ci, missing)
        self.seen: set[bytes] = set()
        self.pending: dict[bytes, list[_Ref]] = {}
        self.bad: dict[bytes, _BadTree] = {}
        self.used: set[bytes] = set()  # data blob IDs referenced
        self.trees = 0
        self.used_in_index = 0
        self.incomplete = False
        self._queue: deque[_TreeJob] = deque()
        self.cancelled = False  # set from another thread: stop after the loads in flight

    @property
    def data_blobs(self) -> int:
        return len(self.used)

    # Runs in a worker thread: read a batch of tree blobs (adjacent ones in one request), verify
    # and decode them. One result per job, in order: the nodes, or why the tree cannot be read.
    def _load_batch(self, batch: list[_TreeJob]) -> list[list[tree.Node] | Exception]:
        results: list[list[tree.Node] | Exception] = []
        raws = self.repo.load_raw_blobs([(pid, b) for _, _, pid, b in batch])
        for (_, _, _, b), raw in zip(batch, raws):
            if isinstance(raw, BackendError):
                results.append(raw)
                continue
            plain = _verify_blob(self.repo.key, b, raw)
            if isinstance(plain, str):
                results.append(FormatError(plain))
                continue
            try:
                results.append(tree.decode_tree(plain))
            except FormatError as e:
                results.append(e)
        return results

    def run(self, snapshots: list[Snapshot]) -> None:
        queue = self._queue
        # Oldest first, so a shared tree is reported at the path where it first appeared.
        for snap in sorted(snapshots, key=lambda s: (s.time_ns, s.id)):
            self._visit(snap.tree, (snap.id, "/"))
        workers = _workers(self.repo)
        slots = 2 * workers
        futures: dict[cf.Future[list[list[tree.Node] | Exception]], list[_TreeJob]] = {}
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check-tree") as ex:
            try:
                while (queue or futures) and not self.cancelled:
                    while queue and len(futures) < slots:
                        # Spread a small frontier over the free workers; batch a wide one.
                        n = min(_TREE_BATCH, -(-len(queue) // (slots - len(futures))))
                        batch = [queue.popleft() for _ in range(n)]
                        futures[ex.submit(self._load_batch, batch)] = batch
                    done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        batch = futures.pop(fut)
                        for (tid, ref, _pid, _b), result in zip(batch, fut.result()):
                            refs = self.pending.pop(tid)
                            if isinstance(result, Exception):
                                self._mark_bad(tid, _tree_reason(result), refs)
                                continue
                            self.trees += 1
                            self._check_nodes(tid, result, ref)
            except BaseException:
                ex.shutdown(wait=True, cancel_futures=True)
                raise
        for tid, bt in self.bad.items():
            where = "; ".join(f"snapshot {s.hex()[:8]} at {p}" for s, p in bt.refs)
            if bt.more:
                where += f"; and {bt.more} more"
            self.out.append(Finding("error", "tree_unreadable", f"tree/{tid.hex()}",
                                    f"tree {tid.hex()}: {bt.reason} (referenced by {where})",
                                    path=bt.refs[0][1] if bt.refs else ""))

    def _mark_bad(self, tid: bytes, reason: str, refs: list[_Ref]) -> None:
        self.incomplete = True
        bt = _BadTree(reason, [])
        for r in refs:
            bt.add(r)
        self.bad[tid] = bt

    def _visit(self, tid: bytes, ref: _Ref) -> None:
        bt = self.bad.get(tid)
        if bt is not None:
            bt.add(ref)
            return
        p = self.pending.get(tid)
        if p is not None:
            if len(p) < _MAX_LISTED:
                p.append(ref)
            return
        if tid in self.seen:
            return
        self.seen.add(tid)
        loc = self.ci.blobs.lookup(BlobType.TREE, tid)
        if loc is None:
            self._mark_bad(tid, "not found in index", [ref])
            return
        self.used_in_index += 1
        pid, blob = loc.pack_id, loc.blob
        if self.lost or self.alt:
            k = _bkey(BlobType.TREE, tid)
            lost_in = self.lost.get(k)
            if lost_in is not None:
                self._mark_bad(tid, f"stored only in pack {lost_in.hex()[:8]}, which does not exist", [ref])
                return
            pid, blob = self.alt.get(k, (pid, blob))
        self.pending[tid] = [ref]
        self._queue.append((tid, ref, pid, blob))

    def _check_nodes(self, tid: bytes, nodes: list[tree.Node], ref: _Ref) -> None:
        snap_id, dir_path = ref
        base = "" if dir_path == "/" else dir_path
        label = f"snapshot {snap_id.hex()[:8]}"
        tobj = f"tree/{tid.hex()}"
        plain_length = self.ci.blobs.plain_length
        used = self.used
        out = self.out
        lost = self.lost
        for n in nodes:
            path = base + "/" + n.display_name
            if not n.name:
                out.append(Finding("error", "node_invalid", tobj,
                                   f"tree {tid.hex()[:8]} ({label}, {dir_path}): node with empty name", path=path))
            if n.type == "file":
                if n.content is None:
                    out.append(Finding("error", "file_no_content", tobj,
                                       f"{label}: {path}: file has nil blob list (tree {tid.hex()[:8]})", path=path))
                    continue
                total = 0
                complete = True
                for i, bid in enumerate(n.content):
                    if bid == _NULL_ID:
                        complete = False
                        out.append(Finding("error", "node_invalid", tobj,
                                           f"{label}: {path}: blob {i} has null ID (tree {tid.hex()[:8]})", path=path))
                        continue
                    size = plain_length(BlobType.DATA, bid)
                    if size is None:
                        complete = False
                        out.append(Finding(
                            "error", "blob_missing", f"blob/{bid.hex()}",
                            f"{label}: {path}: data blob {bid.hex()} not found in index (tree {tid.hex()[:8]})",
                            blobs=(bid.hex(),), path=path,
                        ))
                        continue
                    if bid not in used:
                        used.add(bid)
                        self.used_in_index += 1
                    total += size
                    lost_in = lost.get(bid) if lost else None
                    if lost_in is not None:
                        out.append(Finding(
                            "error", "blob_lost", f"blob/{bid.hex()}",
                            f"{label}: {path}: data blob {bid.hex()} is stored only in pack {lost_in.hex()[:8]}, "
                            "which does not exist", blobs=(bid.hex(),), path=path,
                        ))
                if complete and total != n.size:
                    out.append(Finding(
                        "warning", "size_mismatch", tobj,
                        f"{label}: {path}: metadata size ({n.size}) and sum of blob sizes ({total}) do not match",
                        path=path,
                    ))
            elif n.type == "dir":
                if n.subtree is None:
                    out.append(Finding("error", "dir_no_subtree", tobj,
                                       f"{label}: {path}: dir node has no subtree (tree {tid.hex()[:8]})", path=path))
                elif n.subtree == _NULL_ID:
                    out.append(Finding("error", "dir_no_subtree", tobj,
                                       f"{label}: {path}: dir node subtree ID is null (tree {tid.hex()[:8]})",
                                       path=path))
                else:
                    self._visit(n.subtree, (snap_id, path))


def _tree_reason(e: Exception) -> str:
    if isinstance(e, ObjectNotFound):
        return f"cannot be loaded, its pack is gone: {e}"
    return f"cannot be loaded: {e}"


# ---------------------------------------------------------------------------------------- data phase
def _workers(repo: Repository) -> int:
    return max(2, repo.backend.properties.connections)


def _read_packs(
    repo: Repository,
    ci: CheckIndex,
    pack_ids: list[bytes],
    out: list[Finding],
    on_pack_done: Callable[[bytes, int], None] | None,
) -> tuple[int, int]:
    """Verify the packs in a thread pool, at most two per worker in flight (memory stays bounded).

    Used for small reads and when the repository cannot be reopened in another process; large
    reads go to worker processes beside the tree walk (_walk_beside_processes). Worker processes
    *after* the walk, fed the packs' bytes over a pipe, were measured not faster than this."""
    workers = _workers(repo)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check-pack") as ex:
        try:
            return _verify_all(lambda pid: ex.submit(verify_pack, repo, pid, ci.packs.get(pid)), pack_ids,
                               2 * workers, out, on_pack_done)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise


def _verify_all(
    submit: Callable[[bytes], cf.Future[tuple[list[Finding], int]]], pack_ids: list[bytes], in_flight: int,
    out: list[Finding], on_pack_done: Callable[[bytes, int], None] | None,
) -> tuple[int, int]:
    """Keep ``in_flight`` verifications going until every pack is done; findings in completion order."""
    todo = deque(pack_ids)
    nread = nbytes = 0
    futures: dict[cf.Future[tuple[list[Finding], int]], bytes] = {}
    while todo or futures:
        while todo and len(futures) < in_flight:
            pid = todo.popleft()
            futures[submit(pid)] = pid
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            pid = futures.pop(fut)
            try:
                findings, size = fut.result()
            except BrokenProcessPool:
                raise CofferError("a pack verification worker process died", hint="run check again") from None
            out.extend(findings)
            if size:
                nread += 1
                nbytes += size
            if on_pack_done is not None:
                on_pack_done(pid, size)
    return nread, nbytes


PROCESS_MIN_BYTES = 64 * 1024 * 1024  # below this, worker processes cost more than they save


def _verify_processes(repo: Repository, total_bytes: int) -> int:
    """Worker processes for ``--read-data`` (``COFFER_CHECK_PROCESSES`` overrides; 0 = threads)."""
    if repo.backend_recipe is None:
        return 0
    cores = os.cpu_count() or 1
    auto = cores if cores > 1 and total_bytes >= PROCESS_MIN_BYTES else 0
    return max(0, env_int("COFFER_CHECK_PROCESSES", auto))


def _walk_beside_processes(
    repo: Repository, ci: CheckIndex, walker: _TreeWalker, snapshots: list[Snapshot], pack_ids: list[bytes],
    procs: int, out: list[Finding], on_pack_done: Callable[[bytes, int], None] | None,
    phase: Callable[[str], None],
) -> tuple[int, int]:
    walk_error: list[BaseException] = []

    def walk() -> None:
        try:
            walker.run(snapshots)
        except BaseException as e:
            walk_error.append(e)

    recipe = repo.backend_recipe
    assert recipe is not None
    ctx = multiprocessing.get_context("spawn")  # the lock refresher thread runs: no fork
    pool = cf.ProcessPoolExecutor(procs, mp_context=ctx, initializer=_init_verifier,
                                  initargs=(recipe, repo.key, repo.version))
    t = threading.Thread(target=walk, name="check-walk", daemon=True)
    t.start()
    try:
        phase("read data")
        counts = _verify_all(lambda pid: pool.submit(_verify_in_worker, pid, ci.packs.get(pid)), pack_ids,
                             2 * procs, out, on_pack_done)
    except BaseException:
        walker.cancelled = True  # stop the walk too, then let the error through
        pool.shutdown(wait=True, cancel_futures=True)
        t.join()
        raise
    pool.shutdown(wait=True)
    t.join()
    if walk_error:
        raise walk_error[0]
    return counts


_VERIFIER: tuple[Backend, crypto.CryptoKey, int] | None = None


def _init_verifier(recipe: tuple[str, dict[str, str], bool], key: crypto.CryptoKey, version: int) -> None:
    global _VERIFIER
    from coffer.store.backend.registry import open_backend

    _VERIFIER = (open_backend(recipe[0], recipe[1]), key, version)


def _verify_in_worker(pack_id: bytes, entries: list[PackedBlob] | None) -> tuple[list[Finding], int]:
    assert _VERIFIER is not None
    failpoint("check_worker_pack")
    backend, key, version = _VERIFIER
    loaded = _load_pack(backend, pack_id, entries)
    if isinstance(loaded, list):
        return loaded, 0
    return verify_pack_data(key, version, pack_id, loaded, entries)


def verify_pack(repo: Repository, pack_id: bytes, entries: list[PackedBlob] | None) -> tuple[list[Finding], int]:
    """Read one pack whole and verify it against its name, its header and the index ``entries``.

    Returns the findings (one error per bad pack, listing the reasons and the affected blobs) and
    the number of bytes read. ``entries`` is None for a pack that no index names.
    """
    loaded = _load_pack(repo.backend, pack_id, entries)
    if isinstance(loaded, list):
        return loaded, 0
    return verify_pack_data(repo.key, repo.version, pack_id, loaded, entries)


def _load_pack(backend: Backend, pack_id: bytes, entries: list[PackedBlob] | None) -> bytes | list[Finding]:
    hexid = pack_id.hex()
    obj = f"pack/{hexid}"
    try:
        return backend.load(Handle(FileType.PACK, hexid))
    except ObjectNotFound:
        return [Finding("error", "pack_missing", obj, f"pack {hexid}: does not exist",
                        blobs=tuple(b.id.hex() for b in entries or ()))]
    except BackendError as e:
        return [Finding("error", "pack_unreadable", obj, f"pack {hexid}: failed to download: {e}")]


def verify_pack_data(
    key: crypto.CryptoKey, version: int, pack_id: bytes, data: bytes, entries: list[PackedBlob] | None
) -> tuple[list[Finding], int]:
    """Verify a pack's bytes against its name, its header and the index ``entries`` (no I/O)."""
    hexid = pack_id.hex()
    obj = f"pack/{hexid}"
    findings: list[Finding] = []
    reasons: list[str] = []
    bad: dict[bytes, None] = {}  # affected blob IDs, in order
    mv = memoryview(data)
    size = len(data)

    got = hashlib.sha256(mv).digest()
    if got != pack_id:
        reasons.append(f"content does not match its ID (hashes to {got.hex()})")

    header: list[PackedBlob] | None = None
    try:
        header = _decode_header(key, version, mv)
    except FormatError as e:
        reasons.append(f"pack header: {e}")

    if entries is None:
        findings.append(Finding("warning", "pack_unreferenced", obj, f"pack {hexid}: not referenced in any index"))
    else:
        if not entries:
            reasons.append("pack is empty or not indexed")
        end = 0
        for b in entries:  # sorted by offset
            if b.offset != end:
                reasons.append("index for pack contains gaps / overlapping blobs")
                break
            end = b.offset + b.length
        if header is not None:
            in_header = set(header)
            in_index = set(entries)
            for b in entries:
                if b not in in_header:
                    bad[b.id] = None
                    reasons.append(f"{b.type.label} blob {b.id.hex()} (offset {b.offset}, length {b.length}) "
                                   "is in the index but not in the pack header")
            for b in header:
                if b not in in_index:
                    bad[b.id] = None
                    reasons.append(f"{b.type.label} blob {b.id.hex()} is not contained in index or position is "
                                   "incorrect")
        if entries and implied_pack_size(entries) != size:
            reasons.append(f"size {size} differs from the {implied_pack_size(entries)} bytes the index implies")

    # Verify every blob either side names (the index is what readers use, the header is the truth).
    to_check: dict[PackedBlob, None] = dict.fromkeys(entries or ())
    if header is not None:
        to_check.update(dict.fromkeys(header))
    for b in sorted(to_check, key=lambda x: (x.offset, x.length)):
        if b.offset + b.length > size:
            bad[b.id] = None
            reasons.append(f"{b.type.label} blob {b.id.hex()}: extends beyond the end of the pack")
            continue
        err = _verify_blob(key, b, mv[b.offset : b.offset + b.length])
        if isinstance(err, str):
            bad[b.id] = None
            reasons.append(f"{b.type.label} blob {b.id.hex()}: {err}")
    del mv

    if reasons:
        shown = reasons[:_MAX_LISTED]
        if len(reasons) > _MAX_LISTED:
            shown.append(f"and {len(reasons) - _MAX_LISTED} more")
        findings.append(Finding(
            "error", "pack_damaged", obj,
            f"pack {hexid}: {len(reasons)} error(s): " + "; ".join(shown),
            blobs=tuple(b.hex() for b in bad),
        ))
    return findings, size


def _decode_header(key: crypto.CryptoKey, version: int, mv: memoryview) -> list[PackedBlob]:
    size = len(mv)
    if size < pack.MIN_PACK_SIZE:
        raise FormatError(f"file too short ({size} bytes)")
    hlen = pack.header_length(bytes(mv[-pack.HEADER_LENGTH_SIZE :]), size)
    enc = mv[size - pack.HEADER_LENGTH_SIZE - hlen : size - pack.HEADER_LENGTH_SIZE]
    try:
        plain = crypto.open_(key, enc)
    except FormatError:
        raise FormatError("authentication failed") from None
    blobs = pack.decode_header(plain, version)
    pack.check_layout(blobs, hlen, size)
    return blobs


def _verify_blob(key: crypto.CryptoKey, b: PackedBlob, raw: bytes | memoryview) -> bytes | str:
    """The blob's plaintext, or why it is bad."""
    try:
        plain = crypto.open_(key, raw)
    except FormatError:
        return "authentication failed (damaged ciphertext)"
    if b.uncompressed_length:
        try:
            plain = compression.decompress_blob(plain, b.uncompressed_length)
        except FormatError as e:
            return f"cannot be decompressed: {e}"
    if hashlib.sha256(plain).digest() != b.id:
        return "content does not match its ID"
    return plain
