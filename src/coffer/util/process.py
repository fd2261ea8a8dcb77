"""The one place coffer starts other programs (pg_dump, mariadb-dump, psql, ...).

Commands are argv lists built as data by their callers; this module runs them, passes secrets
through the environment (never argv, which `ps` shows), keeps the tail of stderr for error
messages, and masks known secrets in anything it reports.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from coffer.errors import SourceError

STDERR_TAIL_LINES = 20


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the inherited environment
    secrets: list[str] = field(default_factory=list)  # values masked in messages
    cwd: str | None = None
    user: str | None = None  # run as this user (e.g. "postgres") via runuser when we are root
    inherit_env: bool = True  # False: only a minimal PATH/LANG plus ``env`` (a server must not inherit our secrets)

    def display(self) -> str:
        return mask(" ".join(self.argv), self.secrets)


def mask(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "****")
    return text


def _full_argv(cmd: Command) -> list[str]:
    if cmd.user and os.geteuid() == 0:
        import pwd

        try:
            if pwd.getpwnam(cmd.user).pw_uid != 0:
                return ["runuser", "-u", cmd.user, "--", *cmd.argv]
        except KeyError:
            raise SourceError(f"user {cmd.user!r} does not exist") from None
    return list(cmd.argv)


MINIMAL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _env(cmd: Command) -> Mapping[str, str]:
    env = dict(os.environ) if cmd.inherit_env else dict(MINIMAL_ENV)
    env.update(cmd.env)
    return env


class StreamingProcess:
    """A running program whose stdout is read as a stream (a dump piped into a backup)."""

    def __init__(self, cmd: Command) -> None:
        self.cmd = cmd
        try:
            self.proc = subprocess.Popen(
                _full_argv(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                env=_env(cmd), cwd=cmd.cwd,
            )
        except OSError as e:
            raise SourceError(f"cannot start {cmd.argv[0]}: {e.strerror}") from None
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        assert self.proc.stderr is not None
        self._err_thread = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._err_thread.start()

    def _drain(self, f: IO[bytes]) -> None:
        for line in iter(f.readline, b""):
            self._tail.append(line.decode("utf-8", "replace").rstrip())

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def stderr_tail(self) -> str:
        return mask("\n".join(self._tail), self.cmd.secrets)

    def wait(self) -> None:
        """Wait for the exit; a non-zero status raises SourceError with the stderr tail."""
        rc = self.proc.wait()
        self._err_thread.join(timeout=5)
        if rc != 0:
            raise SourceError(
                f"{self.cmd.argv[0]} failed with exit status {rc}: {self.stderr_tail() or '(no error output)'}"
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str


def run(
    cmd: Command, *, input: bytes | None = None, timeout: float | None = None, check: bool = True,
    stdin_path: str | None = None,
) -> Result:
    """Run to completion and capture output; non-zero exit raises SourceError when ``check``.

    ``stdin_path`` feeds a file as standard input (a dump loaded into a server) without reading it
    into memory; it is opened by us, so the program needs no permission on it."""
    try:
        if stdin_path is not None:
            with open(stdin_path, "rb") as stdin_f:
                p = subprocess.run(
                    _full_argv(cmd), stdin=stdin_f, capture_output=True, env=_env(cmd), cwd=cmd.cwd,
                    timeout=timeout,
                )
        else:
            p = subprocess.run(
                _full_argv(cmd), input=input, capture_output=True, env=_env(cmd), cwd=cmd.cwd, timeout=timeout,
            )
    except OSError as e:
        raise SourceError(f"cannot start {cmd.argv[0]}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{cmd.display()} did not finish within {timeout:.0f}s") from None
    err = mask(p.stderr.decode("utf-8", "replace"), cmd.secrets)
    if check and p.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-STDERR_TAIL_LINES:])
        raise SourceError(f"{cmd.argv[0]} failed with exit status {p.returncode}: {tail or '(no error output)'}")
    return Result(p.returncode, p.stdout, err)


class Background:
    """A long-running program (a throwaway database server) whose output goes to a log file.

    It is started in its own process group, so ``stop`` reaches a wrapper such as runuser and the
    server behind it alike."""

    def __init__(self, cmd: Command, log_path: str) -> None:
        self.cmd = cmd
        self.log_path = log_path
        try:
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    _full_argv(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=_env(cmd), cwd=cmd.cwd, start_new_session=True,
                )
        except OSError as e:
            raise SourceError(f"cannot start {cmd.argv[0]}: {e.strerror}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return mask("\n".join(text.strip().splitlines()[-lines:]), self.cmd.secrets)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
        import signal

        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
