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


def _env(cmd: Command) -> Mapping[str, str]:
    env = dict(os.environ)
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


def run(cmd: Command, *, input: bytes | None = None, timeout: float | None = None, check: bool = True) -> Result:
    """Run to completion and capture output; non-zero exit raises SourceError when ``check``."""
    try:
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
