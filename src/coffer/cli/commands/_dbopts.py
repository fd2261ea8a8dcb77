"""Options the database commands share: how to reach a server, drill checks, dataset names, times."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from coffer.errors import UsageError
from coffer.sources.dbcommon import RowCount, SqlCheck
from coffer.util import gotime

F = TypeVar("F", bound=Callable[..., Any])


def server_options(f: F) -> F:
    for opt in reversed([
        click.option("--host", default=None, help="server host name, IP, or socket directory"),
        click.option("--port", type=int, default=None, help="server port"),
        click.option("--socket", default=None, help="unix socket (directory for PostgreSQL, file for MySQL)"),
        click.option("--user", default=None, help="database user"),
        click.option("--password-file", "db_password_file", default=None,
                     help="file whose first line is the database password (else $PGPASSWORD / $MYSQL_PWD "
                          "or the server's own rules)"),
        click.option("--os-user", default=None, help="run the client programs as this OS user (peer auth), "
                                                     "when coffer runs as root"),
    ]):
        f = opt(f)
    return f


def check_options(f: F) -> F:
    for opt in reversed([
        click.option("--sql", "sqls", multiple=True, help="drill check: a query to run on the restored database"),
        click.option("--expect", "expects", multiple=True, help="expected output of the --sql at the same position "
                     "(rows by newline, columns by |)"),
        click.option("--min-rows", "min_rows", multiple=True, help="drill check: TABLE=N (at least N rows)"),
        click.option("--check-database", default=None, help="database the checks run in"),
    ]):
        f = opt(f)
    return f


def build_checks(sqls: tuple[str, ...], expects: tuple[str, ...], min_rows: tuple[str, ...],
                 database: str | None) -> tuple[list[SqlCheck], list[RowCount]]:
    if len(expects) > len(sqls):
        raise UsageError("more --expect than --sql")
    checks = [SqlCheck(sql, database, expects[i] if i < len(expects) else None) for i, sql in enumerate(sqls)]
    counts = []
    for spec in min_rows:
        table, sep, n = spec.rpartition("=")
        if not sep or not table or not n.isdigit():
            raise UsageError(f"--min-rows {spec!r}: write TABLE=N")
        counts.append(RowCount(table, int(n), database))
    return checks, counts


def parse_target_time(s: str) -> int:
    """RFC 3339, or "YYYY-MM-DD HH:MM:SS[.ffffff]" with an optional offset/Z (local time without one)."""
    import datetime as dt

    text = s.strip().replace("T", " ", 1)
    try:
        return gotime.parse_ns(s.strip())
    except ValueError:
        pass
    text = text.replace("Z", "+00:00")
    try:
        d = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"invalid time {s!r} (use \"2026-01-31 14:05:00\", optionally with .micro and +01:00)") \
            from None
    if d.tzinfo is None:
        return int(time.mktime(d.timetuple())) * 1_000_000_000 + d.microsecond * 1000
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000


def password_from(path: str | None, env_name: str) -> str | None:
    if path:
        return None  # read by the source from the file itself
    return os.environ.get(env_name)
