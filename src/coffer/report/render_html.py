"""Reports as a self-contained HTML page (no scripts, no external assets: it is mailed and archived)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from coffer.report.model import MET, NA, ComplianceReport, DrillsReport
from coffer.report.render_md import DRILL_HEADERS, _period, drill_rows

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}.met{color:#176b1f}.fail{color:#b00020;font-weight:bold}.na{color:#777}
"""


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(title) + "</title><style>"
            + _STYLE + "</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[Sequence[str]] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>"]
    for i, r in enumerate(rows):
        cls = classes[i] if i < len(classes) else [""] * len(r)
        out.append("<tr>" + "".join(f"<td class=\"{c}\">{escape(v)}</td>" if c else f"<td>{escape(v)}</td>"
                                    for v, c in zip(r, cls)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def drills_html(rep: DrillsReport) -> str:
    body = ["<h1>Restore drills</h1>", f"<p>Period: {escape(_period(rep.since, rep.until))}</p>"]
    if not rep.drills:
        body.append("<p>No drills in this period.</p>")
    else:
        rows = drill_rows(rep)
        classes = [[""] * (len(r) - 1) + ["met" if r[-1] == "PASS" else "fail"] for r in rows]
        body.append(_table(DRILL_HEADERS, rows, classes))
        problems = [d for d in rep.drills if d.issues or not d.ok]
        if problems:
            body.append("<h2>Issues found</h2><ul>")
            for d in problems:
                items = "".join(f"<li>{escape(i)}</li>" for i in d.issues[:50])
                body.append(f"<li>{escape(f'{d.started:%Y-%m-%d %H:%M} {d.dataset}')}<ul>{items}</ul></li>")
            body.append("</ul>")
    return _page("Restore drills", body)


def _cls(result: str) -> str:
    return {MET: "met", NA: "na"}.get(result, "fail")


def compliance_html(rep: ComplianceReport) -> str:
    body = ["<h1>Backup compliance</h1>", f"<p>Period: {escape(_period(rep.since, rep.until))}</p>",
            f"<p>Overall: <b class=\"{'met' if rep.met else 'fail'}\">"
            f"{'all targets met' if rep.met else 'targets missed'}</b></p>"]
    rows, classes = [], []
    for d in rep.datasets:
        vs = (d.schedule, d.retention, d.restore)
        rows.append([d.dataset, d.type, *(f"{v.result}: {v.target}" for v in vs)])
        classes.append(["", "", *(_cls(v.result) for v in vs)])
    body.append(_table(["dataset", "type", "schedule (RPO)", "retention", "restore speed (RTO)"], rows, classes))
    body.append("<h2>Evidence</h2>")
    for d in rep.datasets:
        body.append(f"<h3>{escape(d.dataset)}</h3><ul>")
        for label, v in (("Schedule", d.schedule), ("Retention", d.retention), ("Restore", d.restore)):
            body.append(f"<li><b>{label}</b> — {escape(v.target)}: <span class=\"{_cls(v.result)}\">"
                        f"{escape(v.result)}</span>. {escape(v.evidence)}</li>")
        body.append("</ul>")
    return _page("Backup compliance", body)
