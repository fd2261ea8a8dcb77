"""coffer find: find files by name, or where blobs, trees and packs are used, across snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from coffer.cli.commands._restic_fmt import (
    canonical_time,
    format_node,
    go_json,
    json_text,
    local_time,
    mode_string,
    raw_text_output,
    text,
)
from coffer.cli.commands.snapshots import filter_options
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import Printer
from coffer.engine import snapshots as snapsel
from coffer.engine.find import IdFinder, IdHit, IdSet, NameFinder, NameQuery, blobs_of_packs, locate
from coffer.errors import CofferError, UsageError
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.store.format.tree import Node
from coffer.store.repository import Repository

# restic's accepted --oldest/--newest layouts, as strptime formats (local time unless a zone is given).
_TIME_FORMATS = (
    "%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S %Z",
    "%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S %z", "%d.%m.%Y %H:%M:%S %Z",
    "%a %b %d %H:%M:%S %z %Z %Y",
)


def parse_time(s: str) -> int:
    """Epoch nanoseconds of a --oldest/--newest value."""
    for fmt in _TIME_FORMATS:
        try:
            dt = datetime.strptime(s, fmt)
        except ValueError:
            continue
        return int(dt.timestamp()) * 1_000_000_000
    raise UsageError(f"unable to parse time: {s!r}")


def match_json(path: bytes, node: Node) -> dict[str, Any]:
    """restic 0.14's find match: the node without name/inode/xattrs/device/content/subtree."""
    d: dict[str, Any] = {"path": json_text(path), "permissions": mode_string(node.mode), "type": node.type}
    if node.mode:
        d["mode"] = node.mode
    d["mtime"] = canonical_time(node.mtime or "0001-01-01T00:00:00Z")
    d["atime"] = canonical_time(node.atime or "0001-01-01T00:00:00Z")
    d["ctime"] = canonical_time(node.ctime or "0001-01-01T00:00:00Z")
    d["uid"] = node.uid
    d["gid"] = node.gid
    if node.user:
        d["user"] = node.user
    if node.group:
        d["group"] = node.group
    if node.device_id:
        d["device_id"] = node.device_id
    if node.size:
        d["size"] = node.size
    if node.links:
        d["links"] = node.links
    if node.linktarget:
        d["linktarget"] = json_text(node.linktarget)
    if node.error:
        d["error"] = node.error
    return d


class _Output:
    """restic's statefulOutput: text grouped by snapshot, or one streamed JSON array."""

    def __init__(self, p: Printer, *, long: bool, json: bool) -> None:
        self.p = p
        self.long = long
        self.json = json
        self.inuse = False
        self.cur: Snapshot | None = None  # snapshot being searched
        self.shown: Snapshot | None = None  # snapshot whose header/group is open
        self.hits = 0

    def _raw(self, s: str) -> None:
        self.p.out.write(s)

    def pattern(self, path: bytes, node: Node) -> None:
        sn = self.cur
        assert sn is not None
        if not self.json:
            if sn is not self.shown:
                if self.shown is not None:
                    self.p.print("")
                self.shown = sn
                self.p.print(f"Found matching entries in snapshot {sn.id.hex()[:8]} from {local_time(sn.time)}")
            self.p.result(format_node(path, node, self.long))
            return
        if not self.inuse:
            self._raw("[")
            self.inuse = True
        if sn is not self.shown:
            if self.shown is not None:
                self._raw('],"hits":%d,"snapshot":"%s"},' % (self.hits, self.shown.id.hex()))
            self._raw('{"matches":[')
            self.shown = sn
            self.hits = 0
        if self.hits:
            self._raw(",")
        self._raw(go_json(match_json(path, node)))
        self.hits += 1

    def obj(self, hit: IdHit) -> None:
        sn = self.cur
        assert sn is not None
        if self.json:
            d: dict[str, Any] = {"object_type": hit.kind, "id": hit.id.hex(), "path": json_text(hit.path)}
            if hit.parent_tree is not None:
                d["parent_tree"] = hit.parent_tree.hex()
            d["snapshot"] = sn.id.hex()
            d["time"] = canonical_time(sn.time)
            if not self.inuse:
                self._raw("[")
                self.inuse = True
            if self.hits:
                self._raw(",")
            self._raw(go_json(d))
            self.hits += 1
            return
        r = self.p.result
        r(f"Found {hit.kind} {hit.id.hex()}")
        if hit.kind == "blob":
            r(f" ... in file {text(hit.path)}")
            r(f"     (tree {hit.parent_tree.hex() if hit.parent_tree else ''})")
        else:
            r(f" ... path {text(hit.path)}")
        r(f" ... in snapshot {sn.id.hex()[:8]} ({local_time(sn.time)})")

    def finish(self) -> None:
        if not self.json:
            return
        if self.shown is not None:
            self._raw('],"hits":%d,"snapshot":"%s"}' % (self.hits, self.shown.id.hex()))
        self._raw("]\n" if self.inuse else "[]\n")
        self.p.out.flush()


