"""coffer unlock: remove stale locks (or all of them)."""

from __future__ import annotations

import click

from coffer.cli.globals import GlobalOptions
from coffer.store.locks import unlock


@click.command("unlock")
@click.option("--remove-all", is_flag=True, help="remove all locks, even non-stale ones")
@click.pass_obj
def command(g: GlobalOptions, remove_all: bool) -> int:
    """Remove locks other processes created."""
    with g.open(lock="none") as repo:
        removed = unlock(repo, remove_all=remove_all)
    for fl in removed:
        g.printer.verbose_print(1, f"removed {fl.describe()}")
    g.printer.print("successfully removed locks" if removed else "no locks to remove")
    return 0
