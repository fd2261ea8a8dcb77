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


_SHARED_ENV = "COFFER_FAILPOINT_HITS"
_ROOT_ENV = "COFFER_FAILPOINT_ROOT"


def share_with_children() -> None:
    """Before starting helper processes (the backup's workers): count hits in a file they share, so
    ``site:N`` means the N-th pass over all processes, and make ``kill`` take the whole command."""
    if not _SPEC or os.environ.get(_SHARED_ENV):
        return
    import atexit
    import tempfile

    fd, path = tempfile.mkstemp(prefix="coffer-failpoints-")
    with _LOCK:
        body = "".join(f"{k}\n" * v for k, v in _HITS.items())
    os.write(fd, body.encode())
    os.close(fd)
    os.environ[_SHARED_ENV] = path
    os.environ[_ROOT_ENV] = str(os.getpid())
    def remove() -> None:
        if os.path.exists(path):
            os.unlink(path)

    atexit.register(remove)


def _shared_hit(path: str, name: str) -> int:
    import fcntl

    with _LOCK, open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(name.encode() + b"\n")
        f.flush()
        f.seek(0)
        return sum(1 for line in f if line.rstrip(b"\n") == name.encode())


def failpoint(name: str) -> None:
    log = _LOG
    if log is not None:
        _trace(log, name)
    if not _SPEC:
        return
    spec = _SPEC.get(name)
    if spec is None:
        return
    shared = os.environ.get(_SHARED_ENV)
    if shared:
        n = _shared_hit(shared, name)
    else:
        with _LOCK:
            n = _HITS[name] = _HITS.get(name, 0) + 1
    if n != spec[0]:
        return
    action = spec[1]
    if action == "kill":
        root = os.environ.get(_ROOT_ENV)
        if root and int(root) != os.getpid():
            os.kill(int(root), signal.SIGKILL)  # a power cut takes the whole command, not one worker
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(99)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
