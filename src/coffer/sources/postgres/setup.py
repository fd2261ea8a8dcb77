"""Scripts PostgreSQL runs as ``archive_command`` and ``restore_command``.

They must work on their own: PostgreSQL runs them as the ``postgres`` user, from the data
directory, with the server's environment, not ours. So everything they need is written next to
them, in a directory only that user can read (0700; files 0600, scripts 0700):

    repository   the repository location
    password     the repository password
    wal-push     archive_command  = '<dir>/wal-push %p'
    wal-fetch    restore_command  = '<dir>/wal-fetch %f %p'
    cache/       snapshot metadata cache;  spool/  segments fetched ahead during recovery

The scripts name the interpreter and coffer by absolute paths (``util.selfexec``) and export the
storage credentials (``AWS_*``, ...) that were set when they were written; since they contain those
secrets they are readable by their owner alone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from coffer.errors import SourceError
from coffer.util import gotime
from coffer.util.process import Command, run
from coffer.util.selfexec import launcher

# Storage credentials a repository URL may need, carried into the scripts.
ENV_PREFIXES = ("AWS_", "B2_", "AZURE_", "GOOGLE_", "GOOGLE_APPLICATION_CREDENTIALS", "OS_", "ST_", "RCLONE_",
                "RESTIC_REST_", "COFFER_REST_", "COFFER_LAUNCHER")
_NOT_CARRIED = ("PASSWORD", "REPOSITORY", "CACHE_DIR", "FAILPOINT")


def backend_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    out = {}
    for k, v in env.items():
        if any(k.startswith(p) for p in ENV_PREFIXES) and not any(x in k for x in _NOT_CARRIED):
            out[k] = v
    return out


@dataclass
class ArchiveAccess:
    """How a script (or a drill) reaches the WAL archive: repository, password, dataset."""

    url: str
    password: str | Callable[[], str] = field(repr=False)
    dataset: str
    options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def get_password(self) -> str:
        return self.password() if callable(self.password) else self.password


@dataclass(frozen=True)
class Scripts:
    dir: str
    push: str
    fetch: str
    user: str | None

    @property
    def archive_command(self) -> str:
        return f"{shlex.quote(self.push)} %p"

    @property
    def restore_command(self) -> str:
        return f"{shlex.quote(self.fetch)} %f %p"


def _owner(user: str | None) -> tuple[int, int] | None:
    if user is None or os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise SourceError(f"user {user!r} does not exist") from None
    return pw.pw_uid, pw.pw_gid


def _write(path: str, text: str, mode: int, owner: tuple[int, int] | None) -> None:
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_scripts(directory: str, access: ArchiveAccess, *, user: str | None = "postgres",
                  prefetch: int = 8, push_options: list[str] | None = None) -> Scripts:
    """Write the private directory with credentials and the two scripts; return their paths."""
    d = os.path.abspath(directory)
    owner = _owner(user)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    for sub in ("cache", "spool"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    if owner:
        for p in (d, os.path.join(d, "cache"), os.path.join(d, "spool")):
            os.chown(p, *owner)
    parent = os.path.dirname(d)
    if owner and not _traversable(parent, owner[0]):
        raise SourceError(f"{parent} cannot be entered by {user}; choose a directory {user} can reach")
    _write(os.path.join(d, "repository"), access.url + "\n", 0o600, owner)
    _write(os.path.join(d, "password"), access.get_password() + "\n", 0o600, owner)
    base = [*launcher(), "--repository-file", os.path.join(d, "repository"),
            "--password-file", os.path.join(d, "password"), "--cache-dir", os.path.join(d, "cache")]
    for k, v in sorted(access.options.items()):
        base += ["-o", f"{k}={v}"]
    header = ["#!/bin/sh",
              f"# Written by coffer at {gotime.format_ns(gotime.now_ns())} for WAL dataset {access.dataset!r}.",
              "# Contains storage credentials: keep it readable by its owner only.",
              "umask 077"]
    for k, v in sorted(access.env.items()):
        header.append(f"export {k}={shlex.quote(v)}")
    push_argv = [*base, "wal-push", "--dataset", access.dataset, *(push_options or [])]
    fetch_argv = [*base, "wal-fetch", "--dataset", access.dataset, "--spool", os.path.join(d, "spool"),
                  "--prefetch", str(prefetch)]
    push = os.path.join(d, "wal-push")
    fetch = os.path.join(d, "wal-fetch")
    _write(push, "\n".join([*header, "exec " + " ".join(shlex.quote(a) for a in push_argv) + ' "$@"', ""]),
           0o700, owner)
    _write(fetch, "\n".join([*header, "exec " + " ".join(shlex.quote(a) for a in fetch_argv) + ' "$@"', ""]),
           0o700, owner)
    return Scripts(d, push, fetch, user if owner else None)


def _traversable(path: str, uid: int) -> bool:
    """Can ``uid`` reach into ``path`` (every directory on the way searchable by it)?"""
    p = os.path.realpath(path)
    while True:
        try:
            st = os.stat(p)
        except OSError:
            return False
        if st.st_uid == uid:
            ok = bool(st.st_mode & 0o100)
        else:
            ok = bool(st.st_mode & 0o001) or bool(st.st_mode & 0o010)  # group: best effort
        if not ok:
            return False
        parent = os.path.dirname(p)
        if parent == p:
            return True
        p = parent


def check_scripts(scripts: Scripts, timeout: float = 120) -> None:
    """Run ``wal-fetch --check`` as the scripts' user: the repository opens with what is written there."""
    r = run(Command([scripts.fetch, "--check"], user=scripts.user, cwd="/"), check=False, timeout=timeout)
    if r.returncode != 0:
        out = (r.stderr.strip() or r.stdout.decode(errors="replace").strip())[-800:]
        raise SourceError(f"{scripts.fetch} does not work as {scripts.user or 'this user'}: {out}",
                          hint="the user must be able to run the Python interpreter and read coffer's installation; "
                               "set COFFER_LAUNCHER to a command that runs coffer for that user")
