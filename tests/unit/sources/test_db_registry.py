"""The plan's database dataset types build the database sources (through the registry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffer.sources import registry

COMMON = {"repository": "main", "schedule": "every 4h", "retention": {"keep_daily": 7},
          "drill": {"checks": [{"sql": "SELECT 1", "expect": "1", "database": "app"}, {"min_files": 1}]}}


def _spec(kind: str, **kw: object) -> object:
    model = pytest.importorskip("coffer.config.model")
    cls = {"postgres": model.PostgresDataset, "postgres-wal": model.PostgresWalDataset, "mysql": model.MysqlDataset,
           "sqlite": model.SqliteDataset}[kind]
    return cls.model_validate({"name": "d1", "type": kind, **COMMON, **kw})


def test_postgres_types(monkeypatch: pytest.MonkeyPatch) -> None:
    from coffer.sources.postgres import PostgresBaseBackupSource, PostgresDumpSource

    monkeypatch.setenv("PGPW_TEST", "s3cret")
    src = registry.create(_spec("postgres", host="db.example", port=5433, user="backup", password_env="PGPW_TEST",
                                databases=["app", "crm"]))  # type: ignore[arg-type]
    assert isinstance(src, PostgresDumpSource)
    assert src.databases == ["app", "crm"] and src.dataset == "d1"
    assert src.conn.password == "s3cret" and src.conn.host == "db.example" and src.conn.port == 5433
    assert [c.sql for c in src.checks] == ["SELECT 1"] and src.checks[0].database == "app"
    assert "dataset=d1" in src.snapshot_tags()
    base = registry.create(_spec("postgres-wal", socket="/run/postgresql"))  # type: ignore[arg-type]
    assert isinstance(base, PostgresBaseBackupSource) and base.conn.host == "/run/postgresql"


def test_missing_password_env_is_a_clear_error() -> None:
    from coffer.errors import SourceError

    with pytest.raises(SourceError, match="NOPE_NOT_SET"):
        registry.create(_spec("postgres", password_env="NOPE_NOT_SET"))  # type: ignore[arg-type]


def test_mysql_and_sqlite_types(tmp_path: Path) -> None:
    from coffer.sources.mysql import MySQLDumpSource
    from coffer.sources.sqlite import SQLiteSource

    my = registry.create(_spec("mysql", socket="/run/mysqld/mysqld.sock", user="root"))  # type: ignore[arg-type]
    assert isinstance(my, MySQLDumpSource) and my.databases is None and my.conn.socket == "/run/mysqld/mysqld.sock"
    lite = registry.create(_spec("sqlite", path=str(tmp_path / "x.db")))  # type: ignore[arg-type]
    assert isinstance(lite, SQLiteSource) and lite.paths == [str(tmp_path / "x.db")]
