"""Catalog schema migrations, applied in order and recorded in ``schema_migrations``.

Each module ``mNNNN_<what>.py`` holds ``VERSION`` (its number) and ``STATEMENTS`` (SQL run in one
transaction). Migrations are only ever added, never edited once released: an existing catalog is
brought forward step by step, and a catalog newer than this program is refused rather than
misread. The SQL is kept portable (no SQLite-only types) so a fleet can point the catalog at
PostgreSQL later.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def all_migrations() -> list[Migration]:
    out = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("m"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        out.append(Migration(int(mod.VERSION), info.name, tuple(mod.STATEMENTS)))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if versions != list(range(1, len(out) + 1)):
        raise RuntimeError(f"catalog migrations are not numbered 1..n: {versions}")
    return out
