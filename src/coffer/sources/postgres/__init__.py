"""PostgreSQL sources: logical dumps (``postgres``) and base backups + WAL (``postgres-wal``).

Importing this package registers both dataset types with ``sources.registry``.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from typing import Any, Protocol

from coffer.sources import registry
from coffer.sources.dbcommon import spec_checks, spec_password
from coffer.sources.postgres.conn import PgConn
from coffer.sources.postgres.dump import PostgresDumpSource
from coffer.sources.postgres.physical import PostgresBaseBackupSource

__all__ = ["PgConn", "PostgresBaseBackupSource", "PostgresDumpSource", "conn_from_spec"]


class PostgresSpec(Protocol):
    """What these sources read from a plan dataset (``config.model.PostgresDataset`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def socket(self) -> str | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def password_file(self) -> str | None: ...
    @property
    def password_env(self) -> str | None: ...
    @property
    def databases(self) -> Sequence[str]: ...


def conn_from_spec(spec: PostgresSpec) -> PgConn:
    host = spec.socket or spec.host
    password = spec_password(spec)
    os_user = None
    # As root over a local socket, peer authentication expects the OS user to be the database user.
    if os.geteuid() == 0 and (host is None or host.startswith("/")) and not password and not spec.password_file:
        name = spec.user or "postgres"
        try:
            if pwd.getpwnam(name).pw_uid != 0:
                os_user = name
        except KeyError:
            pass
    return PgConn(host=host, port=spec.port, user=spec.user, password_file=spec.password_file, password=password,
                  os_user=os_user)


def _dump_factory(spec: Any) -> PostgresDumpSource:
    return PostgresDumpSource(conn_from_spec(spec), list(spec.databases) or None, dataset=spec.name,
                              checks=spec_checks(spec))


def _base_factory(spec: Any) -> PostgresBaseBackupSource:
    return PostgresBaseBackupSource(conn_from_spec(spec), dataset=spec.name, checks=spec_checks(spec))


registry.register("postgres", _dump_factory)
registry.register("postgres-wal", _base_factory)
