"""Named crash sites for fault-injection tests.

``COFFER_FAILPOINT="after_pack_put:3=kill"`` makes the 3rd pass through the ``after_pack_put``
site kill the process with SIGKILL (no cleanup, like a power cut for the process). Several
entries can be separated by ``;``. Actions: ``kill``, ``exit`` (exit 99 without cleanup),
``sleep:<seconds>``. Without the variable every site is a dictionary lookup on a constant.

``COFFER_FAILPOINT_LOG=<file>`` appends the name of every site passed to that file, one per line:
crash tests run a command once with it to learn which sites it passes how often, then pick kill
points from that list.
"""

from __future__ import annotations

import os
import signal
import threading
import time

_SPEC: dict[str, tuple[int, str]] = {}
_HITS: dict[str, int] = {}
_LOCK = threading.Lock()


def _parse(raw: str) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for part in (p.strip() for p in raw.split(";") if p.strip()):
        site, _, action = part.partition("=")
        name, _, nth = site.partition(":")
        out[name.strip()] = (int(nth) if nth else 1, action.strip() or "kill")
    return out


_SPEC = _parse(os.environ.get("COFFER_FAILPOINT", ""))
_LOG = os.environ.get("COFFER_FAILPOINT_LOG") or None


def reload() -> None:
    """Re-read the environment (tests that set the variable in-process)."""
    global _SPEC, _LOG
    with _LOCK:
        _SPEC = _parse(os.environ.get("COFFER_FAILPOINT", ""))
        _LOG = os.environ.get("COFFER_FAILPOINT_LOG") or None
        _HITS.clear()


def _trace(log: str, name: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (name + "\n").encode())
    finally:
        os.close(fd)


def failpoint(name: str) -> None:
    log = _LOG
    if log is not None:
        _trace(log, name)
    if not _SPEC:
        return
    spec = _SPEC.get(name)
    if spec is None:
        return
    with _LOCK:
        n = _HITS[name] = _HITS.get(name, 0) + 1
    if n != spec[0]:
        return
    action = spec[1]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(99)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
