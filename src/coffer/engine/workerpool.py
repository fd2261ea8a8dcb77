"""The parent's side of the backup worker processes: start them, hand out files, collect results.

Files go to the worker with the least work queued (bounded per worker, so one large file does not
hold up a queue of small ones behind it); each worker has a reader thread here that turns its
replies into callbacks. A worker that dies or reports an error fails the backup with its reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from coffer import errors
from coffer.store.claims import ClaimTable
from coffer.store.format.index import IndexPack
from coffer.store.repository import Repository, WriterStats
from coffer.util import failpoints

MAX_JOBS = 32  # files queued per worker
SEND_BATCH = 8  # files per message
SEND_BATCH_BYTES = 4 << 20
LOW_WATER = 4  # a worker with fewer files sent than this gets its batch at once
MAX_BYTES = 32 << 20  # bytes queued per worker (a larger single file is still taken when idle)
START_TIMEOUT = 60.0


@dataclass
class FileResult:
    content: list[bytes] | None  # None: the file could not be read (``warning`` says why)
    nread: int
    changed: bool
    warning: str | None
    xattrs: list[tuple[str, bytes]] | None = None  # read by the worker through the open file
    xattr_warning: str | None = None


OnResult = Callable[[Any, FileResult], None]


def spawn_worker(module: str) -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    """Start ``python -m module REQ_FD RES_FD PARENT_PID``: its process, our sending end, our receiving end."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", module, str(req_r), str(res_w), str(os.getpid())],
            pass_fds=(req_r, res_w), stdin=subprocess.DEVNULL, close_fds=True,
        )
    except BaseException:
        os.close(req_w)
        os.close(res_r)
        raise
    finally:
        os.close(req_r)
        os.close(res_w)
    return popen, Connection(req_w, readable=False), Connection(res_r, writable=False)


class ForkedProcess:
    """A worker forked from this process, with the part of ``subprocess.Popen``'s interface the
    restore uses (pid, poll, wait with a timeout, kill), waited for through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reaped(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if timeout is not None and not _readable(self._pidfd, timeout):
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            self._reaped(os.waitpid(self.pid, 0)[1])
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _reaped(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self._pidfd)


def _readable(fd: int, timeout: float) -> bool:
    """poll(), not select(): the descriptor may be above 1023 while a restore holds many open."""
    import select

    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout * 1000))


def can_fork() -> bool:
    """Forking a worker is safe only from a process with one thread (locks held by another thread
    would stay held in the child); ``COFFER_WORKER_FORK=0`` always spawns a fresh interpreter."""
    return (hasattr(os, "fork") and hasattr(os, "pidfd_open") and threading.active_count() == 1
            and os.environ.get("COFFER_WORKER_FORK", "1") != "0")


def fork_worker(
    serve: Callable[[Connection, Connection], int], close_in_child: list[Connection],
) -> tuple[ForkedProcess, Connection, Connection]:
    """Fork a worker that runs ``serve`` on two new pipes: its process, our sending end, our
    receiving end. It starts with everything this process has imported and loaded (a fresh
    interpreter costs a worker ~0.4 s of CPU). ``close_in_child``: our ends of earlier workers'
    pipes, which the new worker must not hold open (they would never see end of input)."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: never return into the caller's frames
        rc = 1
        try:
            os.close(req_w)
            os.close(res_r)
            for c in close_in_child:
                c.close()
            from coffer.engine.worker_process import run_worker

            rc = run_worker(req_r, res_w, parent, serve)
        except BaseException:  # nothing to report to: the parent sees the exit code
            pass
        finally:
            os._exit(rc)
    os.close(req_r)
    os.close(res_w)
    return ForkedProcess(pid), Connection(req_w, readable=False), Connection(res_r, writable=False)


class _Proc:
    def __init__(self, n: int) -> None:
        self.n = n
        self.jobs = 0  # handed to this worker (sent or batched), not yet answered
        self.bytes = 0
        self.batch: list[tuple[int, bytes, int, int, int]] = []  # assigned, not yet sent
        self.batch_bytes = 0
        self.flushed = threading.Event()
        self.send_lock = threading.Lock()
        self.popen, self.out, self.inp = spawn_worker("coffer.engine.backup_worker")

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.out.send(msg)


