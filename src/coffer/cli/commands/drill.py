"""coffer drill DATASET: restore an older snapshot into a sandbox, verify it, time it, record it."""

from __future__ import annotations

import click

from coffer.actions.drill import run_drill
from coffer.actions.plan import open_catalog
from coffer.cli.commands._plan import load, plan_option
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import format_bytes
from coffer.util.durations import human


@click.command("drill")
@click.argument("dataset")
@plan_option
@click.option("--snapshot", default="", help="drill this snapshot (ID prefix) instead of a random one")
@click.option("--repository", default="", help="drill from this repository (default: the plan's)")
@click.option("--keep", is_flag=True, help="keep the restored files (their path is printed)")
@click.pass_obj
def command(g: GlobalOptions, dataset: str, plan_path: str, snapshot: str, repository: str, keep: bool) -> int:
    """Run a restore drill for DATASET.

    Exit code: 0 passed, 1 passed but the RTO was missed, 2 failed.
    """
    plan = load(plan_path)
    p = g.printer
    with open_catalog(plan) as catalog:
        rep = run_drill(plan, catalog, dataset, snapshot=snapshot or None, repository=repository or None,
                        keep=keep, on_phase=lambda t: p.verbose_print(1, t))
    r = rep.record
    if g.json:
        p.json_line({
            "message_type": "drill", "dataset": r.dataset, "repository": r.repository, "ok": r.ok,
            "snapshot_id": r.snapshot_id, "snapshot_time": r.snapshot_time.isoformat() if r.snapshot_time else None,
            "snapshot_age_seconds": r.snapshot_age, "selection": r.selection, "files": r.files, "bytes": r.bytes,
            "restore_seconds": r.restore_seconds, "throughput": r.throughput, "full_bytes": r.full_bytes,
            "extrapolated_seconds": r.extrapolated_seconds, "rto_seconds": r.rto_seconds, "rto_met": r.rto_met,
            "checks": r.checks, "issues": r.issues, "notes": rep.notes,
        })
        return rep.exit_code
    p.print(f"drill {r.dataset} from {r.repository}: {'PASSED' if r.ok else 'FAILED'}")
    if r.snapshot_id:
        p.print(f"  snapshot   {r.snapshot_id[:8]}, {human(r.snapshot_age)} old ({r.selection})")
        damaged = sum(1 for i in r.issues if i.startswith(("restore:", "verify:")))
        verdict = (f"{damaged} item(s) could not be restored or verified" if damaged
                   else "every file verified against the snapshot's content hashes")
        p.print(f"  restored   {r.files} files, {format_bytes(r.bytes)} in {r.restore_seconds:.1f}s "
                f"({format_bytes(r.throughput)}/s); {verdict}")
    for c in r.checks:
        p.print(f"  check      [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
    if rep.rto is not None:
        p.print(f"  RTO        {rep.rto.reason}")
    for n in rep.notes:
        p.print(f"  note       {n}")
    for i in r.issues[:50]:
        p.warn(f"  issue      {i}")
    if len(r.issues) > 50:
        p.warn(f"  ... and {len(r.issues) - 50} more issues")
    return rep.exit_code
