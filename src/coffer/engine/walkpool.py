"""The backup's side of the forked walk workers (``workstealing``): jobs of source entries.

The parent walks only what the command line names (and the directories between) and hands every
real entry to the workers as one job; a job's result is one node per entry (see ``walk_worker``).
Along with each result a worker sends its counters and the packs it uploaded, which go into this
process's summary and its next index file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from coffer.engine.dirwalk import Entry
from coffer.engine.excludes import ExcludeRules
from coffer.engine.progress import Progress
from coffer.engine.workerpool import BACKUP_HINT
from coffer.engine.workstealing import Deliver, StealingPool, Worker, fork_workers
from coffer.store.claims import ClaimTable
from coffer.store.format.tree import Node
from coffer.store.repository import Repository

NEW_BLOBS = 1 << 20  # the claim table holds this many new blobs before it starts allowing duplicates


class WalkPool(StealingPool):
    what = "backup worker"
    hint = BACKUP_HINT

    def __init__(self, repo: Repository, procs: list[Worker], claims: ClaimTable) -> None:
        super().__init__(procs)
        self.repo = repo
        self.claims = claims
        self.on_counts: Callable[[dict[str, int]], None] = lambda c: None
        self.progress = Progress()

    @classmethod
    def fork(cls, repo: Repository, excludes: ExcludeRules, n: int) -> WalkPool | None:
        """``n`` workers forked now, or None where they cannot be (threads already running,
        ``COFFER_WORKER_FORK=0``, a repository that cannot be reopened, fewer than two wanted)."""
        if n < 2 or repo.backend_recipe is None or not repo.index_loaded:
            return None
        from coffer.engine.walk_worker import serve_forked

        claims = ClaimTable.create(NEW_BLOBS)
        try:
            procs = fork_workers(functools.partial(serve_forked, repo, excludes, claims), n)
        except BaseException:
            claims.close(remove=True)
            raise
        if procs is None:
            claims.close(remove=True)
            return None
        claims.unlink()  # every worker has it mapped: nothing to clean up later
        return cls(repo, procs, claims)

    def start_walk(self, progress: Progress, on_counts: Callable[[dict[str, int]], None],
                   on_fatal: Callable[[BaseException], None]) -> None:
        self.progress = progress
        self.on_counts = on_counts
        self.repo.writer.share_claims(self.claims)  # this process's own trees claim too
        self.start(on_fatal)

    def walk(self, entries: list[Entry], prevs: list[Node | None] | None, deliver: Deliver,
             root_dev: int | None) -> None:
        """Have the workers walk ``entries``; ``deliver`` gets one result per entry."""
        self.submit((entries, prevs, root_dev), deliver)

    def close(self, *, kill: bool = False) -> None:
        super().close(kill=kill)
        writer = self.repo._writer
        if writer is not None and writer.claims is self.claims:
            writer.claims = None
        self.claims.close()

    def _adopt(self, packs: list[Any], stats: Any) -> None:
        if packs or stats.blobs:
            self.repo.writer.adopt_packs(packs, stats)

    def on_extras(self, p: Worker, extras: Any) -> None:
        counts, packs, stats = extras
        self._adopt(packs, stats)
        self.on_counts(counts)

    def on_flushed(self, p: Worker, msg: tuple[Any, ...]) -> None:
        _, packs, stats, counts = msg
        self._adopt(packs, stats)
        self.on_counts(counts)

    def on_message(self, p: Worker, msg: tuple[Any, ...]) -> None:
        if msg[0] == "progress":
            self.progress.add_done(msg[1], msg[2])
        elif msg[0] == "warn":
            self.progress.warn(msg[1], msg[2], msg[3])
        else:
            super().on_message(p, msg)
