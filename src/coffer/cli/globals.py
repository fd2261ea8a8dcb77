"""Global options: where the repository is and how to get its password.

Precedence follows restic: a flag beats an environment variable; for the password, a command beats
a file beats the variable, and only then does a terminal prompt. ``COFFER_*`` variables are read
first, then their ``RESTIC_*`` equivalents, so coffer drops into a restic setup unchanged.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from coffer.actions.session import LockMode, RepoAccess, open_repo
from coffer.cli.output import Printer
from coffer.errors import CofferError, UsageError
from coffer.store.repository import Repository


def env(name: str) -> str:
    """COFFER_<name>, else RESTIC_<name>, else ""."""
    return os.environ.get("COFFER_" + name) or os.environ.get("RESTIC_" + name) or ""


def parse_size(s: str) -> int:
    s = s.strip()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if s and s[-1].lower() in mult:
            return int(float(s[:-1]) * mult[s[-1].lower()])
        return int(s)
    except ValueError:
        raise UsageError(f"invalid size {s!r}") from None


def parse_duration(s: str) -> float:
    """Go-style durations ("90s", "5m", "1h30m") as seconds."""
    import re

    s = s.strip()
    if not s:
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise UsageError(f"invalid duration {s!r} (examples: 30s, 5m, 1h30m)")
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(a) * unit[b] for a, b in parts)


@dataclass
class GlobalOptions:
    repo: str = ""
    repository_file: str = ""
    password_file: str = ""
    password_command: str = ""
    key_hint: str = ""
    json: bool = False
    quiet: bool = False
    verbose: int = 0
    no_lock: bool = False
    retry_lock: str = ""
    no_cache: bool = False
    cache_dir: str = ""
    compression: str = ""
    pack_size: str = ""
    options: list[str] = field(default_factory=list)
    printer: Printer = field(default_factory=Printer)
    _password: str | None = None

    def __post_init__(self) -> None:
        self.printer = Printer(json_mode=self.json, quiet=self.quiet, verbose=self.verbose)

    # -------------------------------------------------------------- repository location
    def repository(self) -> str:
        if self.repo:
            return self.repo
        rf = self.repository_file or env("REPOSITORY_FILE")
        if rf and not env("REPOSITORY"):
            try:
                with open(rf, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as e:
                raise UsageError(f"cannot read repository file {rf}: {e.strerror}") from None
        r = env("REPOSITORY")
        if not r:
            raise UsageError(
                "Please specify repository location (-r or --repository-file)",
                hint="or set COFFER_REPOSITORY (RESTIC_REPOSITORY works too)",
            )
        return r

    # -------------------------------------------------------------- password
    def password(self, *, prompt: str = "enter password for repository: ") -> str:
        if self._password is None:
            self._password = self._resolve_password(prompt)
        return self._password

    def _resolve_password(self, prompt: str) -> str:
        cmd = self.password_command or env("PASSWORD_COMMAND")
        pfile = self.password_file or env("PASSWORD_FILE")
        if self.password_command and self.password_file:
            raise UsageError("--password-file and --password-command are mutually exclusive")
        if cmd and not self.password_file:
            return run_password_command(cmd)
        if pfile:
            return read_password_file(pfile)
        pw = env("PASSWORD")
        if pw:
            return pw
        if sys.stdin.isatty():
            pw = getpass.getpass(prompt)
            if not pw:
                raise UsageError("an empty password is not allowed")
            return pw
        raise UsageError(
            "Resolving password failed: no password given and no terminal to ask on",
            hint="use --password-file, --password-command or COFFER_PASSWORD",
        )

    def new_password(self, prompt: str = "enter password for new repository: ") -> str:
        """A password for init / key add: from the usual sources, or asked twice on a TTY."""
        if self.password_command or self.password_file or env("PASSWORD_COMMAND") or env("PASSWORD_FILE") \
                or env("PASSWORD"):
            return self.password()
        if not sys.stdin.isatty():
            return self.password()
        a = getpass.getpass(prompt)
        b = getpass.getpass("enter password again: ")
        if a != b:
            raise UsageError("passwords do not match")
        if not a:
            raise UsageError("an empty password is not allowed")
        self._password = a
        return a

    # -------------------------------------------------------------- opening
    def access(self, url: str | None = None) -> RepoAccess:
        opts: dict[str, str] = {}
        for o in self.options:
            if "=" not in o:
                raise UsageError(f"invalid option {o!r}: use key=value")
            k, v = o.split("=", 1)
            opts[k.strip()] = v.strip()
        if self.no_cache:
            opts["cache"] = "off"
        if self.cache_dir:
            opts["cache-dir"] = self.cache_dir
        return RepoAccess(
            url=url or self.repository(),
            password=lambda: self.password(),
            options=opts,
            no_lock=self.no_lock,
            retry_lock=parse_duration(self.retry_lock) if self.retry_lock else 0.0,
            compression=self.compression or env("COMPRESSION") or "auto",
            pack_size=parse_size(self.pack_size + ("M" if self.pack_size.isdigit() else "")) if self.pack_size
            else None,
            key_hint=self.key_hint or env("KEY_HINT") or None,
            warn=self.printer.warn,
        )

    @contextlib.contextmanager
    def open(self, lock: LockMode = "shared") -> Iterator[Repository]:
        with open_repo(self.access(), lock) as repo:
            yield repo


def read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            data = f.read()
    except OSError as e:
        raise UsageError(f"cannot read password file {path}: {e.strerror}") from None
    pw = data.rstrip("\r\n")
    if not pw:
        raise UsageError(f"password file {path} is empty")
    return pw


def run_password_command(cmd: str) -> str:
    try:
        r = subprocess.run(shlex.split(cmd), capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CofferError(f"password command failed: {e}") from None
    if r.returncode != 0:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise CofferError(f"password command exited with status {r.returncode}: {tail[0]}")
    pw = r.stdout.decode("utf-8", "replace").rstrip("\r\n")
    if not pw:
        raise UsageError("password command returned an empty password")
    return pw
