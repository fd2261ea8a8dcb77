#!/usr/bin/env python3
"""WAL archiving speed: coffer wal-push / wal-fetch into a local repository (a benchmark, not a test).

Synthetic 16 MiB segments with valid headers (half random, half repetitive bytes: real WAL compresses
about 2:1) are pushed the way PostgreSQL's archiver does it: one process per segment, oldest
``archive_status/*.ready`` first, ``.ready`` renamed to ``.done`` on success.

    single    --batch 1: every segment is a full push (start, key, lock, pack+index+snapshot)
    batched   --batch 8: a push takes queued segments along; PostgreSQL's next calls only check them
    fetch     wal-fetch of every segment, without and with --prefetch into a spool directory

Prints per-segment latency (median, p95) and segments/s; --record appends a table to docs/benchmarks.md.

    .venv/bin/python bench/run_wal.py [--segments 24] [--work /var/tmp/coffer-walbench] [--record]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers.walseg import SEG, segment  # noqa: E402

PASSWORD = "bench-password"


def seg_name(i: int) -> str:
    return "%08X%08X%08X" % (1, 1 + i // 256, i % 256)


def make_segment(name: str, i: int) -> bytes:
    data = bytearray(segment(name))
    rnd = os.urandom(SEG // 2)
    data[4096: 4096 + len(rnd)] = rnd
    pattern = (b"INSERT INTO t VALUES (%d, 'row');" % i) * 8
    rest = SEG - 4096 - len(rnd)
    data[4096 + len(rnd):] = (pattern * (rest // len(pattern) + 1))[:rest]
    return bytes(data)


def env(repo: Path, cache: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
    e.update({"RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD": PASSWORD, "COFFER_CACHE_DIR": str(cache)})
    return e


def run(coffer: str, args: list[str], e: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([coffer, *args], env=e, capture_output=True)
    dt = time.perf_counter() - t0
    if r.returncode not in (0,):
        sys.exit(f"coffer {' '.join(args)} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-1500:]}")
    return dt


def archiver(coffer: str, wal: Path, e: dict[str, str], batch: int) -> list[float]:
    """PostgreSQL's loop: oldest .ready first, one process each, .done on success."""
    status = wal / "archive_status"
    lat = []
    while True:
        ready = sorted(p.name[:-6] for p in status.iterdir() if p.name.endswith(".ready"))
        if not ready:
            return lat
        n = ready[0]
        lat.append(run(coffer, ["wal-push", "--dataset", "bench", "--batch", str(batch), str(wal / n)], e))
        (status / f"{n}.ready").rename(status / f"{n}.done")


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=24)
    ap.add_argument("--work", default="/var/tmp/coffer-walbench")
    ap.add_argument("--coffer", default=str(Path(sys.executable).parent / "coffer"))
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    wal = work / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    names = [seg_name(i) for i in range(a.segments)]
    for i, n in enumerate(names):
        (wal / n).write_bytes(make_segment(n, i))
    startup = min(run(a.coffer, ["--version"], os.environ.copy()) for _ in range(3))
    rows = []
    results: dict[str, list[float]] = {}
    for label, batch in (("single", 1), ("batched", 8)):
        repo = work / f"repo-{label}"
        cache = work / f"cache-{label}"
        e = env(repo, cache)
        run(a.coffer, ["init"], e)
        for n in names:
            (wal / "archive_status" / f"{n}.ready").touch()
            (wal / "archive_status" / f"{n}.done").unlink(missing_ok=True)
        t0 = time.perf_counter()
        lat = archiver(a.coffer, wal, e, batch)
        total = time.perf_counter() - t0
        results[label] = lat
        rows.append((f"wal-push, {label} (--batch {batch})", len(lat), statistics.median(lat), pct(lat, 0.95),
                     len(names) / total, len(names) * SEG / total / 2**20))
    # fetch, from the batched repository
    e = env(work / "repo-batched", work / "cache-batched")
    out = work / "restored"
    out.mkdir()
    for label, extra in (("wal-fetch", []), ("wal-fetch --prefetch 8", ["--spool", str(work / "spool"),
                                                                         "--prefetch", "8"])):
        t0 = time.perf_counter()
        lat = [run(a.coffer, ["wal-fetch", "--dataset", "bench", *extra, n, str(out / n)], e) for n in names]
        total = time.perf_counter() - t0
        rows.append((label, len(lat), statistics.median(lat), pct(lat, 0.95), len(names) / total,
                     len(names) * SEG / total / 2**20))
    for n in names:
        if (out / n).read_bytes() != (wal / n).read_bytes():
            sys.exit(f"{n}: fetched bytes differ")
    hdr = "| operation | calls | median latency | p95 latency | segments/s | MiB/s |"
    lines = [hdr, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]:.3f} s | {r[3]:.3f} s | {r[4]:.2f} | {r[5]:.0f} |")
    table = "\n".join(lines)
    load = os.getloadavg()[0]
    print(table)
    print(f"\nprocess start of `coffer --version`: {startup:.3f} s; load average {load:.1f}; {a.segments} segments")
    if a.record:
        with open(ROOT / "docs" / "benchmarks.md", "a", encoding="utf-8") as f:
            f.write(f"\n### WAL archiving run ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
                    f"load average {load:.1f} during the run)\n\n{table}\n\n"
                    f"`coffer --version` alone takes {startup:.3f} s on this machine (interpreter start and imports "
                    f"are the floor of every call).\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
