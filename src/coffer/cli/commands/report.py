"""coffer report drills|compliance: what a person reads, as Markdown or HTML."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import click

from coffer.actions.plan import open_catalog
from coffer.actions.status import gather_facts
from coffer.cli.commands._plan import load, plan_option
from coffer.cli.globals import GlobalOptions
from coffer.errors import UsageError
from coffer.report.model import compliance_report, drills_report
from coffer.report.render_html import compliance_html, drills_html
from coffer.report.render_md import compliance_md, drills_md
from coffer.util.durations import parse_duration


@click.group("report")
def command() -> None:
    """Write reports from the catalog and the repositories."""


def _common(f):  # type: ignore[no-untyped-def]
    f = click.option("--output", "output", default="", metavar="FILE", help="write to FILE (default: stdout)")(f)
    f = click.option("--period", default="90d", show_default=True, help="how far back the report looks")(f)
    f = click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)(f)
    return plan_option(f)


def _window(period: str) -> tuple[datetime, datetime]:
    try:
        span = parse_duration(period)
    except ValueError as e:
        raise UsageError(f"--period: {e}") from None
    until = datetime.now(UTC)
    return until - span, until


def _emit(g: GlobalOptions, text: str, output: str) -> None:
    if output:
        tmp = output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
        g.printer.print(f"report written to {output}")
    else:
        g.printer.result(text.rstrip("\n"))


@command.command("drills")
@_common
@click.pass_obj
def drills(g: GlobalOptions, plan_path: str, fmt: str, period: str, output: str) -> int:
    """Every drill in the period: snapshot, age, size, restore time, RTO, checks, issues."""
    plan = load(plan_path)
    since, until = _window(period)
    with open_catalog(plan) as catalog:
        rep = drills_report(plan, catalog, since, until)
    _emit(g, drills_html(rep) if fmt == "html" else drills_md(rep), output)
    return 0 if all(d.ok for d in rep.drills) else 1


@command.command("compliance")
@_common
@click.pass_obj
def compliance(g: GlobalOptions, plan_path: str, fmt: str, period: str, output: str) -> int:
    """Per dataset: did schedule (RPO), retention and restore speed (RTO) meet the targets?"""
    plan = load(plan_path)
    since, until = _window(period)
    facts = gather_facts(plan)
    with open_catalog(plan) as catalog:
        rep = compliance_report(plan, catalog, facts, since, until)
    _emit(g, compliance_html(rep) if fmt == "html" else compliance_md(rep), output)
    return 0 if rep.met else 1
