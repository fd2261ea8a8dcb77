"""coffer drill-db: prove a database snapshot restores and the database starts, without a plan."""

from __future__ import annotations

import click

from coffer.actions.wal import pitr_drill
from coffer.cli.commands._dbopts import build_checks, check_options, parse_target_time
from coffer.cli.globals import GlobalOptions
from coffer.engine import snapshots as snapsel
from coffer.errors import UsageError
from coffer.sources.base import Source
from coffer.sources.postgres.wal import tag_value
from coffer.verify import drills

EXIT_FAILED = 2


@click.command("drill-db")
@click.argument("snapshot_id")
@check_options
@click.option("--pitr", is_flag=True, help="base backups: recover through the archived WAL to a random time "
                                           "(or --target-time) and check nothing later was applied")
@click.option("--target-time", default="", help="with --pitr: recover to this time")
@click.option("--marker-sql", default=None, help="with --pitr: a query returning an epoch that must not be after "
                                                 "the target (e.g. SELECT extract(epoch FROM max(ts)) FROM heartbeat)")
@click.option("--keep", is_flag=True, help="keep the restored files")
@click.pass_obj
def command(g: GlobalOptions, snapshot_id: str, sqls: tuple[str, ...], expects: tuple[str, ...],
            min_rows: tuple[str, ...], check_database: str | None, pitr: bool, target_time: str,
            marker_sql: str | None, keep: bool) -> int:
    """Restore SNAPSHOT_ID into a sandbox, start a throwaway server on it, run the checks.

    Works on dumps (postgres, mysql), SQLite copies and base backups. Exit 0 passed, 2 failed.
    """
    checks, counts = build_checks(sqls, expects, min_rows, check_database)
    p = g.printer
    access = g.access()
    with g.open(lock="shared") as repo:
        snap = snapsel.find(repo.list_snapshots(on_error=lambda sid, e: None), snapshot_id)
        tags = snap.tags
        dataset = tag_value(tags, "dataset=")
        source: Source
        if "basebackup" in tags:
            from coffer.sources.postgres import PgConn, PostgresBaseBackupSource

            source = PostgresBaseBackupSource(PgConn(), checks=checks, row_counts=counts)
        elif "sqlite" in tags:
            from coffer.sources.sqlite import SQLiteSource

            source = SQLiteSource(["/"], checks=checks, row_counts=counts)
        elif "mysql" in tags:
            from coffer.sources.mysql import MyConn, MySQLDumpSource

            source = MySQLDumpSource(MyConn(), checks=checks, row_counts=counts)
        elif "postgres" in tags:
            from coffer.sources.postgres import PgConn, PostgresDumpSource

            source = PostgresDumpSource(PgConn(), checks=checks, row_counts=counts)
        else:
            raise UsageError(f"snapshot {snap.id.hex()[:8]} is not a database snapshot (tags: {', '.join(tags)})")
        if pitr and "basebackup" not in tags:
            raise UsageError("--pitr needs a base backup snapshot")
        if not pitr:
            repo.load_index()
            out = drills.drill(repo, snap, "chosen on the command line", (), source.verify_restored, keep=keep)
            checks_out = [(c.name, c.ok, c.detail) for c in out.checks]
            ok, ready, issues = out.ok, out.ready_seconds, list(out.issues)
    if pitr:
        tns = parse_target_time(target_time) if target_time else None
        _, v = pitr_drill(access, dataset, target_ns=tns, base=None if tns else snap.id.hex(), source=source,
                          marker_sql=marker_sql, cache_dir=access.options.get("cache-dir"))
        checks_out, ok, ready, issues = list(v.checks), v.ok, v.time_to_ready or 0.0, []
    if g.json:
        p.json_line({"message_type": "drill_db", "snapshot_id": snap.id.hex(), "ok": ok, "ready_seconds": ready,
                     "checks": [{"name": n, "ok": o, "detail": d} for n, o, d in checks_out], "issues": issues})
    else:
        p.print(f"drill of snapshot {snap.id.hex()[:8]}: {'PASSED' if ok else 'FAILED'}")
        for n, o, d in checks_out:
            p.print(f"  check  [{'ok' if o else 'FAIL'}] {n}: {d}")
        for i in issues[:50]:
            p.warn(f"  issue  {i}")
        if ready:
            p.print(f"  time to ready {ready:.2f}s")
    return 0 if ok else EXIT_FAILED


