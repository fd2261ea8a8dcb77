"""coffer wal-push: PostgreSQL's archive_command (``archive_command = 'coffer wal-push %p'``)."""

from __future__ import annotations

import click

from coffer.actions.wal import DEFAULT_DATASET, wal_push
from coffer.cli.globals import GlobalOptions


@click.command("wal-push")
@click.argument("path")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="the archive (WAL dataset) to push into")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1, 256),
              help="also store up to N-1 other segments already waiting in archive_status/*.ready")
@click.option("-H", "--host", default="", help="host name recorded in the snapshot")
@click.pass_obj
def command(g: GlobalOptions, path: str, dataset: str, batch: int, host: str) -> int:
    """Archive one WAL file (%p) into the repository.

    Exit 0 only after the file is durably stored and referenced by a snapshot tagged "wal", so a
    forget/prune right afterwards cannot lose it. An identical re-push succeeds; a different file
    under an archived name, a truncated or foreign segment, fail (PostgreSQL then retries and
    reports it in pg_stat_archiver).
    """
    access = g.access()
    r = wal_push(access, path, dataset, cache_dir=access.options.get("cache-dir"), batch=batch, host=host or None)
    if g.json:
        g.printer.json_line({"message_type": "wal_push", "file": r.name, "status": r.status, "snapshot_id": r.snapshot,
                             "stored": r.batch, "seconds": round(r.seconds, 4)})
    else:
        extra = f" (+{len(r.batch) - 1} queued segment(s))" if len(r.batch) > 1 else ""
        g.printer.verbose_print(1, f"{r.name}: {r.status} in snapshot {r.snapshot[:8]}{extra}, {r.seconds:.3f}s")
    return 0
