"""Everything the CLI prints goes through a Printer: text for people, JSON for programs.

stdout carries results (and JSON lines with --json); stderr carries warnings, errors and the
progress line, so piping `coffer ... --json` into a program always yields clean JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from coffer.engine.progress import Progress, ProgressState


class Printer:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr
        self._mu = threading.Lock()

    @property
    def tty(self) -> bool:
        return self.err.isatty()

    def print(self, text: str = "") -> None:
        """Normal output (suppressed by --quiet and --json)."""
        if not self.quiet and not self.json:
            with self._mu:
                self.out.write(text + "\n")
                self.out.flush()

    def result(self, text: str) -> None:
        """Output that is the command's answer (printed even with --quiet)."""
        with self._mu:
            self.out.write(text + "\n")
            self.out.flush()

    def verbose_print(self, level: int, text: str) -> None:
        if self.verbose >= level and not self.json:
            self.print(text)

    def json_line(self, obj: Any) -> None:
        with self._mu:
            self.out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.out.flush()

    def json_doc(self, obj: Any) -> None:
        self.json_line(obj)

    def warn(self, text: str) -> None:
        with self._mu:
            self.err.write(text + "\n")
            self.err.flush()

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], footer: str | None = None) -> None:
        widths = [len(h) for h in headers]
        for r in rows:
            for i, c in enumerate(r):
                first = c.split("\n")
                widths[i] = max(widths[i], *(len(x) for x in first))
        def fmt(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
        line = "-" * (sum(widths) + 2 * (len(widths) - 1))
        self.print(fmt(headers))
        self.print(line)
        for r in rows:
            parts = [c.split("\n") for c in r]
            height = max(len(p) for p in parts)
            for k in range(height):
                self.print(fmt([p[k] if k < len(p) else "" for p in parts]))
        self.print(line)
        if footer:
            self.print(footer)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3f} {unit}"
        n /= 1024
    return f"{n:.3f} TiB"


def format_duration(sec: float) -> str:
    sec = max(0, int(sec))
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressReporter:
    """Draws a status line on a TTY, or prints restic-style JSON status lines, from a thread."""

    def __init__(
        self, printer: Printer, progress: Progress, *, kind: str = "backup",
        json_status: Callable[[ProgressState], dict[str, Any]] | None = None,
    ) -> None:
        self.p = printer
        self.progress = progress
        self.kind = kind
        self.json_status = json_status
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.enabled = (printer.json and json_status is not None and not printer.quiet) or (
            not printer.json and not printer.quiet and printer.tty
        )

    def __enter__(self) -> ProgressReporter:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="progress")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if not self.p.json:
                self.p.err.write("\r\x1b[2K")
                self.p.err.flush()

    def _loop(self) -> None:
        interval = 1.0 if self.p.json else 0.2
        while not self._stop.wait(interval):
            st = self.progress.snapshot()
            if self.p.json and self.json_status is not None:
                self.p.json_line(self.json_status(st))
            else:
                self._draw(st)

    def _draw(self, st: ProgressState) -> None:
        rate = st.bytes_done / st.elapsed if st.elapsed > 0 else 0.0
        pct = ""
        eta = ""
        if st.total_bytes:
            frac = min(1.0, st.bytes_done / st.total_bytes)
            pct = f"{frac * 100:5.1f}%  "
            if rate > 0 and st.scan_finished:
                eta = f"  ETA {format_duration((st.total_bytes - st.bytes_done) / rate)}"
        files = f"{st.files_done} files" + (f" / {st.total_files}" if st.total_files else "")
        line = (
            f"[{format_duration(st.elapsed)}] {pct}{files}, {format_bytes(st.bytes_done)}"
            + (f" / {format_bytes(st.total_bytes)}" if st.total_bytes else "")
            + f", {format_bytes(rate)}/s{eta}"
            + (f", {st.errors} errors" if st.errors else "")
        )
        width = shutil.get_terminal_size((100, 20)).columns
        if st.current and len(line) + 4 < width:
            cur = st.current[0]
            room = width - len(line) - 3
            if len(cur) > room:
                cur = "…" + cur[-(room - 1):]
            line += "  " + cur
        with self.p._mu:
            self.p.err.write("\r\x1b[2K" + line[: width - 1])
            self.p.err.flush()


def now() -> float:
    return time.monotonic()
