"""Memory settings: glibc malloc's that keep a multi-threaded backup's memory bounded, and the
cyclic garbage collector's that keep it off the hot path.

The pipeline allocates and frees many buffers of 0.5-16 MiB from several threads. Left alone,
glibc raises its mmap threshold after the first such buffer is freed (so later ones come from the
heap and fragment it) and gives each thread its own arena; RSS then grows well past what is live.
A fixed threshold keeps big buffers in mmap, returned to the system on free, and two arenas are
plenty for our few threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

GC_GEN0 = 50_000
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int | None = None, arena_max: int = 2) -> bool:
    """Apply the settings; a no-op (False) on a C library without mallopt.

    ``COFFER_MMAP_THRESHOLD`` (bytes, 0 = glibc's dynamic default) overrides the threshold, for
    measuring the memory/CPU trade-off on a given machine."""
    if mmap_threshold is None:
        mmap_threshold = int(os.environ.get("COFFER_MMAP_THRESHOLD", str(1024 * 1024)))
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) if mmap_threshold else True
    ok = bool(mallopt(M_ARENA_MAX, arena_max)) and ok
    return ok


def tune_gc(gen0: int = GC_GEN0) -> None:
    """Look for reference cycles every ``gen0`` net allocations instead of Python's 700.

    A restore or backup holds hundreds of thousands of long-lived objects (tree nodes, plan
    entries, blob locations); at the default thresholds the collector walks them over and over
    (0.3-0.4 s of CPU in the parent of a 512 MiB restore alone). Cycles are still collected, in
    batches of at most ``gen0`` objects, so memory stays bounded."""
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(gen0, g1, g2)


def skip_final_collection() -> None:
    """At exit, spare the interpreter its last full collection over everything still alive.

    After a restore or backup that is a plan of hundreds of thousands of objects: the collection
    took 0.1-0.15 s of a 4 s restore, for memory the process is about to give back anyway.
    Frozen objects are still freed by reference counting as the modules are torn down; files are
    closed explicitly, never left to a collector."""
    gc.freeze()