def choose_snapshots(p: Printer, all_snaps: Sequence[Snapshot], specs: Sequence[str],
                     flt: snapsel.SnapshotFilter) -> list[Snapshot]:
    """Snapshots named with -s (each "latest" honours the filter), else all matching the filter."""
    if not specs:
        return snapsel.select(all_snaps, flt)
    out: list[Snapshot] = []
    used_filter = False
    for s in specs:
        used_filter = used_filter or s == "latest"
        try:
            sn = snapsel.find(all_snaps, s, flt)
        except CofferError as e:
            p.warn(f'Ignoring "{s}": {e}')
            continue
        if all(x.id != sn.id for x in out):
            out.append(sn)
    if not used_filter and not flt.empty:
        p.warn("Ignoring filters as there are explicit snapshot ids given")
    return out


def _blob_string(b: PackedBlob) -> str:
    return (f"<Blob ({b.type.label}) {b.id.hex()[:8]}, offset {b.offset}, length {b.length}, "
            f"uncompressed length {b.uncompressed_length}>")


def _show_packs(p: Printer, repo: Repository, ids: IdSet | None, t: BlobType) -> None:
    if ids is None:
        return
    found = locate(repo, t, ids)
    for pack_id, b in found:
        p.result(f"Object belongs to pack {pack_id.hex()}\n ... Pack {pack_id.hex()[:8]}: {_blob_string(b)}")
    seen = {b.id for _, b in found}
    for full in sorted(ids.full - seen):
        p.result(f"Object {full.hex()[:8]} not found in the index")
    for prefix in ids.prefixes:
        if not any(i.hex().startswith(prefix) for i in seen):
            p.result(f"Object {prefix} not found in the index")


@click.command("find")
@filter_options
@click.option("-O", "--oldest", default="", help="oldest modification date/time")
@click.option("-N", "--newest", default="", help="newest modification date/time")
@click.option("-s", "--snapshot", "snapshot_ids", multiple=True,
              help="snapshot id to search in (can be given multiple times)")
@click.option("--blob", "blob_mode", is_flag=True, help="pattern is a blob-ID")
@click.option("--tree", "tree_mode", is_flag=True, help="pattern is a tree-ID")
@click.option("--pack", "pack_mode", is_flag=True, help="pattern is a pack-ID")
@click.option("--show-pack-id", is_flag=True, help="display the pack-ID the blobs belong to (with --blob or --tree)")
@click.option("-i", "--ignore-case", is_flag=True, help="ignore case for pattern")
@click.option("-l", "--long", "long_", is_flag=True, help="use a long listing format showing size and mode")
@click.argument("patterns", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, hosts: tuple[str, ...], tags: tuple[str, ...], paths: tuple[str, ...], oldest: str,
            newest: str, snapshot_ids: tuple[str, ...], blob_mode: bool, tree_mode: bool, pack_mode: bool,
            show_pack_id: bool, ignore_case: bool, long_: bool, patterns: tuple[str, ...]) -> int:
    """Find a file, a directory or restic IDs.

    PATTERN is a glob matched against path components (absolute patterns from the root), or with
    --blob/--tree/--pack an object ID or ID prefix.
    """
    if not patterns:
        raise UsageError("wrong number of arguments")
    if sum((blob_mode, tree_mode, pack_mode)) > 1:
        raise UsageError("cannot have several ID types")
    query = NameQuery(list(patterns), ignore_case=ignore_case,
                      oldest_ns=parse_time(oldest) if oldest else None,
                      newest_ns=parse_time(newest) if newest else None)
    p = g.printer
    flt = snapsel.SnapshotFilter.build(hosts, tags, paths)
    out = _Output(p, long=long_, json=g.json)
    with g.open(lock="shared") as repo:
        all_snaps = repo.list_snapshots(on_error=lambda sid, e: p.warn(f"could not load snapshot {sid.hex()[:8]}: {e}"))
        repo.load_index()
        blob_ids = IdSet(patterns) if blob_mode else None
        tree_ids = IdSet(patterns) if tree_mode else None
        if pack_mode:
            blob_ids = IdSet(b.hex() for b in blobs_of_packs(repo, patterns, warn=p.warn))
        snaps = choose_snapshots(p, all_snaps, snapshot_ids, flt)
        if not g.json:
            raw_text_output(p)
        if blob_ids is not None or tree_ids is not None:
            finder = IdFinder(repo, blob_ids, tree_ids)
            for sn in snaps:
                out.cur = sn
                for hit in finder.search(sn.tree):
                    out.obj(hit)
        else:
            nf = NameFinder(repo, query)
            for sn in snaps:
                out.cur = sn
                for path, node in nf.search(sn.tree):
                    out.pattern(path, node)
        out.finish()
        if show_pack_id and (blob_mode or tree_mode):
            _show_packs(p, repo, blob_ids, BlobType.DATA)
            _show_packs(p, repo, tree_ids, BlobType.TREE)
    return 0
