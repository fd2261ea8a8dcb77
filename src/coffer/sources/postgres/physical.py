"""PostgreSQL physical backups: ``pg_basebackup`` streamed as one tar, restored into a data directory.

A base backup snapshot holds:

    MANIFEST.json  system identifier, timeline, server version, WAL segment size, the backup label,
                   and the WAL segment current when the backup started (a lower bound of the first
                   segment recovery needs: what WAL retention keeps)
    base.tar       ``pg_basebackup -D - -Ft -X fetch -c fast``: the data directory with the WAL needed
                   to reach consistency and pg_basebackup's backup_manifest

Tags carry what choosing a base backup needs without reading it: ``basebackup``, ``dataset=<name>``,
``pg-sysid=``, ``pg-label=``, ``pg-wal-start=``. The ``.backup`` history file PostgreSQL archives at
the end of the backup names the same label, so the archive says when each backup became usable.

Restoring extracts ``base.tar`` while it streams out of the repository, refusing any member that
would land outside the target, and writes ``global/pg_control`` last: a directory whose restore
stopped half-way has no pg_control and cannot be started by mistake.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from coffer import env
from coffer.errors import RestoreError, SourceError
from coffer.sources.base import BackupInputs, Source, VerifyOutcome
from coffer.sources.dbcommon import (
    MANIFEST_NAME,
    CheckLog,
    DumpStream,
    RowCount,
    SqlCheck,
    check_tag,
    dataset_tag,
    json_stream,
    quote_dotted,
    read_manifest,
)
from coffer.sources.postgres.cluster import ThrowawayCluster, chown_tree
from coffer.sources.postgres.conn import PgConn, psql
from coffer.sources.postgres.dump import run_amcheck
from coffer.sources.postgres.wal import (
    LABEL_PREFIX,
    SYSID_PREFIX,
    TAG_BASE,
    WAL_START_PREFIX,
    segment_name,
)

BASE_NAME = "base.tar"
FORMAT = "coffer-postgres-basebackup/1"
CONTROL = "global/pg_control"
HELD_BACK = CONTROL + ".coffer-partial"
RECOVERY_MARK = "# --- coffer restore-db recovery settings"


def _parse_size(text: str) -> int:
    t = text.strip().upper()
    mult = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    for suf, m in mult.items():
        if t.endswith(suf):
            return int(t[: -len(suf)]) * m
    return int(t)


@dataclass(frozen=True)
class ServerIdentity:
    sysid: str
    timeline: int
    lsn: str
    seg_size: int
    major: int
    version: str


def identify(conn: PgConn) -> ServerIdentity:
    """IDENTIFY_SYSTEM over a replication connection (works for a replication-only role and on standbys)."""
    ident = psql(conn, "IDENTIFY_SYSTEM", replication=True)
    parts = ident.split("|")
    if len(parts) < 3:
        raise SourceError(f"unexpected IDENTIFY_SYSTEM answer from {conn.describe()}: {ident!r}")
    seg = _parse_size(psql(conn, "SHOW wal_segment_size", replication=True))
    num = psql(conn, "SHOW server_version_num", replication=True)
    ver = psql(conn, "SHOW server_version", replication=True)
    return ServerIdentity(parts[0], int(parts[1]), parts[2], seg, int(num) // 10000, ver)


class PostgresBaseBackupSource(Source):
    """Dataset type ``postgres-wal``: the scheduled base backups (WAL arrives through ``wal-push``)."""

    kind = "postgres-wal"

    def __init__(self, conn: PgConn, *, dataset: str = "postgres-wal", tags: Sequence[str] = (),
                 wal_method: str = "fetch", checks: Sequence[SqlCheck] = (), row_counts: Sequence[RowCount] = (),
                 amcheck: bool = True, archive: Any = None, drill_timeout: float = 3600) -> None:
        if wal_method not in ("fetch", "none"):
            raise SourceError(f"wal method {wal_method!r}: use fetch (WAL inside the backup) or none (archive only)")
        self.conn = conn
        self.dataset = dataset
        self.tags = [check_tag(t) for t in tags]
        self.wal_method = wal_method
        self.checks = list(checks)
        self.row_counts = list(row_counts)
        self.amcheck = amcheck
        self.archive = archive  # an ArchiveAccess: drills then recover to a random time through wal-fetch
        self.drill_timeout = drill_timeout
        self.identity: ServerIdentity | None = None

    @contextlib.contextmanager
    def inputs(self) -> Iterator[BackupInputs]:
        conn = self.conn
        ident = self.identity = identify(conn)
        label = "coffer-" + secrets.token_hex(6)
        from coffer.sources.postgres.wal import parse_lsn

        wal_start = segment_name(ident.timeline, parse_lsn(ident.lsn), ident.seg_size)
        argv = [conn.tool("pg_basebackup", ident.major), "-d", conn.conninfo(), "-D", "-", "-F", "tar",
                "-X", self.wal_method, "--checkpoint=fast", "-l", label, "-v"]
        stream = DumpStream(BASE_NAME, conn.command(argv), what="pg_basebackup", trailer=b"\0" * 1024)
        started = time.time()

        def manifest() -> dict[str, Any]:
            return {"format": FORMAT, "host": env.hostname(), "server": conn.describe(), "sysid": ident.sysid,
                    "timeline": ident.timeline, "server_version": ident.version, "server_major": ident.major,
                    "wal_segment_size": ident.seg_size, "label": label, "wal_start": wal_start,
                    "wal_method": self.wal_method, "started": started}

        tags = ["postgres", TAG_BASE, dataset_tag(self.dataset), SYSID_PREFIX + ident.sysid, LABEL_PREFIX + label,
                WAL_START_PREFIX + wal_start, *self.tags]
        try:
            yield BackupInputs(streams=[json_stream(MANIFEST_NAME, manifest), stream.stream_input()], tags=tags)
        finally:
            stream.abort()

    def verify_restored(self, restored: Path) -> VerifyOutcome:
        """Start the restored base backup in a throwaway server (to a random time of the archive when
        the source knows it), then run the checks."""
        tar = os.path.join(str(restored), BASE_NAME)
        if not os.path.exists(tar):
            return VerifyOutcome(False, [("base.tar present", False, "the snapshot has no base.tar")])
        with open(tar, "rb") as f:
            return drill_base_backup(
                f, read_manifest(str(restored)) or {}, checks=self.checks, row_counts=self.row_counts,
                amcheck=self.amcheck, archive=self.archive, timeout=self.drill_timeout)


# ---------------------------------------------------------------------------------------- extraction
def _safe_member_path(name: str) -> str:
    n = name[2:] if name.startswith("./") else name
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or any(p == ".." for p in parts):
        raise RestoreError(f"base.tar: refusing member {name!r} (outside the data directory)")
    return "/".join(parts)


def extract_base_tar(stream: IO[bytes], target: str) -> dict[str, Any]:
    """Extract a pg_basebackup tar into ``target`` (created 0700, must be empty) while it streams.

    ``global/pg_control`` is written under a temporary name and only renamed by ``finish_extract``."""
    if os.path.exists(target) and os.listdir(target):
        raise RestoreError(f"{target} is not empty; restore into a new or empty directory")
    os.makedirs(target, mode=0o700, exist_ok=True)
    os.chmod(target, 0o700)
    info: dict[str, Any] = {"files": 0, "bytes": 0, "backup_label": None, "manifest": False, "control": False}
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        for m in tf:
            rel = _safe_member_path(m.name)
            dest = os.path.join(target, rel)
            if m.isdir():
                os.makedirs(dest, mode=0o700, exist_ok=True)
                continue
            if m.issym():
                if rel.startswith("pg_tblspc/"):
                    raise RestoreError("base.tar has tablespaces; coffer's streamed base backups cannot hold them")
                raise RestoreError(f"base.tar: unexpected symbolic link {m.name!r}")
            if not m.isfile():
                raise RestoreError(f"base.tar: unexpected member type for {m.name!r}")
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            if rel == CONTROL:
                dest = os.path.join(target, HELD_BACK)
                info["control"] = True
            src = tf.extractfile(m)
            assert src is not None
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            info["files"] += 1
            info["bytes"] += m.size
            if rel == "backup_label":
                with open(dest, encoding="utf-8", errors="replace") as f:
                    info["backup_label"] = f.read()
            elif rel == "backup_manifest":
                info["manifest"] = True
    if not info["control"]:
        raise RestoreError("base.tar has no global/pg_control: it is not a complete base backup")
    if info["backup_label"] is None:
        raise RestoreError("base.tar has no backup_label: it is not a base backup")
    return info


def finish_extract(target: str, user: str | None) -> None:
    """The last step of a restore: ownership, then pg_control under its real name."""
    chown_tree(target, user)
    os.replace(os.path.join(target, HELD_BACK), os.path.join(target, CONTROL))


def write_recovery(target: str, *, restore_command: str | None, target_time: str | None = None,
                   immediate: bool = False, port: int | None = None, extra: dict[str, str] | None = None) -> None:
    """Recovery settings at the end of postgresql.auto.conf, plus recovery.signal."""
    lines = [RECOVERY_MARK + " (remove them once the server runs as a primary)"]

    def q(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    settings: dict[str, str] = {}
    if restore_command:
        settings["restore_command"] = q(restore_command)
    if target_time:
        settings["recovery_target_time"] = q(target_time)
    elif immediate:
        settings["recovery_target"] = q("immediate")
    settings["recovery_target_action"] = q("promote")
    settings["recovery_target_timeline"] = q("latest")
    settings["archive_mode"] = q("off")  # a restored copy never pushes into the archive it came from
    if port:
        settings["port"] = str(int(port))
    for k, v in (extra or {}).items():
        settings[k] = q(v)
    lines += [f"{k} = {v}" for k, v in settings.items()]
    with open(os.path.join(target, "postgresql.auto.conf"), "a", encoding="utf-8") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    if restore_command or target_time or immediate:
        Path(target, "recovery.signal").touch(mode=0o600)
    for name, default in (("postgresql.conf", ""), ("pg_hba.conf", "local all all peer\n"),
                          ("pg_ident.conf", "")):
        p = os.path.join(target, name)
        if not os.path.exists(p):  # Debian keeps these in /etc; the data directory alone must still start
            with open(p, "w", encoding="utf-8") as f:
                f.write(default)


def pg_time(ns: int) -> str:
    """A timestamptz literal PostgreSQL reads exactly (UTC, microseconds)."""
    secs, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs)) + f".{rem // 1000:06d}+00"


# ---------------------------------------------------------------------------------------- drill
def drill_base_backup(
    tar_stream: IO[bytes], manifest: dict[str, Any], *, checks: Sequence[SqlCheck] = (),
    row_counts: Sequence[RowCount] = (), amcheck: bool = True, archive: Any = None, timeout: float = 3600,
    target_ns: int | None = None, window: tuple[int, int] | None = None, marker_sql: str | None = None,
    rng: random.Random | None = None,
) -> VerifyOutcome:
    """Restore into a throwaway server and prove it starts. With ``archive`` (an ArchiveAccess) the
    recovery replays archived WAL to ``target_ns`` (or a random time inside ``window``) through
    wal-fetch scripts, and checks that nothing after that time was applied."""
    log = CheckLog()
    major = manifest.get("server_major")
    t0 = time.monotonic()
    cl: ThrowawayCluster | None = None
    try:
        cl = ThrowawayCluster(major=major if isinstance(major, int) else None)
        data = os.path.join(cl.workdir, "data")
        info = extract_base_tar(tar_stream, data)
        log.add("base backup extracted", True, f"{info['files']} files, {info['bytes']} bytes")
        restore_command = None
        tgt: str | None = None
        if archive is not None:
            from coffer.sources.postgres.setup import write_scripts

            scripts = write_scripts(os.path.join(cl.workdir, "wal"), archive, user=cl.user)
            restore_command = scripts.restore_command
            if target_ns is None and window is not None and window[1] > window[0]:
                target_ns = (rng or random.SystemRandom()).randint(window[0], window[1])
            if target_ns is not None:
                tgt = pg_time(target_ns)
                log.add("recovery target", True, f"{tgt} (random point inside the archived window)"
                        if window else tgt)
        write_recovery(data, restore_command=restore_command, target_time=tgt,
                       immediate=archive is not None and tgt is None)
        finish_extract(data, cl.user)
        cl.start(timeout=timeout, wait=False)
        if restore_command or tgt:
            cl.wait_promoted(timeout)
        else:
            cl.wait_ready(timeout)
        time_to_ready = time.monotonic() - t0
        log.add("server started", True, f"accepting connections after {time_to_ready:.2f}s")
        if tgt is not None and target_ns is not None:
            _check_target(cl, log, target_ns, marker_sql)
        dbs = [d for d in cl.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")
               .splitlines() if d]
        for c in [*checks, *(rc.as_sql_check(quote_dotted) for rc in row_counts)]:
            try:
                ok, detail = c.judge(cl.query(c.sql, dbname=c.database or "postgres"))
            except SourceError as e:
                ok, detail = False, str(e)
            log.add(c.label, ok, detail)
        if amcheck and dbs:
            run_amcheck(cl, log, dbs)
        log.add("time to ready", True, f"{time_to_ready:.2f}s until the restored server accepted connections")
        return VerifyOutcome(ok=log.ok, checks=log.entries, time_to_ready=time_to_ready)
    except (SourceError, RestoreError) as e:
        msg = str(e)
        if cl is not None and cl.log_tail() and cl.log_tail() not in msg:
            msg += "\nserver log:\n" + cl.log_tail()
        log.add("restored server", False, msg)
        return VerifyOutcome(ok=False, checks=log.entries)
    finally:
        if cl is not None:
            cl.cleanup()


def _check_target(cl: ThrowawayCluster, log: CheckLog, target_ns: int, marker_sql: str | None) -> None:
    """Nothing committed after the target was replayed; the log says where recovery stopped."""
    last = cl.query("SELECT extract(epoch FROM pg_last_xact_replay_timestamp())")
    if last:
        last_ns = int(float(last) * 1e9)
        ok = last_ns <= target_ns + 1000
        log.add("recovery stopped at the target", ok,
                f"last replayed commit at {pg_time(last_ns)}, target {pg_time(target_ns)}")
    else:  # the target precedes the first commit after the base backup: nothing was replayed past it
        log.add("recovery stopped at the target", True,
                f"no commit replayed; target {pg_time(target_ns)} precedes the first archived commit")
    stop = [ln for ln in cl.log_text().splitlines() if "recovery stopping" in ln or "reached end of WAL" in ln
            or "consistent recovery state reached" in ln]
    if stop:
        log.add("recovery log", True, stop[-1].split("LOG:", 1)[-1].strip()[:200])
    if marker_sql:
        try:
            v = cl.query(marker_sql).strip()
            if not v:  # NULL/no row: no marker was committed by the target time, which is not a violation
                log.add("marker before target", True,
                        f"marker none, target epoch {target_ns / 1e9:.6f}")
            else:
                ok = int(float(v) * 1e9) <= target_ns
                log.add("marker before target", ok, f"marker {v}, target epoch {target_ns / 1e9:.6f}")
        except (SourceError, ValueError) as e:
            log.add("marker before target", False, str(e))

