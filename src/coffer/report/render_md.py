"""Reports as Markdown: readable in a terminal, a ticket, a wiki or an e-mail as they are."""

from __future__ import annotations

from collections.abc import Sequence

from coffer.report.model import MET, NA, ComplianceReport, DrillsReport
from coffer.util.durations import human
from coffer.util.sizes import human_seconds, human_size


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", "<br>")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out


def _period(since: object, until: object) -> str:
    return f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


def drill_rows(rep: DrillsReport) -> list[list[str]]:
    rows = []
    for d in rep.drills:
        checks = f"{sum(1 for c in d.checks if c.get('ok'))}/{len(d.checks)}"
        rto = "-" if d.rto_seconds is None else (f"{human(d.rto_seconds)} " + ("met" if d.rto_met else "MISSED"))
        rows.append([
            f"{d.started:%Y-%m-%d %H:%M}", d.dataset, d.repository,
            d.snapshot_id[:8] or "-", human(d.snapshot_age) if d.snapshot_age is not None else "-",
            str(d.files), human_size(d.bytes), human_seconds(d.restore_seconds), f"{human_size(d.throughput)}/s",
            human_seconds(d.extrapolated_seconds) if d.extrapolated_seconds else "-", rto, checks,
            "PASS" if d.ok else "FAIL",
        ])
    return rows


DRILL_HEADERS = ["date", "dataset", "repository", "snapshot", "age", "files", "bytes", "restore", "throughput",
                 "full size est.", "RTO", "checks", "result"]


def drills_md(rep: DrillsReport) -> str:
    lines = ["# Restore drills", "", f"Period: {_period(rep.since, rep.until)}", ""]
    if not rep.drills:
        lines.append("No drills in this period.")
    else:
        lines += _table(DRILL_HEADERS, drill_rows(rep))
        problems = [d for d in rep.drills if d.issues or not d.ok]
        if problems:
            lines += ["", "## Issues found", ""]
            for d in problems:
                lines.append(f"- {d.started:%Y-%m-%d %H:%M} {d.dataset} ({d.snapshot_id[:8] or 'no snapshot'}):")
                lines += [f"  - {i}" for i in d.issues[:50]]
                if len(d.issues) > 50:
                    lines.append(f"  - ... and {len(d.issues) - 50} more")
        lines += ["", "Snapshot selection:"]
        lines += [f"- {d.started:%Y-%m-%d %H:%M} {d.dataset}: {d.selection}" for d in rep.drills if d.selection]
    never = [n for n, iv in rep.planned.items() if iv is not None and not any(d.dataset == n for d in rep.drills)]
    if never:
        lines += ["", "Planned but not drilled in this period: " + ", ".join(never)]
    return "\n".join(lines) + "\n"


def _mark(result: str) -> str:
    return {MET: "✓ met", NA: "n/a"}.get(result, "✗ NOT met")


def compliance_md(rep: ComplianceReport) -> str:
    lines = ["# Backup compliance", "", f"Period: {_period(rep.since, rep.until)}", "",
             f"Overall: **{'all targets met' if rep.met else 'targets missed'}**", ""]
    rows = [[d.dataset, d.type, _mark(d.schedule.result), _mark(d.retention.result), _mark(d.restore.result)]
            for d in rep.datasets]
    lines += _table(["dataset", "type", "schedule (RPO)", "retention", "restore speed (RTO)"], rows)
    lines += ["", "## Evidence", ""]
    for d in rep.datasets:
        lines.append(f"### {d.dataset}")
        for label, v in (("Schedule", d.schedule), ("Retention", d.retention), ("Restore", d.restore)):
            lines.append(f"- **{label}** — {v.target}: {_mark(v.result)}. {v.evidence}")
        lines.append("")
    return "\n".join(lines)
