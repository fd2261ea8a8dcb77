"""Findings: what a policy evaluation concluded, as values a person and a monitor can both read.

Every judgement coffer makes about a plan or about the state of the backups (3-2-1, RPO, RTO,
check coverage, drills) is a :class:`Finding` with a severity and a reason, never an exception or a
log line. Front-ends print them, reports aggregate them, and ``coffer status`` turns the worst
into a monitoring plugin's exit code. Keeping them as plain data is what lets the rules be tested
with golden values alone.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Severity(enum.IntEnum):
    """Ordered from harmless to worst, so ``max()`` picks what a person must look at first.

    UNKNOWN ranks between WARNING and CRITICAL, the way monitoring systems aggregate it: a fact we
    could not establish is worse than a known small problem, but not as bad as a known big one.
    """

    OK = 0
    INFO = 1
    WARNING = 2
    UNKNOWN = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name

    @property
    def exit_code(self) -> int:
        """Nagios/Icinga plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (INFO is OK)."""
        return {Severity.OK: 0, Severity.INFO: 0, Severity.WARNING: 1, Severity.UNKNOWN: 3,
                Severity.CRITICAL: 2}[self]


@dataclass(frozen=True, slots=True)
class Finding:
    """One conclusion. ``code`` is stable (for tests, dashboards and silencing); ``subject`` names
    what it is about (``dataset app``, ``repository offsite``); ``message`` says why, in words."""

    severity: Severity
    code: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.label}: {self.subject}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity.label, "code": self.code, "subject": self.subject,
                "message": self.message}


def worst(findings: Iterable[Finding]) -> Severity:
    """The most severe finding's severity (OK for none)."""
    return max((f.severity for f in findings), default=Severity.OK)


def exit_code(findings: Iterable[Finding]) -> int:
    return worst(findings).exit_code


def at_least(findings: Iterable[Finding], severity: Severity) -> list[Finding]:
    return [f for f in findings if f.severity >= severity]
