"""coffer snapshots: list snapshots, as a table or as JSON."""

from __future__ import annotations

import time

import click

from coffer.cli.globals import GlobalOptions
from coffer.engine import snapshots as snapsel
from coffer.store.format.snapshot import Snapshot
from coffer.util import gotime


def local_time(s: Snapshot) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gotime.parse_ns(s.time) // 1_000_000_000))


def filter_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--path", "paths", multiple=True, help="only consider snapshots including this (absolute) path")(f)
    f = click.option("--tag", "tags", multiple=True, help="only consider snapshots with these tags (a,b = both)")(f)
    f = click.option("-H", "--host", "hosts", multiple=True, help="only consider snapshots for this host")(f)
    return f


@click.command("snapshots")
@filter_options
@click.option("--latest", default=0, type=int, help="only show the last N snapshots for each host and path")
@click.option("-g", "--group-by", default="", help="group snapshots by host, paths and/or tags")
@click.option("-c", "--compact", is_flag=True, help="use compact output format")
@click.argument("snapshot_ids", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, hosts: tuple[str, ...], tags: tuple[str, ...], paths: tuple[str, ...], latest: int,
            group_by: str, compact: bool, snapshot_ids: tuple[str, ...]) -> int:
    """List all snapshots."""
    flt = snapsel.SnapshotFilter.build(hosts, tags, paths)
    with g.open(lock="none" if g.no_lock else "shared") as repo:
        warn = g.printer.warn
        all_snaps = repo.list_snapshots(on_error=lambda sid, e: warn(f"could not load snapshot {sid.hex()[:8]}: {e}"))
    if snapshot_ids:
        snaps = [snapsel.find(all_snaps, sid, flt) for sid in snapshot_ids]
    else:
        snaps = snapsel.select(all_snaps, flt)
    groups = snapsel.group(snaps, group_by) if group_by else [snapsel.Group(snapsel.GroupKey(), snaps)]
    if latest > 0:
        for grp in groups:
            keep: list[Snapshot] = []
            for sub in snapsel.group(grp.snapshots, "host,paths"):
                keep.extend(sub.snapshots[-latest:])
            grp.snapshots = snapsel.sort_by_time(keep)
    p = g.printer
    if g.json:
        if group_by:
            p.json_doc([{"group_key": grp.key.as_dict(), "snapshots": [s.to_display_dict() for s in grp.snapshots]}
                        for grp in groups])
        else:
            p.json_doc([s.to_display_dict() for s in groups[0].snapshots])
        return 0
    for grp in groups:
        if group_by:
            k = grp.key
            desc = ", ".join(
                x for x in (
                    f"host [{k.host}]" if k.host is not None else "",
                    f"paths [{', '.join(k.paths)}]" if k.paths is not None else "",
                    f"tags [{', '.join(k.tags)}]" if k.tags is not None else "",
                ) if x
            )
            p.print(f"snapshots for ({desc}):")
        rows = []
        for s in grp.snapshots:
            if compact:
                rows.append([s.id.hex()[:8], local_time(s), s.hostname, ",".join(s.tags)])
            else:
                rows.append([s.id.hex()[:8], local_time(s), s.hostname, ",".join(s.tags), "\n".join(s.paths)])
        headers = ["ID", "Time", "Host", "Tags"] + ([] if compact else ["Paths"])
        n = len(grp.snapshots)
        p.table(headers, rows, f"{n} snapshots")
        if group_by:
            p.print()
    return 0
