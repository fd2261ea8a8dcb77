"""How another program (PostgreSQL's archiver, running as ``postgres``) starts this coffer.

``archive_command`` and ``restore_command`` run without our environment and as another user, so
they need absolute paths that user can execute. The interpreter running us may live somewhere that
user cannot enter (a pyenv under ``/root``); then a system Python of the same version with our
``site-packages`` added is used instead (same ABI, so compiled extensions load). ``COFFER_LAUNCHER``
overrides everything (a shell-quoted command line, e.g. ``/usr/local/bin/coffer``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import site
import stat
import sys

_BOOT = (
    "import site,sys;[site.addsitedir(p) for p in {dirs!r}];"
    "sys.argv[0]='coffer';from coffer.cli.main import main;main()"
)


def _world_executable(path: str) -> bool:
    """Can an unrelated user run this file (every directory on the way searchable by others)?"""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return False
    if not (st.st_mode & stat.S_IXOTH and st.st_mode & stat.S_IROTH):
        return False
    return _world_searchable(os.path.dirname(real))


def _world_searchable(d: str) -> bool:
    """Can an unrelated user enter ``d`` (it and every directory above it searchable by others)?"""
    d = os.path.realpath(d)
    while True:
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        parent = os.path.dirname(d)
        if parent == d:
            return True
        d = parent


def _site_dirs() -> list[str]:
    dirs = [p for p in site.getsitepackages() if os.path.isdir(p)]
    # an editable install's source directory is added by a .pth file in site-packages (addsitedir reads it)
    return dirs


def launcher() -> list[str]:
    """argv prefix that runs ``coffer`` for any local user, from any directory, with no environment."""
    override = os.environ.get("COFFER_LAUNCHER", "").strip()
    if override:
        return shlex.split(override)
    exe = sys.executable
    dirs = _site_dirs()
    if exe and _world_executable(exe) and all(_world_searchable(d) for d in dirs):
        return [os.path.abspath(exe), "-I", "-c", _BOOT.format(dirs=dirs)]
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for cand in (f"/usr/bin/{ver}", f"/usr/local/bin/{ver}", shutil.which(ver) or ""):
        if cand and os.path.isabs(cand) and _world_executable(cand):
            return [cand, "-I", "-c", _BOOT.format(dirs=dirs)]
    return [os.path.abspath(exe), "-I", "-c", _BOOT.format(dirs=dirs)]
