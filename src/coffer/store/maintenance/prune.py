"""``coffer prune`` as a library: find what no snapshot needs any more, and remove it safely.

Three steps, kept apart so the decision can be shown (``--dry-run``, ``--json``) before anything is
touched, and tested without a repository:

1. :func:`gather` reads the facts: every snapshot (all must load), every tree they reach (all must
   load), every index entry (all index files must load) and every pack file in storage. Anything
   unreadable stops prune here, because data that cannot be seen would look unreferenced and be
   deleted (reliability T22, T26).
2. :func:`decide` turns the facts into a :class:`PrunePlan`, with restic 0.14's rules
   (``cmd/restic/cmd_prune.go``): per pack, how many bytes are used; fully unused packs are removed,
   packs no index names are removed first, partly used and mixed packs are repacked until the
   unused share falls under ``--max-unused`` or ``--max-repack-size`` is spent; duplicate blobs keep
   exactly one used copy. It refuses when a referenced blob is in no index, when a needed pack is
   missing, or when a needed pack's size disagrees with the index (T21, T23).
3. :func:`execute` carries the plan out in the order that keeps the repository valid after a crash
   at any point (restic-format.md section 11): delete unreferenced packs; copy the kept blobs of
   repacked packs into new packs (their bytes are verified first and copied still encrypted) and
   index them; write a compact index of everything that stays; delete the old index files; only
   then delete the packs no index names any more. The lock is re-checked before each destructive
   step, so a prune that lost its lock stops (exit 11).

Every step has a named failpoint (``prune_*``) for the crash tests.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from coffer.errors import BackendError, CofferError, FormatError, ObjectNotFound, RepositoryError, UsageError
from coffer.store.backend.base import FileType, Handle
from coffer.store.format.index import IndexFile, IndexPack
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.maintenance.check import implied_pack_size, load_check_index
from coffer.store.repository import INDEX_MAX_BLOBS, Repository
from coffer.util.failpoints import failpoint

U64 = 1 << 64
# Temporary files younger than this may belong to a writer that is still running (paused, or its lock
# lapsed); prune leaves them. Older ones are crash leftovers.
TEMP_FILE_GRACE = 3600.0

Phase = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (what, done, total)


class PruneRefused(RepositoryError):
    """Prune will not run: deleting now could lose data a snapshot needs."""


def bkey(t: BlobType, blob_id: bytes) -> bytes:
    """One key per blob handle: data and tree blobs with the same ID are different blobs."""
    return blob_id if t == BlobType.DATA else b"T" + blob_id


# ---------------------------------------------------------------------------------------- options
@dataclass(frozen=True, slots=True)
class MaxUnused:
    """``--max-unused``: how much unused data may stay, as ``unlimited``, a percentage or bytes."""

    kind: Literal["unlimited", "percent", "bytes"] = "percent"
    value: float = 5.0

    @classmethod
    def parse(cls, s: str) -> MaxUnused:
        v = s.strip()
        if not v:
            raise UsageError(f"invalid value for --max-unused: {s!r}")
        if v == "unlimited":
            return cls("unlimited", 0)
        if v.endswith("%"):
            try:
                p = float(v[:-1])
            except ValueError:
                raise UsageError(f"invalid percentage {s!r} passed for --max-unused") from None
            if p < 0:
                raise UsageError("percentage for --max-unused must be positive")
            if p >= 100:
                raise UsageError("percentage for --max-unused must be below 100%")
            return cls("percent", p)
        return cls("bytes", parse_size(v, "--max-unused"))

    def limit(self, used: int) -> int:
        """Unused bytes tolerated after pruning, given the used bytes (restic's maxUnusedBytes)."""
        if self.kind == "unlimited":
            return U64 - 1
        if self.kind == "percent":
            return int(self.value / (100 - self.value) * float(used))
        return int(self.value)

    def __str__(self) -> str:
        if self.kind == "unlimited":
            return "unlimited"
        return f"{self.value:g}%" if self.kind == "percent" else str(int(self.value))


def parse_size(s: str, flag: str) -> int:
    """restic's parseSizeStr: an integer with an optional k/K, m/M, g/G or t/T suffix."""
    v = s.strip()
    mult = 1
    if v and v[-1] in "kKmMgGtT":
        mult = 1 << (10 * ("kmgt".index(v[-1].lower()) + 1))
        v = v[:-1]
    try:
        n = int(v)
    except ValueError:
        raise UsageError(f"invalid size {s!r} for {flag}", hint="use bytes with an optional k, M, G or T suffix") \
            from None
    return n * mult


@dataclass(frozen=True, slots=True)
class PruneOptions:
    max_unused: MaxUnused = MaxUnused()
    max_repack_bytes: int | None = None  # None = unlimited
    repack_cacheable_only: bool = False
    repack_small: bool = False
    repack_uncompressed: bool = False


# ---------------------------------------------------------------------------------------- facts
@dataclass(slots=True)
class PruneFacts:
    """What prune decides from: read from the repository by :func:`gather`, or built by tests."""

    used: set[bytes]  # bkeys of every blob the snapshots reference (trees and file contents)
    snapshots: int  # snapshots whose data is kept
    index_ids: list[bytes]  # index files read (the compact rewrite replaces exactly these)
    index_packs: dict[bytes, list[PackedBlob]]  # every index entry, per pack
    stored_packs: dict[bytes, int]  # pack files in storage -> size
    repo_version: int = 2
    target_pack_size: int = 16 * 1024 * 1024


def gather(
    repo: Repository, *, ignore_snapshots: Iterable[bytes] = (), on_phase: Phase | None = None,
    on_progress: Progress | None = None,
) -> PruneFacts:
    """Read every snapshot, index entry, tree and pack name; refuse if anything is unreadable.

    ``ignore_snapshots`` are left out (``forget --prune --dry-run`` estimates as if they were gone).
    Sets ``repo.index`` to the loaded index, so trees (and later repacked blobs) can be read.
    """
    phase = on_phase or (lambda _n: None)
    ignore = set(ignore_snapshots)

    phase("loading all snapshots")
    bad: list[str] = []
    snaps = repo.list_snapshots(on_error=lambda sid, e: bad.append(f"snapshot {sid.hex()[:8]}: {e}"))
    if bad:
        raise PruneRefused(
            "cannot read every snapshot, so their data would look unused: " + "; ".join(bad[:5])
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
            hint="run `coffer check`; remove damaged snapshot files you cannot repair with `coffer forget ID`",
        )
    snaps = [s for s in snaps if s.id not in ignore]

    phase("loading indexes")
    ci = load_check_index(repo)
    errors = [f for f in ci.findings if f.severity == "error"]
    if errors:
        raise PruneRefused(
            "the index cannot be read completely: " + "; ".join(f.message for f in errors[:3]),
            hint="run `coffer repair index` to rebuild it from the pack files",
        )
    repo.index = ci.blobs
    repo.index.index_ids = set(ci.index_ids)
    repo.index_loaded = True

    phase(f"finding data that is still in use for {len(snaps)} snapshots")
    used = used_blobs(repo, [s.tree for s in snaps], on_progress)
    if on_progress is not None:
        on_progress("snapshots", len(snaps), len(snaps))

    phase("listing pack files")
    try:
        stored = {bytes.fromhex(fi.name): fi.size for fi in repo.list_files(FileType.PACK)}
    except BackendError as e:
        raise PruneRefused(f"cannot list the pack files: {e}") from None
    target = repo.pack_size
    return PruneFacts(used, len(snaps), list(ci.index_ids), ci.packs, stored, repo.version, target)


_TREE_BATCH = 256  # trees per worker task
_MERGE_GAP = 64 * 1024  # neighbouring tree blobs of one pack are read in one request ...
_MERGE_MAX = 4 * 1024 * 1024  # ... of at most this many bytes

_TreeRefs = tuple[list[bytes], list[bytes]]  # (subtrees, file contents) of one tree
_JSON = json.JSONDecoder()  # one decoder for all trees (json.loads builds a new one per call)


def tree_refs(plain: bytes) -> _TreeRefs:
    """The subtree IDs and content blob IDs a tree blob names (all prune needs of a tree).

    Much cheaper than decoding every node; anything malformed is a FormatError, which stops prune.
    """
    try:
        obj = _JSON.decode(plain.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise FormatError(f"tree: invalid JSON: {str(e)[:200]}") from None
    nodes = obj.get("nodes") if isinstance(obj, dict) else None
    if nodes is None and isinstance(obj, dict):
        return [], []
    if not isinstance(nodes, list):
        raise FormatError("tree: invalid node list")
    subtrees: list[bytes] = []
    content: list[bytes] = []
    try:
        for n in nodes:
            t = n.get("type")
            if t == "file":
                for h in n.get("content") or ():
                    b = bytes.fromhex(h)
                    if len(b) != 32:
                        raise ValueError("invalid ID length")
                    content.append(b)
            elif t == "dir":
                st = n.get("subtree")
                if st:
                    b = bytes.fromhex(st)
                    if len(b) != 32:
                        raise ValueError("invalid ID length")
                    subtrees.append(b)
    except (AttributeError, TypeError, ValueError) as e:
        raise FormatError(f"tree: malformed node ({e})") from None
    return subtrees, content


def _load_tree_batch(repo: Repository, batch: list[tuple[bytes, bytes, PackedBlob]]) -> list[_TreeRefs | Exception]:
    """Read, verify and parse a batch of trees (sorted by pack and offset); neighbours in one read."""
    out: list[_TreeRefs | Exception] = []
    i = 0
    while i < len(batch):
        _tid, pid, first = batch[i]
        j = i + 1
        end = first.offset + first.length
        while j < len(batch):
            _t, p2, b2 = batch[j]
            if p2 != pid or not 0 <= b2.offset - end <= _MERGE_GAP or b2.offset + b2.length - first.offset > _MERGE_MAX:
                break
            end = max(end, b2.offset + b2.length)
            j += 1
        try:
            raw = repo.backend.load(Handle(FileType.PACK, pid.hex()), first.offset, end - first.offset)
        except BackendError as e:
            out.extend([e] * (j - i))
            i = j
            continue
        mv = memoryview(raw)
        for _t, _p, b in batch[i:j]:
            try:
                plain = repo.decode_blob(pid, b, mv[b.offset - first.offset : b.offset - first.offset + b.length])
                out.append(tree_refs(plain))
            except FormatError as e:
                out.append(e)
        i = j
    return out


def used_blobs(repo: Repository, roots: list[bytes], on_progress: Progress | None = None) -> set[bytes]:
    """bkeys of every tree reachable from ``roots`` and every data blob their files use.

    Trees are loaded level by level (each at most once; snapshots share most of them), in batches
    sorted by pack so neighbouring tree blobs come in one read, by a small thread pool (decryption
    and decompression release the GIL). Any tree that cannot be loaded raises :class:`PruneRefused`.
    """
    used: set[bytes] = set()
    frontier: list[bytes] = []
    for r in roots:
        k = bkey(BlobType.TREE, r)
        if k not in used:
            used.add(k)
            frontier.append(r)
    done = 0
    workers = max(2, repo.backend.properties.connections)

    def refuse(tid: bytes, why: object) -> PruneRefused:
        return PruneRefused(f"unable to load tree {tid.hex()}: {why}; its data would look unused",
                            hint="run `coffer check`; `coffer repair snapshots` writes snapshots without the damage")

    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prune-tree") as ex:
        while frontier:
            jobs: list[tuple[bytes, bytes, PackedBlob]] = []
            for tid in frontier:
                loc = repo.index.lookup(BlobType.TREE, tid)
                if loc is None:
                    raise refuse(tid, "not found in the index")
                jobs.append((tid, loc.pack_id, loc.blob))
            jobs.sort(key=lambda j: (j[1], j[2].offset))
            batches = [jobs[k : k + _TREE_BATCH] for k in range(0, len(jobs), _TREE_BATCH)]
            nxt: list[bytes] = []
            for batch, results in zip(batches, ex.map(lambda b: _load_tree_batch(repo, b), batches)):
                for (tid, _p, _b), res in zip(batch, results):
                    if isinstance(res, Exception):
                        raise refuse(tid, res)
                    subtrees, content = res
                    used.update(content)
                    for st in subtrees:
                        k = b"T" + st
                        if k not in used:
                            used.add(k)
                            nxt.append(st)
                    done += 1
            if on_progress is not None:
                on_progress("trees", done, done + len(nxt))
            frontier = nxt
    return used


# ---------------------------------------------------------------------------------------- the plan
Action = Literal["keep", "repack", "remove", "remove-unreferenced", "forget-missing"]
PackType = Literal["data", "tree", "mixed"]


@dataclass(slots=True)
class _PackInfo:
    used_blobs: int = 0
    unused_blobs: int = 0
    used_size: int = 0  # includes the pack header (restic counts it as used)
    unused_size: int = 0
    type: PackType | None = None
    uncompressed: bool = False


@dataclass(frozen=True, slots=True)
class PackDecision:
    pack_id: bytes
    action: Action
    reason: str
    size: int  # bytes in storage (for a missing pack: what the index implies)
    used_blobs: int = 0
    unused_blobs: int = 0
    used_size: int = 0
    unused_size: int = 0
    type: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.pack_id.hex(), "action": self.action, "reason": self.reason, "size": self.size,
                "type": self.type, "used_blobs": self.used_blobs, "unused_blobs": self.unused_blobs,
                "used_size": self.used_size, "unused_size": self.unused_size}


@dataclass(slots=True)
class PruneStats:
    """restic's pruneStats: blob counts and sizes by fate, pack counts by kind and action."""

    blobs_used: int = 0
    blobs_duplicate: int = 0
    blobs_unused: int = 0
    blobs_remove: int = 0
    blobs_repack: int = 0
    blobs_repackrm: int = 0
    size_used: int = 0
    size_duplicate: int = 0
    size_unused: int = 0
    size_remove: int = 0
    size_repack: int = 0
    size_repackrm: int = 0
    size_unref: int = 0
    packs_used: int = 0
    packs_unused: int = 0
    packs_partly_used: int = 0
    packs_unref: int = 0
    packs_keep: int = 0
    packs_repack: int = 0
    packs_remove: int = 0

    @property
    def total_blobs(self) -> int:
        return self.blobs_used + self.blobs_unused + self.blobs_duplicate

    @property
    def total_size(self) -> int:
        return self.size_used + self.size_duplicate + self.size_unused + self.size_unref

    @property
    def prune_size(self) -> int:
        return self.size_remove + self.size_repackrm + self.size_unref

    @property
    def unused_after(self) -> int:
        return (self.size_duplicate + self.size_unused - self.size_remove - self.size_repackrm) % U64


@dataclass(slots=True)
class PrunePlan:
    """Everything prune will do, decided before anything is done."""

    options: PruneOptions
    packs: dict[bytes, PackDecision]
    keep_blobs: set[bytes]  # bkeys to copy out of repacked packs (not available in a kept pack)
    stats: PruneStats
    index_ids: list[bytes]
    index_packs: dict[bytes, list[PackedBlob]]
    rewrite_index: bool
    snapshots: int
    notes: list[str] = field(default_factory=list)

    def ids(self, *actions: Action) -> list[bytes]:
        return sorted(p for p, d in self.packs.items() if d.action in actions)

    @property
    def nothing_to_do(self) -> bool:
        return not self.rewrite_index and not any(d.action != "keep" for d in self.packs.values())

    def as_dict(self) -> dict[str, Any]:
        st = self.stats
        return {
            "snapshots": self.snapshots,
            "stats": dataclasses.asdict(st),
            "packs": [self.packs[p].as_dict() for p in sorted(self.packs)],
            "repack_blobs": len(self.keep_blobs),
            "rewrite_index": self.rewrite_index,
            "index_files": len(self.index_ids),
            "notes": self.notes,
        }


def decide(facts: PruneFacts, opts: PruneOptions) -> PrunePlan:
    """restic 0.14's planPrune over the facts: a pure function, so it is tested with values."""
    st = PruneStats()
    used = set(facts.used)
    keep_blobs: set[bytes] = set()
    duplicates: dict[bytes, int] = {}
    order = sorted(facts.index_packs)

    # 1. Which index entries are used: the first copy of a used blob; later copies are duplicates.
    for pid in order:
        for b in facts.index_packs[pid]:
            k = bkey(b.type, b.id)
            if k in used:
                used.discard(k)
                keep_blobs.add(k)
                st.size_used += b.length
                st.blobs_used += 1
            elif k in keep_blobs:
                duplicates[k] = min(255, duplicates.get(k, 1) + 1)
                st.size_duplicate += b.length
                st.blobs_duplicate += 1
            else:
                st.size_unused += b.length
                st.blobs_unused += 1
    if used:
        shown = ", ".join(("tree " + k[1:].hex()) if len(k) == 33 else ("data " + k.hex()) for k in sorted(used)[:5])
        more = f" and {len(used) - 5} more" if len(used) > 5 else ""
        raise PruneRefused(
            f"{len(used)} blobs referenced by snapshots are not in any index ({shown}{more}): data is missing; "
            "prune will not run, to prevent (additional) data loss",
            hint="run `coffer repair index`; if blobs are still missing, `coffer repair snapshots --forget`",
        )

    # 2. Per pack: used and unused bytes (the header counts as used, as in restic).
    info: dict[bytes, _PackInfo] = {}
    for pid in order:
        blobs = facts.index_packs[pid]
        ip = _PackInfo(used_size=implied_pack_size(blobs) - sum(b.length for b in blobs))
        for b in blobs:
            t: PackType = "data" if b.type == BlobType.DATA else "tree"
            if ip.type is None:
                ip.type = t
            elif ip.type != t:
                ip.type = "mixed"
            k = bkey(b.type, b.id)
            if k in duplicates:
                pass  # decided below
            elif k in keep_blobs:
                ip.used_size += b.length
                ip.used_blobs += 1
            else:
                ip.unused_size += b.length
                ip.unused_blobs += 1
            if not b.uncompressed_length:
                ip.uncompressed = True
        info[pid] = ip
    # Duplicates: one copy is used, preferably in a pack that has other used blobs.
    if duplicates:
        for pid in order:
            ip = info[pid]
            for b in facts.index_packs[pid]:
                k = bkey(b.type, b.id)
                count = duplicates.get(k)
                if count is None:
                    continue
                if count == 0:
                    ip.unused_size += b.length
                    ip.unused_blobs += 1
                elif ip.used_blobs > 0 or count == 1:
                    ip.used_size += b.length
                    ip.used_blobs += 1
                    duplicates[k] = 0
                else:
                    ip.unused_size += b.length
                    ip.unused_blobs += 1
                    duplicates[k] = count - 1

    # 3. What to do with each stored pack.
    decisions: dict[bytes, PackDecision] = {}
    target = facts.target_pack_size // 25
    if opts.repack_small:
        target = facts.target_pack_size // 5 * 4
    repack_candidates: list[tuple[bytes, _PackInfo, bool]] = []
    small_candidates: list[tuple[bytes, _PackInfo, bool]] = []
    mismatched: list[str] = []

    def decision(pid: bytes, action: Action, reason: str, ip: _PackInfo | None, size: int) -> None:
        if ip is None:
            decisions[pid] = PackDecision(pid, action, reason, size)
        else:
            decisions[pid] = PackDecision(pid, action, reason, size, ip.used_blobs, ip.unused_blobs, ip.used_size,
                                          ip.unused_size, ip.type or "")

    for pid in sorted(facts.stored_packs):
        size = facts.stored_packs[pid]
        found = info.get(pid)
        if found is None:
            decision(pid, "remove-unreferenced", "not referenced by any index", None, size)
            st.size_unref += size
            continue
        ip = found
        if ip.unused_size + ip.used_size != size and ip.used_blobs:
            mismatched.append(f"pack {pid.hex()}: size {size} does not match the {ip.unused_size + ip.used_size} "
                              "bytes the index implies")
            continue
        if ip.used_blobs == 0:
            st.packs_unused += 1
        elif ip.unused_blobs == 0:
            st.packs_used += 1
        else:
            st.packs_partly_used += 1
        must_compress = facts.repo_version >= 2 and ip.uncompressed and (ip.type == "tree" or opts.repack_uncompressed)
        if ip.used_blobs == 0:
            decision(pid, "remove", "no blob in it is used", ip, size)
            st.blobs_remove += ip.unused_blobs
            st.size_remove += ip.unused_size
        elif opts.repack_cacheable_only and ip.type == "data":
            decision(pid, "keep", "data pack (--repack-cacheable-only)", ip, size)
            st.packs_keep += 1
        elif ip.unused_blobs == 0 and ip.type != "mixed" and not must_compress:
            if size >= target:
                decision(pid, "keep", "every blob in it is used", ip, size)
                st.packs_keep += 1
            else:
                small_candidates.append((pid, ip, must_compress))
        else:
            repack_candidates.append((pid, ip, must_compress))
    if mismatched:
        raise PruneRefused(
            "pack files that hold used data do not match the index: " + "; ".join(mismatched[:3])
            + (f" and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""),
            hint="run `coffer repair index` (and `coffer check --read-data`)",
        )

    # Packs the index names but storage does not have: harmless if unused, fatal if needed.
    missing_needed = []
    for pid in order:
        if pid in facts.stored_packs:
            continue
        ip = info[pid]
        if ip.used_blobs:
            missing_needed.append(pid)
            continue
        decision(pid, "forget-missing", "missing from storage and not needed: dropped from the index", ip,
                 implied_pack_size(facts.index_packs[pid]))
        st.blobs_remove += ip.unused_blobs
        st.size_remove += ip.unused_size
    if missing_needed:
        raise PruneRefused(
            f"the index references {len(missing_needed)} needed pack files which are missing from the repository: "
            + ", ".join(p.hex() for p in missing_needed[:5]),
            hint="run `coffer repair index`, then `coffer repair snapshots`; back up again to heal the data",
        )

    if len(small_candidates) < 10:
        # too few small packs to be worth it (and a single small pack would be repacked forever)
        for pid, ip, _ in small_candidates:
            decision(pid, "keep", "small, but too few small packs to repack", ip, facts.stored_packs[pid])
        st.packs_keep += len(small_candidates)
    else:
        repack_candidates.extend(small_candidates)

    def cmp(a: tuple[bytes, _PackInfo, bool], b: tuple[bytes, _PackInfo, bool]) -> int:
        pi, pj = a[1], b[1]
        ti, tj = pi.used_size + pi.unused_size, pj.used_size + pj.unused_size
        if (pi.type != "data") != (pj.type != "data"):
            return -1 if pi.type != "data" else 1
        if (ti < target) != (tj < target):
            return -1 if ti < target else 1
        x, y = pi.unused_size * pj.used_size, pj.unused_size * pi.used_size
        if x != y:
            return -1 if x > y else 1
        return -1 if a[0] < b[0] else (1 if a[0] > b[0] else 0)

    repack_candidates.sort(key=functools.cmp_to_key(cmp))
    max_unused_after = opts.max_unused.limit(st.size_used)
    max_repack = U64 - 1 if opts.max_repack_bytes is None else opts.max_repack_bytes
    for pid, ip, must_compress in repack_candidates:
        total = ip.unused_size + ip.used_size
        unused_now = (st.size_unused - st.size_remove - st.size_repackrm) % U64  # Go's uint64 arithmetic
        reached_unused = unused_now < max_unused_after
        reached_repack = st.size_repack + total >= max_repack
        large_enough = total >= target
        size = facts.stored_packs[pid]
        if reached_repack:
            decision(pid, "keep", "--max-repack-size reached", ip, size)
            st.packs_keep += 1
            continue
        if ip.type != "data" or must_compress:
            why = f"{ip.type} pack" + (" (uncompressed)" if must_compress else "")
            why += " with unused blobs" if ip.unused_blobs else " below the target size"
        elif reached_unused and large_enough:
            decision(pid, "keep", f"partly used, but unused data is within --max-unused {opts.max_unused}", ip, size)
            st.packs_keep += 1
            continue
        else:
            why = "small pack" if ip.unused_blobs == 0 else f"partly used ({ip.unused_size} of {total} bytes unused)"
        decision(pid, "repack", why, ip, size)
        st.blobs_repack += ip.unused_blobs + ip.used_blobs
        st.size_repack += ip.unused_size + ip.used_size
        st.blobs_repackrm += ip.unused_blobs
        st.size_repackrm += ip.unused_size

    st.packs_unref = sum(1 for d in decisions.values() if d.action == "remove-unreferenced")
    st.packs_repack = sum(1 for d in decisions.values() if d.action == "repack")
    st.packs_remove = sum(1 for d in decisions.values() if d.action == "remove")

    # Blobs to copy: used ones whose every copy is in a pack that goes away. (restic also counts a
    # copy in a missing pack as available; that would lose the blob, so only kept packs count here.)
    if st.packs_repack:
        for pid, d in decisions.items():
            if d.action == "keep":
                for b in facts.index_packs.get(pid, ()):
                    keep_blobs.discard(bkey(b.type, b.id))
        repacked = {bkey(b.type, b.id) for pid in decisions if decisions[pid].action == "repack"
                    for b in facts.index_packs[pid]}
        keep_blobs &= repacked
    else:
        keep_blobs = set()

    dropped = any(d.action in ("remove", "repack", "forget-missing") for d in decisions.values())
    entries = sum(len(v) for v in facts.index_packs.values())
    compact_files = max(1, math.ceil(entries / INDEX_MAX_BLOBS))
    notes = []
    rewrite = dropped
    if not dropped and len(facts.index_ids) > compact_files:
        rewrite = True
        notes.append(f"{len(facts.index_ids)} index files will be compacted into {compact_files}")
    return PrunePlan(opts, decisions, keep_blobs, st, list(facts.index_ids), facts.index_packs, rewrite,
                     facts.snapshots, notes)


def plan_prune(
    repo: Repository, opts: PruneOptions, *, ignore_snapshots: Iterable[bytes] = (),
    on_phase: Phase | None = None, on_progress: Progress | None = None,
) -> PrunePlan:
    facts = gather(repo, ignore_snapshots=ignore_snapshots, on_phase=on_phase, on_progress=on_progress)
    if on_phase:
        on_phase("collecting packs for deletion and repacking")
    plan = decide(facts, opts)
    if on_progress is not None:
        on_progress("packs processed", len(facts.stored_packs), len(facts.stored_packs))
    return plan


# ---------------------------------------------------------------------------------------- execution
@dataclass(slots=True)
class PruneOutcome:
    packs_deleted: int = 0
    unreferenced_deleted: int = 0
    packs_written: int = 0
    blobs_repacked: int = 0
    index_files_written: int = 0
    index_files_deleted: int = 0
    bytes_deleted: int = 0
    bytes_written: int = 0
    temp_files_removed: int = 0
    warnings: list[str] = field(default_factory=list)


def execute(
    repo: Repository, plan: PrunePlan, *, on_phase: Phase | None = None, on_progress: Progress | None = None,
) -> PruneOutcome:
    """Carry out ``plan`` (made by :func:`plan_prune` on this ``repo``, under an exclusive lock)."""
    phase = on_phase or (lambda _n: None)
    progress = on_progress or (lambda _w, _d, _t: None)
    out = PruneOutcome()
    guard = repo.lock_guard or (lambda: None)

    # Packs no index names: nothing can reference them, so they go first (this also frees space).
    unref = plan.ids("remove-unreferenced")
    if unref:
        phase("deleting unreferenced packs")
        guard()
        n = _delete_packs(repo, unref, plan, out, progress, "prune_unreferenced_delete")
        out.unreferenced_deleted = n

    new_packs: list[IndexPack] = []
    repack = plan.ids("repack")
    if repack:
        phase("repacking packs")
        guard()
        new_packs = _repack(repo, plan, repack, out, progress)

    drop = set(plan.ids("remove", "repack", "forget-missing"))
    if plan.rewrite_index:
        phase("rebuilding index")
        before = set(repo.index.index_ids)  # includes the index the repacking wrote
        guard()
        packs = [IndexPack(pid, blobs) for pid, blobs in sorted(plan.index_packs.items()) if pid not in drop]
        written = write_index(repo, packs + new_packs, fail_prefix="prune",
                              on_pack=lambda n, total: progress("packs processed", n, total))
        out.index_files_written = len(written)
        phase("deleting obsolete index files")
        guard()
        obsolete = sorted((before | set(plan.index_ids)) - set(written))
        for i, iid in enumerate(obsolete):
            failpoint("prune_before_index_delete")
            try:
                repo.backend.remove(Handle(FileType.INDEX, iid.hex()))
            except ObjectNotFound:
                pass
            out.index_files_deleted += 1
            progress("files deleted", i + 1, len(obsolete))
        repo.index.index_ids = set(written)

    remove = sorted(set(plan.ids("remove", "repack")))
    if remove:
        phase(f"removing {len(remove)} old packs")
        guard()
        out.packs_deleted = _delete_packs(repo, remove, plan, out, progress, "prune_pack_delete")

    cleanup = getattr(repo.backend, "remove_stale_temp_files", None)
    if callable(cleanup):  # files a killed writer left; only old ones (see TEMP_FILE_GRACE)
        out.temp_files_removed = int(cleanup(min_age=TEMP_FILE_GRACE))
    phase("done")
    return out


def write_index(
    repo: Repository, packs: list[IndexPack], *, fail_prefix: str, on_pack: Callable[[int, int], None] | None = None,
) -> list[bytes]:
    """Write ``packs`` as index files of at most INDEX_MAX_BLOBS entries; their IDs in order."""
    written: list[bytes] = []
    batch: list[IndexPack] = []
    count = 0
    done = 0

    def flush() -> None:
        nonlocal batch, count
        if repo.lock_guard:
            repo.lock_guard()
        failpoint(f"{fail_prefix}_before_index_put")
        written.append(repo.save_unpacked(FileType.INDEX, IndexFile(batch).to_json()))
        failpoint(f"{fail_prefix}_after_index_put")
        if on_pack is not None:
            on_pack(done, len(packs))
        batch, count = [], 0

    for p in packs:
        if batch and count + len(p.blobs) > INDEX_MAX_BLOBS:
            flush()
        batch.append(p)
        count += len(p.blobs)
        done += 1
    if batch:
        flush()
    return written


def _delete_packs(
    repo: Repository, ids: list[bytes], plan: PrunePlan, out: PruneOutcome, progress: Progress, site: str,
) -> int:
    """Delete pack files in parallel; a failure is a warning (the pack is merely left behind)."""
    done = 0

    def rm(pid: bytes) -> str | None:
        failpoint(site)
        try:
            repo.backend.remove(Handle(FileType.PACK, pid.hex()))
        except ObjectNotFound:
            return None
        except BackendError as e:
            return f"unable to remove pack {pid.hex()[:8]} from the repository: {e}"
        return None

    workers = max(2, repo.backend.properties.connections)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prune-rm") as ex:
        for pid, err in zip(ids, ex.map(rm, ids)):
            if err:
                out.warnings.append(err)
                continue
            done += 1
            d = plan.packs.get(pid)
            out.bytes_deleted += d.size if d else 0
            progress("files deleted", done, len(ids))
    return done


def _repack(
    repo: Repository, plan: PrunePlan, packs: list[bytes], out: PruneOutcome, progress: Progress,
) -> list[IndexPack]:
    """Copy the blobs in ``plan.keep_blobs`` out of ``packs`` into new packs, verified, and index them."""
    todo = set(plan.keep_blobs)
    must_compress = plan.options.repack_uncompressed and repo.version >= 2 and repo.compression_level is not None
    writer = repo.writer
    writer.record_packs = []
    copies: dict[bytes, list[tuple[bytes, PackedBlob]]] = {}  # every copy, for fallbacks
    for pid, blobs in plan.index_packs.items():
        if plan.packs.get(pid) is None or plan.packs[pid].action == "forget-missing":
            continue
        for b in blobs:
            k = bkey(b.type, b.id)
            if k in todo:
                copies.setdefault(k, []).append((pid, b))
    mu = threading.Lock()

    def take(k: bytes) -> bool:
        with mu:
            if k in todo:
                todo.discard(k)
                return True
            return False

    def store(b: PackedBlob, raw: bytes | memoryview, plain: bytes) -> None:
        recompress = (must_compress and not b.uncompressed_length and b.type == BlobType.DATA) or (
            b.type == BlobType.TREE and repo.version >= 2 and not b.uncompressed_length)
        if recompress:
            writer.save(b.type, plain, b.id, store_duplicate=True)
        else:
            writer.save_sealed(b.type, b.id, raw, b.uncompressed_length)

    def fallback(pid: bytes, b: PackedBlob, why: str) -> None:
        for other_pid, ob in copies.get(bkey(b.type, b.id), ()):
            if other_pid == pid:
                continue
            try:
                raw = repo.backend.load(Handle(FileType.PACK, other_pid.hex()), ob.offset, ob.length)
                plain = repo.decode_blob(other_pid, ob, raw)
            except (FormatError, BackendError):
                continue
            store(ob, raw, plain)
            return
        raise PruneRefused(f"pack {pid.hex()[:8]}: {b.type.label} blob {b.id.hex()} cannot be read ({why}) and "
                           "no other copy is intact; nothing was deleted",
                           hint="run `coffer check --read-data`, then `coffer repair snapshots`")

    def one(pid: bytes) -> int:
        wanted = sorted((b for b in plan.index_packs[pid] if bkey(b.type, b.id) in todo), key=lambda b: b.offset)
        if not wanted:
            return 0
        start = wanted[0].offset
        end = max(b.offset + b.length for b in wanted)
        err = "short read"
        try:
            data = repo.backend.load(Handle(FileType.PACK, pid.hex()), start, end - start)
        except BackendError as e:
            data, err = b"", f"pack could not be read: {e}"
        mv = memoryview(data)
        n = 0
        for b in wanted:
            if not take(bkey(b.type, b.id)):
                continue
            raw = mv[b.offset - start : b.offset - start + b.length]
            if len(raw) != b.length:
                fallback(pid, b, err)
                n += 1
                continue
            try:
                plain = repo.decode_blob(pid, b, raw)
            except FormatError as e:
                fallback(pid, b, str(e))
                n += 1
                continue
            store(b, raw, plain)
            n += 1
        return n

    workers = max(1, repo.backend.properties.connections - 1)
    done = 0
    try:
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prune-repack") as ex:
            for n in ex.map(one, packs):
                out.blobs_repacked += n
                done += 1
                progress("packs repacked", done, len(packs))
        repo.flush()  # new packs, then the index naming them: the new copies are durable and found
    except BaseException:
        repo.abort_writes()
        raise
    if todo:
        raise CofferError(f"internal error: {len(todo)} blobs were not repacked; nothing was deleted")
    recorded = writer.record_packs or []
    writer.record_packs = None
    out.packs_written = len(recorded)
    out.bytes_written = writer.stats.bytes_stored
    return list(recorded)
