"""Forked worker processes that share one tree walk by taking work from each other.

Used by backup (``walk_worker``) and restore (``restore_walker``). Forked, not spawned, at one
moment: in the lock's wait, right after the index is loaded and while the process still has one
thread. Each worker then starts with the index, the key and the config in its own memory
(copy-on-write) instead of paying ~0.4 s of CPU for an interpreter and imports and then loading
the index again.

The parent hands out jobs and is from then on a switchboard: a worker that runs out of work says
it is idle; the parent asks a busy worker for work on the idle one's behalf; the busy one gives
away the far half of the shallowest directory it is still handing out (a *gift*); the parent
passes it on as a job, and passes the job's result back to the giver, which fills those slots.

Protocol (pickled tuples over two pipes; the parent is each worker's only peer):
  parent -> worker  ("job", token, payload), ("steal", sid), ("filled", gift, result), ("flush",), ("stop",)
  worker -> parent  ("result", token, result, extras), ("gift", sid, gift, payload), ("nogift", sid),
                    ("idle",), ("flushed", ...), ("fatal", None, class name, message, hint), and what
                    the use adds (warnings, progress, ...)

A steal request is answered with a gift as soon as there is something worth giving, or with
"nogift" when the worker runs out of work itself.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from coffer import errors
from coffer.engine.workerpool import (
    ForkedProcess,
    can_fork,
    flush_workers,
    fork_worker,
    reap,
    worker_died,
    worker_error,
)
from coffer.util import failpoints
from coffer.util.failpoints import failpoint

Deliver = Callable[[Any], None]


@dataclass(eq=False)
class Worker:
    n: int
    popen: ForkedProcess
    out: Connection
    inp: Connection
    busy: bool = False
    thief: Worker | None = None  # the idle worker the steal request out at this one is for
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


def fork_workers(serve: Callable[[Connection, Connection], int], n: int) -> list[Worker] | None:
    """``n`` workers forked now running ``serve``, or None where that is not safe (see can_fork)."""
    if n < 2 or not can_fork():
        return None
    procs: list[Worker] = []
    failpoints.share_with_children()
    try:
        for k in range(n):
            popen, out, inp = fork_worker(serve, [c for p in procs for c in (p.out, p.inp)])
            procs.append(Worker(k, popen, out, inp))
    except BaseException:
        for p in procs:
            p.popen.kill()
            p.popen.wait()
        raise
    return procs


class StealingPool:
    """The parent's side. Subclasses handle what their workers send beyond the protocol."""

    what = "worker"  # named in errors: "backup worker process 123 was killed by signal 9"
    hint = "run the command again"

    def __init__(self, procs: list[Worker]) -> None:
        self.procs = procs
        self._mu = threading.Lock()
        self._targets: dict[int, Deliver | tuple[Worker, int]] = {}
        self._next_token = 0
        self._steals = 0
        self._closing = False
        self._started = False
        self._error: BaseException | None = None
        self.on_fatal: Callable[[BaseException], None] = lambda e: None

    def start(self, on_fatal: Callable[[BaseException], None]) -> None:
        """Begin serving the workers (threads may exist from here on)."""
        self.on_fatal = on_fatal
        self._started = True
        for p in self.procs:
            threading.Thread(target=p.sender, daemon=True, name=f"worker-{p.n}-out").start()
            threading.Thread(target=self._reader, args=(p,), daemon=True, name=f"worker-{p.n}").start()

    @property
    def error(self) -> BaseException | None:
        return self._error

    # ------------------------------------------------------------------ parent -> workers
    def submit(self, payload: Any, deliver: Deliver) -> None:
        """A job for the least busy worker; ``deliver`` gets its result (in a reader thread)."""
        with self._mu:
            if self._error is not None:
                raise self._error
            p = min(self.procs, key=lambda q: q.busy)
            p.busy = True
            p.send(("job", self._new_token(deliver), payload))
            self._balance()

    def _new_token(self, target: Deliver | tuple[Worker, int]) -> int:
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
        """Every worker finishes up and answers ("flushed", ...), handled by ``on_flushed``."""
        flush_workers(self.procs, lambda: self._error)

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers (``kill``: at once, whatever they are doing)."""
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

    # ------------------------------------------------------------------ workers -> parent
    def on_extras(self, p: Worker, extras: Any) -> None:
        """What a worker sends along with a result (its counters, the packs it uploaded)."""

    def on_flushed(self, p: Worker, msg: tuple[Any, ...]) -> None:
        """A worker's answer to ("flush",)."""

    def on_message(self, p: Worker, msg: tuple[Any, ...]) -> None:
        raise errors.CofferError(f"{self.what} {p.n} sent an unexpected message {msg[0]!r}")

    def _reader(self, p: Worker) -> None:
        try:
            while True:
                try:
                    msg = p.inp.recv()
                except (EOFError, OSError):
                    if self._closing:
                        return
                    raise worker_died(p.popen.pid, p.popen.wait(), self.what, self.hint) from None
                self._dispatch(p, msg)
        except BaseException as e:
            with self._mu:
                if self._error is None:
                    self._error = e
            if not self._closing:
                self.on_fatal(e)

    def _dispatch(self, p: Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "result":
            _, token, result, extras = msg
            self.on_extras(p, extras)
            with self._mu:
                target = self._targets.pop(token)
            if isinstance(target, tuple):
                donor, gift = target
                donor.send(("filled", gift, result))
            else:
                target(result)
        elif kind in ("gift", "nogift"):
            with self._mu:
                thief = p.thief
                if thief is None or msg[1] != p.steal:
                    if kind == "gift":  # cannot happen: a worker gives only what was asked for
                        raise errors.CofferError(f"{self.what} {p.n} gave work nobody asked for")
                    return  # the answer to a request already answered
                p.thief = None
                thief.waiting = False
                if kind == "gift":
                    _, _sid, gift, payload = msg
                    thief.busy = True
                    thief.send(("job", self._new_token((p, gift)), payload))
                self._balance()
        elif kind == "idle":
            with self._mu:
                p.busy = False
                self._balance()
        elif kind == "flushed":
            self.on_flushed(p, msg)
            p.flushed.set()
        elif kind == "fatal":
            _, _job, cls_name, message, hint = msg
            raise worker_error(cls_name, message, hint)
        else:
            self.on_message(p, msg)


def far_half(stacks: list[list[Any]], items: Callable[[Any], Sequence[Any]],
             worth: Callable[[Sequence[Any]], bool]) -> tuple[Any, int] | None:
    """The frame to give from and where the gift starts: the far half of what the shallowest frame
    (any object with ``next`` and ``end``) has not handed out yet, when ``worth`` giving."""
    for stack in stacks:
        for f in stack:
            left = f.end - f.next
            if left <= 0:
                continue
            k = f.next + left // 2 if left > 1 else f.next
            if worth(items(f)[k:f.end]):
                return f, k
    return None


class StealingWorker:
    """The worker's side: a loop over jobs, answering steal requests between steps.

    A subclass keeps its jobs as ``stacks`` (one list per job, whatever its walk needs), walks the
    first one in ``run_stack`` (calling ``tick`` often), says what it could give away in
    ``giftable`` and what a finished gift's result means in ``gift_done``."""

    POLL_EVERY = 8  # ticks between looks at the pipe (a steal request waits at most this long)

    def __init__(self, inp: Connection, out: Connection) -> None:
        self.inp = inp
        self.out = out
        self.stacks: list[list[Any]] = []  # jobs being walked, the current one first
        self._gifts: dict[int, Any] = {}
        self._next_gift = 0
        self._steal: int | None = None  # a steal request not answered yet
        self._polls = 0
        self._send_lock = threading.Lock()

    def send(self, msg: tuple[Any, ...]) -> None:
        """To the parent; from any thread (a restore's fetch threads report errors too)."""
        with self._send_lock:
            self.out.send(msg)

    # ------------------------------------------------------------------ for subclasses
    def start_job(self, payload: Any, token: int) -> None:
        """Set up a job (append its stack to ``stacks``, or report it done at once)."""
        raise NotImplementedError

    def run_stack(self, stack: list[Any]) -> None:
        raise NotImplementedError

    def giftable(self) -> tuple[Any, Any] | None:
        """(payload for the taker, what ``gift_done`` needs later), taken out of the walk, or None."""
        raise NotImplementedError

    def gift_done(self, kept: Any, result: Any) -> None:
        raise NotImplementedError

    def before_idle(self) -> None:
        """Called when no job is left to walk (write what was batched, say)."""

    def flushed(self) -> tuple[Any, ...]:
        """The answer to ("flush",): everything is done, whatever must reach the parent."""
        return ("flushed",)

    def on_tick(self) -> None:
        """Called at every look at the pipe (send progress, say)."""

    # ------------------------------------------------------------------ the loop
    def serve(self) -> int:
        idle_sent = False
        while True:
            if self.stacks:
                idle_sent = False
                self.run_stack(self.stacks[0])
                self.stacks.pop(0)
                continue
            self.before_idle()
            if self.stacks:
                continue
            if not idle_sent:
                if self._steal is not None:
                    self.send(("nogift", self._steal))
                    self._steal = None
                self.on_tick()
                self.send(("idle",))
                idle_sent = True
            try:
                msg = self.inp.recv()
            except EOFError:
                return 0
            if msg[0] == "flush":
                self.send(self.flushed())
            elif msg[0] == "stop":
                return 0
            elif msg[0] == "steal":
                self.send(("nogift", msg[1]))  # nothing to give: this worker has no work either
            else:
                self._handle(msg)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "job":
            self.start_job(msg[2], msg[1])
        elif kind == "steal":
            self._steal = msg[1]
            self._try_gift()
        elif kind == "filled":
            self.gift_done(self._gifts.pop(msg[1]), msg[2])
        else:
            raise ValueError(f"unexpected message {kind!r}")

    def tick(self) -> None:
        """Cheap; every POLL_EVERY calls, answer what waits on the pipe without blocking."""
        self._polls += 1
        if self._polls >= self.POLL_EVERY:
            self._polls = 0
            self.service()

    def service(self) -> None:
        while self.inp.poll(0):
            self._handle(self.inp.recv())
        if self._steal is not None:
            self._try_gift()
        self.on_tick()

    def _try_gift(self) -> None:
        found = self.giftable()
        if found is None:
            return
        payload, kept = found
        gift = self._next_gift
        self._next_gift += 1
        self._gifts[gift] = kept
        failpoint("walk_gift")
        self.send(("gift", self._steal, gift, payload))
        self._steal = None

    def report(self, token: int, result: Any, extras: Any = None) -> None:
        self.send(("result", token, result, extras))
