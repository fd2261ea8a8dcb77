"""coffer prune: remove data no snapshot references, with restic 0.14's flags and messages.

The options and the printing live here so ``forget --prune`` runs exactly the same prune.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import click

from coffer.actions.prune import PruneResult, run_prune
from coffer.actions.session import open_repo
from coffer.cli.commands._restic_fmt import format_bytes
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import Printer, format_duration
from coffer.errors import UsageError
from coffer.store.maintenance.prune import MaxUnused, PruneOptions, PrunePlan, parse_size
from coffer.store.repository import Repository


def prune_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--repack-uncompressed", is_flag=True, help="repack all uncompressed data")(f)
    f = click.option("--repack-small", is_flag=True, help="repack pack files below 80% of target pack size")(f)
    f = click.option("--repack-cacheable-only", is_flag=True, help="only repack packs which are cacheable")(f)
    f = click.option("--max-repack-size", default="", metavar="SIZE",
                     help="maximum size to repack (allowed suffixes: k/K, m/M, g/G, t/T)")(f)
    f = click.option("--max-unused", default="5%", metavar="LIMIT", show_default=True,
                     help="tolerate given limit of unused data (bytes with suffixes k/K, m/M, g/G, t/T, "
                          "a value in % or the word 'unlimited')")(f)
    return f


def build_options(max_unused: str, max_repack_size: str, repack_cacheable_only: bool, repack_small: bool,
                  repack_uncompressed: bool, compression: str = "") -> PruneOptions:
    if repack_uncompressed and compression == "off":
        raise UsageError("disabled compression and `--repack-uncompressed` are mutually exclusive")
    return PruneOptions(
        max_unused=MaxUnused.parse(max_unused),
        max_repack_bytes=parse_size(max_repack_size, "--max-repack-size") if max_repack_size else None,
        repack_cacheable_only=repack_cacheable_only, repack_small=repack_small,
        repack_uncompressed=repack_uncompressed,
    )


def _percent(num: int, den: int) -> str:
    if den == 0:
        return ""
    return "%3.2f%%" % min(100.0, 100.0 * num / den)


class PhasePrinter:
    """restic's phase lines, and one progress line per counted phase.

    On a terminal the counter is redrawn on stderr; otherwise only its final state is printed, as
    restic does on a non-terminal (``[0:00] 100.00%  3 / 3 packs repacked``).
    """

    _LABELS: ClassVar[dict[str, str]] = {
        "loading all snapshots": "loading all snapshots...", "loading indexes": "loading indexes...",
        "listing pack files": "searching used packs...", "getting pack files to read": "getting pack files to read...",
    }

    def __init__(self, p: Printer) -> None:
        self.p = p
        self.started = time.monotonic()
        self.counter: tuple[str, int, int] | None = None

    def _close_counter(self) -> None:
        if self.counter is None:
            return
        what, done, total = self.counter
        self.counter = None
        elapsed = format_duration(time.monotonic() - self.started)
        if self.p.tty and not self.p.json:
            self.p.err.write("\r\x1b[2K")
            self.p.err.flush()
        if total:
            self.p.print(f"[{elapsed}] {_percent(done, total)}  {done} / {total} {what}")
        else:
            self.p.print(f"[{elapsed}]          {done} {what}")
        self.p.print()

    def phase(self, name: str) -> None:
        self._close_counter()
        self.started = time.monotonic()
        if name == "done":
            self.p.print("done")
            return
        self.p.print(self._LABELS.get(name, name))

    def progress(self, what: str, done: int, total: int) -> None:
        if what == "trees":
            return  # the tree walk has no known total; its phase line is enough
        self.counter = (what, done, total)
        if self.p.tty and not self.p.json and not self.p.quiet:
            elapsed = format_duration(time.monotonic() - self.started)
            with self.p._mu:
                self.p.err.write(f"\r\x1b[2K[{elapsed}] {_percent(done, total)}  {done} / {total} {what}")
                self.p.err.flush()

    def finish(self) -> None:
        self._close_counter()


def print_plan(p: Printer, plan: PrunePlan, verbose: int, dry_run: bool) -> None:
    """restic's printPruneStats (the detailed block with -v), then what was planned."""
    st = plan.stats
    if verbose >= 1:
        p.print()
        p.print(f"used:         {st.blobs_used:10d} blobs / {format_bytes(st.size_used)}")
        if st.blobs_duplicate:
            p.print(f"duplicates:   {st.blobs_duplicate:10d} blobs / {format_bytes(st.size_duplicate)}")
        p.print(f"unused:       {st.blobs_unused:10d} blobs / {format_bytes(st.size_unused)}")
        if st.size_unref:
            p.print(f"unreferenced:                    {format_bytes(st.size_unref)}")
        p.print(f"total:        {st.total_blobs:10d} blobs / {format_bytes(st.total_size)}")
        p.print(f"unused size: {_percent(st.size_duplicate + st.size_unused, st.total_size)} of total size")
    p.print()
    p.print(f"to repack:    {st.blobs_repack:10d} blobs / {format_bytes(st.size_repack)}")
    p.print(f"this removes: {st.blobs_repackrm:10d} blobs / {format_bytes(st.size_repackrm)}")
    p.print(f"to delete:    {st.blobs_remove:10d} blobs / {format_bytes(st.size_remove + st.size_unref)}")
    total_prune = st.prune_size
    p.print(f"total prune:  {st.blobs_remove + st.blobs_repackrm:10d} blobs / {format_bytes(total_prune)}")
    remaining = st.total_size - total_prune
    p.print(f"remaining:    {st.total_blobs - st.blobs_remove - st.blobs_repackrm:10d} blobs / "
            f"{format_bytes(remaining)}")
    p.print(f"unused size after prune: {format_bytes(st.unused_after)} ({_percent(st.unused_after, remaining)} "
            "of remaining size)")
    p.print()
    if verbose >= 1:
        p.print(f"totally used packs: {st.packs_used:10d}")
        p.print(f"partly used packs:  {st.packs_partly_used:10d}")
        p.print(f"unused packs:       {st.packs_unused:10d}")
        p.print()
        p.print(f"to keep:      {st.packs_keep:10d} packs")
        p.print(f"to repack:    {st.packs_repack:10d} packs")
        p.print(f"to delete:    {st.packs_remove:10d} packs")
        if st.packs_unref:
            p.print(f"to delete:    {st.packs_unref:10d} unreferenced packs")
            p.print()
    for note in plan.notes:
        p.print(note)
    if dry_run and verbose >= 1:
        def ids(xs: Iterable[bytes]) -> str:
            return "{" + " ".join(x.hex()[:8] for x in sorted(xs)) + "}"

        unref = plan.ids("remove-unreferenced")
        if unref:
            p.print(f"Would have removed the following unreferenced packs:\n{ids(unref)}\n")
        p.print(f"Would have repacked and removed the following packs:\n{ids(plan.ids('repack'))}\n")
        p.print(f"Would have removed the following no longer used packs:\n{ids(plan.ids('remove'))}\n")
    for pid in plan.ids("forget-missing"):
        p.warn(f"will forget missing pack file {pid.hex()}")


