"""coffer ls: list the files and directories in a snapshot."""

from __future__ import annotations

import os
from typing import Any

import click

from coffer.cli.commands._restic_fmt import (
    canonical_time,
    fix_invalid_utf8,
    format_node,
    go_json,
    go_time_string,
    json_text,
    mode_string,
    raw_text_output,
)
from coffer.cli.commands.snapshots import filter_options
from coffer.cli.globals import GlobalOptions
from coffer.engine import snapshots as snapsel
from coffer.engine.treewalk import list_tree
from coffer.errors import UsageError
from coffer.store.format import gojson
from coffer.store.format.tree import Node


def node_line(path: bytes, node: Node) -> str:
    """``go_json(node_json(path, node))``, built directly (this runs once per listed node)."""
    parts = ['{"name":', gojson.string(json_text(node.name)), ',"type":', gojson.string(node.type),
             ',"path":', gojson.string(json_text(path)), ',"uid":%d,"gid":%d' % (node.uid, node.gid)]
    if node.type == "file":
        parts.append(',"size":%d' % node.size)
    if node.mode:
        parts.append(',"mode":%d' % node.mode)
    parts.append(',"permissions":"%s","mtime":"%s","atime":"%s","ctime":"%s","struct_type":"node"}' % (
        mode_string(node.mode), canonical_time(node.mtime or _ZERO_TIME), canonical_time(node.atime or _ZERO_TIME),
        canonical_time(node.ctime or _ZERO_TIME)))
    line = "".join(parts)
    return fix_invalid_utf8(line)


_ZERO_TIME = "0001-01-01T00:00:00Z"


def node_json(path: bytes, node: Node) -> dict[str, Any]:
    """restic 0.14's ``ls --json`` node object (size only for files, even when 0)."""
    d: dict[str, Any] = {"name": json_text(node.name), "type": node.type, "path": json_text(path),
                         "uid": node.uid, "gid": node.gid}
    if node.type == "file":
        d["size"] = node.size
    if node.mode:
        d["mode"] = node.mode
    d["permissions"] = mode_string(node.mode)
    d["mtime"] = canonical_time(node.mtime or "0001-01-01T00:00:00Z")
    d["atime"] = canonical_time(node.atime or "0001-01-01T00:00:00Z")
    d["ctime"] = canonical_time(node.ctime or "0001-01-01T00:00:00Z")
    d["struct_type"] = "node"
    return d


@click.command("ls")
@filter_options
@click.option("-l", "--long", "long_", is_flag=True, help="use a long listing format showing size and mode")
@click.option("--recursive", is_flag=True, help="include files in subfolders of the listed directories")
@click.argument("snapshot_id", required=False)
@click.argument("dirs", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, hosts: tuple[str, ...], tags: tuple[str, ...], paths: tuple[str, ...], long_: bool,
            recursive: bool, snapshot_id: str | None, dirs: tuple[str, ...]) -> int:
    """List files in a snapshot.

    SNAPSHOT_ID may be "latest" (the newest snapshot matching --host/--tag/--path) or a unique
    ID prefix. Any absolute DIRs after it restrict the listing to those directories.
    """
    if not snapshot_id:
        raise UsageError("no snapshot ID specified, specify snapshot ID or use special ID 'latest'")
    for d in dirs:
        if not d.startswith("/"):
            raise UsageError("All path filters must be absolute, starting with a forward slash '/'")
    p = g.printer
    flt = snapsel.SnapshotFilter.build(hosts, tags, paths)
    bdirs = [os.fsencode(d) for d in dirs]
    # restic 0.14 lists without locking the repository.
    with g.open(lock="none") as repo:
        all_snaps = repo.list_snapshots(on_error=lambda sid, e: p.warn(f"could not load snapshot {sid.hex()[:8]}: {e}"))
        snap = snapsel.find(all_snaps, snapshot_id, flt)
        repo.load_index()
        if g.json:
            sd = snap.to_display_dict()
            sd["struct_type"] = "snapshot"
            p.result(go_json(sd))
            for path, node in list_tree(repo, snap.tree, bdirs, recursive=recursive):
                p.result(node_line(path, node))
            return 0
        raw_text_output(p)
        p.print(f"snapshot {snap.id.hex()[:8]} of [{' '.join(snap.paths)}] filtered by [{' '.join(dirs)}] "
                f"at {go_time_string(snap.time)}):")
        for path, node in list_tree(repo, snap.tree, bdirs, recursive=recursive):
            p.result(format_node(path, node, long_))
    return 0
