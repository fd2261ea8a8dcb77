"""The injected world: who and where we are, and what time it is.

Kept in one place so tests can substitute a host name or a clock, and so that the values restic
records (host, user, uid/gid) are computed the same way everywhere.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import socket


def env_int(name: str, default: int) -> int:
    """An integer tuning knob from the environment (``default`` when unset or empty)."""
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return int(v)
    except ValueError:
        from coffer.errors import UsageError

        raise UsageError(f"{name} must be an integer, got {v!r}") from None


@functools.cache
def hostname() -> str:
    return os.environ.get("COFFER_HOSTNAME") or socket.gethostname()


@functools.cache
def username() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "")


@functools.cache
def user_name(uid: int) -> str:
    """Name for a uid, "" when unknown (as restic records it)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return ""


@functools.cache
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return ""


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists on this host (signal 0 disturbs nobody)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
