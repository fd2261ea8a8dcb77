"""The one place that retries storage operations.

Drivers only classify their failures (``BackendError.transient``); this wrapper decides what to do
about them. Transient errors (5xx, throttling, timeouts, resets, short reads) are retried with
exponential backoff and full jitter, capped both in attempts and in total time, so a flaky network
costs a little time while a dead endpoint fails within a bounded delay. Permanent errors (wrong
credentials, a missing object, a full disk) are raised at once: retrying them only hides the cause.

Retrying is safe because every object is immutable and named by its content: a PUT repeated after
a lost response writes the same bytes again, and a listing restarted halfway skips what it
already yielded. Whatever is finally raised names the backend and the object, so a person reading
"Fatal: ..." knows where to look.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from coffer.errors import BackendError, UsageError
from coffer.store.backend.base import Backend, BackendProperties, FileInfo, FileType, Handle

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 10  # tries in all, the first included
    max_time: float = 300.0  # seconds from the first try after which no new try starts
    base_delay: float = 0.5  # first backoff; doubles each time
    max_delay: float = 30.0  # cap of one backoff

    @classmethod
    def from_options(cls, options: dict[str, str]) -> RetryPolicy:
        """``-o retry.attempts=N``, ``-o retry.max-time=SECONDS``, ``-o retry.base-delay=SECONDS``."""
        d = cls()
        try:
            return cls(
                attempts=max(1, int(options.get("retry.attempts", d.attempts))),
                max_time=float(options.get("retry.max-time", d.max_time)),
                base_delay=float(options.get("retry.base-delay", d.base_delay)),
                max_delay=float(options.get("retry.max-delay", d.max_delay)),
            )
        except ValueError as e:
            raise UsageError(f"invalid retry option: {e}") from None

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before try ``attempt + 1`` (attempt counts from 1): full jitter over 2^n * base."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return rng.uniform(ceiling / 2, ceiling)


class RetryBackend(Backend):
    """Wraps a driver; retries its transient failures, passes everything else straight through."""

    def __init__(
        self, inner: Backend, policy: RetryPolicy | None = None, *,
        warn: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner
        self.location = inner.location
        self.policy = policy or RetryPolicy()
        self.warn = warn
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.retries = 0  # how many retries happened (tests and statistics)

    @property
    def properties(self) -> BackendProperties:
        return self.inner.properties

    # ---------------------------------------------------------------- the loop
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        start = self._clock()
        attempt = 1
        while True:
            try:
                return fn()
            except BackendError as e:
                self._backoff(e, what, attempt, start)
                attempt += 1

    def _backoff(self, e: BackendError, what: str, attempt: int, start: float) -> None:
        """Sleep before the next try of a transient failure; raise the (named) error otherwise."""
        if not e.transient:
            raise self._named(e, what) from None
        elapsed = self._clock() - start
        with self._rng_lock:
            pause = self.policy.delay(attempt, self._rng)
        if attempt >= self.policy.attempts or elapsed + pause > self.policy.max_time:
            raise self._named(
                e, what, f" (gave up after {attempt} attempts in {elapsed:.1f}s)", transient=False,
            ) from None
        self.retries += 1
        if self.warn:
            self.warn(f"{self._named(e, what).message}; retrying in {pause:.1f}s "
                      f"(attempt {attempt + 1}/{self.policy.attempts})")
        self._sleep(pause)

    def _named(self, e: BackendError, what: str, suffix: str = "", transient: bool | None = None) -> BackendError:
        """The same error class, its message prefixed with backend and object if the driver left them out."""
        msg = e.message
        if self.location and self.location not in msg:
            msg = f"{self.location}: {what}: {msg}"
        if msg == e.message and not suffix and transient is None:
            return e
        try:
            out = type(e)(msg + suffix, hint=e.hint)
        except TypeError:  # a subclass with another constructor: keep it, message unchanged
            return e
        if transient is not None:
            out.transient = transient
        return out

    # ---------------------------------------------------------------- the contract
    def create(self) -> None:
        self._call("create", self.inner.create)

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        self._call(f"save {h}", lambda: self.inner.save(h, data))

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"load {h}", lambda: self.inner.load(h, offset, length))

    def stat(self, h: Handle) -> FileInfo:
        return self._call(f"stat {h}", lambda: self.inner.stat(h))

    def remove(self, h: Handle) -> None:
        self._call(f"remove {h}", lambda: self.inner.remove(h))

    def list(self, t: FileType) -> Iterator[FileInfo]:
        """Restarts a listing that broke off and yields only names not yielded before."""
        seen: set[str] = set()
        start = self._clock()
        attempt = 1
        while True:
            try:
                for fi in self.inner.list(t):
                    if fi.name not in seen:
                        seen.add(fi.name)
                        yield fi
                return
            except BackendError as e:
                self._backoff(e, f"list {t.dirname}", attempt, start)
                attempt += 1

    def close(self) -> None:
        self.inner.close()
