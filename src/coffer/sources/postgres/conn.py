"""Reaching a PostgreSQL server: connection settings, client programs, and simple queries.

Everything goes through libpq's own programs (psql, pg_dump, pg_basebackup) run by the process
runner; the password travels in ``PGPASSWORD``, never on a command line.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass, field, replace

from coffer.errors import SourceError
from coffer.sources.dbcommon import read_secret_file
from coffer.util.process import Command, run

PG_LIB = "/usr/lib/postgresql"


def _versions() -> list[tuple[int, str]]:
    out = []
    for d in glob.glob(os.path.join(PG_LIB, "*", "bin")):
        v = os.path.basename(os.path.dirname(d))
        if v.isdigit():
            out.append((int(v), d))
    return sorted(out)


def bin_dir_for(major: int | None = None, preferred: str | None = None) -> str | None:
    """The directory with PostgreSQL's programs: ``preferred``, else the one of ``major``, else the newest."""
    if preferred:
        return preferred
    vers = _versions()
    if major is not None:
        for v, d in vers:
            if v == major:
                return d
        newer = [d for v, d in vers if v >= major]
        if newer:
            return newer[0]
    return vers[-1][1] if vers else None


def tool(name: str, bin_dir: str | None = None, major: int | None = None) -> str:
    d = bin_dir_for(major, bin_dir)
    if d:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
        if bin_dir:
            raise SourceError(f"{name} not found in {bin_dir}")
    p2 = shutil.which(name)
    if p2 is None:
        raise SourceError(f"{name} is not installed", hint="install the PostgreSQL client/server programs, "
                                                          "or set the PostgreSQL bin directory")
    return p2


def _quote_conninfo(v: str) -> str:
    if v and re.fullmatch(r"[A-Za-z0-9_./:@+-]+", v):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class PgConn:
    """Where a server is and how to log in (the plan's connection fields)."""

    host: str | None = None  # host name, IP, or a socket directory
    port: int | None = None
    user: str | None = None
    password_file: str | None = None  # first line is the password
    password: str | None = field(default=None, repr=False)  # given directly (from the environment)
    dbname: str = "postgres"  # maintenance database
    os_user: str | None = None  # run the programs as this OS user (peer authentication), when root
    bin_dir: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # more libpq keywords (sslmode, ...)
    connect_timeout: int = 15

    def with_db(self, dbname: str) -> PgConn:
        return replace(self, dbname=dbname)

    def conninfo(self, dbname: str | None = None, *, replication: bool = False) -> str:
        parts = []
        if self.host:
            parts.append(f"host={_quote_conninfo(self.host)}")
        if self.port:
            parts.append(f"port={int(self.port)}")
        if self.user:
            parts.append(f"user={_quote_conninfo(self.user)}")
        parts.append(f"dbname={_quote_conninfo(dbname or self.dbname)}")
        if replication:
            parts.append("replication=true")
        parts.append(f"connect_timeout={int(self.connect_timeout)}")
        parts.append("application_name=coffer")
        for k, v in self.options:
            parts.append(f"{k}={_quote_conninfo(v)}")
        return " ".join(parts)

    def secret(self) -> str | None:
        if self.password is not None:
            return self.password
        if self.password_file:
            return read_secret_file(self.password_file)
        return None

    def command(self, argv: list[str]) -> Command:
        pw = self.secret()
        env = {"PGPASSWORD": pw} if pw else {}
        return Command(argv, env=env, secrets=[pw] if pw else [], user=self.os_user)

    def tool(self, name: str, major: int | None = None) -> str:
        return tool(name, self.bin_dir, major)

    def describe(self) -> str:
        where = self.host or "local socket"
        return f"{where}:{self.port or 5432}" + (f" as {self.user}" if self.user else "")


def psql(conn: PgConn, sql: str, *, dbname: str | None = None, timeout: float = 120,
         replication: bool = False, check: bool = True) -> str:
    """Run one statement with psql; the result as text (rows by newline, columns by ``|``)."""
    argv = [conn.tool("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d",
            conn.conninfo(dbname, replication=replication), "-c", sql]
    r = run(conn.command(argv), timeout=timeout, check=False)
    if check and r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-10:])
        raise SourceError(f"psql on {conn.describe()} failed: {tail or f'exit status {r.returncode}'}")
    return r.stdout.decode("utf-8", "replace").rstrip("\n")


def list_databases(conn: PgConn) -> list[str]:
    out = psql(conn, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
    return [line for line in out.splitlines() if line]


def server_version(conn: PgConn) -> tuple[int, str]:
    """(major, full version text) of the server."""
    out = psql(conn, "SELECT current_setting('server_version_num') || '|' || version()")
    num, _, text = out.partition("|")
    try:
        return int(num) // 10000, text
    except ValueError:
        raise SourceError(f"cannot read the server version from {conn.describe()}: {out!r}") from None
