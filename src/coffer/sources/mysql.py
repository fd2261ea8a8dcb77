"""MariaDB / MySQL logical backups: one ``mariadb-dump`` (or ``mysqldump``) per database.

    MANIFEST.json   what was dumped, from which server, and each database's table count
    users.sql       accounts and grants (``mariadb-dump --system=users``; MariaDB only)
    <db>.sql        ``--single-transaction --routines --triggers --events --databases <db>``

``--no-defaults`` always comes first: without it the client would read /etc/mysql/my.cnf and talk
to whatever socket that names. The password travels in ``MYSQL_PWD``. A dump counts only if the
program exited 0 *and* the stream ends with mysqldump's ``-- Dump completed`` line.

The drill starts a throwaway ``mariadbd`` (temporary datadir, no TCP, private socket), loads every
dump, runs the plan's checks and ``mariadb-check``, and compares table counts with the manifest.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from coffer import env
from coffer.errors import SourceError
from coffer.sources import registry
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
    free_port,
    quote_dotted,
    read_manifest,
    read_secret_file,
    wait_until,
)
from coffer.util.process import Background, Command, run

DUMP_SUFFIX = ".sql"
USERS_NAME = "users.sql"
FORMAT = "coffer-mysql-dump/1"
SYSTEM_SCHEMAS = ("information_schema", "performance_schema", "sys", "mysql")
DUMP_OPTIONS = ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob", "--skip-dump-date")
TRAILER = b"-- Dump completed"


def _prog(*names: str) -> str:
    for n in names:
        p = shutil.which(n) or (f"/usr/sbin/{n}" if os.access(f"/usr/sbin/{n}", os.X_OK) else None)
        if p:
            return p
    raise SourceError(f"{names[0]} is not installed", hint="install the MariaDB (or MySQL) client programs")


@dataclass(frozen=True)
class MyConn:
    host: str | None = None
    port: int | None = None
    socket: str | None = None
    user: str | None = None
    password_file: str | None = None
    password: str | None = field(default=None, repr=False)
    os_user: str | None = None

    def args(self) -> list[str]:
        a: list[str] = []
        if self.socket:
            a += [f"--socket={self.socket}"]
        if self.host:
            a += [f"--host={self.host}"]
            if self.host not in ("localhost",) and not self.socket:
                a += ["--protocol=TCP"]
        if self.port:
            a += [f"--port={int(self.port)}"]
        if self.user:
            a += [f"--user={self.user}"]
        return a

    def secret(self) -> str | None:
        if self.password is not None:
            return self.password
        if self.password_file:
            return read_secret_file(self.password_file)
        return None

    def command(self, prog: str, extra: Sequence[str]) -> Command:
        pw = self.secret()
        envs = {"MYSQL_PWD": pw} if pw else {}
        # --no-defaults must be the very first argument, or the client reads /etc/mysql/my.cnf
        return Command([prog, "--no-defaults", *self.args(), *extra], env=envs, secrets=[pw] if pw else [],
                       user=self.os_user)

    def describe(self) -> str:
        where = self.socket or f"{self.host or 'localhost'}:{self.port or 3306}"
        return where + (f" as {self.user}" if self.user else "")


def client() -> str:
    return _prog("mariadb", "mysql")


def dump_tool() -> str:
    return _prog("mariadb-dump", "mysqldump")


def query(conn: MyConn, sql: str, *, database: str | None = None, timeout: float = 120) -> str:
    """One statement through the command-line client; rows by newline, columns by ``|``."""
    extra = ["--batch", "--skip-column-names", "--raw", "-e", sql]
    if database:
        extra.append(database)
    r = run(conn.command(client(), extra), timeout=timeout, check=False)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-5:])
        raise SourceError(f"query on {conn.describe()} failed: {tail or f'exit status {r.returncode}'}")
    return "\n".join(line.replace("\t", "|") for line in r.stdout.decode("utf-8", "replace").rstrip("\n").split("\n"))


def list_databases(conn: MyConn) -> list[str]:
    return [d for d in query(conn, "SHOW DATABASES").splitlines() if d and d not in SYSTEM_SCHEMAS]


def _table_count_sql(db: str) -> str:
    return ("SELECT count(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema = '"
            + db.replace("\\", "\\\\").replace("'", "''") + "'")


class MySQLDumpSource(Source):
    kind = "mysql"

    def __init__(
        self, conn: MyConn, databases: Sequence[str] | None = None, *, exclude: Sequence[str] = (),
        users: bool = True, dataset: str = "mysql", tags: Sequence[str] = (), checks: Sequence[SqlCheck] = (),
        row_counts: Sequence[RowCount] = (), check_tables: bool = True, drill_timeout: float = 1800,
    ) -> None:
        self.conn = conn
        self.databases = list(databases) if databases else None
        self.exclude = set(exclude)
        self.users = users
        self.dataset = dataset
        self.tags = [check_tag(t) for t in tags]
        self.checks = list(checks)
        self.row_counts = list(row_counts)
        self.check_tables = check_tables
        self.drill_timeout = drill_timeout

    def snapshot_tags(self) -> list[str]:
        return ["mysql", "dump", dataset_tag(self.dataset), *self.tags]

    @contextlib.contextmanager
    def inputs(self) -> Iterator[BackupInputs]:
        conn = self.conn
        version = query(conn, "SELECT VERSION()")
        dbs = self.databases if self.databases is not None else list_databases(conn)
        dbs = [d for d in dbs if d not in self.exclude]
        if not dbs:
            raise SourceError(f"no database to dump on {conn.describe()}")
        tables = {db: int(query(conn, _table_count_sql(db)) or 0) for db in dbs}
        tool = dump_tool()
        streams: list[DumpStream] = []
        mariadb = "mariadb" in os.path.basename(tool) or "MariaDB" in version
        if self.users and mariadb:
            streams.append(DumpStream(USERS_NAME, conn.command(tool, ["--system=users", "--skip-dump-date"]),
                                      what="mariadb-dump --system=users", trailer=TRAILER))
        for db in dbs:
            streams.append(DumpStream(
                file_name_for(db, DUMP_SUFFIX), conn.command(tool, [*DUMP_OPTIONS, "--databases", db]),
                what=f"{os.path.basename(tool)} of {db!r}", trailer=TRAILER))
        started = time.time()

        def manifest() -> dict[str, Any]:
            return {
                "format": FORMAT, "host": env.hostname(), "server": conn.describe(), "server_version": version,
                "started": started, "users": USERS_NAME if any(s.name == USERS_NAME for s in streams) else None,
                "databases": [{"name": db, "file": file_name_for(db, DUMP_SUFFIX), "tables": tables[db]}
                              for db in dbs],
            }

        with dump_inputs(streams, manifest, self.snapshot_tags()) as inputs:
            yield inputs

    def verify_restored(self, restored: Path) -> VerifyOutcome:
        return verify_dump_dir(restored, checks=self.checks, row_counts=self.row_counts,
                               check_tables=self.check_tables, timeout=self.drill_timeout)


# ---------------------------------------------------------------------------------------- throwaway server
class ThrowawayMariaDB:
    """mariadb-install-db + mariadbd in a temporary directory: no TCP, a private socket, root without password."""

    def __init__(self, *, workdir: str | None = None, keep: bool = False, networking: bool = False) -> None:
        self.server = _prog("mariadbd", "mysqld")
        self.install = _prog("mariadb-install-db", "mysql_install_db")
        self._own = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="coffer-my-")
        os.chmod(self.workdir, 0o711)
        self.data_dir = os.path.join(self.workdir, "data")
        self.socket = os.path.join(self.workdir, "mysqld.sock")
        self.port = free_port()
        self.networking = networking
        self.keep = keep
        self.proc: Background | None = None
        self.user = "mysql" if os.geteuid() == 0 else None
        if self.user:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise SourceError("running as root, but there is no 'mysql' user to run the drill server as") from None
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)

    @property
    def conn(self) -> MyConn:
        return MyConn(socket=self.socket, user="root")

    def _user_args(self) -> list[str]:
        return [f"--user={self.user}"] if self.user else []

    def initdb(self) -> None:
        run(Command([self.install, "--no-defaults", *self._user_args(), f"--datadir={self.data_dir}",
                     "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"]),
            timeout=300)

    def start(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        argv = [self.server, "--no-defaults", *self._user_args(), f"--datadir={self.data_dir}",
                f"--socket={self.socket}", f"--port={self.port}", f"--pid-file={self.workdir}/mysqld.pid",
                f"--log-error={self.workdir}/error.log", "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin",
                f"--tmpdir={self.workdir}"]
        argv += ["--bind-address=127.0.0.1"] if self.networking else ["--skip-networking"]
        self.proc = Background(Command(argv), os.path.join(self.workdir, "console.log"))

        def gone() -> str | None:
            if self.proc is not None and not self.proc.alive():
                return "the drill's MariaDB stopped: " + self.error_tail()
            return None

        wait_until(self.ping, timeout, 0.1, fail=gone)
        return time.monotonic() - t0

    def ping(self) -> bool:
        r = run(Command([_prog("mariadb-admin", "mysqladmin"), "--no-defaults", f"--socket={self.socket}", "-uroot",
                         "--connect-timeout=2", "ping"]), check=False, timeout=30)
        return r.returncode == 0

    def error_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self.workdir, "error.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=60)
            self.proc = None

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self._own and not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ThrowawayMariaDB:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()


def load_dump_dir(conn: MyConn, path: str, *, timeout: float = 1800, log: CheckLog | None = None) -> list[str]:
    """Load users.sql and every ``<db>.sql`` of a restored snapshot into a server; the databases loaded."""
    log = log or CheckLog()
    manifest = read_manifest(path) or {}
    expected = {d["file"]: d for d in manifest.get("databases", []) if isinstance(d, dict)}
    users = os.path.join(path, USERS_NAME)
    if os.path.exists(users):
        r = run(conn.command(client(), ["--force"]), stdin_path=users, check=False, timeout=timeout)
        errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln and "already exists" not in ln
                  and "Operation CREATE USER failed" not in ln]
        log.add("users loaded", not errors, "; ".join(errors[:3]) or "accounts and grants created")
    loaded = []
    for f in sorted(os.listdir(path)):
        if not f.endswith(DUMP_SUFFIX) or f == USERS_NAME:
            continue
        db = str(expected.get(f, {}).get("name") or db_name_from_file(f, DUMP_SUFFIX))
        r = run(conn.command(client(), []), stdin_path=os.path.join(path, f), check=False, timeout=timeout)
        ok = r.returncode == 0
        log.add(f"restore {db}", ok, "loaded" if ok else "\n".join(r.stderr.strip().splitlines()[-5:]))
        if ok:
            loaded.append(db)
    return loaded


def verify_dump_dir(
    restored: Path | str, *, checks: Sequence[SqlCheck] = (), row_counts: Sequence[RowCount] = (),
    check_tables: bool = True, timeout: float = 1800,
) -> VerifyOutcome:
    log = CheckLog()
    path = str(restored)
    manifest = read_manifest(path) or {}
    dumps = sorted(f for f in os.listdir(path) if f.endswith(DUMP_SUFFIX) and f != USERS_NAME)
    if not dumps:
        log.add("dumps present", False, f"no *{DUMP_SUFFIX} file in the restored snapshot")
        return VerifyOutcome(ok=False, checks=log.entries)
    expected = {d["file"]: d for d in manifest.get("databases", []) if isinstance(d, dict)}
    for f in expected:
        if f not in dumps:
            log.add(f"dump {f} present", False, "listed in the manifest but missing from the snapshot")
    t0 = time.monotonic()
    srv: ThrowawayMariaDB | None = None
    try:
        srv = ThrowawayMariaDB()
        srv.initdb()
        srv.start()
        loaded = load_dump_dir(srv.conn, path, timeout=timeout, log=log)
        time_to_ready = time.monotonic() - t0
        for info in expected.values():
            db = str(info.get("name"))
            if db in loaded and isinstance(info.get("tables"), int):
                got = int(query(srv.conn, _table_count_sql(db)) or 0)
                log.add(f"tables in {db}", got == info["tables"], f"{got} restored, {info['tables']} when dumped")
        default_db = loaded[0] if len(loaded) == 1 else None
        for c in [*checks, *(rc.as_sql_check(lambda s: quote_dotted(s, "`")) for rc in row_counts)]:
            try:
                ok, detail = c.judge(query(srv.conn, c.sql, database=c.database or default_db))
            except SourceError as e:
                ok, detail = False, str(e)
            log.add(c.label, ok, detail)
        if check_tables and loaded:
            mariadb_check(srv.conn, loaded, log)
        log.add("time to ready", True, f"{time_to_ready:.2f}s until every database was loaded and accepting queries")
        return VerifyOutcome(ok=log.ok, checks=log.entries, time_to_ready=time_to_ready)
    except SourceError as e:
        log.add("drill server", False, str(e))
        return VerifyOutcome(ok=False, checks=log.entries)
    finally:
        if srv is not None:
            srv.cleanup()


def mariadb_check(conn: MyConn, dbs: Sequence[str], log: CheckLog) -> None:
    prog = _prog("mariadb-check", "mysqlcheck")
    r = run(conn.command(prog, ["--check", "--extended", "--databases", *dbs]), check=False, timeout=3600)
    out = r.stdout.decode("utf-8", "replace")
    bad: list[str] = []
    current = ""
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line.startswith((" ", "\t", "note", "warning", "error", "status")) and len(line.split()) >= 2:
            current = line.split()[0]
            if line.split()[-1] != "OK":
                bad.append(line.strip())
        elif line.lower().startswith("error"):
            bad.append(f"{current}: {line.strip()}")
    ok = r.returncode == 0 and not bad
    log.add("mariadb-check", ok, "all tables OK" if ok else "; ".join(bad[:5]) or r.stderr.strip()[-300:])


# ---------------------------------------------------------------------------------------- plan glue
def _factory(spec: Any) -> MySQLDumpSource:
    from coffer.sources.dbcommon import spec_checks, spec_password

    sock = spec.socket
    host = None if sock else spec.host
    conn = MyConn(host=host, port=spec.port, socket=sock, user=spec.user, password_file=spec.password_file,
                  password=spec_password(spec))
    return MySQLDumpSource(conn, list(spec.databases) or None, dataset=spec.name, checks=spec_checks(spec))


registry.register("mysql", _factory)
