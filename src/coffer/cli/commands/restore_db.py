"""coffer restore-db: a PostgreSQL data directory from a base backup, recovered to a point in time."""

from __future__ import annotations

import click

from coffer.actions.wal import RestoreDbRequest, restore_db
from coffer.cli.commands._dbopts import parse_target_time
from coffer.cli.globals import GlobalOptions
from coffer.errors import UsageError


@click.command("restore-db")
@click.argument("dataset", required=False)
@click.option("--target-time", default="", help="recover to this time (\"2026-01-31 14:05:00\", RFC 3339; local "
                                                "time without an offset)")
@click.option("--snapshot", default="", help="restore this base backup (ID prefix or latest), recovered to the "
                                             "point it became consistent")
@click.option("--to", "to", required=True, help="new data directory (must not exist or be empty)")
@click.option("--start", is_flag=True, help="start the server and wait until recovery finished")
@click.option("--port", type=int, default=None, help="port for the restored server (default with --start: a free one)")
@click.option("--recovery-dir", default=None, help="where the restore_command script and its credentials go "
                                                   "(default: <DIR>.coffer; readable by postgres only)")
@click.option("--timeout", default=3600, show_default=True, help="seconds to wait for recovery with --start")
@click.pass_obj
def command(g: GlobalOptions, dataset: str | None, target_time: str, snapshot: str, to: str, start: bool,
            port: int | None, recovery_dir: str | None, timeout: int) -> int:
    """Build a data directory from the newest base backup before --target-time (or --snapshot) and
    configure recovery through `coffer wal-fetch`.

    The recovery settings work on their own when the server runs as postgres: the restore_command
    script names coffer by absolute path and reads the repository location and password from
    files in the recovery directory (0700, owned by postgres). archive_mode is set off in the
    restored copy, so it never pushes into the archive it came from.
    """
    if bool(target_time) == bool(snapshot):
        raise UsageError("give exactly one of --target-time and --snapshot")
    req = RestoreDbRequest(to=to, dataset=dataset, target_time_ns=parse_target_time(target_time) if target_time
                           else None, snapshot=snapshot or None, start=start, port=port, recovery_dir=recovery_dir,
                           timeout=timeout, cache_dir=g.access().options.get("cache-dir"))
    p = g.printer
    res = restore_db(g.access(), req, say=p.print)
    if g.json:
        p.json_line({"message_type": "restore_db", "dataset": res.dataset, "base_snapshot": res.base.id,
                     "data_dir": res.data_dir, "recovery_target_time": res.target,
                     "restore_command": res.scripts.restore_command, "started": res.started, "port": res.port,
                     "socket_dir": res.socket_dir, "ready_seconds": res.ready_seconds,
                     "last_replayed": res.last_replayed})
        return 0
    p.print(f"recovery configured: restore_command = '{res.scripts.restore_command}'"
            + (f", recovery_target_time = '{res.target}'" if res.target else ", to the end of the base backup"))
    if res.started:
        p.print(f"server running on port {res.port} (socket {res.socket_dir}); recovery finished in "
                f"{res.ready_seconds:.1f}s, last replayed commit {res.last_replayed or '-'}")
    else:
        p.print(f"start it with: pg_ctl -D {res.data_dir} start   (as postgres)")
    return 0
