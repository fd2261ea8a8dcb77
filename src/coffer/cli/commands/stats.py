"""coffer stats: sizes and counts of snapshots, in restic's four counting modes."""

from __future__ import annotations

import click

from coffer.cli.commands._restic_fmt import format_bytes, go_json
from coffer.cli.commands.find import choose_snapshots
from coffer.cli.commands.snapshots import filter_options
from coffer.cli.globals import GlobalOptions
from coffer.engine import snapshots as snapsel
from coffer.engine.stats import MODES, RESTORE_SIZE, StatsCollector
from coffer.errors import UsageError


@click.command("stats")
@filter_options
@click.option("--mode", default=RESTORE_SIZE, show_default=True,
              help="counting mode: restore-size (default), files-by-contents, blobs-per-file or raw-data")
@click.argument("snapshot_ids", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, hosts: tuple[str, ...], tags: tuple[str, ...], paths: tuple[str, ...], mode: str,
            snapshot_ids: tuple[str, ...]) -> int:
    """Scan the repository and show basic statistics.

    Without SNAPSHOT_IDs every snapshot matching --host/--tag/--path is counted; "latest" works.
    Modes: restore-size (size of the restored files), files-by-contents (files unique by content),
    raw-data (stored size of the referenced blobs), blobs-per-file (files by content, blob sizes).
    """
    if mode not in MODES:
        raise UsageError(f"unknown counting mode: {mode} (use the -h flag to get a list of supported modes)")
    p = g.printer
    flt = snapsel.SnapshotFilter.build(hosts, tags, paths)
    with g.open(lock="shared") as repo:
        all_snaps = repo.list_snapshots(on_error=lambda sid, e: p.warn(f"could not load snapshot {sid.hex()[:8]}: {e}"))
        repo.load_index()
        if not g.json:
            p.result("scanning...")
        snaps = choose_snapshots(p, all_snaps, snapshot_ids, flt)
        res = StatsCollector(repo, mode).add_snapshots(snaps)
    if g.json:
        p.result(go_json(res.as_json()))
        return 0
    p.result(f"Stats in {mode} mode:")
    p.result(f"Snapshots processed:   {res.snapshots_count}")
    if res.total_blob_count > 0:
        p.result(f"   Total Blob Count:   {res.total_blob_count}")
    if res.total_file_count > 0:
        p.result(f"   Total File Count:   {res.total_file_count}")
    p.result(f"         Total Size:   {format_bytes(res.total_size):<5}")
    return 0
