"""``coffer status --prometheus FILE``: the status as metrics for node_exporter's textfile collector.

Written to a temporary name and renamed, so the collector never reads half a file.
"""

from __future__ import annotations

import os
import tempfile

from coffer.actions.status import StatusReport


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _labels(**kw: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kw.items()) + "}"


def render(rep: StatusReport) -> str:
    lines: list[str] = []

    def metric(name: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    metric("coffer_status", "worst status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN", [("", rep.exit_code)])
    datasets = sorted({r.dataset for r in rep.rows} | {d.dataset for d in rep.drills})
    metric("coffer_dataset_status", "per dataset: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
           [(_labels(dataset=d), rep.dataset_severity(d).exit_code) for d in datasets])
    metric("coffer_snapshot_age_seconds", "age of the newest snapshot of a dataset in a repository",
           [(_labels(dataset=r.dataset, repository=r.repository, role=r.role), r.age.total_seconds())
            for r in rep.rows if r.age is not None])
    metric("coffer_snapshot_age_limit_seconds", "allowed age (RPO, or RPO plus copy lag)",
           [(_labels(dataset=r.dataset, repository=r.repository, role=r.role), r.limit.total_seconds())
            for r in rep.rows if r.limit is not None])
    metric("coffer_snapshots", "snapshots of a dataset in a repository",
           [(_labels(dataset=r.dataset, repository=r.repository, role=r.role), r.snapshots) for r in rep.rows])
    metric("coffer_check_oldest_unverified_seconds", "longest time any pack went without being read",
           [(_labels(repository=c.repository), c.coverage.oldest_unverified.total_seconds())
            for c in rep.coverage if c.coverage and c.coverage.oldest_unverified is not None])
    metric("coffer_check_packs_never_read", "packs no check has read yet",
           [(_labels(repository=c.repository), c.coverage.never_read) for c in rep.coverage if c.coverage])
    metric("coffer_drill_last_timestamp_seconds", "when the last drill ran",
           [(_labels(dataset=d.dataset), d.last.timestamp()) for d in rep.drills if d.last])
    metric("coffer_drill_last_success", "1 if the last drill passed",
           [(_labels(dataset=d.dataset), 1.0 if d.ok else 0.0) for d in rep.drills if d.ok is not None])
    return "\n".join(lines) + "\n"


def write(rep: StatusReport, path: str) -> None:
    text = render(rep)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".coffer-prom-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
