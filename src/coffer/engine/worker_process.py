"""What every worker process starts with: die with the parent, ignore Ctrl-C, open the repository.

A module of its own so that a restore worker does not import the backup worker's chunker and
readers just to start (each worker process pays for its imports in CPU the restore could use).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from coffer.store.backend.base import Backend
from coffer.store.repository import Repository
from coffer.util.memory import tune_gc

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def open_backend_recipe(recipe: tuple[str, dict[str, str], bool]) -> Backend:
    """The parent's backend, opened again from its recipe (URL, options, dry run)."""
    from coffer.store.backend.registry import open_backend

    url, options, dry_run = recipe
    backend = open_backend(url, options)
    if dry_run:
        from coffer.store.backend.dryrun import DryRunBackend

        backend = DryRunBackend(backend)
    return backend


def reopen_backend(repo: Repository) -> Backend:
    """A forked worker's own way to ``repo``'s backend, with the same cache in front: never the
    sockets it inherited (its parent keeps using them), and no connection before the first miss."""
    from coffer.store.backend.cache import CachedBackend
    from coffer.store.backend.deferred import DeferredBackend
    from coffer.store.metacache import tree_pack_predicate

    recipe = repo.backend_recipe
    if recipe is None:
        raise ValueError("the repository cannot be reopened in another process")
    inherited = repo.backend
    fresh: Backend = DeferredBackend(lambda: open_backend_recipe(recipe), inherited.properties, inherited.location)
    if isinstance(inherited, CachedBackend):
        return CachedBackend(fresh, inherited.root, repo.config.id, tree_pack_predicate(repo))
    return fresh


def forked_start(repo: Repository) -> None:
    """The first steps of a worker forked with ``repo`` in memory: keep the inherited heap shared
    (the collector never touches those pages) and reach the backend over connections of its own."""
    import gc

    gc.freeze()
    repo.backend = reopen_backend(repo)


def open_repo(setup: dict[str, Any], backend: Backend | None = None) -> Repository:
    """The parent's repository (no password: the key comes along), on ``backend`` if it is open."""
    if backend is None:
        backend = open_backend_recipe(setup["recipe"])
    repo = Repository(backend, setup["key"], setup["config"], setup["key_id"])
    repo.index_loaded = True  # empty: the parent looks blobs up and sends their locations
    repo.compression_level = setup.get("level", repo.compression_level)
    repo.pack_size = setup.get("pack_size", repo.pack_size)
    return repo


def send_fatal(out: Connection, job: Any, e: BaseException) -> None:
    """Tell the parent why this worker gives up (it may be gone already)."""
    try:
        out.send(("fatal", job, type(e).__name__, str(e), getattr(e, "hint", None)))
    except OSError:
        pass


def worker_main(argv: list[str], serve: Callable[[Connection, Connection], int]) -> int:
    """The start of every spawned worker process: ``argv`` is ``[prog, REQ_FD, RES_FD, PARENT_PID]``."""
    return run_worker(int(argv[1]), int(argv[2]), int(argv[3]), serve)


def run_worker(req_fd: int, res_fd: int, parent_pid: int, serve: Callable[[Connection, Connection], int]) -> int:
    """A worker's life, spawned or forked: tied to its parent, deaf to Ctrl-C, serving two pipes."""
    die_with_parent(parent_pid)
    tune_gc()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker would inherit the CLI's handler
    return serve(Connection(req_fd, writable=False), Connection(res_fd, readable=False))
