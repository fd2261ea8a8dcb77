"""coffer status: every dataset against its targets, from the repositories themselves.

Exit codes as monitoring plugins use them: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import json

import click

from coffer.actions.plan import open_catalog
from coffer.actions.status import StatusReport, collect_status
from coffer.cli.commands._plan import finding_line, load, plan_option, shown
from coffer.cli.globals import GlobalOptions
from coffer.config.load import PlanError
from coffer.errors import CofferError
from coffer.policy.findings import Severity
from coffer.report import prometheus
from coffer.util.durations import human

EXIT_UNKNOWN = 3


@click.command("status")
@plan_option
@click.option("--prometheus", "prom_file", default="", metavar="FILE",
              help="also write the status as Prometheus metrics (node_exporter textfile)")
@click.pass_obj
def command(g: GlobalOptions, plan_path: str, prom_file: str) -> int:
    """Show whether every dataset meets its RPO, copies, checks and drills (use --json for machines)."""
    p = g.printer
    try:
        plan = load(plan_path)
        with open_catalog(plan) as catalog:
            rep = collect_status(plan, catalog)
    except PlanError as e:
        p.warn(f"UNKNOWN: the plan is invalid: {e.message}")
        return EXIT_UNKNOWN
    except CofferError as e:  # a monitor must get UNKNOWN, not a generic failure
        p.warn(f"UNKNOWN: {e.message}")
        return EXIT_UNKNOWN
    if prom_file:
        prometheus.write(rep, prom_file)
    if g.json:
        p.result(json.dumps(rep.as_dict(), indent=None, separators=(",", ":")))
        return rep.exit_code
    print_status(g, rep)
    return rep.exit_code


def print_status(g: GlobalOptions, rep: StatusReport) -> None:
    p = g.printer
    rows = [[r.dataset, r.repository, r.role, str(r.snapshots),
             f"{r.newest:%Y-%m-%d %H:%M}" if r.newest else "-", human(r.age), human(r.limit),
             r.finding.severity.label] for r in rep.rows]
    p.table(["dataset", "repository", "role", "snapshots", "newest (UTC)", "age", "max age", "status"], rows)
    cov = []
    for c in rep.coverage:
        v = c.coverage
        cov.append([c.repository, str(v.packs) if v else "-", str(v.never_read) if v else "-",
                    human(v.oldest_unverified) if v and v.oldest_unverified is not None else "-",
                    human(c.period), f"{v.last_check:%Y-%m-%d %H:%M}" if v and v.last_check else "never",
                    c.finding.severity.label])
    p.print()
    p.table(["repository", "packs", "never read", "oldest unverified", "period", "last check", "status"], cov)
    drills = [[d.dataset, f"{d.last:%Y-%m-%d %H:%M}" if d.last else "never",
               "-" if d.ok is None else ("passed" if d.ok else "FAILED"),
               "-" if d.rto_met is None else ("met" if d.rto_met else "MISSED"), d.finding.severity.label]
              for d in rep.drills]
    p.print()
    p.table(["dataset", "last drill", "result", "RTO", "status"], drills)
    problems = shown(rep.findings, g.verbose)
    if problems:
        p.print()
        for f in sorted(problems, key=lambda f: -f.severity):
            p.print(finding_line(f))
    p.print()
    sev = rep.severity
    label = "OK" if sev <= Severity.INFO else sev.label
    p.result(f"coffer status: {label} ({sum(1 for f in rep.findings if f.severity >= Severity.WARNING)} problem(s))")
