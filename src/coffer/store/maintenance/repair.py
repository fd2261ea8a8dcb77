"""``coffer repair index`` and ``coffer repair snapshots`` as a library.

**repair index** rebuilds the index from the packs themselves (restic's ``rebuild-index`` /
``repair index``). By default the readable index files are trusted for packs whose size matches
what they imply, and only the other packs' headers are read (``read_all_packs`` reads every header).
Packs the index names that no longer exist are dropped, packs no index names are added, packs whose
header cannot be read are left out (and reported). The new index is written and durable before any
old index file is deleted, so a crash at any point leaves a usable index (reliability T4, T24).

**repair snapshots** writes a new snapshot for every snapshot that references data the index does
not have: file contents lose their missing blobs (and get the size of what is left), a directory
whose tree cannot be loaded becomes empty. The new snapshot records the old one as ``original`` and
is tagged ``repaired``; the old snapshot stays unless ``forget`` is asked for (then it is deleted
only after its replacement is saved). Run ``repair index`` first, so "missing" is the truth.
Running it again does nothing new: a snapshot already repaired to the same tree is skipped.

Both take an exclusive lock (the caller's job) and report what they changed as values.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from coffer.errors import BackendError, FormatError, ObjectNotFound
from coffer.store.backend.base import FileType, Handle
from coffer.store.format import tree as treefmt
from coffer.store.format.index import IndexPack
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.store.maintenance.check import implied_pack_size, load_check_index
from coffer.store.maintenance.prune import write_index
from coffer.store.repository import Repository
from coffer.util.failpoints import failpoint

Phase = Callable[[str], None]
Progress = Callable[[str, int, int], None]
REPAIRED_TAG = "repaired"


# ---------------------------------------------------------------------------------------- index
@dataclass(slots=True)
class IndexRepair:
    """What ``repair index`` found and did (or, for a dry run, would do)."""

    packs: int = 0  # packs in the new index
    read: list[bytes] = field(default_factory=list)  # packs whose header was read
    added: list[bytes] = field(default_factory=list)  # packs no index named
    reindexed: list[tuple[bytes, int, int]] = field(default_factory=list)  # (pack, size, size the index implied)
    removed: list[bytes] = field(default_factory=list)  # indexed but missing from storage
    skipped: list[tuple[bytes, str]] = field(default_factory=list)  # header unreadable: not indexed
    invalid_index: list[tuple[bytes, str]] = field(default_factory=list)  # index files that did not load
    index_written: list[bytes] = field(default_factory=list)
    index_deleted: list[bytes] = field(default_factory=list)


def repair_index(
    repo: Repository, *, read_all_packs: bool = False, dry_run: bool = False,
    on_phase: Phase | None = None, on_progress: Progress | None = None,
) -> IndexRepair:
    phase = on_phase or (lambda _n: None)
    progress = on_progress or (lambda _w, _d, _t: None)
    res = IndexRepair()

    phase("loading indexes")
    ci = load_check_index(repo)
    for f in ci.findings:
        if f.kind == "index_unreadable" and f.object.startswith("index/"):
            res.invalid_index.append((bytes.fromhex(f.object[6:]), f.message))
    old_index = list(ci.index_ids) + [i for i, _ in res.invalid_index]
    known: dict[bytes, list[PackedBlob]] = {} if read_all_packs else dict(ci.packs)

    phase("getting pack files to read")
    stored = {bytes.fromhex(fi.name): fi.size for fi in repo.list_files(FileType.PACK)}
    entries: dict[bytes, list[PackedBlob]] = {}
    to_read: list[tuple[bytes, int]] = []
    for pid in sorted(stored):
        size = stored[pid]
        blobs = known.get(pid)
        if blobs is not None and implied_pack_size(blobs) == size:
            entries[pid] = blobs
            continue
        if blobs is None:
            if not read_all_packs:
                res.added.append(pid)
        else:
            res.reindexed.append((pid, size, implied_pack_size(blobs)))
        to_read.append((pid, size))
    for pid in sorted(set(ci.packs) - set(stored)):
        res.removed.append(pid)

    if to_read:
        phase("reading pack files")
        workers = max(2, repo.backend.properties.connections)

        def header(item: tuple[bytes, int]) -> list[PackedBlob] | Exception:
            try:
                return repo.read_pack_header(item[0], item[1]).blobs
            except (FormatError, BackendError) as e:
                return e

        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="repair-hdr") as ex:
            for n, ((pid, _size), got) in enumerate(zip(to_read, ex.map(header, to_read))):
                res.read.append(pid)
                if isinstance(got, Exception):
                    res.skipped.append((pid, str(got)))
                else:
                    entries[pid] = got
                progress("packs", n + 1, len(to_read))
    res.packs = len(entries)
    if dry_run:
        return res

    phase("rebuilding index")
    if repo.lock_guard:
        repo.lock_guard()
    packs = [IndexPack(pid, sorted(bl, key=lambda b: b.offset)) for pid, bl in sorted(entries.items())]
    res.index_written = write_index(repo, packs, fail_prefix="repair",
                                    on_pack=lambda n, total: progress("packs processed", n, total))
    phase("deleting obsolete index files")
    obsolete = [i for i in dict.fromkeys(old_index) if i not in set(res.index_written)]
    if repo.lock_guard:
        repo.lock_guard()
    for n, iid in enumerate(obsolete):
        failpoint("repair_before_index_delete")
        try:
            repo.backend.remove(Handle(FileType.INDEX, iid.hex()))
        except ObjectNotFound:
            pass
        res.index_deleted.append(iid)
        progress("files deleted", n + 1, len(obsolete))
    repo.index_loaded = False  # what is in memory no longer matches the files
    phase("done")
    return res


# ---------------------------------------------------------------------------------------- snapshots
@dataclass(slots=True)
class SnapshotRepair:
    snapshot: Snapshot
    changes: list[str] = field(default_factory=list)  # one line per damaged file or directory
    new_tree: bytes | None = None  # None: nothing to change (or nothing could be kept)
    new_id: bytes | None = None  # the saved replacement
    already: bytes | None = None  # an earlier repair with the same result
    root_unreadable: bool = False
    removed: bool = False  # the original was deleted (--forget)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass(slots=True)
class _Rewriter:
    """Rewrites trees bottom-up, each tree once: missing content is cut, unloadable dirs emptied."""

    repo: Repository
    dry_run: bool
    done: dict[bytes, bytes | None] = field(default_factory=dict)  # tree -> new tree (None: unloadable)
    empty_tree: bytes | None = None

    def rewrite(self, tid: bytes, path: str, changes: list[str]) -> bytes | None:
        """The ID of the repaired tree (== ``tid`` when it is intact); None when it cannot be loaded."""
        if tid in self.done:
            return self.done[tid]
        try:
            nodes = self.repo.load_tree(tid)
        except (FormatError, BackendError):
            self.done[tid] = None
            return None
        out: list[treefmt.Node] = []
        changed = False
        for n in nodes:
            where = (path.rstrip("/") + "/" + n.display_name) if path != "/" else "/" + n.display_name
            if n.type == "file":
                content = list(n.content or [])
                keep: list[bytes] = []
                size = 0
                for b in content:
                    loc = self.repo.index.lookup(BlobType.DATA, b)
                    if loc is None:
                        continue
                    keep.append(b)
                    size += loc.blob.plain_length
                if len(keep) != len(content):
                    changes.append(f'file "{where}": removed missing content')
                elif size != n.size:
                    changes.append(f'file "{where}": fixed incorrect size')
                elif n.content is None:
                    changes.append(f'file "{where}": replaced a missing content list with an empty one')
                if len(keep) != len(content) or size != n.size or n.content is None:
                    n = dataclasses.replace(n, content=keep, size=size)
                    changed = True
            elif n.type == "dir" and n.subtree is not None:
                sub = self.rewrite(n.subtree, where, changes)
                if sub is None:
                    changes.append(f'dir "{where}": replaced with empty directory')
                    sub = self._empty()
                if sub != n.subtree:
                    n = dataclasses.replace(n, subtree=sub)
                    changed = True
            out.append(n)
        new = tid
        if changed:
            new = treefmt_id(out) if self.dry_run else self.repo.save_tree(out)
        self.done[tid] = new
        return new

    def _empty(self) -> bytes:
        if self.empty_tree is None:
            self.empty_tree = treefmt_id([]) if self.dry_run else self.repo.save_tree([])
        return self.empty_tree


def treefmt_id(nodes: list[treefmt.Node]) -> bytes:
    """The ID a tree would get (a dry run computes it without writing)."""
    return hashlib.sha256(treefmt.encode_tree(nodes)).digest()


def repair_snapshots(
    repo: Repository, snapshots: Sequence[Snapshot], *, forget: bool = False, dry_run: bool = False,
    all_snapshots: Iterable[Snapshot] = (), on_snapshot: Callable[[SnapshotRepair], None] | None = None,
) -> list[SnapshotRepair]:
    """Repair ``snapshots`` (the index must be loaded). ``all_snapshots`` finds earlier repairs."""
    rw = _Rewriter(repo, dry_run)
    earlier = {(s.original, s.tree): s.id for s in all_snapshots if s.original}
    out: list[SnapshotRepair] = []
    pending: list[tuple[SnapshotRepair, Snapshot]] = []
    for sn in snapshots:
        r = SnapshotRepair(sn)
        new_tree = rw.rewrite(sn.tree, "/", r.changes)
        if new_tree is None:
            r.root_unreadable = True
            r.changes.append('dir "/": not readable')
        elif new_tree != sn.tree:
            r.new_tree = new_tree
            r.already = earlier.get((sn.id, new_tree))
            if r.already is None:
                tags = list(sn.tags) if forget or REPAIRED_TAG in sn.tags else [*sn.tags, REPAIRED_TAG]
                pending.append((r, dataclasses.replace(sn, tree=new_tree, original=sn.id, tags=tags, id=b"")))
        out.append(r)
    if dry_run:
        for r in out:
            if on_snapshot:
                on_snapshot(r)
        return out
    repo.flush()  # the new trees' packs and index, before any snapshot refers to them
    for r, new in pending:
        r.new_id = repo.save_snapshot(new)
    for r in out:
        if forget and (r.new_id or r.already or r.root_unreadable):
            if repo.lock_guard:
                repo.lock_guard()
            failpoint("repair_before_snapshot_delete")
            try:
                repo.backend.remove(Handle(FileType.SNAPSHOT, r.snapshot.id.hex()))
            except ObjectNotFound:
                pass
            r.removed = True
        if on_snapshot:
            on_snapshot(r)
    return out
