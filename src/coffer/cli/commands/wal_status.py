"""coffer wal-status: how far WAL archiving lags, against an RPO (monitoring exit codes)."""

from __future__ import annotations

import click

from coffer.actions.wal import DEFAULT_DATASET, archive_lag
from coffer.cli.commands._dbopts import server_options
from coffer.cli.globals import GlobalOptions, parse_duration
from coffer.sources.postgres import PgConn


@click.command("wal-status")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="the WAL dataset")
@click.option("--rpo", default="15m", show_default=True, help="recovery point objective (e.g. 5m, 1h)")
@click.option("--ask-server", is_flag=True, help="also read pg_stat_archiver from the server (--host, --port ...)")
@click.option("--pgdata", default=None, help="data directory: count segments waiting in archive_status")
@server_options
@click.pass_obj
def command(g: GlobalOptions, dataset: str, rpo: str, ask_server: bool, pgdata: str | None, host: str | None,
            port: int | None, socket: str | None, user: str | None, db_password_file: str | None,
            os_user: str | None) -> int:
    """Age of the newest archived WAL and failed pushes. Exit 0 OK, 1 WARNING, 2 CRITICAL."""
    conn = PgConn(host=socket or host, port=port, user=user, password_file=db_password_file, os_user=os_user) \
        if ask_server else None
    rpo_s = parse_duration(rpo)
    access = g.access()
    with g.open(lock="none") as repo:
        lag = archive_lag(repo, dataset, conn=conn, data_dir=pgdata, rpo_seconds=rpo_s,
                          cache_dir=access.options.get("cache-dir"))
    code = 0 if lag.within(rpo_s) else (1 if lag.age_seconds is not None and not lag.failed_count else 2)
    if lag.problems and any("failing" in x for x in lag.problems):
        code = 2
    if g.json:
        g.printer.json_line({"message_type": "wal_status", "dataset": dataset, "newest_segment": lag.newest_segment,
                             "age_seconds": lag.age_seconds, "rpo_seconds": rpo_s, "failed_count": lag.failed_count,
                             "last_failed_wal": lag.last_failed_wal, "pending": lag.pending,
                             "problems": lag.problems, "status": ["OK", "WARNING", "CRITICAL"][code]})
        return code
    age = f"{lag.age_seconds:.0f}s" if lag.age_seconds is not None else "-"
    g.printer.result(f"WAL {['OK', 'WARNING', 'CRITICAL'][code]}: newest {lag.newest_segment or '-'} archived {age} "
                     f"ago (RPO {rpo_s:.0f}s)" + (f"; {'; '.join(lag.problems)}" if lag.problems else ""))
    return code
