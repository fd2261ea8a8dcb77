"""The copy use case: open the source read-only and the destination locked, pick the snapshots,
copy the ones the destination lacks, and tell the front-end what happened as it happens."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from coffer.actions.session import RepoAccess, open_repo
from coffer.engine import snapshots as snapsel
from coffer.errors import UsageError
from coffer.store.format.snapshot import Snapshot
from coffer.store.maintenance.copy import CopyStats, copy_snapshot, find_copied


class CopyReporter(Protocol):
    def snapshot(self, s: Snapshot) -> None: ...
    def skipped(self, s: Snapshot, existing: Snapshot) -> None: ...
    def started(self, s: Snapshot) -> None: ...
    def progress(self, stats: CopyStats, elapsed: float) -> None: ...
    def saved(self, s: Snapshot, new: Snapshot, stats: CopyStats, elapsed: float) -> None: ...
    def warn(self, text: str) -> None: ...


@dataclass
class CopySummary:
    copied: list[tuple[Snapshot, Snapshot]] = field(default_factory=list)  # (source, new destination)
    skipped: list[tuple[Snapshot, Snapshot]] = field(default_factory=list)  # (source, existing copy)
    stats: CopyStats = field(default_factory=CopyStats)


def run_copy(
    source: RepoAccess, dest: RepoAccess, reporter: CopyReporter, *,
    snapshot_ids: Sequence[str] = (), flt: snapsel.SnapshotFilter | None = None,
) -> CopySummary:
    if _same_place(source.url, dest.url):
        raise UsageError("source and destination repository are the same", hint="give another --from-repo or -r")
    flt = flt or snapsel.SnapshotFilter()
    summary = CopySummary()
    src_access = replace(source, read_only=True)  # never writes to the source: not even a lock file
    with open_repo(src_access, "none") as src, open_repo(dest, "shared") as dst:
        def bad(where: str) -> Callable[[bytes, Exception], None]:
            return lambda sid, e: reporter.warn(f"{where}: could not load snapshot {sid.hex()[:8]}: {e}")

        # read order: snapshots, then indexes
        src_snaps = src.list_snapshots(on_error=bad("source"))
        dst_snaps = dst.list_snapshots(on_error=bad("destination"))
        if snapshot_ids:
            chosen: list[Snapshot] = []
            for spec in snapshot_ids:
                s = snapsel.find(src_snaps, spec, flt)
                if s not in chosen:
                    chosen.append(s)
        else:
            chosen = snapsel.select(src_snaps, flt)
        if not chosen:
            return summary
        src.load_index()
        dst.load_index()
        for s in chosen:
            reporter.snapshot(s)
            existing = find_copied(s, dst_snaps)
            if existing is not None:
                reporter.skipped(s, existing)
                summary.skipped.append((s, existing))
                continue
            reporter.started(s)
            t0 = time.monotonic()

            def progress(st: CopyStats, t0: float = t0) -> None:
                reporter.progress(st, time.monotonic() - t0)

            new, stats = copy_snapshot(src, dst, s, on_progress=progress)
            reporter.saved(s, new, stats, time.monotonic() - t0)
            dst_snaps.append(new)
            summary.copied.append((s, new))
            for k in ("packs_total", "packs_done", "trees_copied", "data_copied", "bytes_copied"):
                setattr(summary.stats, k, getattr(summary.stats, k) + getattr(stats, k))
    return summary


def _same_place(a: str, b: str) -> bool:
    import os

    def norm(u: str) -> str:
        if ":" in u.split("/", 1)[0] and not u.startswith("local:"):
            return u.rstrip("/")
        return os.path.realpath(u.removeprefix("local:"))

    return norm(a) == norm(b)
