"""The catalog: coffer's own memory of what it did — runs, copies, forgets, checks, drills — and the
check coverage ledger.

The repositories are the truth about what is stored; the catalog is the truth about what was
*attempted* and *proved*: when a run started and how it ended, which packs a check has read and
when, what a drill measured. ``status`` combines both, and reports are written from the catalog.

SQLite through the standard library, in WAL mode with a busy timeout, so a `run`, a `check` and a
`drill` started by different timers can record at the same time. Every operation row is written
when the operation starts (result ``running``) and completed when it ends, so a crash leaves a
visible trace instead of silence.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from coffer.errors import CofferError
from coffer.state.migrations import all_migrations

RUNNING, OK, WARNING, FAILED = "running", "ok", "warning", "failed"
KINDS = ("run", "backup", "copy", "forget", "check", "drill")


class CatalogError(CofferError):
    """The catalog cannot be opened or is from a newer coffer."""


def _ts(t: datetime | float | None) -> float | None:
    if t is None:
        return None
    return t.timestamp() if isinstance(t, datetime) else float(t)


def _dt(v: float | None) -> datetime | None:
    return None if v is None else datetime.fromtimestamp(v, UTC)


@dataclass(frozen=True, slots=True)
class Operation:
    id: int
    kind: str
    dataset: str | None
    repository: str | None
    started: datetime
    finished: datetime | None
    result: str
    bytes: int = 0
    files: int = 0
    snapshot_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    parent_id: int | None = None

    @property
    def duration(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.finished else None


@dataclass(frozen=True, slots=True)
class DrillRecord:
    """Everything a drill measured (the columns of the ``drills`` table)."""

    dataset: str
    repository: str
    started: datetime
    ok: bool
    snapshot_id: str = ""
    snapshot_time: datetime | None = None
    snapshot_age: float | None = None  # seconds
    selection: str = ""  # how the snapshot was chosen ("random in 7d-21d", "oldest available: ...")
    bytes: int = 0
    files: int = 0
    restore_seconds: float = 0.0
    throughput: float = 0.0  # bytes/s
    ready_seconds: float = 0.0
    full_bytes: int = 0
    extrapolated_seconds: float = 0.0
    rto_seconds: float | None = None
    rto_met: bool | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)  # {"name", "ok", "detail"}
    issues: list[str] = field(default_factory=list)
    operation_id: int | None = None


@dataclass(frozen=True, slots=True)
class PackState:
    pack_id: str
    size: int
    first_seen: datetime
    last_read: datetime | None
    last_ok: bool | None


class Catalog:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._db = conn
        self.path = path

    # -------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str) -> Catalog:
        """Open (creating it and its directory if needed) and bring the schema up to date."""
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as e:
            raise CatalogError(f"cannot open catalog {path}: {e}") from None
        cat = cls(conn, path)
        cat._migrate()
        return cat

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        db = self._db
        try:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                       "name VARCHAR(64) NOT NULL, applied DOUBLE PRECISION NOT NULL)")
            migrations = all_migrations()
            current = self.schema_version()
            if current > len(migrations):
                raise CatalogError(f"catalog {self.path} has schema version {current}, newer than this coffer "
                                   f"understands ({len(migrations)})", hint="upgrade coffer")
            for m in migrations[current:]:
                with self._tx():
                    # Re-check inside the write transaction: another process may have migrated meanwhile.
                    if self.schema_version() >= m.version:
                        continue
                    for stmt in m.statements:
                        db.execute(stmt)
                    db.execute("INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                               (m.version, m.name, time.time()))
        except sqlite3.Error as e:
            raise CatalogError(f"cannot update catalog {self.path}: {e}") from None

    def schema_version(self) -> int:
        row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, *rest: object) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> Catalog._Tx:
        return Catalog._Tx(self._db)

    # -------------------------------------------------------------- operations
    def start(self, kind: str, *, dataset: str | None = None, repository: str | None = None,
              parent: int | None = None, started: datetime | None = None) -> int:
        if kind not in KINDS:
            raise ValueError(f"unknown operation kind {kind!r}")
        cur = self._db.execute(
            "INSERT INTO operations (parent_id, kind, dataset, repository, started, result) VALUES (?, ?, ?, ?, ?, ?)",
            (parent, kind, dataset, repository, _ts(started) or time.time(), RUNNING),
        )
        return int(cur.lastrowid or 0)

    def finish(self, op_id: int, result: str, *, bytes: int = 0, files: int = 0,
               snapshot_ids: Sequence[str] = (), errors: Sequence[str] = (),
               details: Mapping[str, Any] | None = None, finished: datetime | None = None) -> None:
        if result not in (OK, WARNING, FAILED):
            raise ValueError(f"unknown result {result!r}")
        self._db.execute(
            "UPDATE operations SET finished = ?, result = ?, bytes = ?, files = ?, snapshot_ids = ?, errors = ?, "
            "details = ? WHERE id = ?",
            (_ts(finished) or time.time(), result, int(bytes), int(files), json.dumps(list(snapshot_ids)),
             json.dumps(list(errors)), json.dumps(dict(details or {}), default=str), op_id),
        )

    def get(self, op_id: int) -> Operation:
        row = self._db.execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
        if row is None:
            raise KeyError(op_id)
        return _operation(row)

    def operations(self, kind: str | None = None, *, dataset: str | None = None, repository: str | None = None,
                   since: datetime | None = None, until: datetime | None = None,
                   parent: int | None = None) -> list[Operation]:
        """Operations matching every given filter, oldest first."""
        where: list[str] = []
        args: list[object] = []
        for col, val in (("kind", kind), ("dataset", dataset), ("repository", repository), ("parent_id", parent)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        _started_between(where, args, since, until)
        sql = "SELECT * FROM operations" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started, id"
        return [_operation(r) for r in self._db.execute(sql, args)]

    def last(self, kind: str, *, dataset: str | None = None, repository: str | None = None,
             finished_only: bool = True) -> Operation | None:
        where = ["kind = ?"]
        args: list[object] = [kind]
        for col, val in (("dataset", dataset), ("repository", repository)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if finished_only:
            where.append("result != ?")
            args.append(RUNNING)
        row = self._db.execute(
            "SELECT * FROM operations WHERE " + " AND ".join(where) + " ORDER BY started DESC, id DESC LIMIT 1", args
        ).fetchone()
        return _operation(row) if row else None

    # -------------------------------------------------------------- drills
    def record_drill(self, op_id: int, d: DrillRecord) -> None:
        self._db.execute(
            "INSERT INTO drills (operation_id, dataset, repository, started, ok, snapshot_id, snapshot_time, "
            "snapshot_age, selection, bytes, files, restore_seconds, throughput, ready_seconds, full_bytes, "
            "extrapolated_seconds, rto_seconds, rto_met, checks, issues) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (op_id, d.dataset, d.repository, _ts(d.started), int(d.ok), d.snapshot_id, _ts(d.snapshot_time),
             d.snapshot_age, d.selection, d.bytes, d.files, d.restore_seconds, d.throughput, d.ready_seconds,
             d.full_bytes, d.extrapolated_seconds, d.rto_seconds, None if d.rto_met is None else int(d.rto_met),
             json.dumps(d.checks), json.dumps(d.issues)),
        )

    def drills(self, dataset: str | None = None, *, since: datetime | None = None,
               until: datetime | None = None) -> list[DrillRecord]:
        where: list[str] = []
        args: list[object] = []
        if dataset is not None:
            where.append("dataset = ?")
            args.append(dataset)
        _started_between(where, args, since, until)
        sql = "SELECT * FROM drills" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started"
        return [_drill(r) for r in self._db.execute(sql, args)]

    def last_drill(self, dataset: str) -> DrillRecord | None:
        row = self._db.execute("SELECT * FROM drills WHERE dataset = ? ORDER BY started DESC LIMIT 1",
                               (dataset,)).fetchone()
        return _drill(row) if row else None

    # -------------------------------------------------------------- check coverage ledger
    def coverage(self, repository_id: str) -> dict[str, PackState]:
        rows = self._db.execute("SELECT * FROM pack_coverage WHERE repository_id = ?", (repository_id,))
        return {r["pack_id"]: PackState(r["pack_id"], r["size"], _dt(r["first_seen"]) or datetime.now(UTC),
                                        _dt(r["last_read"]), None if r["last_ok"] is None else bool(r["last_ok"]))
                for r in rows}

    def sync_packs(self, repository_id: str, packs: Mapping[str, int], now: datetime) -> None:
        """Make the ledger list exactly ``packs`` (pack ID -> size): new ones are added as first seen
        ``now`` and unread; packs no longer in the repository (pruned) are dropped."""
        with self._tx():
            known = {r[0] for r in self._db.execute(
                "SELECT pack_id FROM pack_coverage WHERE repository_id = ?", (repository_id,))}
            gone = known - set(packs)
            self._db.executemany("DELETE FROM pack_coverage WHERE repository_id = ? AND pack_id = ?",
                                 [(repository_id, p) for p in gone])
            self._db.executemany(
                "INSERT INTO pack_coverage (repository_id, pack_id, size, first_seen) VALUES (?, ?, ?, ?)",
                [(repository_id, p, s, _ts(now)) for p, s in packs.items() if p not in known],
            )

    def mark_read(self, repository_id: str, results: Mapping[str, bool], now: datetime) -> None:
        """Record that these packs were read in full just now, and whether each verified."""
        with self._tx():
            self._db.executemany(
                "UPDATE pack_coverage SET last_read = ?, last_ok = ? WHERE repository_id = ? AND pack_id = ?",
                [(_ts(now), int(ok), repository_id, p) for p, ok in results.items()],
            )

    def iter_tables(self) -> Iterator[str]:
        for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            yield r[0]


def _operation(r: sqlite3.Row) -> Operation:
    return Operation(
        id=r["id"], kind=r["kind"], dataset=r["dataset"], repository=r["repository"],
        started=_dt(r["started"]) or datetime.now(UTC), finished=_dt(r["finished"]), result=r["result"],
        bytes=r["bytes"], files=r["files"], snapshot_ids=json.loads(r["snapshot_ids"]),
        errors=json.loads(r["errors"]), details=json.loads(r["details"]), parent_id=r["parent_id"],
    )


def _drill(r: sqlite3.Row) -> DrillRecord:
    return DrillRecord(
        dataset=r["dataset"], repository=r["repository"], started=_dt(r["started"]) or datetime.now(UTC),
        ok=bool(r["ok"]), snapshot_id=r["snapshot_id"] or "", snapshot_time=_dt(r["snapshot_time"]),
        snapshot_age=r["snapshot_age"], selection=r["selection"], bytes=r["bytes"], files=r["files"],
        restore_seconds=r["restore_seconds"], throughput=r["throughput"], ready_seconds=r["ready_seconds"],
        full_bytes=r["full_bytes"], extrapolated_seconds=r["extrapolated_seconds"], rto_seconds=r["rto_seconds"],
        rto_met=None if r["rto_met"] is None else bool(r["rto_met"]), checks=json.loads(r["checks"]),
        issues=json.loads(r["issues"]), operation_id=r["operation_id"],
    )


def result_of(ok: bool, warnings: Iterable[object] = ()) -> str:
    """The result word for an operation: failed, warning (succeeded with remarks) or ok."""
    if not ok:
        return FAILED
    return WARNING if any(True for _ in warnings) else OK


def _started_between(where: list[str], args: list[object], since: datetime | None, until: datetime | None) -> None:
    """Add the ``since <= started < until`` conditions that are given."""
    if since is not None:
        where.append("started >= ?")
        args.append(_ts(since))
    if until is not None:
        where.append("started < ?")
        args.append(_ts(until))
