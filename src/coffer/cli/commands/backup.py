"""coffer backup: save files, directories or a stream as a new snapshot."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
from typing import Any, BinaryIO

import click

from coffer.actions.backup import BackupPlan, BackupPrep, run_backup
from coffer.actions.session import open_repo
from coffer.cli.globals import GlobalOptions
from coffer.cli.output import ProgressReporter, format_bytes, format_duration
from coffer.engine.backup import BackupRequest, BackupResult, StreamInput
from coffer.engine.excludes import ExcludeRules
from coffer.engine.progress import Progress, ProgressState, Warning_
from coffer.errors import EXIT_PARTIAL, UsageError
from coffer.store.format.snapshot import Snapshot
from coffer.util import gotime


def _parse_time(s: str) -> int:
    """--time: "2006-01-02 15:04:05" in local time (restic's format), or RFC3339."""
    import time as _t

    try:
        return gotime.parse_ns(s)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return int(_t.mktime(_t.strptime(s, fmt))) * 1_000_000_000
        except ValueError:
            continue
    raise UsageError(f"invalid --time {s!r} (use \"2006-01-02 15:04:05\")")


def _status_json(st: ProgressState) -> dict[str, Any]:
    """restic's status line: field order fixed, zero values left out, percent_done always there."""
    pct = min(st.bytes_done / st.total_bytes, 1.0) if st.total_bytes else 0.0
    rate = st.bytes_done / st.elapsed if st.elapsed > 0 else 0
    remaining = int(max(0, st.total_bytes - st.bytes_done) / rate) if st.scan_finished and rate > 0 else 0
    d: dict[str, Any] = {"message_type": "status"}
    for k, v in (("seconds_elapsed", int(st.elapsed)), ("seconds_remaining", remaining)):
        if v:
            d[k] = v
    d["percent_done"] = int(pct) if pct in (0.0, 1.0) else pct
    for k, v in (("total_files", st.total_files), ("files_done", st.files_done), ("total_bytes", st.total_bytes),
                 ("bytes_done", st.bytes_done), ("error_count", st.errors)):
        if v:
            d[k] = v
    if st.current:
        d["current_files"] = st.current
    return d


@click.command("backup")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-e", "--exclude", "excludes", multiple=True, help="exclude a pattern (can be given multiple times)")
@click.option("--iexclude", "iexcludes", multiple=True, help="same as --exclude but ignores the case of paths")
@click.option("--exclude-file", "exclude_files", multiple=True, help="read exclude patterns from a file")
@click.option("--exclude-caches", is_flag=True, help="exclude directories containing a CACHEDIR.TAG file")
@click.option("-x", "--one-file-system", is_flag=True, help="exclude other file systems")
@click.option("--files-from", "files_from", multiple=True, help="read the files to back up from a file")
@click.option("--tag", "tags", multiple=True, help="add tags for the new snapshot (a,b or repeated)")
@click.option("-H", "--host", default="", help="set the hostname for the snapshot manually")
@click.option("--parent", default="", help="use this parent snapshot (default: latest for host and paths)")
@click.option("-f", "--force", is_flag=True, help="read all files, even unchanged ones")
@click.option("--time", "time_", default="", help="time of the backup (ex. '2012-11-01 22:08:41')")
@click.option("-n", "--dry-run", is_flag=True, help="do not upload or write any data, just show what would be done")
@click.option("--stdin", "use_stdin", is_flag=True, help="read backup from stdin")
@click.option("--stdin-filename", default="stdin", help="filename to use when reading from stdin")
@click.option("--read-concurrency", default=2, type=click.IntRange(1, 64), help="read N files concurrently")
@click.pass_obj
def command(g: GlobalOptions, paths: tuple[str, ...], excludes: tuple[str, ...], iexcludes: tuple[str, ...],
            exclude_files: tuple[str, ...], exclude_caches: bool, one_file_system: bool,
            files_from: tuple[str, ...], tags: tuple[str, ...], host: str, parent: str, force: bool,
            time_: str, dry_run: bool, use_stdin: bool, stdin_filename: str, read_concurrency: int) -> int:
    """Create a new backup of files and/or directories."""
    p = g.printer
    targets = list(paths)
    for ff in files_from:
        try:
            with open(ff, "rb") if ff != "-" else contextlib.nullcontext(sys.stdin.buffer) as f:
                for line in f.read().splitlines():
                    line = line.strip()
                    if line and not line.startswith(b"#"):
                        # each line is a glob pattern, as restic's --files-from reads it
                        pattern = os.fsdecode(line)
                        if not any(c in pattern for c in "*?["):
                            targets.append(pattern)
                            continue
                        # Go's filepath.Glob (restic) matches dot files too
                        found = sorted(glob.glob(pattern, include_hidden=True))
                        if not found:
                            p.warn(f"pattern {pattern!r} does not match any files, skipping")
                        targets.extend(found)
        except OSError as e:
            raise UsageError(f"cannot read --files-from {ff}: {e.strerror}") from None
    streams: list[StreamInput] = []
    if use_stdin:
        if targets:
            raise UsageError("--stdin was specified and files/dirs were listed as arguments")
        if "/" in stdin_filename or stdin_filename in ("", ".", ".."):
            raise UsageError(f"invalid --stdin-filename {stdin_filename!r}")
        stdin_reader: BinaryIO = sys.stdin.buffer
        streams.append(StreamInput(stdin_filename, lambda: _NoClose(stdin_reader),  # type: ignore[arg-type,return-value]
                                   allow_empty=False))
    elif not targets:
        raise UsageError("nothing to backup, please specify target files/dirs")
    else:
        for t in targets:
            if not os.path.lexists(t):
                raise UsageError(f"invalid target: {t} does not exist")
    req = BackupRequest(
        paths=targets, streams=streams, host=host,
        tags=[t for group in tags for t in group.split(",") if t],
        time_ns=_parse_time(time_) if time_ else None,
        excludes=ExcludeRules.build(excludes, iexcludes, exclude_files, exclude_caches=exclude_caches,
                                    one_file_system=one_file_system),
        read_concurrency=read_concurrency,
    )
    progress = Progress()
    if g.json:  # restic writes error lines to stderr, keeping stdout parseable
        progress.on_warning = lambda w: p.warn(json.dumps(_error_json(w)))
    else:
        progress.on_warning = lambda w: p.warn(f"error: {w.path}: {w.message}" if w.path else f"error: {w.message}")
    access = g.access()
    access.dry_run = dry_run

    def on_parent(snap: Snapshot | None) -> None:
        if streams:
            return
        msg = f"using parent snapshot {snap.id.hex()[:8]}" if snap else "no parent snapshot found, will read all files"
        p.print(msg)

    # Snapshots, index and the walk workers are read and forked during the lock's wait.
    with BackupPrep(req) as prep, open_repo(access, "shared", prep) as repo:
        p.verbose_print(1, f"repository {repo.config.id[:8]} opened (version {repo.version})")
        with ProgressReporter(p, progress, json_status=_status_json) as reporter:
            plan = BackupPlan(req, parent_spec=parent or None, force=force)
            result = run_backup(repo, plan, progress, on_parent, count_totals=reporter.enabled, prep=prep)
    _report(g, result, dry_run)
    return EXIT_PARTIAL if result.partial else 0


class _NoClose:
    """stdin is read by the engine, which closes what it opened; keep the real stdin open."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def readinto(self, b: Any) -> int:
        return self._f.readinto(b)  # type: ignore[attr-defined]

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        pass


def _error_json(w: Warning_) -> dict[str, Any]:
    return {"message_type": "error", "error": {"message": w.message}, "during": w.during, "item": w.path}


def _report(g: GlobalOptions, r: BackupResult, dry_run: bool) -> None:
    p = g.printer
    s = r.summary
    sid = r.snapshot.id.hex()
    if g.json:
        d: dict[str, Any] = {
            "message_type": "summary", "files_new": s.files_new, "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified, "dirs_new": s.dirs_new, "dirs_changed": s.dirs_changed,
            "dirs_unmodified": s.dirs_unmodified, "data_blobs": s.data_blobs, "tree_blobs": s.tree_blobs,
            "data_added": s.data_added, "total_files_processed": s.total_files_processed,
            "total_bytes_processed": s.total_bytes_processed, "total_duration": s.total_duration,
        }
        d["snapshot_id"] = sid[:8]
        if dry_run:
            d["dry_run"] = True
        p.json_line(d)
        return
    p.print()
    p.print(f"Files:       {s.files_new:5d} new, {s.files_changed:5d} changed, {s.files_unmodified:5d} unmodified")
    p.print(f"Dirs:        {s.dirs_new:5d} new, {s.dirs_changed:5d} changed, {s.dirs_unmodified:5d} unmodified")
    verb = "Would add" if dry_run else "Added"
    added, stored = format_bytes(s.data_added), format_bytes(s.data_added_packed)
    p.print(f"{verb} to the repository: {added:<5} ({stored:<5} stored)")
    p.print()
    p.print(f"processed {s.total_files_processed} files, {format_bytes(s.total_bytes_processed)} in "
            f"{format_duration(s.total_duration)}")
    if not dry_run:
        p.print(f"snapshot {sid[:8]} saved")
    if r.partial:
        p.warn("Warning: at least one source file could not be read")
