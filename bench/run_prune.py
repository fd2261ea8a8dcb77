#!/usr/bin/env python3
"""prune: coffer vs restic on the benchmark corpus after forgetting half the snapshots (a benchmark, not a test).

Builds the corpus with the shared generator, then gives restic and coffer one repository each and the
same history: six backups with a 5 % mutation (``mkdata.py --mutate 5``) between them. Both forget
every other snapshot (1st, 3rd, 5th) and prune with default options; the rows are the forget, a
``prune --dry-run`` (the planning alone) and the real prune. Prints wall time, peak RSS and the
coffer/restic ratio, the repository sizes before and after, and, with --record, appends a
"prune" section to docs/benchmarks.md. The coffer repository is verified with ``restic check``
afterwards (``--read-data`` with --verify).

    .venv/bin/python bench/run_prune.py --size 1G [--work /var/tmp/coffer-bench] [--record] [--verify]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MKDATA_DEFAULT, PASSWORD, ROOT, Measure, du, ensure_corpus, run, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--work", default="/var/tmp/coffer-bench")
    ap.add_argument("--mkdata", default=str(MKDATA_DEFAULT))
    ap.add_argument("--restic", default=shutil.which("restic") or "restic")
    ap.add_argument("--coffer", default=str(Path(sys.executable).parent / "coffer"))
    ap.add_argument("--snapshots", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="keep the corpus for the next run")
    ap.add_argument("--record", action="store_true", help="append the results to docs/benchmarks.md")
    ap.add_argument("--verify", action="store_true", help="restic check --read-data of coffer's repository after")
    args = ap.parse_args()

    work = Path(args.work)
    corpus = ensure_corpus(work, args.size, args.mkdata, args.keep)
    data = work / "prune-data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(corpus, data, symlinks=True)
    tools = {"restic": args.restic, "coffer": args.coffer}
    repos = {t: work / f"prune-repo-{t}" for t in tools}
    for p in repos.values():
        shutil.rmtree(p, ignore_errors=True)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
    base_env["RESTIC_PASSWORD"] = PASSWORD
    base_env["RESTIC_CACHE_DIR"] = str(work / "restic-cache")
    shutil.rmtree(work / "restic-cache", ignore_errors=True)

    def env(tool: str) -> dict[str, str]:
        e = dict(base_env)
        e["RESTIC_REPOSITORY"] = str(repos[tool])
        return e

    def quiet(tool: str, *argv: str) -> bytes:
        r = subprocess.run([tools[tool], *argv], env=env(tool), cwd=work, capture_output=True)
        if r.returncode != 0:
            sys.exit(f"{tool} {' '.join(argv)} failed: {r.stderr.decode(errors='replace')[-2000:]}")
        return r.stdout

    for t in tools:
        quiet(t, "init")
    print(f"making {args.snapshots} snapshots with 5% mutations in between ...", flush=True)
    for i in range(args.snapshots):
        if i:
            subprocess.run([sys.executable, args.mkdata, str(data), "--mutate", "5", "--seed", str(100 + i)],
                           check=True, stdout=subprocess.DEVNULL)
        warm(data)
        for t in tools:
            quiet(t, "backup", "-q", data.name)
        print(f"  snapshot {i + 1}: restic {du(repos['restic']) / 2**20:.0f} MiB, "
              f"coffer {du(repos['coffer']) / 2**20:.0f} MiB", flush=True)

    rows: list[tuple[str, dict[str, Measure]]] = []
    sizes: dict[str, dict[str, int]] = {t: {"before": du(repos[t])} for t in tools}

    def row(name: str, argv_for: dict[str, list[str]]) -> None:
        res: dict[str, Measure] = {}
        for tool in ("restic", "coffer"):
            res[tool] = run([tools[tool], *argv_for[tool]], env(tool), work)
        rows.append((name, res))
        r, c = res["restic"], res["coffer"]
        print(f"{name:24s} restic {r.seconds:7.2f}s {r.max_rss_kib / 1024:6.0f} MiB | coffer {c.seconds:7.2f}s "
              f"{c.max_rss_kib / 1024:6.0f} MiB | time ratio {c.seconds / r.seconds:5.2f}", flush=True)

    forget: dict[str, list[str]] = {}
    for t in tools:
        snaps = sorted(json.loads(quiet(t, "snapshots", "--json")), key=lambda s: s["time"])
        forget[t] = ["forget", *[s["id"] for s in snaps[0::2]]]
    row("forget (3 of 6 snapshots)", forget)
    row("prune --dry-run", {t: ["prune", "--dry-run"] for t in tools})
    row("prune", {t: ["prune"] for t in tools})
    for t in tools:
        sizes[t]["after"] = du(repos[t])
    if args.verify:
        subprocess.run([args.restic, "check", "--read-data"], env=env("coffer"), check=True)
    else:
        subprocess.run([args.restic, "check"], env=env("coffer"), check=True, stdout=subprocess.DEVNULL)

    mib = 2**20
    lines = [
        f"### Run {time.strftime('%Y-%m-%d %H:%M')} — corpus {args.size} ({du(corpus) / mib:.0f} MiB), "
        f"{args.snapshots} snapshots with 5% mutations, every other one forgotten; {platform.machine()}, "
        f"{os.cpu_count()} cores",
        "",
        "| row | restic s | coffer s | coffer/restic time | restic RSS MiB | coffer RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, res in rows:
        rr, cc = res["restic"], res["coffer"]
        lines.append(f"| {name} | {rr.seconds:.2f} | {cc.seconds:.2f} | {cc.seconds / rr.seconds:.2f} | "
                     f"{rr.max_rss_kib / 1024:.0f} | {cc.max_rss_kib / 1024:.0f} |")
    lines.append("")
    lines.append(
        "Repository size before → after prune: restic "
        f"{sizes['restic']['before'] / mib:.0f} → {sizes['restic']['after'] / mib:.0f} MiB, coffer "
        f"{sizes['coffer']['before'] / mib:.0f} → {sizes['coffer']['after'] / mib:.0f} MiB "
        f"(`restic check{' --read-data' if args.verify else ''}` of coffer's repository afterwards: no errors)."
    )
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.record:
        doc = ROOT / "docs" / "benchmarks.md"
        existing = doc.read_text(encoding="utf-8") if doc.exists() else ""
        with open(doc, "a", encoding="utf-8") as f:
            if "\n## prune\n" not in existing:
                f.write(
                    "\n## prune\n\nReproduce: `.venv/bin/python bench/run_prune.py --size 1G --record`. Both tools "
                    "get the same history in their own repository (six backups of the corpus, `mkdata.py --mutate "
                    "5` between them), forget the 1st, 3rd and 5th snapshot, then prune with default options "
                    "(`--max-unused 5%`). The dry-run row is the planning alone: loading snapshots, index and "
                    "trees, and deciding per pack.\n"
                )
            f.write("\n" + text)
    if not args.keep:
        shutil.rmtree(corpus, ignore_errors=True)
    for p in [data, *repos.values()]:
        shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
