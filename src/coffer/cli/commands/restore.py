"""coffer restore: extract a snapshot (or a subtree of one) into a directory."""

from __future__ import annotations

import contextlib

import click

from coffer.actions.session import backend_recipe, load_snapshots_and_index, open_repo
from coffer.cli.commands.snapshots import filter_options, local_time
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import ProgressReporter, format_bytes, format_duration
from coffer.engine import snapshots as snapsel
from coffer.engine.progress import Progress
from coffer.engine.restore import RestoreOptions, process_count, restore, start_workers
from coffer.engine.restore_pool import RestorePool
from coffer.engine.workerpool import can_fork
from coffer.errors import RestoreError, UsageError
from coffer.store.format.snapshot import Snapshot
from coffer.store.repository import Repository


@click.command("restore")
@click.argument("snapshot_ids", nargs=-1)
@click.option("-t", "--target", default="", help="directory to extract data to")
@click.option("-i", "--include", "includes", multiple=True, help="include a pattern, exclude everything else")
@click.option("-e", "--exclude", "excludes", multiple=True, help="exclude a pattern")
@click.option("--iinclude", "iincludes", multiple=True, help="same as --include but ignores case")
@click.option("--iexclude", "iexcludes", multiple=True, help="same as --exclude but ignores case")
@click.option("--verify", is_flag=True, help="verify restored files content")
@click.option("--sparse", is_flag=True, help="restore runs of zeros as holes (sparse files)")
@click.option("--no-overwrite", is_flag=True, help="leave existing files in the target alone")
@filter_options
@click.pass_obj
def command(g: GlobalOptions, snapshot_ids: tuple[str, ...], target: str, includes: tuple[str, ...],
            excludes: tuple[str, ...], iincludes: tuple[str, ...], iexcludes: tuple[str, ...], verify: bool,
            sparse: bool, no_overwrite: bool, hosts: tuple[str, ...], tags: tuple[str, ...],
            paths: tuple[str, ...]) -> int:
    """Extract the data from a snapshot (SNAPSHOT or SNAPSHOT:subfolder)."""
    if not snapshot_ids:
        raise UsageError("no snapshot ID specified")
    if len(snapshot_ids) > 1:
        raise UsageError(f"more than one snapshot ID specified: {list(snapshot_ids)}")
    if not target:
        raise UsageError("please specify a directory to restore to (--target)")
    if (includes or iincludes) and (excludes or iexcludes):
        raise UsageError("exclude and include patterns are mutually exclusive")
    spec, _, subpath = snapshot_ids[0].partition(":")
    p = g.printer
    flt = snapsel.SnapshotFilter.build(hosts, tags, paths)
    progress = Progress()
    opts = RestoreOptions(
        target=target, subpath=subpath, includes=list(includes), excludes=list(excludes),
        iincludes=list(iincludes), iexcludes=list(iexcludes), sparse=sparse, verify=verify,
        overwrite=not no_overwrite,
    )
    access = g.access()
    # Without include patterns the restore runs in worker processes forked during the lock's wait,
    # once the index is loaded (RestorePool). Where forking is not possible they are started here
    # instead, before the repository is open, so their start-up overlaps the key derivation, the
    # lock and the index. (With include patterns the restore starts them itself if it turns out big.)
    walk = not (includes or iincludes) and can_fork() and process_count(backend_recipe(access)) >= 2
    early = None if includes or iincludes or subpath or walk else start_workers(backend_recipe(access))
    snaps: list[Snapshot] = []
    walkers: list[RestorePool | None] = [None]

    def prepare(repo: Repository) -> None:  # during the lock's wait; again if the lock is retried
        end_walkers()
        snaps[:] = load_snapshots_and_index(
            repo, on_error=lambda sid, e: p.warn(f"could not load snapshot {sid.hex()[:8]}: {e}"))
        if walk:
            walkers[0] = RestorePool.fork(repo, opts)

    def end_walkers() -> None:
        pool, walkers[0] = walkers[0], None
        if pool is not None:
            pool.close(kill=True)

    try:
        with early or contextlib.nullcontext(), open_repo(access, "none" if g.no_lock else "shared", prepare) as repo:
            snap = snapsel.find(snaps, spec, flt)
            p.print(f"restoring <Snapshot {snap.id.hex()[:8]} of [{' '.join(snap.paths)}] at {local_time(snap)} "
                    f"by {snap.username}@{snap.hostname}> to {target}")
            with ProgressReporter(p, progress, kind="restore"):
                pool, walkers[0] = walkers[0], None
                result = restore(repo, snap.tree, opts, progress, early, walkers=pool)
    finally:
        end_walkers()
    for issue in result.errors:
        p.warn(f"ignoring error for {issue.path}: {issue.message}")
    if verify:
        for issue in result.verify_errors:
            p.warn(f"verify: {issue.path}: {issue.message}")
        p.print(f"finished verifying {result.files_verified} files in {target}")
    if g.json:
        p.json_line({
            "message_type": "summary", "files_restored": result.files, "dirs_restored": result.dirs,
            "others_restored": result.others, "bytes_restored": result.bytes, "files_skipped": result.skipped,
            "total_errors": len(result.errors) + len(result.verify_errors), "seconds_elapsed": result.duration,
        })
    else:
        p.verbose_print(1, f"restored {result.files} files, {result.dirs} dirs, {format_bytes(result.bytes)} "
                           f"in {format_duration(result.duration)}")
    n = len(result.errors) + len(result.verify_errors)
    if n:
        raise RestoreError(f"There were {n} errors")
    return 0
