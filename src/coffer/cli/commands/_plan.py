"""The --plan option shared by the plan-driven commands, and the severity colours they print."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from coffer.config.load import load_plan
from coffer.config.model import Plan
from coffer.policy.findings import Finding, Severity

DEFAULT_PLAN = "/etc/coffer/plan.yaml"
F = TypeVar("F", bound=Callable[..., Any])


def plan_option(f: F) -> F:
    return click.option("--plan", "plan_path", envvar="COFFER_PLAN", default=DEFAULT_PLAN, show_default=True,
                        metavar="FILE", help="the backup plan (env: COFFER_PLAN)")(f)


def load(path: str) -> Plan:
    return load_plan(path)


def finding_line(f: Finding) -> str:
    return f"{f.severity.label:<8} {f.subject}: {f.message}"


def shown(findings: list[Finding], verbose: int) -> list[Finding]:
    """Problems always; OK and INFO findings (the reasons things are fine) with -v."""
    return [f for f in findings if verbose or f.severity >= Severity.WARNING]
