"""The parent's side of the forked walk workers: fork them, hand out jobs, relay gifts and results.

Forked, not spawned, and at one moment: in the lock's wait, right after the index is loaded and
while the process still has one thread. Each worker then starts with the index, the key and the
config in its own memory (copy-on-write), instead of paying ~0.4 s of CPU for an interpreter and
imports and then loading the index again.

The parent walks only what the command line names (and the directories between), hands every
real entry to the workers as one job, and from then on is a switchboard: a worker that runs out
of work is idle; an idle worker gets the far half of a busy worker's shallowest directory
("steal" -> "gift"), and the results of a gift go back to the worker that gave it. See
``walk_worker`` for the worker's side and the protocol.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from coffer import errors
from coffer.engine.dirwalk import Entry
from coffer.engine.excludes import ExcludeRules
from coffer.engine.progress import Progress
from coffer.engine.workerpool import (
    ForkedProcess,
    can_fork,
    flush_workers,
    fork_worker,
    reap,
    worker_died,
    worker_error,
)
from coffer.store.claims import ClaimTable
from coffer.store.format.tree import Node
from coffer.store.repository import Repository, WriterStats
from coffer.util import failpoints

NEW_BLOBS = 1 << 20  # the claim table holds this many new blobs before it starts allowing duplicates

Deliver = Callable[[list[Any]], None]


@dataclass(eq=False)
class _Proc:
    n: int
    popen: ForkedProcess
    out: Connection
    inp: Connection
    busy: bool = False
    thief: _Proc | None = None  # the idle worker the steal request out at this one is for
    steal: int = -1  # that request's number
    waiting: bool = False  # a steal request on this (idle) worker's behalf is out
    flushed: threading.Event = field(default_factory=threading.Event)
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = field(default_factory=queue.SimpleQueue)

    def send(self, msg: tuple[Any, ...]) -> None:
        """Queued for this worker's sender thread: a reader thread relaying a result never waits
        for a worker that is busy writing to its own pipe (each side would wait for the other)."""
        self.outbox.put(msg)

    def sender(self) -> None:
        while (msg := self.outbox.get()) is not None:
            try:
                self.out.send(msg)
            except OSError:  # it died: its reader thread says so
                return


class WalkPool:
    def __init__(self, repo: Repository, procs: list[_Proc], claims: ClaimTable) -> None:
        self.repo = repo
        self.procs = procs
        self.claims = claims
        self._mu = threading.Lock()
        self._targets: dict[int, Deliver | tuple[_Proc, int]] = {}
        self._next_token = 0
        self._closing = False
        self._error: BaseException | None = None
        self._started = False
        self._root_dev: int | None = None
        self._steals = 0
        self.on_fatal: Callable[[BaseException], None] = lambda e: None
        self.on_counts: Callable[[dict[str, int]], None] = lambda c: None
        self.progress = Progress()

    @classmethod
    def fork(cls, repo: Repository, excludes: ExcludeRules, n: int) -> WalkPool | None:
        """``n`` workers forked now, or None where they cannot be (threads already running,
        ``COFFER_WORKER_FORK=0``, a repository that cannot be reopened, fewer than two wanted)."""
        if n < 2 or repo.backend_recipe is None or not repo.index_loaded or not can_fork():
            return None
        from coffer.engine.walk_worker import serve_forked

        claims = ClaimTable.create(NEW_BLOBS)
        procs: list[_Proc] = []
        failpoints.share_with_children()
        try:
            serve = functools.partial(serve_forked, repo, excludes, claims)
            for k in range(n):
                popen, out, inp = fork_worker(serve, [c for p in procs for c in (p.out, p.inp)])
                procs.append(_Proc(k, popen, out, inp))
        except BaseException:
            for p in procs:
                p.popen.kill()
                p.popen.wait()
            claims.close(remove=True)
            raise
        claims.unlink()  # every worker has it mapped: nothing to clean up later
        return cls(repo, procs, claims)

    def start(self, progress: Progress, on_counts: Callable[[dict[str, int]], None],
              on_fatal: Callable[[BaseException], None]) -> None:
        """Begin serving the workers (threads may exist from here on)."""
        self.progress = progress
        self.on_counts = on_counts
        self.on_fatal = on_fatal
        self.repo.writer.share_claims(self.claims)  # this process's own trees claim too
        self._started = True
        for p in self.procs:
            threading.Thread(target=p.sender, daemon=True, name=f"walker-{p.n}-out").start()
            threading.Thread(target=self._reader, args=(p,), daemon=True, name=f"walker-{p.n}").start()

    # ------------------------------------------------------------------ parent -> workers
    def walk(self, entries: list[Entry], prevs: list[Node | None] | None, deliver: Deliver,
             root_dev: int | None) -> None:
        """Have the workers walk ``entries``; ``deliver`` gets one result per entry (see walk_worker)."""
        with self._mu:
            if self._error is not None:
                raise self._error
            token = self._new_token(deliver)
            p = min(self.procs, key=lambda q: q.busy)
            p.busy = True
            self._root_dev = root_dev
            p.send(("walk", token, entries, prevs, root_dev))
            self._balance()

    def _new_token(self, target: Deliver | tuple[_Proc, int]) -> int:
        token = self._next_token
        self._next_token += 1
        self._targets[token] = target
        return token

    def _balance(self) -> None:
        """Ask a busy worker for work for each idle one (called with ``_mu`` held)."""
        for w in self.procs:
            if w.busy or w.waiting:
                continue
            victim = next((v for v in self.procs if v.busy and v.thief is None), None)
            if victim is None:
                return
            self._steals += 1
            victim.thief, victim.steal = w, self._steals
            w.waiting = True
            victim.send(("steal", self._steals))

    def flush(self) -> None:
        """Every worker uploads its partial packs; their index entries reach this process's writer."""
        flush_workers(self.procs, lambda: self._error)

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers (``kill``: at once, whatever they are doing) and release the claims."""
        self._closing = True
        for p in self.procs:
            if kill or not self._started:
                p.popen.kill()
            else:
                p.send(("stop",))
            p.outbox.put(None)
        for p in self.procs:
            reap(p.popen)
            p.out.close()
            p.inp.close()
        writer = self.repo._writer
        if writer is not None and writer.claims is self.claims:
            writer.claims = None
        self.claims.close()

    # ------------------------------------------------------------------ workers -> parent
    def _adopt(self, packs: list[Any], stats: WriterStats) -> None:
        if packs or stats.blobs:
            self.repo.writer.adopt_packs(packs, stats)

    def _reader(self, p: _Proc) -> None:
        try:
            while True:
                try:
                    msg = p.inp.recv()
                except (EOFError, OSError):
                    if self._closing:
                        return
                    raise worker_died(p.popen.pid, p.popen.wait()) from None
                self._dispatch(p, msg)
        except BaseException as e:
            with self._mu:
                if self._error is None:
                    self._error = e
            if not self._closing:
                self.on_fatal(e)

    def _dispatch(self, p: _Proc, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "result":
            _, token, results, counts, packs, stats = msg
            self._adopt(packs, stats)
            self.on_counts(counts)
            with self._mu:
                target = self._targets.pop(token)
            if isinstance(target, tuple):
                donor, gift = target
                donor.send(("filled", gift, results))
            else:
                target(results)
        elif kind == "progress":
            self.progress.add_done(msg[1], msg[2])
        elif kind == "warn":
            self.progress.warn(msg[1], msg[2], msg[3])
        elif kind in ("gift", "nogift"):
            with self._mu:
                thief = p.thief
                if thief is None or msg[1] != p.steal:
                    if kind == "gift":  # cannot happen: a worker gives only what was asked for
                        raise errors.CofferError(f"backup worker {p.n} gave work nobody asked for")
                    return  # the answer to a request already answered
                p.thief = None
                thief.waiting = False
                if kind == "gift":
                    _, _sid, gift, entries, prevs = msg
                    thief.busy = True
                    thief.send(("walk", self._new_token((p, gift)), entries, prevs, self._root_dev))
                self._balance()
        elif kind == "idle":
            with self._mu:
                p.busy = False
                self._balance()
        elif kind == "flushed":
            _, packs, stats, counts = msg
            self._adopt(packs, stats)
            self.on_counts(counts)
            p.flushed.set()
        elif kind == "fatal":
            _, _job, cls_name, message, hint = msg
            raise worker_error(cls_name, message, hint)
        else:
            raise errors.CofferError(f"backup worker {p.n} sent an unexpected message {kind!r}")
