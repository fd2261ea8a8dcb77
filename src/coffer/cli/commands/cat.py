"""coffer cat: print internal objects of the repository to stdout."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import click

from coffer.cli.commands._restic_fmt import go_indent, write_raw
from coffer.cli.globals import GlobalOptions
from coffer.engine import snapshots as snapsel
from coffer.engine.find import IdSet, locate
from coffer.engine.treewalk import find_tree
from coffer.errors import BlobNotFound, CofferError, ObjectNotFound, UsageError
from coffer.store.backend.base import FileType, Handle
from coffer.store.format import ids
from coffer.store.format.lock import LockInfo
from coffer.store.format.pack import BlobType
from coffer.store.keys import load_key
from coffer.store.repository import Repository

TYPES = ("config", "index", "snapshot", "key", "masterkey", "lock", "pack", "blob", "tree")


def _blob_id(repo: Repository, spec: str, types: tuple[BlobType, ...]) -> tuple[BlobType, bytes]:
    """A blob by full ID or unique prefix, looked up in the loaded index."""
    ids = IdSet([spec])
    found: dict[tuple[BlobType, bytes], None] = {}
    for t in types:
        for _, b in locate(repo, t, ids):
            found[(t, b.id)] = None
    if not found:
        raise BlobNotFound("blob not found")
    distinct = {bid for _, bid in found}
    if len(distinct) > 1:
        raise UsageError(f"ID prefix {spec!r} is ambiguous ({len(distinct)} matches)")
    return next(iter(found))


def _tree_id(repo: Repository, spec: str) -> bytes:
    """``SNAPSHOT[:subfolder]`` (newer restic) or a tree blob ID / prefix."""
    sid, colon, sub = spec.partition(":")
    snaps = repo.list_snapshots()
    repo.load_index()
    try:
        snap = snapsel.find(snaps, sid)
    except CofferError:
        if colon:
            raise
        return _blob_id(repo, spec, (BlobType.TREE,))[1]
    return find_tree(repo, snap.tree, sub) if sub else snap.tree


def snapshot_json(repo: Repository, spec: str) -> dict[str, Any]:
    if ids.is_id_hex(spec):
        snap = repo.load_snapshot(bytes.fromhex(spec))
    else:
        snap = snapsel.find(repo.list_snapshots(), spec)
    d = snap.to_display_dict()
    d.pop("id", None)
    d.pop("short_id", None)
    return d


@click.command("cat")
@click.argument("tpe", metavar="[config|index ID|snapshot ID|key ID|masterkey|lock ID|pack ID|blob ID|"
                "tree SNAPSHOT[:PATH]]")
@click.argument("object_id", required=False, default="")
@click.pass_obj
def command(g: GlobalOptions, tpe: str, object_id: str) -> int:
    """Print internal objects to stdout.

    JSON objects are printed indented, index files as stored; blob, tree and pack print raw bytes.
    IDs may be unique prefixes; snapshot and tree accept "latest".
    """
    if tpe not in TYPES:
        raise UsageError("invalid type")
    if tpe not in ("config", "masterkey") and not object_id:
        raise UsageError("type or ID not specified")
    p = g.printer
    with g.open(lock="shared") as repo:
        if tpe == "config":
            c = repo.config
            p.result(go_indent({"version": c.version, "id": c.id,
                                "chunker_polynomial": format(c.chunker_polynomial, "x")}))
        elif tpe == "masterkey":
            p.result(go_indent(repo.key.to_json_obj()))
        elif tpe == "snapshot":
            p.result(go_indent(snapshot_json(repo, object_id)))
        elif tpe == "index":
            iid = repo.resolve_id(FileType.INDEX, object_id)
            p.result(repo.load_unpacked(FileType.INDEX, iid).decode("utf-8", "surrogateescape"))
        elif tpe == "key":
            kid = repo.resolve_id(FileType.KEY, object_id).hex()
            p.result(go_indent(json.loads(load_key(repo, kid).to_bytes())))
        elif tpe == "lock":
            lid = repo.resolve_id(FileType.LOCK, object_id)
            info = LockInfo.from_json(repo.load_unpacked(FileType.LOCK, lid))
            p.result(go_indent(json.loads(info.to_json())))
        elif tpe == "pack":
            pid = repo.resolve_id(FileType.PACK, object_id)
            try:
                data = repo.backend.load(Handle(FileType.PACK, pid.hex()))
            except ObjectNotFound:
                raise ObjectNotFound(f"pack {pid.hex()} does not exist") from None
            got = hashlib.sha256(data).digest()
            if got != pid:
                p.warn(f"Warning: hash of data does not match ID, want\n  {pid.hex()}\ngot:\n  {got.hex()}")
            write_raw(p, data)
        elif tpe == "blob":
            repo.load_index()
            t, bid = _blob_id(repo, object_id, (BlobType.DATA, BlobType.TREE))
            write_raw(p, repo.load_blob(t, bid))
        else:  # tree
            write_raw(p, repo.load_blob(BlobType.TREE, _tree_id(repo, object_id)))
    return 0
