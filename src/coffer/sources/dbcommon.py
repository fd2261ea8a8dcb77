"""Pieces every database source shares: dump streams, checks, names, ports and timing.

A dump is a program writing to a pipe; the engine reads the pipe as one file of the snapshot.
``DumpStream`` makes the end of that pipe trustworthy: the file counts only if the program exited
0 (``finish`` raises otherwise, and then the engine writes no snapshot), and an abandoned stream
kills its program, so a failed backup never leaves a dump running against production.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from coffer.engine.backup import StreamInput
from coffer.errors import SourceError
from coffer.sources.base import BackupInputs
from coffer.util.failpoints import failpoint
from coffer.util.process import Command, StreamingProcess

MANIFEST_NAME = "MANIFEST.json"


def dataset_tag(name: str) -> str:
    """The tag naming the dataset a snapshot belongs to (the plan's dataset name)."""
    return f"dataset={name}"


def dataset_of(tags: list[str]) -> str | None:
    for t in tags:
        if t.startswith("dataset="):
            return t[len("dataset="):]
    return None


def file_name_for(db: str, suffix: str) -> str:
    """A database name as a plain file name (``/`` and other unsafe bytes percent-encoded)."""
    return urllib.parse.quote(db, safe=" -_.@+=,~") + suffix


def db_name_from_file(fname: str, suffix: str) -> str:
    return urllib.parse.unquote(fname[: -len(suffix)] if suffix and fname.endswith(suffix) else fname)


# ---------------------------------------------------------------------------------------- streams
class _Reader:
    """The read end of a dump: bytes from the program's stdout; ``close`` stops an unfinished program."""

    TAIL = 2048

    def __init__(self, proc: StreamingProcess, name: str) -> None:
        self.proc = proc
        self.name = name
        self.eof = False
        self.size = 0
        self.tail = b""
        self._first = True

    def _after_read(self, data: bytes | memoryview) -> None:
        n = len(data)
        if n == 0:
            self.eof = True
            return
        self.size += n
        self.tail = (self.tail + bytes(data[-self.TAIL:]))[-self.TAIL:]
        if self._first:
            self._first = False
            failpoint("db_dump_first_chunk")

    def readinto(self, b: Any) -> int:
        n: int = self.proc.stdout.readinto(b)  # type: ignore[attr-defined]
        self._after_read(memoryview(b)[:n])
        return n

    def read(self, n: int = -1) -> bytes:
        data = self.proc.stdout.read(n)
        self._after_read(data)
        return data

    def close(self) -> None:
        if not self.eof:
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()


class DumpStream:
    """One program whose standard output becomes one file of the snapshot."""

    def __init__(self, name: str, cmd: Command | Callable[[], Command], *, what: str = "",
                 trailer: bytes | None = None) -> None:
        self.name = name
        self._cmd = cmd
        self.what = what or name
        self.trailer = trailer  # text the last bytes of a complete dump contain (a second guard)
        self.proc: StreamingProcess | None = None
        self._reader: _Reader | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def open(self) -> BinaryIO:
        cmd = self._cmd() if callable(self._cmd) else self._cmd
        self.started_at = time.time()
        self.proc = StreamingProcess(cmd)
        self._reader = _Reader(self.proc, self.name)
        return self._reader  # type: ignore[return-value]

    def finish(self) -> None:
        assert self.proc is not None and self._reader is not None
        if not self._reader.eof:
            self.proc.kill()
            raise SourceError(f"{self.what}: the dump was not read to its end")
        try:
            self.proc.wait()
        except SourceError as e:
            rc = self.proc.proc.returncode
            why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
            raise SourceError(
                f"{self.what}: {self.proc.cmd.argv[0]} failed ({why}); no snapshot was written. "
                f"Its last error output: {self.proc.stderr_tail() or '(none)'}",
                hint="fix the cause above and run the backup again",
            ) from e
        if self.trailer is not None and self.trailer not in self._reader.tail:
            marker = repr(self.trailer.decode()) if self.trailer.strip(b"\0") else "(the archive's end blocks)"
            raise SourceError(
                f"{self.what}: the dump ends without its completion marker {marker} "
                f"({self._reader.size} bytes read); no snapshot was written",
                hint="the dump program stopped early; check the server's log")
        self.finished_at = time.time()

    def abort(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stream_input(self) -> StreamInput:
        return StreamInput(self.name, self.open, self.finish, mode=0o600)


@contextlib.contextmanager
def dump_inputs(streams: list[DumpStream], manifest: Callable[[], dict[str, Any]],
                tags: list[str]) -> Iterator[BackupInputs]:
    """The manifest first, then one file per dump; if the backup stops early, every dump still
    running is aborted so no producer is left behind."""
    try:
        yield BackupInputs(streams=[json_stream(MANIFEST_NAME, manifest), *(s.stream_input() for s in streams)],
                           tags=tags)
    finally:
        for s in streams:
            s.abort()


def json_stream(name: str, make: Callable[[], dict[str, Any]]) -> StreamInput:
    """A small file whose content is computed when the engine reads it."""
    import io

    def open_() -> BinaryIO:
        return io.BytesIO(json.dumps(make(), indent=2, sort_keys=True).encode() + b"\n")

    return StreamInput(name, open_, None, mode=0o600)


# ---------------------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class SqlCheck:
    """One query a drill runs on the restored database.

    ``expect``: the exact result text (rows joined by newlines, columns by ``|``), or
    ``min_value``: the first column of the first row, as a number, must be at least this (row counts).
    With neither, the query only has to succeed.
    """

    sql: str
    database: str | None = None
    expect: str | None = None
    min_value: float | None = None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or (self.sql if len(self.sql) <= 60 else self.sql[:57] + "...")

    def judge(self, output: str) -> tuple[bool, str]:
        out = output.strip()
        if self.expect is not None:
            ok = out == self.expect.strip()
            return ok, f"got {out!r}" + ("" if ok else f", expected {self.expect.strip()!r}")
        if self.min_value is not None:
            first = out.splitlines()[0].split("|")[0] if out else ""
            try:
                v = float(first)
            except ValueError:
                return False, f"got {first!r}, expected a number >= {self.min_value:g}"
            ok = v >= self.min_value
            return ok, f"got {v:g}" + ("" if ok else f", expected >= {self.min_value:g}")
        return True, f"got {out[:80]!r}"


@dataclass(frozen=True)
class RowCount:
    """At least ``min_rows`` rows in ``table`` (schema-qualified if needed)."""

    table: str
    min_rows: int = 1
    database: str | None = None

    def as_sql_check(self, quote: Callable[[str], str]) -> SqlCheck:
        return SqlCheck(f"SELECT count(*) FROM {quote(self.table)}", self.database, min_value=self.min_rows,
                        name=f"rows in {self.table} >= {self.min_rows}")


def quote_dotted(ident: str, q: str = '"') -> str:
    """``schema.table`` quoted part by part (for PostgreSQL ``"`` and MySQL backticks)."""
    parts = ident.split(".")
    return ".".join(q + p.replace(q, q + q) + q for p in parts)


@dataclass
class CheckLog:
    """Collects (name, passed, detail) entries for a VerifyOutcome."""

    entries: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.entries.append((name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return all(e[1] for e in self.entries)


# ---------------------------------------------------------------------------------------- misc
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05,
               fail: Callable[[], str | None] | None = None) -> float:
    """Poll ``pred`` until it is true; return the seconds waited. ``fail`` may return a reason to stop."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if fail is not None:
            why = fail()
            if why:
                raise SourceError(why)
        if time.monotonic() - t0 > timeout:
            raise SourceError(f"not ready after {timeout:.0f}s")
        time.sleep(interval)


def read_manifest(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, MANIFEST_NAME), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_secret_file(path: str) -> str:
    """A password from a file (first line); the file's content never appears in messages."""
    try:
        with open(path, encoding="utf-8") as f:
            pw = f.read().splitlines()[0] if os.path.getsize(path) else ""
    except (OSError, IndexError) as e:
        raise SourceError(f"cannot read password file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not pw:
        raise SourceError(f"password file {path} is empty")
    return pw


_SAFE_TAG = re.compile(r"^[^,\s]+$")


def check_tag(t: str) -> str:
    if not _SAFE_TAG.match(t):
        raise SourceError(f"invalid tag {t!r}: tags cannot contain commas or spaces")
    return t


def as_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)


@contextlib.contextmanager
def cleanup_on_error(*streams: DumpStream) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for s in streams:
            s.abort()
        raise


# ---------------------------------------------------------------------------------------- plan glue
def spec_checks(spec: Any) -> list[SqlCheck]:
    """The ``sql`` drill checks of a plan dataset (``drill.checks[*].sql``) as SqlChecks."""
    drill = getattr(spec, "drill", None)
    out: list[SqlCheck] = []
    for c in getattr(drill, "checks", None) or ():
        sql = getattr(c, "sql", None)
        if sql:
            out.append(SqlCheck(sql=sql, database=getattr(c, "database", None), expect=getattr(c, "expect", None),
                                name=getattr(c, "name", "") or ""))
    return out


def spec_password(spec: Any) -> str | None:
    """A plan's ``password_env``: the variable must be set when the plan runs."""
    name = getattr(spec, "password_env", None)
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise SourceError(f"dataset {getattr(spec, 'name', '?')}: environment variable {name} (password_env) "
                          "is not set")
    return value
