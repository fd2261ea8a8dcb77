"""coffer plan schema|check|init: the plan file's schema, its validation and judgement, its repositories."""

from __future__ import annotations

import json

import click

from coffer.actions.plan import init_repositories, plan_findings
from coffer.cli.commands._plan import DEFAULT_PLAN, finding_line
from coffer.cli.globals import GlobalOptions
from coffer.config.load import PlanError, load_plan
from coffer.config.model import json_schema
from coffer.policy.findings import Severity, worst

EXIT_INVALID = 2  # an invalid plan cannot run: CRITICAL in monitoring terms


@click.group("plan")
def command() -> None:
    """Work with a backup plan (a YAML file)."""


@command.command("schema")
@click.pass_obj
def schema(g: GlobalOptions) -> int:
    """Print the plan's JSON Schema (for editors and CI)."""
    g.printer.result(json.dumps(json_schema(), indent=2))
    return 0


@command.command("check")
@click.argument("file", required=False, envvar="COFFER_PLAN", default=DEFAULT_PLAN)
@click.pass_obj
def check(g: GlobalOptions, file: str) -> int:
    """Validate a plan and judge it: 3-2-1, RPO feasibility, retention vs. drills.

    Exit code: 0 valid and sound, 1 warnings, 2 invalid or critical findings.
    """
    p = g.printer
    try:
        plan = load_plan(file)
    except PlanError as e:
        if g.json:
            p.json_line({"valid": False, "problems": [
                {"file": x.file, "line": x.line, "path": x.path, "message": x.message} for x in e.problems]})
        else:
            for x in e.problems:
                p.result(str(x))
            p.warn(f"{file}: {len(e.problems)} problem(s); the plan is not valid")
        return EXIT_INVALID
    findings = plan_findings(plan)
    sev = worst(findings)
    if g.json:
        p.json_line({"valid": True, "status": sev.label, "findings": [f.as_dict() for f in findings]})
        return sev.exit_code
    p.print(f"{file}: valid ({len(plan.repositories)} repositories, {len(plan.datasets)} datasets)")
    for f in findings:
        if f.severity >= Severity.WARNING or g.verbose or f.severity == Severity.OK:
            p.print("  " + finding_line(f))
    counts = {s: sum(1 for f in findings if f.severity == s) for s in (Severity.CRITICAL, Severity.WARNING)}
    p.print(f"plan check: {sev.label if sev >= Severity.WARNING else 'OK'} "
            f"({counts[Severity.CRITICAL]} critical, {counts[Severity.WARNING]} warnings)")
    return sev.exit_code


@command.command("init")
@click.argument("file", required=False, envvar="COFFER_PLAN", default=DEFAULT_PLAN)
@click.pass_obj
def init(g: GlobalOptions, file: str) -> int:
    """Create the plan's repositories that do not exist yet (copies share the primary's chunker)."""
    plan = load_plan(file)
    for r in init_repositories(plan):
        verb = "created" if r.created else "exists "
        g.printer.print(f"{verb} repository {r.repository} ({r.id[:10]}) at {plan.repository(r.repository).url}")
    return 0
