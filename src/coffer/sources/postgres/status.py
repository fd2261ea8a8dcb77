"""WAL archiving against the RPO: what the repository holds and what ``pg_stat_archiver`` says.

For ``coffer status``: a ``postgres-wal`` dataset's recovery point is its newest archived WAL, not its
newest base backup. :func:`archive_lag` needs only the snapshots a status run already listed
(``Snapshot`` objects or the WAL catalog's ``SnapMeta``; anything with ``tags``, ``paths`` and
``time_ns``), plus, optionally, a connection to ask the server about failed pushes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coffer.errors import SourceError
from coffer.sources.postgres.conn import PgConn, psql
from coffer.sources.postgres.wal import SEGMENT_RE, TAG_WAL, position_key, wal_dataset_tag
from coffer.util import gotime


@dataclass(frozen=True)
class ArchiverStats:
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: str | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: str | None
    seconds_since_archived: float | None

    @property
    def failing(self) -> bool:
        """The most recent attempt failed (a failure newer than the last success)."""
        if not self.failed_count or self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


def archiver_stats(conn: PgConn) -> ArchiverStats:
    out = psql(conn, "SELECT archived_count, coalesce(last_archived_wal,''), "
                     "coalesce(to_char(last_archived_time AT TIME ZONE 'UTC','YYYY-MM-DD\"T\"HH24:MI:SS.US'),''), "
                     "failed_count, coalesce(last_failed_wal,''), "
                     "coalesce(to_char(last_failed_time AT TIME ZONE 'UTC','YYYY-MM-DD\"T\"HH24:MI:SS.US'),''), "
                     "coalesce(extract(epoch FROM now() - last_archived_time)::text,'') FROM pg_stat_archiver")
    f = out.split("|")
    return ArchiverStats(int(f[0]), f[1] or None, f[2] or None, int(f[3]), f[4] or None, f[5] or None,
                         float(f[6]) if f[6] else None)


@dataclass
class ArchiveLag:
    """Where WAL archiving stands against the RPO."""

    dataset: str
    newest_segment: str | None = None
    newest_pushed_ns: int | None = None  # when the newest WAL snapshot was written
    age_seconds: float | None = None
    failed_count: int | None = None  # from pg_stat_archiver, when the server was asked
    last_failed_wal: str | None = None
    last_failed_time: str | None = None
    last_archived_wal: str | None = None
    pending: int | None = None  # segments waiting in archive_status (when the data directory is readable)
    problems: list[str] = field(default_factory=list)

    def within(self, rpo_seconds: float) -> bool:
        """Inside the RPO: nothing failing, and the newest archived WAL is recent enough or nothing
        complete is waiting (an idle server; its open segment is bounded by archive_timeout)."""
        if self.problems or self.age_seconds is None:
            return False
        return self.age_seconds <= rpo_seconds or self.pending == 0


def archive_lag(snapshots: Iterable[Any] | None, dataset: str, *, conn: PgConn | None = None,
                data_dir: str | None = None, rpo_seconds: float | None = None,
                now_ns: int | None = None) -> ArchiveLag:
    now = gotime.now_ns() if now_ns is None else now_ns
    out = ArchiveLag(dataset)
    if snapshots is not None:
        tag = wal_dataset_tag(dataset)
        wal = [s for s in snapshots if TAG_WAL in s.tags and tag in s.tags]
        segs = [p.lstrip("/") for s in wal for p in s.paths if SEGMENT_RE.match(p.lstrip("/"))]
        out.newest_segment = max(segs, key=lambda n: (position_key(n), n)) if segs else None
        if wal:
            out.newest_pushed_ns = max(s.time_ns for s in wal)
            out.age_seconds = (now - out.newest_pushed_ns) / 1e9
        else:
            out.problems.append(f"no WAL archived for dataset {dataset!r}")
    if conn is not None:
        try:
            st = archiver_stats(conn)
        except SourceError as e:
            out.problems.append(f"cannot read pg_stat_archiver: {e}")
        else:
            out.failed_count = st.failed_count
            out.last_failed_wal, out.last_failed_time = st.last_failed_wal, st.last_failed_time
            out.last_archived_wal = st.last_archived_wal
            if st.failing:
                out.problems.append(f"archive_command is failing: {st.failed_count} failure(s), last for "
                                    f"{st.last_failed_wal} at {st.last_failed_time}")
    if data_dir is not None:
        with contextlib.suppress(OSError):
            out.pending = sum(1 for n in os.listdir(os.path.join(data_dir, "pg_wal", "archive_status"))
                              if n.endswith(".ready"))
    if rpo_seconds is not None and out.age_seconds is not None and out.age_seconds > rpo_seconds \
            and (out.pending is None or out.pending > 0):
        out.problems.append(f"newest archived WAL is {out.age_seconds:.0f}s old (RPO {rpo_seconds:.0f}s)")
    return out
