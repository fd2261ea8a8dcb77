"""coffer backup-db: logical database backups without a plan (PostgreSQL, MariaDB/MySQL, SQLite)."""

from __future__ import annotations

import click

from coffer.actions.wal import backup_source
from coffer.cli.commands._dbopts import server_options
from coffer.cli.globals import GlobalOptions
from coffer.errors import UsageError
from coffer.sources.base import Source


@click.command("backup-db")
@click.argument("kind", type=click.Choice(["postgres", "mysql", "sqlite"]))
@click.argument("files", nargs=-1)
@server_options
@click.option("-d", "--database", "databases", multiple=True, help="database to dump (repeatable; default: all)")
@click.option("--exclude-database", "excluded", multiple=True, help="database to leave out (repeatable)")
@click.option("--no-globals", is_flag=True, help="PostgreSQL: no pg_dumpall --globals-only; MariaDB: no users.sql")
@click.option("--dataset", default="", help="dataset name (tag dataset=NAME; default: the kind)")
@click.option("--bin-dir", default=None, help="PostgreSQL: directory with pg_dump (default: the server's version)")
@click.option("--tag", "tags", multiple=True, help="extra tag (repeatable)")
@click.option("-H", "--hostname", "snap_host", default="", help="host name recorded in the snapshot")
@click.pass_obj
def command(g: GlobalOptions, kind: str, files: tuple[str, ...], host: str | None, port: int | None,
            socket: str | None, user: str | None, db_password_file: str | None, os_user: str | None,
            databases: tuple[str, ...], excluded: tuple[str, ...], no_globals: bool, dataset: str,
            bin_dir: str | None, tags: tuple[str, ...], snap_host: str) -> int:
    """Dump databases straight into one snapshot (one file per database, tagged).

    \b
    postgres: pg_dump -Fc per database + pg_dumpall --globals-only
    mysql:    mariadb-dump --single-transaction --routines --triggers --events per database
    sqlite:   FILES..., copied with the online backup API

    A dump that fails leaves no snapshot; the error shows the dump program's last messages.
    """
    tag_list = [t for x in tags for t in x.split(",") if t]
    ds = dataset or kind
    source: Source
    if kind == "sqlite":
        from coffer.sources.sqlite import SQLiteSource

        if not files:
            raise UsageError("backup-db sqlite needs the database file(s)")
        source = SQLiteSource(list(files), dataset=ds, tags=tag_list)
    elif files:
        raise UsageError(f"backup-db {kind} takes no file arguments (use --database)")
    elif kind == "postgres":
        from coffer.sources.postgres import PgConn, PostgresDumpSource

        conn = PgConn(host=socket or host, port=port, user=user, password_file=db_password_file, os_user=os_user,
                      bin_dir=bin_dir)
        source = PostgresDumpSource(conn, list(databases) or None, exclude=excluded, globals_=not no_globals,
                                    dataset=ds, tags=tag_list)
    else:
        from coffer.sources.mysql import MyConn, MySQLDumpSource

        myconn = MyConn(host=host, port=port, socket=socket, user=user, password_file=db_password_file,
                        os_user=os_user)
        source = MySQLDumpSource(myconn, list(databases) or None, exclude=excluded, users=not no_globals,
                                 dataset=ds, tags=tag_list)
    r = backup_source(g.access(), source, host=snap_host or None)
    s = r.summary
    sid = r.snapshot.id.hex()
    if g.json:
        g.printer.json_line({"message_type": "summary", "snapshot_id": sid, "paths": r.snapshot.paths,
                             "tags": r.snapshot.tags, "total_bytes_processed": s.total_bytes_processed,
                             "data_added": s.data_added, "total_duration": s.total_duration})
    else:
        g.printer.print(f"{kind}: {len(r.snapshot.paths)} file(s), {s.total_bytes_processed} bytes "
                        f"({s.data_added} new) in {s.total_duration:.1f}s: {' '.join(r.snapshot.paths)}")
        g.printer.print(f"snapshot {sid[:8]} saved")
    return 0
