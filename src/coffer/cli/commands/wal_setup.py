"""coffer wal-setup: write the archive_command/restore_command scripts for the postgres user."""

from __future__ import annotations

import click

from coffer.actions.wal import DEFAULT_DATASET, archive_access
from coffer.cli.globals import GlobalOptions
from coffer.sources.postgres.setup import check_scripts, write_scripts


@click.command("wal-setup")
@click.option("--dir", "directory", required=True, help="private directory for the scripts and credentials")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="the archive (WAL dataset)")
@click.option("--user", "os_user", default="postgres", show_default=True, help="the user PostgreSQL runs as")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1, 256), help="wal-push --batch")
@click.option("--no-check", is_flag=True, help="do not test the scripts as that user")
@click.pass_obj
def command(g: GlobalOptions, directory: str, dataset: str, os_user: str, batch: int, no_check: bool) -> int:
    """Write wal-push/wal-fetch scripts that work as the postgres user on their own.

    The directory (0700, owned by the user) holds the repository location, its password and
    storage credentials; the scripts name everything by absolute path. Prints the settings to
    put into postgresql.conf.
    """
    access = g.access()
    access.get_password()
    scripts = write_scripts(directory, archive_access(access, dataset), user=os_user,
                            push_options=["--batch", str(batch)])
    if not no_check:
        check_scripts(scripts)
    if g.json:
        g.printer.json_line({"message_type": "wal_setup", "dir": scripts.dir,
                             "archive_command": scripts.archive_command, "restore_command": scripts.restore_command})
        return 0
    p = g.printer
    p.print(f"wrote {scripts.push} and {scripts.fetch} (readable by {scripts.user or 'this user'} only)")
    p.print("add to postgresql.conf:")
    p.print("  wal_level = replica")
    p.print("  archive_mode = on")
    p.print(f"  archive_command = '{scripts.archive_command}'")
    p.print("  archive_timeout = 60        # bounds the RPO on a quiet server")
    p.print(f"for recovery: restore_command = '{scripts.restore_command}'")
    return 0
