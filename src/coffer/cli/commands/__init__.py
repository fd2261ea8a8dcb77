"""One module per command; each exposes a click command named ``command``.

Commands are found by file name (``wal_push.py`` is ``coffer wal-push``; private helpers start
with "_") and imported only when used, so ``coffer backup`` does not pay for the plan layer's
imports.
"""

from __future__ import annotations

import importlib
import pkgutil

import click


def command_names() -> list[str]:
    return sorted(i.name.replace("_", "-") for i in pkgutil.iter_modules(__path__) if not i.name.startswith("_"))


def load_command(name: str) -> click.Command | None:
    if name not in command_names():
        return None
    mod = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    cmd = getattr(mod, "command", None)
    return cmd if isinstance(cmd, click.Command) else None
