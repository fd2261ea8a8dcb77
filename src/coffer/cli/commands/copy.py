"""coffer copy: copy snapshots from another repository (--from-repo) into this one (-r).

Output follows restic 0.14 line for line, so scripts that parse restic's copy output keep working.
"""

from __future__ import annotations

import time

import click

from coffer.actions.copy import run_copy
from coffer.actions.session import RepoAccess
from coffer.cli.commands.snapshots import filter_options
from coffer.cli.globals import GlobalOptions, env, read_password_file, run_password_command
from coffer.cli.output import Printer
from coffer.engine import snapshots as snapsel
from coffer.errors import UsageError
from coffer.store.format.snapshot import Snapshot
from coffer.store.maintenance.copy import CopyStats
from coffer.util import gotime


def go_time_string(s: str) -> str:
    """Go's ``time.Time.String()`` of a stored snapshot time: ``2022-01-05 10:00:00 +0000 UTC``."""
    t = gotime.parse(s)
    sec, frac = divmod(t.ns, gotime.NS)
    tm = time.gmtime(sec + t.offset)
    out = time.strftime("%Y-%m-%d %H:%M:%S", tm)
    if frac:
        out += ("." + "%09d" % frac).rstrip("0")
    sign = "+" if t.offset >= 0 else "-"
    h, m = divmod(abs(t.offset) // 60, 60)
    off = f"{sign}{h:02d}{m:02d}"
    if t.offset == 0:
        return f"{out} {off} UTC"
    local = time.localtime(sec)
    zone = local.tm_zone if local.tm_gmtoff == t.offset and local.tm_zone else off
    return f"{out} {off} {zone}"


def _duration(sec: float) -> str:
    s = int(sec)
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class _TextReporter:
    def __init__(self, p: Printer) -> None:
        self.p = p

    def snapshot(self, s: Snapshot) -> None:
        self.p.print()
        self.p.print(f"snapshot {s.id.hex()[:8]} of [{' '.join(s.paths)}] at {go_time_string(s.time)})")

    def skipped(self, s: Snapshot, existing: Snapshot) -> None:
        self.p.print(f"skipping source snapshot {s.id.hex()[:8]}, was already copied to snapshot "
                     f"{existing.id.hex()[:8]}")

    def started(self, s: Snapshot) -> None:
        self.p.print("  copy started, this may take a while...")

    def progress(self, stats: CopyStats, elapsed: float) -> None:
        pass  # restic prints the counter once at the end when stdout is not a terminal

    def saved(self, s: Snapshot, new: Snapshot, stats: CopyStats, elapsed: float) -> None:
        d = _duration(elapsed)
        if stats.packs_total:
            pct = 100.0 * stats.packs_done / stats.packs_total
            self.p.print(f"[{d}] {pct:3.2f}%  {stats.packs_done} / {stats.packs_total} packs copied")
        else:
            self.p.print(f"[{d}]          {stats.packs_done} packs copied")
        self.p.print()
        self.p.print(f"snapshot {new.id.hex()[:8]} saved")

    def warn(self, text: str) -> None:
        self.p.warn(text)


def source_password(password_file: str, password_command: str) -> str:
    if password_file and password_command:
        raise UsageError("--from-password-file and --from-password-command are mutually exclusive")
    cmd = password_command or ("" if password_file else env("FROM_PASSWORD_COMMAND"))
    if cmd:
        return run_password_command(cmd)
    pf = password_file or env("FROM_PASSWORD_FILE")
    if pf:
        return read_password_file(pf)
    pw = env("FROM_PASSWORD")
    if pw:
        return pw
    import getpass
    import sys

    if sys.stdin.isatty():
        pw = getpass.getpass("enter password for source repository: ")
        if pw:
            return pw
    raise UsageError("no password for the source repository",
                     hint="use --from-password-file, --from-password-command or COFFER_FROM_PASSWORD")


def source_repository(from_repo: str, from_repository_file: str) -> str:
    if from_repo:
        return from_repo
    rf = from_repository_file or env("FROM_REPOSITORY_FILE")
    if rf and not env("FROM_REPOSITORY"):
        try:
            with open(rf, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as e:
            raise UsageError(f"cannot read repository file {rf}: {e.strerror}") from None
    r = env("FROM_REPOSITORY")
    if not r:
        raise UsageError("Please specify a source repository location (--from-repo or --from-repository-file)")
    return r


@click.command("copy")
@click.option("--from-repo", default="", help="source repository to copy snapshots from (env: COFFER_FROM_REPOSITORY)")
@click.option("--from-repository-file", default="", help="file from which to read the source repository location")
@click.option("--from-password-file", default="", help="file to read the source repository password from")
@click.option("--from-password-command", default="", help="shell command to obtain the source repository password")
@click.option("--from-key-hint", default="", help="key ID of key to try decrypting the source repository first")
@filter_options
@click.argument("snapshot_ids", nargs=-1)
@click.pass_obj
def command(g: GlobalOptions, from_repo: str, from_repository_file: str, from_password_file: str,
            from_password_command: str, from_key_hint: str, hosts: tuple[str, ...], tags: tuple[str, ...],
            paths: tuple[str, ...], snapshot_ids: tuple[str, ...]) -> int:
    """Copy snapshots from one repository to another.

    Snapshots the destination already has (matched by their original ID) are skipped, so running
    copy again, or after an interruption, only copies what is missing.
    """
    src_url = source_repository(from_repo, from_repository_file)
    dest = g.access()
    pw_cache: list[str] = []

    def src_pw() -> str:
        if not pw_cache:
            pw_cache.append(source_password(from_password_file, from_password_command))
        return pw_cache[0]

    source = RepoAccess(url=src_url, password=src_pw, options=dict(dest.options), no_lock=True,
                        key_hint=from_key_hint or env("FROM_KEY_HINT") or None, warn=g.printer.warn)
    flt = snapsel.SnapshotFilter.build(hosts, tags, paths)
    run_copy(source, dest, _TextReporter(g.printer), snapshot_ids=snapshot_ids, flt=flt)
    return 0
