"""``coffer check --plan FILE [REPOSITORY...]``: the scheduled integrity check of a plan's repositories."""

from __future__ import annotations

from coffer.actions.integrity import RepoCheck, check_plan
from coffer.actions.plan import open_catalog
from coffer.cli.commands._plan import load
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import format_bytes
from coffer.errors import UsageError
from coffer.util.durations import human

EXIT_DAMAGED = 1


def check_plan_command(g: GlobalOptions, plan_path: str, repositories: list[str], read_flags: bool) -> int:
    if read_flags:
        raise UsageError("--plan reads the slice the plan configures; it cannot be combined with --read-data*")
    plan = load(plan_path)
    p = g.printer

    def on_repo(rc: RepoCheck) -> None:
        if g.json:
            cov = rc.coverage
            p.json_line({
                "message_type": "check", "repository": rc.repository, "ok": rc.ok, "packs": rc.packs,
                "packs_read": rc.read, "bytes_read": rc.bytes_read, "fraction": rc.fraction, "damaged": rc.damaged,
                "errors": rc.errors, "warnings": rc.warnings,
                "never_read": cov.never_read if cov else None,
                "oldest_unverified_seconds": cov.oldest_unverified.total_seconds()
                if cov and cov.oldest_unverified is not None else None,
            })
            return
        state = "ok" if rc.ok else "DAMAGED" if rc.damaged else "FAILED"
        cov = rc.coverage
        left = f", {cov.never_read} never read" if cov and cov.never_read else ", every pack read at least once" \
            if cov else ""
        oldest = f", oldest unverified {human(cov.oldest_unverified)}" if cov and cov.oldest_unverified else ""
        p.print(f"[{state}] {rc.repository}: read {rc.read} of {rc.packs} packs ({format_bytes(rc.bytes_read)}, "
                f"slice {rc.fraction:.0%}){left}{oldest}")
        for e in rc.errors:
            p.warn(f"  error: {e}")
        for w in rc.warnings:
            p.print(f"  warning: {w}")

    with open_catalog(plan) as catalog:
        results = check_plan(plan, catalog, repositories, on_repo=on_repo)
    bad = [r.repository for r in results if not r.ok]
    if bad:
        p.warn(f"integrity check found problems in: {', '.join(bad)}")
        return EXIT_DAMAGED
    return 0
