"""coffer pg-basebackup: a PostgreSQL base backup streamed into the repository."""

from __future__ import annotations

import click

from coffer.actions.wal import DEFAULT_DATASET, backup_source
from coffer.cli.commands._dbopts import server_options
from coffer.cli.globals import GlobalOptions
from coffer.sources.postgres import PgConn, PostgresBaseBackupSource


@click.command("pg-basebackup")
@server_options
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="dataset name (tag dataset=NAME)")
@click.option("--wal-method", type=click.Choice(["fetch", "none"]), default="fetch", show_default=True,
              help="fetch: the WAL to reach consistency goes into the backup; none: rely on the archive")
@click.option("--bin-dir", default=None, help="directory with pg_basebackup (default: the server's version)")
@click.option("--tag", "tags", multiple=True, help="extra tag (repeatable)")
@click.option("-H", "--hostname", "snap_host", default="", help="host name recorded in the snapshot")
@click.pass_obj
def command(g: GlobalOptions, host: str | None, port: int | None, socket: str | None, user: str | None,
            db_password_file: str | None, os_user: str | None, dataset: str, wal_method: str, bin_dir: str | None,
            tags: tuple[str, ...], snap_host: str) -> int:
    """Store a base backup (pg_basebackup -Ft -D -, streamed; no temporary copy).

    With WAL archiving into the same repository (`coffer wal-push`, dataset of the same name),
    `coffer restore-db` recovers it to any time after it.
    """
    conn = PgConn(host=socket or host, port=port, user=user, password_file=db_password_file, os_user=os_user,
                  bin_dir=bin_dir)
    src = PostgresBaseBackupSource(conn, dataset=dataset, tags=[t for x in tags for t in x.split(",") if t],
                                   wal_method=wal_method)
    r = backup_source(g.access(), src, host=snap_host or None)
    s = r.summary
    sid = r.snapshot.id.hex()
    if g.json:
        g.printer.json_line({"message_type": "summary", "snapshot_id": sid, "tags": r.snapshot.tags,
                             "total_bytes_processed": s.total_bytes_processed, "data_added": s.data_added,
                             "total_duration": s.total_duration})
    else:
        g.printer.print(f"base backup of {conn.describe()}: {s.total_bytes_processed} bytes, "
                        f"{s.data_added} new, in {s.total_duration:.1f}s")
        g.printer.print(f"snapshot {sid[:8]} saved")
    return 0
