"""WAL retention: keep every WAL file a kept base backup needs, drop the WAL older than all of them.

A pure decision over snapshot metadata (no I/O; it lives with the WAL format it reads rather than in
``policy``, which sits below the sources), for ``coffer wal-expire`` and for the plan's
retention step of a ``postgres-wal`` dataset. How to combine it with keep rules:

1. apply the dataset's keep rules to its **base backups** only (snapshots tagged ``basebackup`` and
   ``dataset=<name>``; WAL snapshots carry ``wal-dataset=<name>`` instead, so a ``dataset=`` filter
   never touches them);
2. call :func:`expire` with the base backups that remain and the dataset's WAL snapshots;
3. forget the snapshots it returns in ``remove`` (then prune as usual).

The rule, per WAL snapshot (one or a few archived files each):

* it is removed only when **every** file in it is older than what the **oldest kept base backup**
  needs: segments (and ``.partial``/``.backup`` files) before that backup's start segment
  (tag ``pg-wal-start=``, taken just before the backup began, so it errs on the side of keeping);
* a base backup without that tag protects all WAL pushed after its snapshot time minus ``margin``;
* timeline history files (``*.history``) are tiny and needed to follow timelines: never removed;
* with no base backup at all nothing is removed (there is nothing to measure "older" against, and
  deleting a whole archive is never a side effect);
* only WAL of the same system identifier as a kept base backup is measured by that backup; WAL of a
  system no kept base backup belongs to is removed once it is older than the oldest kept backup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from coffer.sources.postgres.wal import (
    HISTORY_RE,
    SYSID_PREFIX,
    WAL_START_PREFIX,
    SnapMeta,
    position_key,
    tag_value,
)

DEFAULT_MARGIN_NS = 3600 * 10**9


@dataclass
class WalExpiry:
    keep: list[SnapMeta] = field(default_factory=list)
    remove: list[SnapMeta] = field(default_factory=list)
    reason: str = ""
    oldest_needed: dict[str, str] = field(default_factory=dict)  # sysid -> first needed WAL position


def expire(base_backups: Sequence[SnapMeta], wal: Sequence[SnapMeta], *,
           margin_ns: int = DEFAULT_MARGIN_NS) -> WalExpiry:
    out = WalExpiry()
    if not base_backups:
        out.keep = list(wal)
        out.reason = "no base backup is kept: all WAL stays"
        return out
    # per system: the oldest start position (exact when tagged) and the oldest time
    start_pos: dict[str, str] = {}
    start_time: dict[str, int] = {}
    untagged_time: dict[str, int] = {}
    for b in base_backups:
        sysid = tag_value(b.tags, SYSID_PREFIX) or ""
        start = tag_value(b.tags, WAL_START_PREFIX)
        start_time[sysid] = min(start_time.get(sysid, b.time_ns), b.time_ns)
        if start and len(start) == 24:
            pos = position_key(start)
            start_pos[sysid] = min(start_pos.get(sysid, pos), pos)
        else:
            untagged_time[sysid] = min(untagged_time.get(sysid, b.time_ns), b.time_ns)
    oldest_any = min(b.time_ns for b in base_backups)
    out.oldest_needed = dict(start_pos)

    def needed(s: SnapMeta) -> bool:
        names = [p.lstrip("/") for p in s.paths]
        if not names or any(HISTORY_RE.match(n) for n in names):
            return True
        sysid = tag_value(s.tags, SYSID_PREFIX) or ""
        if sysid not in start_time and "" not in start_time:
            # WAL of a system no kept base backup belongs to
            return s.time_ns >= oldest_any - margin_ns
        key = sysid if sysid in start_time else ""
        if key in untagged_time and s.time_ns >= untagged_time[key] - margin_ns:
            return True
        pos = start_pos.get(key)
        if pos is None:
            return s.time_ns >= start_time[key] - margin_ns
        return any(len(n) < 24 or position_key(n) >= pos for n in names)

    for s in sorted(wal, key=lambda x: (x.time_ns, x.id)):
        (out.keep if needed(s) else out.remove).append(s)
    out.reason = (f"{len(out.remove)} WAL snapshot(s) older than the oldest kept base backup; "
                  f"{len(out.keep)} kept")
    return out
