"""PostgreSQL logical backups: ``pg_dump -Fc`` per database plus ``pg_dumpall --globals-only``.

Each dump is piped straight into the repository (no temporary copy), one file per database:

    MANIFEST.json      what was dumped, from which server, and each database's table count
    globals.sql        roles and tablespaces (pg_dumpall --globals-only)
    <db>.pgdump        pg_dump custom format, uncompressed so that the repository deduplicates
                       unchanged tables between runs (it compresses with zstd itself)

A dump that exits non-zero or is killed fails the run with its stderr tail, and no snapshot is
written (see ``DumpStream``). The drill loads every dump into a throwaway server of the same major
version, runs the plan's checks and ``pg_amcheck``, and compares table counts with the manifest.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from coffer import env
from coffer.errors import SourceError
from coffer.sources.base import BackupInputs, Source, VerifyOutcome
from coffer.sources.dbcommon import (
    CheckLog,
    DumpStream,
    RowCount,
    SqlCheck,
    check_tag,
    dataset_tag,
    db_name_from_file,
    dump_inputs,
    file_name_for,
    quote_dotted,
    read_manifest,
)
from coffer.sources.postgres.cluster import ThrowawayCluster
from coffer.sources.postgres.conn import PgConn, list_databases, psql, server_version
from coffer.util.process import run

DUMP_SUFFIX = ".pgdump"
GLOBALS_NAME = "globals.sql"
FORMAT = "coffer-postgres-dump/1"

_TABLE_COUNT_SQL = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
)


class PostgresDumpSource(Source):
    kind = "postgres"

    def __init__(
        self, conn: PgConn, databases: Sequence[str] | None = None, *, exclude: Sequence[str] = (),
        globals_: bool = True, dataset: str = "postgres", tags: Sequence[str] = (),
        checks: Sequence[SqlCheck] = (), row_counts: Sequence[RowCount] = (), amcheck: bool = True,
        drill_timeout: float = 1800,
    ) -> None:
        self.conn = conn
        self.databases = list(databases) if databases else None  # None: every database that allows connections
        self.exclude = set(exclude)
        self.globals = globals_
        self.dataset = dataset
        self.tags = [check_tag(t) for t in tags]
        self.checks = list(checks)
        self.row_counts = list(row_counts)
        self.amcheck = amcheck
        self.drill_timeout = drill_timeout

    # ------------------------------------------------------------------ backup
    def snapshot_tags(self) -> list[str]:
        return ["postgres", "dump", dataset_tag(self.dataset), *self.tags]

    def _databases(self) -> list[str]:
        dbs = self.databases if self.databases is not None else list_databases(self.conn)
        dbs = [d for d in dbs if d not in self.exclude]
        if not dbs:
            raise SourceError(f"no database to dump on {self.conn.describe()}")
        return dbs

    @contextlib.contextmanager
    def inputs(self) -> Iterator[BackupInputs]:
        conn = self.conn
        major, version = server_version(conn)
        dbs = self._databases()
        tables: dict[str, int] = {}
        for db in dbs:
            out = psql(conn, _TABLE_COUNT_SQL, dbname=db)
            tables[db] = int(out or 0)
        superuser = psql(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == "t"
        pg_dump = conn.tool("pg_dump", major)
        streams: list[DumpStream] = []
        if self.globals:
            argv = [conn.tool("pg_dumpall", major), "--globals-only", "-d", conn.conninfo()]
            if not superuser:
                argv.append("--no-role-passwords")  # pg_authid is readable by superusers only
            streams.append(DumpStream(GLOBALS_NAME, conn.command(argv), what="pg_dumpall --globals-only"))
        for db in dbs:
            argv = [pg_dump, "-Fc", "-Z", "0", "-d", conn.conninfo(db)]
            streams.append(DumpStream(file_name_for(db, DUMP_SUFFIX), conn.command(argv), what=f"pg_dump of {db!r}"))
        started = time.time()

        def manifest() -> dict[str, Any]:
            return {
                "format": FORMAT, "host": env.hostname(), "server": conn.describe(), "server_version": version,
                "server_major": major, "started": started, "globals": GLOBALS_NAME if self.globals else None,
                "databases": [{"name": db, "file": file_name_for(db, DUMP_SUFFIX), "tables": tables[db]}
                              for db in dbs],
            }

        with dump_inputs(streams, manifest, self.snapshot_tags()) as inputs:
            yield inputs

    # ------------------------------------------------------------------ drill
    def verify_restored(self, restored: Path) -> VerifyOutcome:
        return verify_dump_dir(restored, checks=self.checks, row_counts=self.row_counts, amcheck=self.amcheck,
                               bin_dir=self.conn.bin_dir, timeout=self.drill_timeout)


def verify_dump_dir(
    restored: Path | str, *, checks: Sequence[SqlCheck] = (), row_counts: Sequence[RowCount] = (),
    amcheck: bool = True, bin_dir: str | None = None, timeout: float = 1800, keep_running: bool = False,
    cluster: ThrowawayCluster | None = None,
) -> VerifyOutcome:
    """Load the dumps in ``restored`` into a throwaway server and run the checks."""
    log = CheckLog()
    path = str(restored)
    manifest = read_manifest(path)
    dumps = sorted(f for f in os.listdir(path) if f.endswith(DUMP_SUFFIX))
    if not dumps:
        log.add("dumps present", False, f"no *{DUMP_SUFFIX} file in the restored snapshot")
        return VerifyOutcome(ok=False, checks=log.entries)
    expected = {d["file"]: d for d in (manifest or {}).get("databases", []) if isinstance(d, dict)}
    for f in expected:
        if f not in dumps:
            log.add(f"dump {f} present", False, "listed in the manifest but missing from the snapshot")
    major = (manifest or {}).get("server_major")
    t0 = time.monotonic()
    own = cluster is None
    cl = cluster or ThrowawayCluster(major=major if isinstance(major, int) else None, bin_dir=bin_dir)
    try:
        if own:
            cl.initdb(settings={"shared_buffers": "64MB", "fsync": "off", "synchronous_commit": "off",
                                "full_page_writes": "off", "max_wal_size": "1GB"})
            cl.start(timeout=120)
        globals_file = os.path.join(path, GLOBALS_NAME)
        if os.path.exists(globals_file):
            # roles that exist already (postgres) make harmless errors; anything else shows up in the checks
            r = run(cl.cmd([cl.prog("psql"), "-X", "-q", "-h", cl.sock_dir, "-p", str(cl.port), "-U", "postgres",
                            "-d", "postgres", "-f", "-"]), stdin_path=globals_file, check=False, timeout=timeout)
            errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln and "already exists" not in ln]
            log.add("globals loaded", not errors, "; ".join(errors[:3]) or "roles and tablespaces created")
        existing = set(psql(cl.conn, "SELECT datname FROM pg_database").splitlines())
        loaded: list[str] = []
        for f in dumps:
            db = str(expected.get(f, {}).get("name") or db_name_from_file(f, DUMP_SUFFIX))
            argv = [cl.prog("pg_restore"), "-h", cl.sock_dir, "-p", str(cl.port), "-U", "postgres", "--exit-on-error"]
            argv += ["-d", db] if db in existing else ["--create", "-d", "postgres"]
            r = run(cl.cmd(argv), stdin_path=os.path.join(path, f), check=False, timeout=timeout)
            ok = r.returncode == 0
            tail = "\n".join(r.stderr.strip().splitlines()[-5:])
            log.add(f"restore {db}", ok, "loaded" if ok else tail or f"pg_restore exit status {r.returncode}")
            if ok:
                loaded.append(db)
        time_to_ready = time.monotonic() - t0
        for f in dumps:
            info = expected.get(f)
            db = str(info.get("name")) if info else db_name_from_file(f, DUMP_SUFFIX)
            if info is None or db not in loaded or not isinstance(info.get("tables"), int):
                continue
            got = int(psql(cl.conn, _TABLE_COUNT_SQL, dbname=db) or 0)
            log.add(f"tables in {db}", got == info["tables"], f"{got} restored, {info['tables']} when dumped")
        default_db = loaded[0] if len(loaded) == 1 else "postgres"
        all_checks = list(checks) + [rc.as_sql_check(quote_dotted) for rc in row_counts]
        for c in all_checks:
            try:
                out = psql(cl.conn, c.sql, dbname=c.database or default_db)
                ok, detail = c.judge(out)
            except SourceError as e:
                ok, detail = False, str(e)
            log.add(c.label, ok, detail)
        if amcheck and loaded:
            run_amcheck(cl, log, loaded)
        log.add("time to ready", True, f"{time_to_ready:.2f}s until every database was loaded and accepting queries")
        return VerifyOutcome(ok=log.ok, checks=log.entries, time_to_ready=time_to_ready)
    except SourceError as e:
        log.add("drill server", False, str(e))
        return VerifyOutcome(ok=False, checks=log.entries, time_to_ready=None)
    finally:
        if own and not keep_running:
            cl.cleanup()


def run_amcheck(cl: ThrowawayCluster, log: CheckLog, dbs: Sequence[str]) -> None:
    """``pg_amcheck`` over the restored databases, when the program is installed."""
    prog = cl.prog("pg_amcheck")
    if not os.path.exists(prog):
        log.add("pg_amcheck", True, "not installed on this host; skipped")
        return
    argv = [prog, "-h", cl.sock_dir, "-p", str(cl.port), "-U", "postgres", "--install-missing", "--heapallindexed"]
    for db in dbs:
        argv += ["-d", db]
    r = run(cl.cmd(argv), check=False, timeout=3600)
    out = (r.stdout.decode(errors="replace") + r.stderr).strip()
    log.add("pg_amcheck", r.returncode == 0, "no corruption found" if r.returncode == 0 else out[-500:])
