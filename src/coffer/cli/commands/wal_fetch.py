"""coffer wal-fetch: PostgreSQL's restore_command (``restore_command = 'coffer wal-fetch %f %p'``)."""

from __future__ import annotations

import sys

import click

from coffer.actions.wal import DEFAULT_DATASET, catalog, wal_fetch
from coffer.cli.globals import GlobalOptions
from coffer.errors import CofferError

EXIT_NOT_FOUND = 1
# Above 125: PostgreSQL aborts recovery instead of taking the failure for "end of archive" and
# promoting early (a repository that is briefly unreachable must not cut a point-in-time recovery short).
EXIT_ERROR = 254


@click.command("wal-fetch")
@click.argument("name", required=False)
@click.argument("dest", required=False)
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="the archive (WAL dataset) to read")
@click.option("--spool", default=None, help="directory for segments fetched ahead")
@click.option("--prefetch", default=0, show_default=True, type=click.IntRange(0, 256),
              help="fetch this many following segments into --spool")
@click.option("--check", is_flag=True, help="only check that the repository opens and the archive is readable")
@click.pass_obj
def command(g: GlobalOptions, name: str | None, dest: str | None, dataset: str, spool: str | None, prefetch: int,
            check: bool) -> int:
    """Restore one archived WAL file NAME (%f) to DEST (%p).

    Exit 0 when restored, 1 when the archive has no such file (PostgreSQL then ends recovery
    normally), 254 on any other error (PostgreSQL then stops instead of ending recovery early).
    """
    try:
        access = g.access()
        if check:
            with g.open(lock="none") as repo:
                cat = catalog(repo, dataset, access.options.get("cache-dir"))
            g.printer.print(f"archive {dataset!r}: {len(cat.files)} file(s), {len(cat.base_backups)} base backup(s)")
            return 0
        if not name or not dest:
            raise click.UsageError("wal-fetch needs NAME and DEST (%f %p)")
        r = wal_fetch(access, name, dest, dataset, spool=spool, prefetch=prefetch,
                      cache_dir=access.options.get("cache-dir"))
    except CofferError as e:
        sys.stderr.write(f"coffer wal-fetch: {e.message}\n")
        return EXIT_ERROR
    except (OSError, ValueError, RuntimeError) as e:
        sys.stderr.write(f"coffer wal-fetch: {type(e).__name__}: {e}\n")
        return EXIT_ERROR
    if not r.found:
        g.printer.verbose_print(1, f"{name}: not in the archive")
        return EXIT_NOT_FOUND
    g.printer.verbose_print(1, f"{name}: restored from {r.source[:8]} in {r.seconds:.3f}s"
                               + (f", {len(r.prefetched)} prefetched" if r.prefetched else ""))
    return 0