def prune_repo(g: GlobalOptions, repo: Repository, opts: PruneOptions, *, dry_run: bool,
               ignore_snapshots: Iterable[bytes] = (), json_report: bool = False) -> PruneResult:
    """Plan and (unless dry_run) run prune on an open, exclusively locked repository, printing as restic."""
    p = g.printer
    ui = PhasePrinter(p)

    def on_plan(plan: PrunePlan) -> None:
        ui.finish()
        print_plan(p, plan, g.verbose, dry_run)

    try:
        result = run_prune(repo, opts, dry_run=dry_run, ignore_snapshots=ignore_snapshots, on_phase=ui.phase,
                           on_progress=ui.progress, on_plan=on_plan)
    finally:
        ui.finish()
    out = result.outcome
    if out is not None:
        for w in out.warnings:
            p.warn(w)
    if json_report:
        doc: dict[str, Any] = {"message_type": "summary", "dry_run": dry_run, "plan": result.plan.as_dict()}
        if out is not None:
            doc["outcome"] = {k: getattr(out, k) for k in (
                "packs_deleted", "unreferenced_deleted", "packs_written", "blobs_repacked", "index_files_written",
                "index_files_deleted", "bytes_deleted", "bytes_written", "temp_files_removed", "warnings")}
        p.json_line(doc)
    return result


@click.command("prune")
@click.option("-n", "--dry-run", is_flag=True, help="do not modify the repository, just print what would be done")
@prune_options
@click.pass_obj
def command(g: GlobalOptions, dry_run: bool, max_unused: str, max_repack_size: str, repack_cacheable_only: bool,
            repack_small: bool, repack_uncompressed: bool) -> int:
    """Remove unneeded data from the repository."""
    opts = build_options(max_unused, max_repack_size, repack_cacheable_only, repack_small, repack_uncompressed,
                         g.compression)
    access = g.access()
    access.no_lock = False  # prune always locks, as in restic: it deletes
    with open_repo(access, "exclusive") as repo:
        prune_repo(g, repo, opts, dry_run=dry_run, json_report=g.json)
    return 0
