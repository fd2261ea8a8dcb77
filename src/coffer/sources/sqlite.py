"""SQLite: a consistent copy through the online backup API, even while writers run.

``sqlite3.Connection.backup`` copies every page inside one read transaction, so the copy is one
consistent state of the database (in WAL mode writers go on meanwhile; in rollback mode they wait
for the copy). The copy goes to a temporary file that is unlinked as soon as it is open, checked
with ``PRAGMA quick_check``, and streamed into the repository as ``<name>`` — so nothing is left
behind if the run dies.

    MANIFEST.json   which files, from where, with their table counts and page counts
    <name>          one consistent copy per database file
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from coffer import env
from coffer.engine.backup import StreamInput
from coffer.errors import SourceError
from coffer.sources import registry
from coffer.sources.base import BackupInputs, Source, VerifyOutcome
from coffer.sources.dbcommon import (
    MANIFEST_NAME,
    CheckLog,
    RowCount,
    SqlCheck,
    check_tag,
    dataset_tag,
    json_stream,
    quote_dotted,
    read_manifest,
)
from coffer.util.failpoints import failpoint

FORMAT = "coffer-sqlite/1"
_TABLES_SQL = "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"


def _names(paths: Sequence[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        base = os.path.basename(p.rstrip("/")) or "database"
        if base == MANIFEST_NAME:
            base = "_" + base
        name, k = base, 1
        while name in out:
            name = f"{base}-{k}"
            k += 1
        out.append(name)
    return out


class SQLiteSource(Source):
    kind = "sqlite"

    def __init__(self, paths: Sequence[str], *, dataset: str = "sqlite", tags: Sequence[str] = (),
                 checks: Sequence[SqlCheck] = (), row_counts: Sequence[RowCount] = (), tmp_dir: str | None = None,
                 quick_check: bool = True, busy_timeout: float = 60.0) -> None:
        if not paths:
            raise SourceError("no SQLite database given")
        self.paths = [os.path.abspath(p) for p in paths]
        self.names = _names(self.paths)
        self.dataset = dataset
        self.tags = [check_tag(t) for t in tags]
        self.checks = list(checks)
        self.row_counts = list(row_counts)
        self.tmp_dir = tmp_dir
        self.quick_check = quick_check
        self.busy_timeout = busy_timeout
        self._info: dict[str, dict[str, Any]] = {}

    def snapshot_tags(self) -> list[str]:
        return ["sqlite", dataset_tag(self.dataset), *self.tags]

    def _copy(self, path: str, name: str) -> BinaryIO:
        """A consistent copy of ``path`` in an already-unlinked temporary file, positioned at 0."""
        if not os.path.isfile(path):
            raise SourceError(f"SQLite database {path} does not exist")
        fd, tmp = tempfile.mkstemp(prefix="coffer-sqlite-", suffix=".db", dir=self.tmp_dir)
        os.close(fd)
        try:
            try:
                src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.busy_timeout)
            except sqlite3.Error as e:
                raise SourceError(f"cannot open SQLite database {path}: {e}") from None
            try:
                dst = sqlite3.connect(tmp)
                try:
                    src.backup(dst, pages=0)  # one step: a single read transaction, so one consistent state
                    failpoint("sqlite_after_backup")
                    if self.quick_check:
                        res = [r[0] for r in dst.execute("PRAGMA quick_check").fetchall()]
                        if res != ["ok"]:
                            raise SourceError(f"SQLite database {path} fails quick_check: {'; '.join(res[:3])}",
                                              hint="the source file is damaged; nothing was stored for it")
                    tables = dst.execute(_TABLES_SQL).fetchone()[0]
                    pages = dst.execute("PRAGMA page_count").fetchone()[0]
                    dst.execute("PRAGMA journal_mode=DELETE")  # the stored copy needs no -wal file next to it
                finally:
                    dst.close()
            except sqlite3.Error as e:
                raise SourceError(f"SQLite backup of {path} failed: {e}") from None
            finally:
                src.close()
            self._info[name] = {"name": name, "path": path, "tables": tables, "pages": pages}
            f = open(tmp, "rb")  # noqa: SIM115 - handed to the engine, which closes it
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return f

    @contextlib.contextmanager
    def inputs(self) -> Iterator[BackupInputs]:
        started = time.time()
        tables: dict[str, int] = {}
        for path, name in zip(self.paths, self.names):
            if not os.path.isfile(path):
                raise SourceError(f"SQLite database {path} does not exist")
            try:
                c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.busy_timeout)
                try:
                    tables[name] = c.execute(_TABLES_SQL).fetchone()[0]
                finally:
                    c.close()
            except sqlite3.Error as e:
                raise SourceError(f"cannot open SQLite database {path}: {e}") from None
        streams = [StreamInput(name, functools.partial(self._copy, path, name), None, mode=0o600)
                   for path, name in zip(self.paths, self.names)]

        def manifest() -> dict[str, Any]:
            return {"format": FORMAT, "host": env.hostname(), "started": started,
                    "databases": [{"name": n, "file": n, "path": p, "tables": tables[n]}
                                  for p, n in zip(self.paths, self.names)]}

        yield BackupInputs(streams=[json_stream(MANIFEST_NAME, manifest), *streams], tags=self.snapshot_tags())

    def verify_restored(self, restored: Path) -> VerifyOutcome:
        return verify_dir(restored, checks=self.checks, row_counts=self.row_counts)


def verify_dir(restored: Path | str, *, checks: Sequence[SqlCheck] = (),
               row_counts: Sequence[RowCount] = ()) -> VerifyOutcome:
    log = CheckLog()
    path = str(restored)
    manifest = read_manifest(path) or {}
    listed = [d for d in manifest.get("databases", []) if isinstance(d, dict)]
    files = [str(d["file"]) for d in listed] or sorted(f for f in os.listdir(path) if f != MANIFEST_NAME)
    if not files:
        log.add("databases present", False, "no database file in the restored snapshot")
        return VerifyOutcome(ok=False, checks=log.entries)
    t0 = time.monotonic()
    conns: dict[str, sqlite3.Connection] = {}
    try:
        for f in files:
            fp = os.path.join(path, f)
            if not os.path.exists(fp):
                log.add(f"{f} present", False, "listed in the manifest but missing from the snapshot")
                continue
            try:
                c = sqlite3.connect(f"file:{fp}?mode=ro", uri=True)
                c.execute("SELECT count(*) FROM sqlite_schema").fetchone()
                conns[f] = c
            except sqlite3.Error as e:
                log.add(f"open {f}", False, str(e))
        time_to_ready = time.monotonic() - t0
        for d in listed:
            c2 = conns.get(str(d["file"]))
            if c2 is not None and isinstance(d.get("tables"), int):
                got = c2.execute(_TABLES_SQL).fetchone()[0]
                log.add(f"tables in {d['file']}", got == d["tables"], f"{got} restored, {d['tables']} when copied")
        for f, c in conns.items():
            try:
                res = [r[0] for r in c.execute("PRAGMA integrity_check").fetchall()]
            except sqlite3.Error as e:
                res = [str(e)]
            log.add(f"integrity_check {f}", res == ["ok"], "; ".join(res[:3]))
        default = next(iter(conns)) if len(conns) == 1 else None
        for chk in [*checks, *(rc.as_sql_check(quote_dotted) for rc in row_counts)]:
            c3 = conns.get(chk.database or default or "")
            if c3 is None:
                log.add(chk.label, False, f"no restored database {chk.database or '(unnamed)'}")
                continue
            try:
                rows = c3.execute(chk.sql).fetchall()
                out = "\n".join("|".join("" if v is None else _fmt(v) for v in r) for r in rows)
                ok, detail = chk.judge(out)
            except sqlite3.Error as e:
                ok, detail = False, str(e)
            log.add(chk.label, ok, detail)
        log.add("time to ready", True, f"{time_to_ready:.3f}s until every database answered a query")
        return VerifyOutcome(ok=log.ok, checks=log.entries, time_to_ready=time_to_ready)
    finally:
        for c in conns.values():
            c.close()


def _fmt(v: object) -> str:
    if isinstance(v, bytes):
        return v.hex()
    return str(v)



def _factory(spec: Any) -> SQLiteSource:
    from coffer.sources.dbcommon import spec_checks

    return SQLiteSource([spec.path], dataset=spec.name, checks=spec_checks(spec))


registry.register("sqlite", _factory)
