"""coffer wal-expire: forget WAL that no kept base backup needs."""

from __future__ import annotations

import click

from coffer.actions.wal import DEFAULT_DATASET, expire_wal
from coffer.cli.globals import GlobalOptions


@click.command("wal-expire")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="the WAL dataset")
@click.option("-n", "--dry-run", is_flag=True, help="only show what would be removed")
@click.pass_obj
def command(g: GlobalOptions, dataset: str, dry_run: bool) -> int:
    """Remove WAL snapshots older than what the oldest kept base backup needs.

    Run it after forgetting base backups (their keep rules); then `coffer prune` reclaims the
    space. Timeline history files and everything a kept base backup can recover through stay.
    """
    access = g.access()
    r = expire_wal(access, dataset, dry_run=dry_run, cache_dir=access.options.get("cache-dir"))
    d = r.decision
    if g.json:
        g.printer.json_line({"message_type": "wal_expire", "dataset": dataset, "dry_run": dry_run,
                             "remove": [s.id for s in d.remove], "keep": len(d.keep), "reason": d.reason,
                             "removed": r.removed})
        return 0
    g.printer.print(d.reason)
    verb = "would remove" if dry_run else "removed"
    for s in d.remove:
        g.printer.verbose_print(1, f"{verb} {s.id[:8]} {' '.join(p.lstrip('/') for p in s.paths)}")
    if not dry_run:
        g.printer.print(f"{len(r.removed)} WAL snapshot(s) removed; run `coffer prune` to reclaim the space")
    return 0
