"""coffer diff: show differences between two snapshots."""

from __future__ import annotations

from collections.abc import Sequence

import click

from coffer.cli.commands._restic_fmt import format_bytes, go_json, json_text, raw_text_output, text
from coffer.cli.globals import GlobalOptions
from coffer.engine import snapshots as snapsel
from coffer.engine.diff import Differ
from coffer.engine.treewalk import find_tree
from coffer.errors import UsageError
from coffer.store.format.snapshot import Snapshot
from coffer.store.repository import Repository


def resolve_tree(repo: Repository, snaps: Sequence[Snapshot], spec: str) -> tuple[Snapshot, bytes]:
    """``ID``, ``latest`` or ``ID:sub/folder`` (newer restic's syntax) -> (snapshot, tree ID)."""
    sid, _, sub = spec.partition(":")
    snap = snapsel.find(snaps, sid)
    return snap, find_tree(repo, snap.tree, sub) if sub else snap.tree


@click.command("diff")
@click.option("--metadata", is_flag=True, help="print changes in metadata")
@click.argument("snapshots", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, metadata: bool, snapshots: tuple[str, ...]) -> int:
    """Show differences between two snapshots.

    Each line starts with what happened to the item: + added, - removed, U metadata updated
    (with --metadata), M content modified, T type changed.
    """
    if len(snapshots) != 2:
        raise UsageError("specify two snapshot IDs")
    p = g.printer
    with g.open(lock="shared") as repo:
        all_snaps = repo.list_snapshots(on_error=lambda sid, e: p.warn(f"could not load snapshot {sid.hex()[:8]}: {e}"))
        repo.load_index()
        sn1, tree1 = resolve_tree(repo, all_snaps, snapshots[0])
        sn2, tree2 = resolve_tree(repo, all_snaps, snapshots[1])
        if not g.json:
            raw_text_output(p)
            p.print(f"comparing snapshot {sn1.id.hex()[:8]} to {sn2.id.hex()[:8]}:\n")
        differ = Differ(repo, metadata=metadata, warn=p.warn)
        for ch in differ.changes(tree1, tree2):
            if g.quiet:
                continue
            if g.json:
                p.result(go_json({"message_type": "change", "path": json_text(ch.path), "modifier": ch.modifier}))
            else:
                p.result(f"{ch.modifier:<5}{text(ch.path)}")
    st = differ.stats
    if g.json:
        p.result(go_json({
            "message_type": "statistics", "source_snapshot": snapshots[0], "target_snapshot": snapshots[1],
            "changed_files": st.changed_files, "added": st.added.as_dict(), "removed": st.removed.as_dict(),
        }))
        return 0
    a, r = st.added, st.removed
    for line in (
        "",
        f"Files:       {a.files:5d} new, {r.files:5d} removed, {st.changed_files:5d} changed",
        f"Dirs:        {a.dirs:5d} new, {r.dirs:5d} removed",
        f"Others:      {a.others:5d} new, {r.others:5d} removed",
        f"Data Blobs:  {a.data_blobs:5d} new, {r.data_blobs:5d} removed",
        f"Tree Blobs:  {a.tree_blobs:5d} new, {r.tree_blobs:5d} removed",
        f"  Added:   {format_bytes(a.bytes):<5}",
        f"  Removed: {format_bytes(r.bytes):<5}",
    ):
        p.result(line)
    return 0
