"""coffer repair index / repair snapshots: rebuild the index from the packs; rewrite damaged snapshots.

Both hold an exclusive lock, both can show what they would do first (``--dry-run``), and neither
deletes anything that is still good: old index files go only after the new index is written, and
original snapshots stay unless ``--forget`` is given.
"""

from __future__ import annotations

import click

from coffer.actions.session import open_repo
from coffer.cli.commands._restic_fmt import go_time_string
from coffer.cli.commands.prune import PhasePrinter
from coffer.cli.commands.snapshots import filter_options
from coffer.cli.globals import GlobalOptions
from coffer.engine import snapshots as snapsel
from coffer.errors import CofferError, UsageError
from coffer.store.maintenance.repair import SnapshotRepair, repair_index, repair_snapshots


@click.group("repair")
def command() -> None:
    """Repair the repository (index, snapshots)."""


@command.command("index")
@click.option("--read-all-packs", is_flag=True, help="read all pack files to generate the new index")
@click.option("-n", "--dry-run", is_flag=True, help="do not write anything, just print what would be done")
@click.pass_obj
def index_cmd(g: GlobalOptions, read_all_packs: bool, dry_run: bool) -> int:
    """Build a new index from the pack files."""
    p = g.printer
    access = g.access()
    access.no_lock = False
    ui = PhasePrinter(p)
    with open_repo(access, "exclusive") as repo:
        try:
            res = repair_index(repo, read_all_packs=read_all_packs, dry_run=dry_run, on_phase=ui.phase,
                               on_progress=ui.progress)
        finally:
            ui.finish()
    for iid, why in res.invalid_index:
        p.warn(f"removing invalid index {iid.hex()}: {why}")
    for pid in res.added:
        p.warn(f"adding pack file to index {pid.hex()}")
    for pid, size, want in res.reindexed:
        p.warn(f"reindexing pack file {pid.hex()} with unexpected size {size} instead of {want}")
    for pid in res.removed:
        p.warn(f"removing not found pack file {pid.hex()}")
    for pid, why in res.skipped:
        p.warn(f"skipped incomplete pack file: {pid.hex()}: {why}")
    if g.json:
        p.json_line({
            "message_type": "summary", "dry_run": dry_run, "packs": res.packs,
            "packs_read": len(res.read), "added": [x.hex() for x in res.added],
            "reindexed": [x[0].hex() for x in res.reindexed], "removed": [x.hex() for x in res.removed],
            "skipped": [x[0].hex() for x in res.skipped], "invalid_index": [x[0].hex() for x in res.invalid_index],
            "index_written": [x.hex() for x in res.index_written],
            "index_deleted": [x.hex() for x in res.index_deleted],
        })
    if dry_run:
        p.print(f"would write a new index for {res.packs} packs and remove "
                f"{len(res.invalid_index)} invalid index files")
    return 0


@command.command("snapshots")
@click.option("--forget", is_flag=True, help="remove original snapshots after creating new ones")
@click.option("-n", "--dry-run", is_flag=True, help="do not do anything, just print what would be done")
@filter_options
@click.argument("snapshot_ids", nargs=-1)
@click.pass_obj
def snapshots_cmd(g: GlobalOptions, forget: bool, dry_run: bool, hosts: tuple[str, ...], tags: tuple[str, ...],
                  paths: tuple[str, ...], snapshot_ids: tuple[str, ...]) -> int:
    """Write new snapshots without the damaged parts of the given (default: all) snapshots.

    File contents lose their missing blobs, unreadable directories become empty. Run `repair index`
    first. The originals are kept (the new ones are tagged "repaired") unless --forget is given.
    """
    p = g.printer
    access = g.access()
    access.no_lock = False
    flt = snapsel.SnapshotFilter.build(hosts, tags, paths)
    with open_repo(access, "exclusive") as repo:
        unreadable: list[str] = []
        snaps = repo.list_snapshots(on_error=lambda sid, e: unreadable.append(f"{sid.hex()}: {e}"))
        if snapshot_ids:
            chosen = {}
            for spec in snapshot_ids:
                try:
                    s = snapsel.find(snaps, spec, flt if spec == "latest" else None)
                except (snapsel.SnapshotNotFound, UsageError) as e:
                    raise UsageError(f"{spec}: {e}") from None
                chosen[s.id] = s
            selected = list(chosen.values())
        else:
            selected = snapsel.select(snaps, flt)
        for u in unreadable:
            p.warn(f"snapshot file {u} is unreadable; remove it with `coffer forget` if it cannot be restored")
        repo.load_index()

        def show(r: SnapshotRepair) -> None:
            s = r.snapshot
            p.print()
            p.print(f"snapshot {s.id.hex()[:8]} of [{' '.join(s.paths)}] at {go_time_string(s.time)})")
            for c in r.changes:
                p.print(f"  {c}")
            if r.root_unreadable:
                if forget:
                    p.print("  would remove snapshot with unreadable root" if dry_run
                            else f"  removed snapshot {s.id.hex()[:8]} (its root tree is unreadable)")
                else:
                    p.print("  its root tree is unreadable; nothing can be saved (use --forget to remove it)")
            elif r.already is not None:
                p.print(f"  already repaired as snapshot {r.already.hex()[:8]}")
            elif r.new_tree is not None:
                if dry_run:
                    p.print("  would save new snapshot" + (" and remove the old one" if forget else ""))
                else:
                    p.print(f"  saved new snapshot {r.new_id.hex()[:8] if r.new_id else '?'}")
            if r.removed and not r.root_unreadable:
                p.print(f"  removed old snapshot {s.id.hex()[:8]}")

        results = repair_snapshots(repo, selected, forget=forget, dry_run=dry_run, all_snapshots=snaps,
                                   on_snapshot=show)
    n = sum(1 for r in results if r.new_id or (dry_run and r.new_tree and not r.already) or r.removed)
    p.print()
    if dry_run:
        p.print(f"would modify {n} snapshots" if n else "no snapshots would be modified")
    else:
        p.print(f"modified {n} snapshots" if n else "no snapshots were modified")
    if g.json:
        p.json_line({"message_type": "summary", "dry_run": dry_run, "snapshots": [
            {"id": r.snapshot.id.hex(), "changes": r.changes, "new_id": r.new_id.hex() if r.new_id else None,
             "already_repaired_as": r.already.hex() if r.already else None, "removed": r.removed,
             "root_unreadable": r.root_unreadable} for r in results]})
    if any(r.root_unreadable and not forget for r in results):
        raise CofferError("some snapshots cannot be repaired (their root tree is unreadable)",
                          hint="remove them with `coffer repair snapshots --forget ID`")
    return 0
