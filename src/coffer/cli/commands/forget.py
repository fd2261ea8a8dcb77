"""coffer forget: remove snapshots by retention policy (or by ID), printed as restic 0.14 prints it.

The decision is :mod:`coffer.policy.retention`'s; this module only turns flags into a policy and
the decision into restic's tables or JSON (one object per group with ``keep``, ``remove`` and the
``reasons`` each kept snapshot matched), then deletes and, with ``--prune``, prunes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from coffer.actions.forget import ForgetPlan, ForgetRequest, apply_forget, plan_forget
from coffer.actions.session import LockMode, open_repo
from coffer.cli.commands._restic_fmt import canonical_time, go_json, local_time
from coffer.cli.commands.prune import build_options, prune_options, prune_repo
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import Printer
from coffer.engine import snapshots as snapsel
from coffer.errors import UsageError
from coffer.policy.retention import (
    Duration,
    GroupBy,
    GroupDecision,
    GroupKey,
    KeepReason,
    RetentionPolicy,
    parse_tag_list,
)
from coffer.store.format.snapshot import Snapshot


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> Duration:
    try:
        return Duration.parse(value) if value else Duration()
    except UsageError as e:
        raise click.BadParameter(e.message) from None


def snapshot_json(s: Snapshot, *, sort_tags: bool, with_id: bool = True) -> dict[str, Any]:
    """A snapshot as restic's forget prints it: time re-marshalled, paths (and grouped tags) sorted."""
    d = s.to_display_dict()
    d["time"] = canonical_time(s.time)
    d["paths"] = sorted(s.paths)
    if sort_tags and s.tags:
        d["tags"] = sorted(s.tags)
    if not with_id:
        d.pop("id", None)
        d.pop("short_id", None)
    return d


def group_json(g: GroupDecision, by: GroupBy) -> dict[str, Any]:
    def snaps(xs: Sequence[Snapshot]) -> list[dict[str, Any]] | None:
        return [snapshot_json(s, sort_tags=by.tags) for s in xs] or None

    def reason(r: KeepReason) -> dict[str, Any]:
        return {"snapshot": snapshot_json(r.snapshot, sort_tags=by.tags, with_id=False),
                "matches": list(r.matches), "counters": r.counters.as_dict()}

    return {
        "tags": list(g.key.tags) if g.key.tags is not None else None,
        "host": g.key.hostname,
        "paths": list(g.key.paths) if g.key.paths is not None else None,
        "keep": snaps(g.keep),
        "remove": snaps(g.remove),
        "reasons": [reason(r) for r in g.reasons] or None,
    }


def group_header(key: GroupKey) -> str | None:
    """restic's PrintSnapshotGroupHeader (nothing for a group without a key)."""
    if key.empty:
        return None
    parts = []
    if key.hostname:
        parts.append(f"host [{key.hostname}]")
    if key.tags is not None:
        parts.append(f"tags [{', '.join(key.tags)}]")
    if key.paths is not None:
        parts.append(f"paths [{', '.join(key.paths)}]")
    return f"snapshots for ({', '.join(parts)}):"


