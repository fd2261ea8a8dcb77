"""Dataset type ``files``: directories and files read straight from the file system.

The simplest source and the model for the others: nothing to prepare (no dump, no checkpoint),
the engine walks the paths itself, and a restored copy is proven by the engine's content-hash
verification alone (the plan's drill checks run on top of that).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from coffer.engine.excludes import ExcludeRules
from coffer.errors import SourceError
from coffer.sources import registry
from coffer.sources.base import BackupInputs, Source, VerifyOutcome


class FilesSpec(Protocol):
    """What this source reads from a plan's dataset (the plan's ``files`` dataset model fits it)."""

    @property
    def paths(self) -> Sequence[str]: ...
    @property
    def excludes(self) -> Sequence[str]: ...
    @property
    def exclude_caches(self) -> bool: ...
    @property
    def one_file_system(self) -> bool: ...


class FilesSource(Source):
    kind = "files"

    def __init__(self, paths: Sequence[str], excludes: Sequence[str] = (), *, exclude_caches: bool = False,
                 one_file_system: bool = False) -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        self.excludes = list(excludes)
        self.exclude_caches = exclude_caches
        self.one_file_system = one_file_system

    @classmethod
    def from_spec(cls, spec: FilesSpec) -> FilesSource:
        return cls(spec.paths, spec.excludes, exclude_caches=spec.exclude_caches,
                   one_file_system=spec.one_file_system)

    def changed_since(self, ts: float) -> bool:
        """Has anything under the paths changed after ``ts`` (epoch seconds)? For ``on-change``.

        A metadata walk only: a new, deleted or renamed entry changes its directory's mtime, a
        content change the file's mtime, a chmod/chown/xattr change its ctime. Stops at the first
        change, so a changed tree answers fast."""
        rules = ExcludeRules.build(self.excludes, exclude_caches=self.exclude_caches,
                                   one_file_system=self.one_file_system)
        limit = int(ts * 1_000_000_000)
        stack = list(self.paths)
        while stack:
            p = stack.pop()
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return True  # something we back up is gone: that is a change too
            except OSError:
                continue
            if st.st_mtime_ns > limit or st.st_ctime_ns > limit:
                return True
            if os.path.isdir(p) and not os.path.islink(p):
                try:
                    names = os.listdir(p)
                except OSError:
                    continue
                stack.extend(c for c in (os.path.join(p, n) for n in names) if not rules.excluded(c))
        return False

    @contextlib.contextmanager
    def inputs(self) -> Iterator[BackupInputs]:
        missing = [p for p in self.paths if not os.path.lexists(p)]
        if missing:
            # A dataset whose data vanished must fail loudly, not produce an empty "successful" snapshot.
            raise SourceError(f"path(s) to back up do not exist: {', '.join(missing)}")
        yield BackupInputs(
            paths=list(self.paths),
            excludes=ExcludeRules.build(self.excludes, exclude_caches=self.exclude_caches,
                                        one_file_system=self.one_file_system),
        )

    def verify_restored(self, restored: Path) -> VerifyOutcome:
        """Every file's content hash was already verified by the restore; nothing else to start."""
        return VerifyOutcome(ok=True)


registry.register("files", FilesSource.from_spec)
