"""coffer run [DATASET...]: back up, copy and apply retention as the plan says, recording every step."""

from __future__ import annotations

import click

from coffer.actions.plan import open_catalog
from coffer.actions.run import STEPS, StepResult, due_datasets, run_plan
from coffer.cli.commands._plan import load, plan_option
from coffer.cli.globals import GlobalOptions


@click.command("run")
@click.argument("datasets", nargs=-1)
@plan_option
@click.option("--skip", multiple=True, type=click.Choice(STEPS), help="leave out a step (repeatable)")
@click.option("--due", is_flag=True, help="only the datasets their schedule says are due (for a frequent cron/timer)")
@click.pass_obj
def command(g: GlobalOptions, datasets: tuple[str, ...], plan_path: str, skip: tuple[str, ...], due: bool) -> int:
    """Run the plan for DATASETs (default: all).

    Exit code: 0 all done, 3 a backup could not read some files, 5 retention failed,
    4 a copy failed, 6 a backup failed (most serious wins).
    """
    plan = load(plan_path)
    p = g.printer

    def on_step(dataset: str, st: StepResult) -> None:
        if g.json:
            p.json_line({"message_type": "step", "dataset": dataset, "step": st.step, "repository": st.repository,
                         "result": st.result, "message": st.message, "snapshot_ids": st.snapshot_ids,
                         "seconds": round(st.seconds, 3)})
            return
        mark = {"ok": "ok", "warning": "WARN", "failed": "FAIL", "skipped": "skip"}[st.result]
        p.print(f"[{mark:>4}] {dataset:<16} {st.step:<9} {st.repository:<12} {st.message} ({st.seconds:.1f}s)")
        if st.result in ("failed", "warning"):
            for e in st.errors[:5]:
                p.warn(f"       {dataset} {st.step} {st.repository}: {e}")

    with open_catalog(plan) as catalog:
        if due:
            decisions = [x for x in due_datasets(plan, catalog) if not datasets or x.name in datasets]
            for x in decisions:
                if g.json:
                    p.json_line({"message_type": "due", "dataset": x.name, "due": x.due, "reason": x.reason})
                else:
                    p.print(f"{'due ' if x.due else 'wait'}  {x.name:<16} {x.reason}")
            datasets = tuple(x.name for x in decisions if x.due)
            if not datasets:
                return 0
        report = run_plan(plan, catalog, datasets, skip=skip, on_step=on_step)
    failed = [d.dataset for d in report.datasets if d.result == "failed"]
    if g.json:
        p.json_line({"message_type": "summary", "exit_code": report.exit_code,
                     "datasets": {d.dataset: d.result for d in report.datasets}})
    else:
        p.print(f"run finished: {len(report.datasets)} dataset(s), "
                + (f"failed: {', '.join(failed)}" if failed else "no failures")
                + f" (exit {report.exit_code})")
    return report.exit_code
