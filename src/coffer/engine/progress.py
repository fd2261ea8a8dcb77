"""Progress counters the engine updates and front-ends read.

The engine never prints. It bumps counters (approximate while running; the summary is exact) and
reports warnings as collected values; a front-end polls ``snapshot()`` to draw a bar or emit
JSON status lines.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Warning_:
    path: str
    message: str
    during: str = "archival"  # restic's JSON "error.during": scan, archival, read...


@dataclass
class ProgressState:
    elapsed: float
    total_files: int
    total_bytes: int
    files_done: int
    bytes_done: int
    errors: int
    current: list[str]
    scan_finished: bool


@dataclass
class Progress:
    """Thread-safe enough counters: ints updated under a lock, read without one."""

    total_files: int = 0
    total_bytes: int = 0
    files_done: int = 0
    bytes_done: int = 0
    scan_finished: bool = False
    warnings: list[Warning_] = field(default_factory=list)
    current: dict[int, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    on_warning: object = None  # callable(Warning_) for front-ends that print as they go
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_total(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.total_files += files
            self.total_bytes += nbytes

    def add_done(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.files_done += files
            self.bytes_done += nbytes

    def add_bytes(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_done += nbytes

    def begin_item(self, path: str) -> None:
        self.current[threading.get_ident()] = path

    def end_item(self) -> None:
        self.current.pop(threading.get_ident(), None)

    def warn(self, path: str, message: str, during: str = "archival") -> None:
        w = Warning_(path, message, during)
        with self._lock:
            self.warnings.append(w)
        cb = self.on_warning
        if callable(cb):
            cb(w)

    def snapshot(self) -> ProgressState:
        return ProgressState(
            elapsed=time.monotonic() - self.started, total_files=self.total_files, total_bytes=self.total_bytes,
            files_done=self.files_done, bytes_done=self.bytes_done, errors=len(self.warnings),
            current=sorted(self.current.values()), scan_finished=self.scan_finished,
        )
