"""Extracting a streamed base backup: nothing outside the target, and pg_control only at the very end (T45)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from coffer.errors import RestoreError
from coffer.sources.postgres.physical import (
    CONTROL,
    HELD_BACK,
    extract_base_tar,
    finish_extract,
    pg_time,
    write_recovery,
)


def _tar(members: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        if symlink:
            ti = tarfile.TarInfo(symlink)
            ti.type = tarfile.SYMTYPE
            ti.linkname = "/etc"
            tf.addfile(ti)
    return buf.getvalue()


GOOD = [("backup_label", b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"),
        ("PG_VERSION", b"15\n"), ("base/1/1259", os.urandom(50000)), (CONTROL, b"\x01" * 8192),
        ("pg_wal/000000010000000000000002", b"w" * 1000), ("backup_manifest", b"{}")]


def test_pg_control_is_held_back_until_the_end(tmp_path: Path) -> None:
    target = tmp_path / "data"
    info = extract_base_tar(io.BytesIO(_tar(GOOD)), str(target))
    assert info["manifest"] and info["files"] == len(GOOD)
    assert not (target / CONTROL).exists() and (target / HELD_BACK).exists()  # cannot start yet
    write_recovery(str(target), restore_command="/x/wal-fetch %f %p", target_time=pg_time(1_700_000_000_123_456_000))
    finish_extract(str(target), None)
    assert (target / CONTROL).read_bytes() == b"\x01" * 8192
    conf = (target / "postgresql.auto.conf").read_text()
    assert "recovery_target_time = '2023-11-14 22:13:20.123456+00'" in conf and "archive_mode = 'off'" in conf
    assert (target / "recovery.signal").exists() and (target / "pg_hba.conf").exists()
    assert oct(target.stat().st_mode & 0o777) == "0o700"


def test_a_stream_cut_short_never_leaves_a_startable_directory(tmp_path: Path) -> None:
    raw = _tar(GOOD)
    cut = raw[: len(raw) // 3]
    with pytest.raises((tarfile.TarError, RestoreError, EOFError, OSError)):
        extract_base_tar(io.BytesIO(cut), str(tmp_path / "data"))
    assert not (tmp_path / "data" / CONTROL).exists()


@pytest.mark.parametrize("members,symlink,match", [
    ([("../evil", b"x")], None, "outside the data directory"),
    ([("/etc/evil", b"x")], None, "outside the data directory"),
    ([("backup_label", b"x")], "pg_wal", "symbolic link"),
    ([("backup_label", b"x")], None, "no global/pg_control"),
    ([(CONTROL, b"x")], None, "no backup_label"),
])
def test_hostile_or_incomplete_archives_are_refused(tmp_path: Path, members: list[tuple[str, bytes]],
                                                   symlink: str | None, match: str) -> None:
    with pytest.raises(RestoreError, match=match):
        extract_base_tar(io.BytesIO(_tar(members, symlink=symlink)), str(tmp_path / "data"))
    assert not (tmp_path / "evil").exists()


def test_restoring_over_existing_data_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PG_VERSION").write_text("15")
    with pytest.raises(RestoreError, match="not empty"):
        extract_base_tar(io.BytesIO(_tar(GOOD)), str(tmp_path / "data"))
    assert (tmp_path / "data" / "PG_VERSION").read_text() == "15"
