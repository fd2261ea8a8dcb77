"""One module per command; each exposes a click command named ``command``."""

from __future__ import annotations

import importlib

import click

_MODULES = (
    "init",
    "backup",
    "snapshots",
    "unlock",
    "ls",
    "find",
    "diff",
    "cat",
    "stats",
    "key",
    "check",
    "restore",
)


def _load() -> list[click.Command]:
    return [importlib.import_module(f"coffer.cli.commands.{name}").command for name in _MODULES]


COMMANDS = _load()