def snapshot_table(snaps: Sequence[Snapshot], reasons: Sequence[KeepReason] | None, *, compact: bool,
                   sort_tags: bool) -> list[str]:
    """restic's PrintSnapshots: oldest first, multi-line cells, a blank line between rows when any
    snapshot has several paths."""
    why = {r.snapshot.id: r.matches for r in reasons or ()}
    ordered = sorted(snaps, key=lambda s: s.time_ns)  # stable, as restic's SliceStable

    def tags(s: Snapshot) -> list[str]:
        return sorted(s.tags) if sort_tags else list(s.tags)

    if compact:
        headers = ["ID", "Time", "Host", "Tags  "]
        rows = [[[s.id.hex()[:8]], [local_time(s.time)], [s.hostname], tags(s)] for s in ordered]
    else:
        headers = ["ID", "Time", "Host      ", "Tags      "] + (["Reasons"] if reasons else []) + ["Paths"]
        rows = []
        for s in ordered:
            r: list[list[str]] = [[s.id.hex()[:8]], [local_time(s.time)], [s.hostname], [",".join(tags(s))]]
            if reasons:
                r.append(list(why.get(s.id, ())))
            r.append(sorted(s.paths))
            rows.append(r)
    multiline = not compact and any(len(s.paths) > 1 for s in ordered)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            for line in cell:
                widths[i] = max(widths[i], len(line))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [fmt(headers), rule]
    for n, row in enumerate(rows):
        if multiline and n:
            out.append("")
        for k in range(max(1, *(len(c) for c in row))):
            out.append(fmt([c[k] if k < len(c) else "" for c in row]))
    out += [rule, f"{len(ordered)} snapshots"]
    return out


def _print_lines(p: Printer, lines: list[str]) -> None:
    for line in lines:
        p.print(line)


@click.command("forget")
@click.option("-l", "--keep-last", "last", default=0, type=int, metavar="N", help="keep the last n snapshots")
@click.option("-H", "--keep-hourly", "hourly", default=0, type=int, metavar="N",
              help="keep the last n hourly snapshots")
@click.option("-d", "--keep-daily", "daily", default=0, type=int, metavar="N", help="keep the last n daily snapshots")
@click.option("-w", "--keep-weekly", "weekly", default=0, type=int, metavar="N",
              help="keep the last n weekly snapshots")
@click.option("-m", "--keep-monthly", "monthly", default=0, type=int, metavar="N",
              help="keep the last n monthly snapshots")
@click.option("-y", "--keep-yearly", "yearly", default=0, type=int, metavar="N",
              help="keep the last n yearly snapshots")
@click.option("--keep-within", "within", default="", callback=_duration, metavar="DURATION",
              help="keep snapshots that are newer than duration (eg. 1y5m7d2h) relative to the latest snapshot")
@click.option("--keep-within-hourly", "within_hourly", default="", callback=_duration, metavar="DURATION",
              help="keep hourly snapshots that are newer than duration relative to the latest snapshot")
@click.option("--keep-within-daily", "within_daily", default="", callback=_duration, metavar="DURATION",
              help="keep daily snapshots that are newer than duration relative to the latest snapshot")
@click.option("--keep-within-weekly", "within_weekly", default="", callback=_duration, metavar="DURATION",
              help="keep weekly snapshots that are newer than duration relative to the latest snapshot")
@click.option("--keep-within-monthly", "within_monthly", default="", callback=_duration, metavar="DURATION",
              help="keep monthly snapshots that are newer than duration relative to the latest snapshot")
@click.option("--keep-within-yearly", "within_yearly", default="", callback=_duration, metavar="DURATION",
              help="keep yearly snapshots that are newer than duration relative to the latest snapshot")
@click.option("--keep-tag", "keep_tags", multiple=True, metavar="TAGLIST",
              help="keep snapshots with this taglist (can be specified multiple times)")
@click.option("--host", "--hostname", "hosts", multiple=True,
              help="only consider snapshots with the given host (can be specified multiple times)")
@click.option("--tag", "tags", multiple=True, metavar="TAGLIST",
              help="only consider snapshots which include this taglist in the format tag[,tag,...]")
@click.option("--path", "paths", multiple=True,
              help="only consider snapshots which include this (absolute) path (can be specified multiple times)")
@click.option("-c", "--compact", is_flag=True, help="use compact output format")
@click.option("-g", "--group-by", default="host,paths", show_default=True,
              help="group snapshots by host, paths and/or tags, separated by comma (disable grouping with '')")
@click.option("-n", "--dry-run", is_flag=True, help="do not delete anything, just print what would be done")
@click.option("--prune", "prune", is_flag=True, help="automatically run the 'prune' command if snapshots have been "
                                                       "removed")
