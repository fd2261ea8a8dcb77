"""Dataset type -> Source factory, so the plan layer never imports a source by name.

A source module registers its types when imported (``registry.register("postgres", factory)``);
``create`` imports the module that provides a type on first use. Adding a dataset type is writing
that module and naming it in ``_MODULES``: nothing in ``actions`` or ``verify`` changes.

The factory receives the plan's dataset object. Sources sit below the plan layer and may not
import it, so each source declares a Protocol of the attributes it reads (see ``files.FilesSpec``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from coffer.errors import SourceError
from coffer.sources.base import Source

Factory = Callable[[Any], Source]

# Which module provides each dataset type the plan schema admits.
_MODULES = {
    "files": "coffer.sources.files",
    "postgres": "coffer.sources.postgres",
    "postgres-wal": "coffer.sources.postgres",
    "mysql": "coffer.sources.mysql",
    "sqlite": "coffer.sources.sqlite",
}
_FACTORIES: dict[str, Factory] = {}


class DatasetSpec(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...


def register(kind: str, factory: Factory) -> None:
    _FACTORIES[kind] = factory


def known_types() -> list[str]:
    return sorted(set(_MODULES) | set(_FACTORIES))


def factory_for(kind: str) -> Factory:
    if kind not in _FACTORIES and kind in _MODULES:
        module = _MODULES[kind]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and module.startswith(e.name):
                raise SourceError(f"dataset type {kind!r} is not available in this coffer yet "
                                  f"({module} is missing)") from None
            raise
    try:
        return _FACTORIES[kind]
    except KeyError:
        if kind in _MODULES:
            raise SourceError(f"dataset type {kind!r}: {_MODULES[kind]} does not register a source for it "
                              f"(it must call coffer.sources.registry.register({kind!r}, factory))") from None
        raise SourceError(f"unknown dataset type {kind!r} (known: {', '.join(known_types())})") from None


def create(spec: DatasetSpec) -> Source:
    """The Source for a plan dataset."""
    return factory_for(spec.type)(spec)
