"""coffer check: is the repository complete and consistent, and (with --read-data) intact?"""

from __future__ import annotations

import dataclasses

import click

from coffer.cli.globals import GlobalOptions
from coffer.cli.output import format_duration
from coffer.engine.progress import Progress
from coffer.errors import CofferError, UsageError
from coffer.store.maintenance.check import check, parse_subset


class RepositoryDamaged(CofferError):
    """check found errors (exit 1, like restic)."""


@click.command("check")
@click.option("--read-data", is_flag=True, help="read all data blobs")
@click.option("--read-data-subset", default="", help="read a subset of data packs: n/t, x% or a size like 50M")
@click.option("--with-cache", is_flag=True, help="use the local cache (by default check reads only the repository)")
@click.option("--plan", "plan_path", default="", metavar="FILE",
              help="check every repository of this plan: a rotating slice of packs, with a coverage ledger")
@click.argument("args", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, read_data: bool, read_data_subset: str, with_cache: bool, plan_path: str,
            args: tuple[str, ...]) -> int:
    """Check the repository for errors."""
    if plan_path:
        from coffer.cli.commands._plan_check import check_plan_command

        return check_plan_command(g, plan_path, list(args), read_data or bool(read_data_subset))
    if args:
        raise UsageError("the check command expects no arguments, only options")
    if read_data and read_data_subset:
        raise UsageError("check flags --read-data and --read-data-subset cannot be used together")
    subset = parse_subset(read_data_subset) if read_data_subset else None
    p = g.printer
    progress = Progress()
    packs_total = 0

    def on_phase(name: str) -> None:
        labels = {"load indexes": "load indexes", "check packs": "check all packs",
                  "check snapshots, trees and blobs": "check snapshots, trees and blobs"}
        if name in labels:
            p.print(labels[name])
        elif name == "read data":
            if subset is None:
                p.print("read all data")
            elif subset.kind == "bucket":
                p.print(f"read group #{subset.bucket} of data packs (out of {subset.total} groups)")
            elif subset.kind == "percent":
                p.print(f"read {subset.percent:.1f}% of data packs")
            else:
                p.print(f"read {subset.size} bytes of data packs")

    def on_pack(pack_id: bytes, nbytes: int) -> None:
        progress.add_done(1, nbytes)

    if not with_cache:
        g.no_cache = True  # check judges the repository itself, not a local copy of its files (T25)
    with g.open(lock="none" if g.no_lock else "shared") as repo:
        result = check(repo, read_data=read_data, read_data_subset=subset, on_phase=on_phase, on_pack_done=on_pack)
    if result.packs_read:
        packs_total = result.packs_read
        st = progress.snapshot()
        p.print(f"[{format_duration(st.elapsed)}] 100.00%  {packs_total} / {packs_total} packs")
    if g.json:
        p.json_line({
            "message_type": "summary", "num_errors": len(result.errors),
            "snapshots": result.snapshots, "packs": result.packs, "packs_read": result.packs_read,
            "bytes_read": result.bytes_read, "findings": [dataclasses.asdict(f) for f in result.findings],
        })
    for f in result.findings:
        if f.severity == "error":
            p.warn(f.message)
        elif f.severity == "warning" or (f.severity == "info" and g.verbose):
            p.print(f.message)
    if not result.ok:
        raise RepositoryDamaged("repository contains errors")
    p.print()
    p.print("no errors were found")
    return 0
