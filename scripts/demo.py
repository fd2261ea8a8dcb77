#!/usr/bin/env python3
"""`make demo`: run a backup plan end to end on local repositories and show what it proved.

Generates sample data (an application tree, configuration files, logs), copies the example plan
``examples/demo.yaml`` next to it, and then does what an administrator's timers would do:

1. ``coffer plan check``  judges the plan itself (3-2-1, RPO feasibility, retention vs drills);
2. ``coffer plan init``   creates the three repositories: "nvme" (primary), "nfs", "offsite";
3. two weeks of history   backdated snapshots (``coffer backup --time``), so drills have old ones;
4. ``coffer run``         backs up every dataset, copies to the other repositories, applies retention;
5. ``coffer check --plan`` twice: each run reads half of every repository's packs, the ledger
   shows every pack read once;
6. ``coffer drill``       restores a random 7-21 day old snapshot into a sandbox, verifies every file,
   runs the plan's checks, judges the RTO;
7. ``coffer status``      the table a monitor reads (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN),
   then the drill report a person reads.

Everything runs in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

BIN = Path(sys.executable).parent
COFFER = str(BIN / "coffer")
ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "examples" / "demo.yaml"


def sh(*args: str, env: dict[str, str], cwd: Path, ok: tuple[int, ...] = (0,), show: bool = True) -> str:
    print(f"\n$ coffer {' '.join(args)}" if args and show else "", flush=True)
    r = subprocess.run([COFFER, *args], env=env, cwd=cwd, text=True, capture_output=True)
    out = (r.stdout + r.stderr).rstrip()
    if r.returncode not in ok:
        print(out)
        sys.exit(f"demo failed: coffer {' '.join(args)} exited {r.returncode}")
    if show and out:
        print(out)
    return r.stdout


def make_sample(data: Path, rnd: random.Random) -> None:
    words = ["alpha", "beta", "gamma", "delta", "backup", "restore", "proof", "coffer", "restic", "snapshot", "drill"]
    app = data / "app"
    for d in range(6):
        sub = app / f"module{d}"
        sub.mkdir(parents=True)
        for f in range(30):
            (sub / f"file{f}.txt").write_text(" ".join(rnd.choice(words) for _ in range(rnd.randint(50, 3000))))
    (app / "media").mkdir()
    (app / "media" / "logo.raw").write_bytes(rnd.randbytes(4 * 1024 * 1024))
    (app / "etc").mkdir()
    (app / "etc" / "app.conf").write_text("listen = 0.0.0.0:8080\nworkers = 4\n")
    (app / "scratch.tmp").write_text("excluded by the plan\n")
    etc = data / "etc"
    etc.mkdir()
    for name in ("hostname", "hosts", "resolv.conf", "fstab"):
        (etc / name).write_text(f"# {name}\n" + "".join(f"line {i}\n" for i in range(rnd.randint(3, 30))))
    logs = data / "logs"
    logs.mkdir()
    for day in range(5):
        (logs / f"app-{day}.log").write_text("".join(
            f"2025-01-0{day + 1} 12:00:{i % 60:02d} INFO request {i} {rnd.choice(words)}\n" for i in range(8000)))


def touch_history(data: Path, rnd: random.Random, step: int) -> None:
    """What changes between two days: a few edited files, a new log."""
    for d in range(6):
        f = data / "app" / f"module{d}" / f"file{rnd.randrange(30)}.txt"
        f.write_text(f.read_text() + f"\nedit {step}\n")
    (data / "logs" / f"app-h{step}.log").write_text(f"history step {step}\n" * 500)


def main() -> None:
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="coffer-demo-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
    env["COFFER_DEMO_PASSWORD"] = "demo-password"
    env["XDG_CACHE_HOME"] = str(work / "cache")
    rnd = random.Random(42)
    try:
        data = work / "data"
        make_sample(data, rnd)
        shutil.copy(PLAN, work / "plan.yaml")
        nfiles = sum(len(f) for _, _, f in os.walk(data))
        print(f"sample data: {nfiles} files under {data}")
        print(f"plan: {PLAN.relative_to(ROOT)} (copied to {work / 'plan.yaml'})")
        plan = ["--plan", "plan.yaml"]

        print("\n== 1. the plan is judged before it runs")
        sh("plan", "check", "plan.yaml", env=env, cwd=work, ok=(0, 1))
        print("\n== 2. its three repositories are created")
        sh("plan", "init", "plan.yaml", env=env, cwd=work)

        print("\n== 3. two weeks of history (backdated snapshots, as if the plan had been running)")
        now = datetime.now()
        for step, days in enumerate((16, 12, 9, 5, 2)):
            touch_history(data, rnd, step)
            when = (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")
            for ds, repo in (("app", "nvme"), ("etc", "nvme"), ("logs", "nfs")):
                sh("-r", str(work / "repos" / repo), "backup", "-q", "--host", "demo-host", "--tag", f"dataset={ds}",
                   "--time", when, "--exclude", "*.tmp", str(data / ds),
                   env=dict(env, COFFER_PASSWORD="demo-password"), cwd=work, show=False)
            print(f"  {when}: app, etc and logs backed up")

        print("\n== 4. the plan runs: backup, copies to the other repositories, retention")
        sh("run", *plan, env=env, cwd=work)

        print("\n== 5. integrity checks: half of every repository's packs per run, a ledger of what was read")
        sh("check", *plan, env=env, cwd=work)
        sh("check", *plan, env=env, cwd=work)

        print("\n== 6. restore drills: an older snapshot restored into a sandbox, verified and timed")
        for ds in ("app", "etc", "logs"):
            sh("drill", ds, *plan, env=env, cwd=work)

        print("\n== 7. status, as a monitor sees it (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)")
        sh("status", *plan, env=env, cwd=work)
        print("\n== the drill report, as a person reads it")
        sh("report", "drills", *plan, env=env, cwd=work)
        print(f"demo finished in {time.monotonic() - t_start:.0f} s; scratch space {work} removed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