class WorkerPool:
    def __init__(self, repo: Repository, processes: int, claims: ClaimTable, on_result: OnResult,
                 on_fatal: Callable[[BaseException], None]) -> None:
        if repo.backend_recipe is None:
            raise ValueError("the repository cannot be reopened in another process")
        self.repo = repo
        self.on_result = on_result
        self.on_fatal = on_fatal
        self._cond = threading.Condition()
        self._jobs: dict[int, tuple[_Proc, int, Any]] = {}
        self._next = 0
        self._closing = False
        self._error: BaseException | None = None
        setup = {
            "recipe": repo.backend_recipe, "key": repo.key, "config": repo.config, "key_id": repo.key_id,
            "level": repo.compression_level, "pack_size": repo.pack_size, "claims": claims.path,
        }
        self.procs: list[_Proc] = []
        failpoints.share_with_children()
        try:
            for i in range(processes):
                p = _Proc(i)
                self.procs.append(p)
                p.send(("setup", setup))
            for p in self.procs:
                if not p.inp.poll(START_TIMEOUT):
                    raise errors.CofferError(f"backup worker {p.n} did not start within {START_TIMEOUT:.0f}s")
                msg = p.inp.recv()
                if msg[0] != "ready":
                    raise _error_from(msg, p)
        except BaseException:
            self.close(kill=True)
            raise
        for p in self.procs:
            threading.Thread(target=self._reader, args=(p,), daemon=True, name=f"worker-{p.n}").start()

    # ------------------------------------------------------------------ parent -> workers
    def submit(self, path: bytes, size: int, mtime_ns: int, ctime_ns: int, ctx: Any,
               check: Callable[[], None]) -> None:
        """Queue one file; blocks while every worker has enough queued. ``check`` raises to abort.

        Files are sent in small batches (one pipe write and one wake-up for several files); a
        batch goes out when it is big enough, when its worker runs short of work, or before the
        caller would wait."""
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                idle = [p for p in self.procs if p.jobs < MAX_JOBS and (p.jobs == 0 or p.bytes + size <= MAX_BYTES)]
                if idle:
                    p = min(idle, key=lambda q: (q.bytes, q.jobs))
                    break
                self._send_batches_locked()
                self._cond.wait(0.5)
                check()
            job = self._next
            self._next += 1
            self._jobs[job] = (p, size, ctx)
            p.jobs += 1
            p.bytes += size
            p.batch.append((job, path, size, mtime_ns, ctime_ns))
            p.batch_bytes += size
            if (len(p.batch) >= SEND_BATCH or p.batch_bytes >= SEND_BATCH_BYTES
                    or p.jobs - len(p.batch) < LOW_WATER):
                self._send_locked(p)

    def send_batches(self) -> None:
        """Send what is batched (the walk is over, or about to wait)."""
        with self._cond:
            self._send_batches_locked()

    def _send_batches_locked(self) -> None:
        for p in self.procs:
            if p.batch:
                self._send_locked(p)

    @staticmethod
    def _send_locked(p: _Proc) -> None:
        batch, p.batch, p.batch_bytes = p.batch, [], 0
        p.send(("files", batch))

    def flush(self) -> None:
        """Every worker uploads its partial packs; their index entries reach the parent's writer."""
        self.send_batches()
        flush_workers(self.procs, lambda: self._error)

    def close(self, *, kill: bool = False) -> None:
        self._closing = True
        for p in self.procs:
            if kill:
                try:
                    p.popen.kill()
                except OSError:
                    pass
            else:
                try:
                    p.send(("stop",))
                except OSError:
                    pass
            try:
                p.out.close()
            except OSError:
                pass
        for p in self.procs:
            reap(p.popen)

    # ------------------------------------------------------------------ workers -> parent
    def _adopt(self, packs: list[IndexPack], delta: WriterStats) -> None:
        if packs or delta.blobs:
            self.repo.writer.adopt_packs(packs, delta)

    def _reader(self, p: _Proc) -> None:
        try:
            while True:
                try:
                    msg = p.inp.recv()
                except (EOFError, OSError):
                    if self._closing:
                        return
                    raise worker_died(p.popen.pid, p.popen.wait()) from None
                kind = msg[0]
                if kind == "done":
                    _, results, packs, delta = msg
                    self._adopt(packs, delta)
                    with self._cond:
                        ctxs = []
                        for job, *_ in results:
                            _, size, ctx = self._jobs.pop(job)
                            p.jobs -= 1
                            p.bytes -= size
                            ctxs.append(ctx)
                        if p.jobs - len(p.batch) < LOW_WATER and p.batch:
                            self._send_locked(p)
                        self._cond.notify_all()
                    for ctx, r in zip(ctxs, results):
                        self.on_result(ctx, FileResult(*r[1:]))
                elif kind == "flushed":
                    self._adopt(msg[1], msg[2])
                    p.flushed.set()
                else:
                    raise _error_from(msg, p)
        except BaseException as e:
            with self._cond:
                if self._error is None:
                    self._error = e
                self._cond.notify_all()
            if not self._closing:
                self.on_fatal(e)


def _error_from(msg: tuple[Any, ...], p: _Proc) -> BaseException:
    if msg[0] != "fatal":
        return errors.CofferError(f"backup worker {p.n} sent an unexpected message {msg[0]!r}")
    _, _job, cls_name, message, hint = msg
    return worker_error(cls_name, message, hint)


def flush_workers(procs: Sequence[Any], failed: Callable[[], BaseException | None]) -> None:
    """Send every worker ("flush",) and wait until each has set its ``flushed`` event (its reader
    thread does, on the worker's answer); ``failed`` is the pool's error, raised when there is one."""
    for p in procs:
        p.flushed.clear()
        p.send(("flush",))
    for p in procs:
        while not p.flushed.wait(0.5):
            if (e := failed()) is not None:
                raise e
    if (e := failed()) is not None:
        raise e


def reap(popen: ForkedProcess | subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait for a worker told to stop; kill it if it does not within ``timeout``."""
    try:
        popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


BACKUP_HINT = "no snapshot was written and the repository stays valid; run the backup again"


def worker_died(pid: int, code: int, what: str = "backup worker", hint: str = BACKUP_HINT) -> errors.CofferError:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return errors.CofferError(f"{what} process {pid} {how}", hint=hint)


def worker_error(cls_name: str, message: str, hint: str | None) -> BaseException:
    """The error a worker reported, as the same class here when it is one of ours."""
    cls = getattr(errors, cls_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.CofferError):
        try:
            return cls(message, hint=hint)
        except TypeError:
            pass
    return errors.CofferError(f"backup worker: {cls_name}: {message}", hint=hint)
