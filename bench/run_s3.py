#!/usr/bin/env python3
"""coffer vs restic against the same local S3 server (moto, loopback), in one run.

Starts ``moto_server`` on a free loopback port, builds the corpus with the shared generator, then
runs restic and coffer alternately into two buckets of that one server: init, first backup,
no-change backup, full restore. Prints wall time, MB/s and the ratios, and with --record appends a
table to the "S3 (moto, loopback)" section of docs/benchmarks.md.

The server is part of what is measured: moto is a Python process on the same two cores, so both
tools pay for it alike. The interesting number is the ratio, not the absolute MB/s.

    .venv/bin/python bench/run_s3.py --size 512M [--repeat 5] [--work /var/tmp/coffer-bench-s3] [--record]

With ``--repeat N`` the sequence runs N times, each against a freshly started server, and the
table gives each row's median times and median ratio with every run's ratio beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MKDATA_DEFAULT, PASSWORD, ROOT, Measure, Rows, du, median_table, run, warm

SECTION = "## S3 (moto, loopback)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_moto(bindir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    exe = bindir / "moto_server"
    p = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
            return p, url
        except OSError:
            time.sleep(0.05)
    p.kill()
    sys.exit("moto_server did not start")


def _insert_run(body: str, text: str) -> str:
    """Put a new run at the end of the S3 section, before whatever section follows it."""
    lines = body.split("\n")
    start = lines.index(SECTION)
    end = len(lines)
    for i in range(start + 1, len(lines)):
        ln = lines[i]
        if ln.startswith("## ") or (ln.startswith("### ") and not ln.startswith("### Run")):
            end = i
            break
    head = "\n".join(lines[:end]).rstrip("\n")
    tail = "\n".join(lines[end:])
    return head + "\n\n" + text + ("\n" + tail if tail.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512M")
    ap.add_argument("--work", default="/var/tmp/coffer-bench-s3")
    ap.add_argument("--mkdata", default=str(MKDATA_DEFAULT))
    ap.add_argument("--restic", default=shutil.which("restic") or "restic")
    ap.add_argument("--coffer", default=str(Path(sys.executable).parent / "coffer"))
    ap.add_argument("--repeat", type=int, default=1, help="run the sequence N times (a fresh server each); medians")
    ap.add_argument("--record", action="store_true", help="append the results to docs/benchmarks.md")
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = work / "corpus"
    print(f"building corpus {corpus} ({args.size}) ...", flush=True)
    subprocess.run([sys.executable, args.mkdata, str(corpus), "--size", args.size, "--seed", "1"], check=True,
                   stdout=subprocess.DEVNULL)
    size = du(corpus)
    tools = {"restic": args.restic, "coffer": args.coffer}
    targets = {t: work / f"restore-{t}" for t in tools}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_", "AWS_"))}
    base_env.pop("PYTHONDONTWRITEBYTECODE", None)  # coffer runs with its bytecode cached, as installed
    base_env.update({"RESTIC_PASSWORD": PASSWORD, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                     "AWS_DEFAULT_REGION": "us-east-1", "RESTIC_CACHE_DIR": str(work / "restic-cache"),
                     "COFFER_CACHE_DIR": str(work / "coffer-cache")})

    def one_run() -> Rows:
        for p in [*targets.values(), work / "restic-cache", work / "coffer-cache"]:
            shutil.rmtree(p, ignore_errors=True)
        moto, endpoint = start_moto(Path(sys.executable).parent)
        rows: Rows = []
        try:
            def env(tool: str) -> dict[str, str]:
                return {**base_env, "RESTIC_REPOSITORY": f"s3:{endpoint}/bench-{tool}/repo"}

            def row(name: str, nbytes: int, argv: list[str], cwd: Path | None = None) -> None:
                res: dict[str, Measure] = {}
                for tool in ("restic", "coffer"):
                    a = [a.replace("{tool}", tool) for a in argv]
                    res[tool] = run([tools[tool], *a], env(tool), cwd)
                rows.append((name, nbytes, res))
                r, c = res["restic"], res["coffer"]
                print(f"{name:20s} restic {r.seconds:7.2f}s | coffer {c.seconds:7.2f}s | "
                      f"throughput ratio coffer/restic {r.seconds / c.seconds:5.2f}", flush=True)

            warm(corpus)
            row("init", 0, ["init"])
            row("first backup", size, ["backup", "-q", corpus.name], cwd=work)
            row("no-change backup", size, ["backup", "-q", corpus.name], cwd=work)
            row("restore (latest)", size, ["restore", "-q", "latest", "--target", str(work / "restore-{tool}")])
        finally:
            moto.terminate()
            moto.wait(10)
        return rows

    runs: list[Rows] = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"--- run {i + 1} of {args.repeat}", flush=True)
        runs.append(one_run())

    title = (f"### Run {time.strftime('%Y-%m-%d %H:%M')} — corpus {args.size} ({size / 2**20:.0f} MiB), moto_server "
             f"on loopback, {platform.machine()}, {os.cpu_count()} cores, 5 connections each (both defaults)")
    if args.repeat == 1:
        lines = [
            title, "",
            "| row | restic s | coffer s | restic MB/s | coffer MB/s | throughput ratio coffer/restic | "
            "restic RSS MiB | coffer RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, nbytes, res in runs[0]:
            rr, cc = res["restic"], res["coffer"]

            def mbs(m: Measure, nbytes: int = nbytes) -> str:
                return f"{nbytes / 1e6 / m.seconds:.0f}" if nbytes else ""

            lines.append(f"| {name} | {rr.seconds:.2f} | {cc.seconds:.2f} | {mbs(rr)} | {mbs(cc)} | "
                         f"{rr.seconds / cc.seconds:.2f} | {rr.max_rss_kib / 1024:.0f} | {cc.max_rss_kib / 1024:.0f} |")
    else:
        lines = [f"{title}, {args.repeat} runs, a fresh server each", "",
                 *median_table(runs, lambda r, c: r.seconds / c.seconds, "throughput ratio coffer/restic")]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.record:
        doc = ROOT / "docs" / "benchmarks.md"
        body = doc.read_text(encoding="utf-8")
        if SECTION not in body:
            body = body.rstrip("\n") + f"\n\n{SECTION}\n\nReproduce: `.venv/bin/python bench/run_s3.py --size 512M " \
                   "--record`. Throughput ratio = restic time / coffer time (above 1.0 means coffer is faster).\n"
        doc.write_text(_insert_run(body, text), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    for t in targets.values():
        shutil.rmtree(t, ignore_errors=True)


if __name__ == "__main__":
    main()
