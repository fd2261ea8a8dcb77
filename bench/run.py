#!/usr/bin/env python3
"""coffer vs restic, side by side in one run (a benchmark, not a test).

Builds the corpus with the shared generator, then for every row runs restic and coffer
alternately on the same data: init, first backup, no-change backup, backup after a 5 % mutation,
full restore, check --read-data. Prints wall time, MB/s, peak RSS and the coffer/restic ratio,
and appends a Markdown table to docs/benchmarks.md with --record.

    .venv/bin/python bench/run.py --size 2G [--repeat 3] [--work /var/tmp/coffer-bench] [--record]

With ``--repeat N`` the whole sequence runs N times (fresh repositories each time) and the table
gives each row's median times and median ratio, with every run's ratio beside it: single runs on
a shared machine spread by 10-30 %.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MKDATA_DEFAULT = ROOT.parent / "shared" / "bench" / "mkdata.py"
PASSWORD = "bench-password"


@dataclass
class Measure:
    seconds: float
    max_rss_kib: int


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Measure:
    """Run one command; wall time and the child's own peak RSS (wait4, same as /usr/bin/time -v).

    Dirty pages of the previous command are written out first (outside the timing): the tools run
    in a fixed order, and the second one would otherwise pay for the first one's write-back."""
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert p.stderr is not None
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{err.decode(errors='replace')[-2000:]}")
    return Measure(dt, ru.ru_maxrss)


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def warm(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            try:
                with open(p, "rb") as fh:
                    while fh.read(1 << 20):
                        pass
            except OSError:
                pass


def ensure_corpus(work: Path, size: str, mkdata: str, keep: bool) -> Path:
    """The benchmark corpus for ``size``: built with the shared generator, or reused with ``keep``."""
    corpus = work / f"corpus-{size}"
    if not corpus.exists() or not keep:
        shutil.rmtree(corpus, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        print(f"building corpus {corpus} ({size}) ...", flush=True)
        subprocess.run([sys.executable, mkdata, str(corpus), "--size", size, "--seed", "1"], check=True)
    return corpus


Rows = list[tuple[str, int, dict[str, "Measure"]]]


def median_table(runs: list[Rows], ratio: Callable[[Measure, Measure], float], ratio_name: str) -> list[str]:
    """A Markdown table of rows measured over several runs: median seconds, median ratio, every
    run's ratio, peak RSS. ``ratio(restic, coffer)``."""
    lines = [
        f"| row | restic s | coffer s | {ratio_name} (median) | every run | restic RSS MiB | coffer RSS MiB |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for i, (name, _nbytes, _res) in enumerate(runs[0]):
        per = [run_rows[i][2] for run_rows in runs]
        rs = [m["restic"] for m in per]
        cs = [m["coffer"] for m in per]
        ratios = [ratio(r, c) for r, c in zip(rs, cs)]
        lines.append(
            f"| {name} | {statistics.median(r.seconds for r in rs):.2f} | "
            f"{statistics.median(c.seconds for c in cs):.2f} | **{statistics.median(ratios):.2f}** | "
            f"{' '.join(f'{x:.2f}' for x in ratios)} | {max(r.max_rss_kib for r in rs) / 1024:.0f} | "
            f"{max(c.max_rss_kib for c in cs) / 1024:.0f} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G")
    ap.add_argument("--work", default="/var/tmp/coffer-bench")
    ap.add_argument("--mkdata", default=str(MKDATA_DEFAULT))
    ap.add_argument("--restic", default=shutil.which("restic") or "restic")
    ap.add_argument("--coffer", default=str(Path(sys.executable).parent / "coffer"))
    ap.add_argument("--repeat", type=int, default=1, help="run the whole sequence N times; report medians")
    ap.add_argument("--keep", action="store_true", help="keep the corpus for the next run")
    ap.add_argument("--record", action="store_true", help="append the results to docs/benchmarks.md")
    args = ap.parse_args()

    work = Path(args.work)
    corpus = ensure_corpus(work, args.size, args.mkdata, args.keep)
    mutated = work / "corpus-mutated"
    size = du(corpus)
    tools = {"restic": args.restic, "coffer": args.coffer}
    repos = {t: work / f"repo-{t}" for t in tools}
    targets = {t: work / f"restore-{t}" for t in tools}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
    base_env.pop("PYTHONDONTWRITEBYTECODE", None)  # coffer runs with its bytecode cached, as installed
    base_env["RESTIC_PASSWORD"] = PASSWORD
    base_env["RESTIC_CACHE_DIR"] = str(work / "restic-cache")

    def env(tool: str) -> dict[str, str]:
        e = dict(base_env)
        e["RESTIC_REPOSITORY"] = str(repos[tool])
        return e

    def one_run() -> tuple[Rows, int, int]:
        for p in [mutated, *repos.values(), *targets.values(), work / "restic-cache"]:
            shutil.rmtree(p, ignore_errors=True)
        rows: Rows = []

        def row(name: str, nbytes: int, argv_for: dict[str, list[str]], cwd: Path | None = None) -> None:
            res: dict[str, Measure] = {}
            for tool in ("restic", "coffer"):  # alternate, same data, same moment
                res[tool] = run([tools[tool], *argv_for[tool]], env(tool), cwd)
            rows.append((name, nbytes, res))
            r, c = res["restic"], res["coffer"]
            print(f"{name:28s} restic {r.seconds:7.2f}s {r.max_rss_kib / 1024:6.0f} MiB | coffer {c.seconds:7.2f}s "
                  f"{c.max_rss_kib / 1024:6.0f} MiB | time ratio {c.seconds / r.seconds:5.2f}", flush=True)

        warm(corpus)
        row("init", 0, {t: ["init"] for t in tools})
        # Back up a relative path from the corpus' parent so both snapshots have the same shape.
        shutil.copytree(corpus, mutated, symlinks=True)
        warm(mutated)
        b = {t: ["backup", "-q", mutated.name] for t in tools}
        row("first backup", size, b, cwd=work)
        row("no-change backup", size, b, cwd=work)
        subprocess.run([sys.executable, args.mkdata, str(mutated), "--mutate", "5", "--seed", "2"], check=True,
                       stdout=subprocess.DEVNULL)
        warm(mutated)
        msize = du(mutated)
        row("backup after 5% mutation", msize, b, cwd=work)
        row("restore (latest)", msize, {t: ["restore", "-q", "latest", "--target", str(targets[t])] for t in tools})
        row("check --read-data", du(repos["coffer"]), {t: ["check", "-q", "--read-data"] for t in tools})
        sizes = du(repos["restic"]), du(repos["coffer"])
        print(f"\nrepository size: restic {sizes[0] / 2**20:.0f} MiB, coffer {sizes[1] / 2**20:.0f} MiB\n")
        return rows, *sizes

    runs: list[Rows] = []
    sizes: list[tuple[int, int]] = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"--- run {i + 1} of {args.repeat}", flush=True)
        rows, rsize, csize = one_run()
        runs.append(rows)
        sizes.append((rsize, csize))

    title = (f"### Run {time.strftime('%Y-%m-%d %H:%M')} — corpus {args.size} ({size / 2**20:.0f} MiB), "
             f"{platform.machine()}, {os.cpu_count()} cores")
    if args.repeat == 1:
        lines = [title, "",
                 "| row | restic s | coffer s | restic MB/s | coffer MB/s | coffer/restic time | restic RSS MiB "
                 "| coffer RSS MiB |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]

        def mbs(nbytes: int, m: Measure) -> str:
            return f"{nbytes / 1e6 / m.seconds:.0f}" if nbytes else ""

        for name, nbytes, res in runs[0]:
            rr, cc = res["restic"], res["coffer"]
            lines.append(
                f"| {name} | {rr.seconds:.2f} | {cc.seconds:.2f} | {mbs(nbytes, rr)} | {mbs(nbytes, cc)} | "
                f"{cc.seconds / rr.seconds:.2f} | {rr.max_rss_kib / 1024:.0f} | {cc.max_rss_kib / 1024:.0f} |"
            )
    else:
        lines = [f"{title}, {args.repeat} runs (tools alternated within each row)", "",
                 *median_table(runs, lambda r, c: c.seconds / r.seconds, "coffer/restic time")]
    rsize, csize = sizes[-1]
    lines += ["", f"Repository size: restic {rsize / 2**20:.0f} MiB, coffer {csize / 2**20:.0f} MiB."]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.record:
        doc = ROOT / "docs" / "benchmarks.md"
        with open(doc, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    if not args.keep:
        shutil.rmtree(corpus, ignore_errors=True)
    for p in [mutated, *repos.values(), *targets.values()]:
        shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