@prune_options
@click.argument("snapshot_ids", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, last: int, hourly: int, daily: int, weekly: int, monthly: int, yearly: int,
            within: Duration, within_hourly: Duration, within_daily: Duration, within_weekly: Duration,
            within_monthly: Duration, within_yearly: Duration, keep_tags: tuple[str, ...], hosts: tuple[str, ...],
            tags: tuple[str, ...], paths: tuple[str, ...], compact: bool, group_by: str, dry_run: bool, prune: bool,
            max_unused: str, max_repack_size: str, repack_cacheable_only: bool, repack_small: bool,
            repack_uncompressed: bool, snapshot_ids: tuple[str, ...]) -> int:
    """Remove snapshots from the repository.

    Snapshots are divided into groups by --group-by, and the --keep-* policy is applied to each group
    alone. Only the snapshot files are removed; run prune (or pass --prune) to reclaim the space.
    """
    prune_opts = build_options(max_unused, max_repack_size, repack_cacheable_only, repack_small,
                               repack_uncompressed, g.compression)
    if g.no_lock and not dry_run:
        raise UsageError("--no-lock is only applicable in combination with --dry-run for forget command")
    policy = RetentionPolicy(
        last=last, hourly=hourly, daily=daily, weekly=weekly, monthly=monthly, yearly=yearly, within=within,
        within_hourly=within_hourly, within_daily=within_daily, within_weekly=within_weekly,
        within_monthly=within_monthly, within_yearly=within_yearly,
        keep_tags=tuple(parse_tag_list(t) for t in keep_tags),
    )
    by = GroupBy.parse(group_by)
    req = ForgetRequest(policy=policy, group_by=by, filter=snapsel.SnapshotFilter.build(hosts, tags, paths),
                        snapshot_ids=snapshot_ids)
    p = g.printer
    access = g.access()
    lock: LockMode = "none" if (dry_run and g.no_lock) else "exclusive"
    with open_repo(access, lock) as repo:
        plan = plan_forget(repo, req)
        for m in plan.messages:
            p.warn(m)
        _print_plan(g, plan, compact)
        remove = plan.remove
        if remove:
            if dry_run:
                if not g.json:
                    ids = " ".join(s.id.hex()[:8] for s in sorted(remove, key=lambda s: s.id))
                    p.print(f"Would have removed the following snapshots:\n{{{ids}}}\n")
            else:
                removed = apply_forget(repo, remove)
                p.print(f"[0:00] 100.00%  {len(removed)} / {len(remove)} files deleted")
        if g.json and plan.decision is not None and plan.decision.groups:
            p.result("[" + ",".join(go_json(group_json(grp, by)) for grp in plan.decision.groups) + "]")
        if remove and prune:
            p.print(f"{len(remove)} snapshots have been removed, running prune")
            prune_repo(g, repo, prune_opts, dry_run=dry_run,
                       ignore_snapshots=[s.id for s in remove] if dry_run else ())
    return 0


def _print_plan(g: GlobalOptions, plan: ForgetPlan, compact: bool) -> None:
    p = g.printer
    d = plan.decision
    if d is None:
        return
    for w in d.warnings:
        p.warn(f"warning: {w}")
    if d.policy.empty:
        p.print("no policy was specified, no snapshots will be removed")
        return
    p.print(f"Applying Policy: {d.policy}")
    by = plan.request.group_by
    for grp in d.groups:
        if g.verbose >= 1:
            header = group_header(grp.key)
            if header:
                p.print(header)
        if grp.keep:
            p.print(f"keep {len(grp.keep)} snapshots:")
            _print_lines(p, snapshot_table(grp.keep, grp.reasons, compact=compact, sort_tags=by.tags))
            p.print()
        if grp.remove:
            p.print(f"remove {len(grp.remove)} snapshots:")
            _print_lines(p, snapshot_table(grp.remove, None, compact=compact, sort_tags=by.tags))
            p.print()
