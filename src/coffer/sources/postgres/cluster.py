"""A throwaway PostgreSQL server for drills: temporary directory, free port, private socket.

It never touches the production instance: it listens on no TCP address at all, only on a Unix
socket in its own directory, its own ``pg_hba.conf`` trusts that socket alone, and archiving is
forced off so a restored copy can never push WAL into the production archive.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from coffer.errors import SourceError
from coffer.sources.dbcommon import free_port, wait_until
from coffer.sources.postgres.conn import PgConn, bin_dir_for, psql
from coffer.util.process import Command, run

SERVER_USER = "postgres"


def os_user() -> str | None:
    """The OS user servers run as: ``postgres`` when we are root (root may not run PostgreSQL)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise SourceError("running as root, but there is no 'postgres' user to run PostgreSQL as",
                          hint="create the user, or run coffer as an unprivileged user") from None
    return SERVER_USER


def chown_tree(path: str, user: str | None) -> None:
    if user is None:
        return
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
            except FileNotFoundError:
                pass


class ThrowawayCluster:
    """initdb (or an existing restored data directory) + pg_ctl, in a private temporary directory."""

    def __init__(self, *, major: int | None = None, bin_dir: str | None = None, data_dir: str | None = None,
                 workdir: str | None = None, port: int | None = None, keep: bool = False,
                 drill: bool = True, archive_off: bool = True) -> None:
        self.bin_dir = bin_dir_for(major, bin_dir)
        if self.bin_dir is None or not os.path.exists(os.path.join(self.bin_dir, "pg_ctl")):
            raise SourceError(
                f"PostgreSQL {major or ''} server programs (initdb, pg_ctl) are not installed".replace("  ", " "),
                hint="install the postgresql server package of that version on the drill host")
        self.user = os_user()
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="coffer-pg-")
        os.chmod(self.workdir, 0o700)
        self.data_dir = data_dir or os.path.join(self.workdir, "data")
        self.sock_dir = os.path.join(self.workdir, "sock")
        os.makedirs(self.sock_dir, exist_ok=True)
        self.port = port or free_port()
        self.log = os.path.join(self.workdir, "server.log")
        self.hba = os.path.join(self.workdir, "pg_hba.conf")
        self.keep = keep
        self.drill = drill  # False: a restored server the user keeps; only its own settings apply
        self.archive_off = archive_off  # a drill's copy must never push WAL into the production archive
        self.started = False
        with open(self.hba, "w") as f:
            f.write("local all all trust\nlocal replication all trust\n")
        chown_tree(self.workdir, self.user)

    # ------------------------------------------------------------------ programs
    def prog(self, name: str) -> str:
        assert self.bin_dir is not None
        return os.path.join(self.bin_dir, name)

    def cmd(self, argv: list[str]) -> Command:
        # a clean environment: the server and its restore_command must work without our variables
        return Command(argv, user=self.user, env={"PGTZ": "UTC"}, inherit_env=False)

    @property
    def conn(self) -> PgConn:
        return PgConn(host=self.sock_dir, port=self.port, user=SERVER_USER, bin_dir=self.bin_dir, os_user=self.user)

    def initdb(self, *, settings: dict[str, str] | None = None) -> None:
        run(self.cmd([self.prog("initdb"), "-D", self.data_dir, "-A", "trust", "-U", SERVER_USER, "--no-sync",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]), timeout=300)
        if settings:
            self.append_conf(settings)

    def append_conf(self, settings: dict[str, str], file: str = "postgresql.conf") -> None:
        with open(os.path.join(self.data_dir, file), "a", encoding="utf-8") as f:
            f.write("\n# coffer drill\n")
            for k, v in settings.items():
                val = v if v.replace(".", "").isdigit() else "'" + v.replace("'", "''") + "'"
                f.write(f"{k} = {val}\n")

    def server_options(self) -> list[str]:
        if not self.drill:
            return []
        opts = {
            "port": str(self.port),
            "listen_addresses": "",
            "unix_socket_directories": self.sock_dir,
            "hba_file": self.hba,
            "ssl": "off",
            "logging_collector": "off",
            "log_destination": "stderr",
            "data_directory": self.data_dir,
            "config_file": os.path.join(self.data_dir, "postgresql.conf"),
            "cluster_name": "coffer-drill",
        }
        if self.archive_off:
            opts["archive_mode"] = "off"
        return [f"-c {shlex.quote(f'{k}={v}')}" for k, v in opts.items()]

    def start(self, *, timeout: float = 120, wait: bool = True) -> float:
        """Start the server; with ``wait``, return the seconds until it accepted connections."""
        conf = os.path.join(self.data_dir, "postgresql.conf")
        if not os.path.exists(conf):  # e.g. Debian keeps it in /etc: the restored directory has none
            Path(conf).touch()
            chown_tree(conf, self.user)
        t0 = time.monotonic()
        # -w: pg_ctl waits until the server accepts connections (a standby in recovery: once it is
        # consistent) or reports that it failed; -t bounds the wait.
        argv = [self.prog("pg_ctl"), "-D", self.data_dir, "-l", self.log, "-s", "-w", "-t", str(int(timeout)),
                "start"]
        if self.server_options():
            argv[1:1] = ["-o", " ".join(self.server_options())]
        r = run(self.cmd(argv), timeout=timeout + 30, check=False)
        self.started = True
        if r.returncode != 0:
            gone = self.server_gone()
            raise SourceError(f"PostgreSQL did not start: {r.stderr.strip() or r.stdout.decode().strip()}\n"
                              f"{self.log_tail()}" if gone else f"PostgreSQL is not ready after {timeout:.0f}s")
        if wait:
            self.wait_ready(timeout)
        return time.monotonic() - t0

    def accepting(self) -> bool:
        r = run(self.cmd([self.prog("pg_isready"), "-q", "-h", self.sock_dir, "-p", str(self.port), "-U",
                          SERVER_USER, "-d", "postgres", "-t", "2"]), check=False, timeout=30)
        return r.returncode == 0

    def server_gone(self) -> str | None:
        """Why the server is not running any more (from its log), or None while it runs."""
        pidfile = os.path.join(self.data_dir, "postmaster.pid")
        if os.path.exists(pidfile):
            try:
                pid = int(Path(pidfile).read_text().split("\n", 1)[0])
                os.kill(pid, 0)
                return None
            except (ValueError, OSError):
                pass
        return "the drill's PostgreSQL stopped: " + (self.log_tail() or "(no log)")

    def wait_ready(self, timeout: float = 120) -> float:
        return wait_until(self.accepting, timeout, 0.1, fail=self.server_gone)

    def wait_promoted(self, timeout: float = 600) -> float:
        """Wait until recovery ended (the server accepts writes)."""
        def promoted() -> bool:
            try:
                return self.query("SELECT pg_is_in_recovery()") == "f"
            except SourceError:
                return False
        return wait_until(promoted, timeout, 0.2, fail=self.server_gone)

    def query(self, sql: str, dbname: str = "postgres") -> str:
        return psql(self.conn, sql, dbname=dbname)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self.log).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, mode: str = "fast") -> None:
        if not self.started:
            return
        run(self.cmd([self.prog("pg_ctl"), "-D", self.data_dir, "-s", "-m", mode, "-w", "-t", "60", "stop"]),
            check=False, timeout=120)
        if self.server_gone() is None:
            run(self.cmd([self.prog("pg_ctl"), "-D", self.data_dir, "-s", "-m", "immediate", "-w", "stop"]),
                check=False, timeout=60)
        self.started = False

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self._own_workdir and not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ThrowawayCluster:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()
