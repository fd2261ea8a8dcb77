"""One module per command; each exposes a click command named ``command``.

Modules are discovered, so adding a command is adding a file (private helpers start with "_").
"""

from __future__ import annotations

import importlib
import pkgutil

import click


def _load() -> list[click.Command]:
    cmds = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        cmd = getattr(mod, "command", None)
        if isinstance(cmd, click.Command):
            cmds.append(cmd)
    return cmds


COMMANDS = _load()
