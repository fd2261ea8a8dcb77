"""The retry wrapper: transient errors retried with capped, jittered backoff; permanent ones at once."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from coffer.errors import BackendError, ObjectNotFound, PermissionDenied, ShortRead, TransientBackendError
from coffer.store.backend.base import Backend, FileInfo, FileType, Handle
from coffer.store.backend.retry import RetryBackend, RetryPolicy

H = Handle(FileType.PACK, "ab" * 32)


class Flaky(Backend):
    """Fails the first ``fail`` calls of every operation with ``error``."""

    location = "flaky:"

    def __init__(self, fail: int, error: BackendError) -> None:
        self.fail = fail
        self.error = error
        self.calls = 0
        self.saved: list[bytes] = []

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error

    def create(self) -> None:
        self._maybe_fail()

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        self._maybe_fail()
        self.saved.append(bytes(data))

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail()
        return b"data"

    def stat(self, h: Handle) -> FileInfo:
        self._maybe_fail()
        return FileInfo(h.name, 4)

    def remove(self, h: Handle) -> None:
        self._maybe_fail()

    def list(self, t: FileType) -> Iterator[FileInfo]:
        yield FileInfo("a" * 64, 1)
        self._maybe_fail()  # breaks off after the first entry
        yield FileInfo("b" * 64, 2)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


def wrap(inner: Backend, **policy: float) -> tuple[RetryBackend, Clock]:
    clock = Clock()
    pol = RetryPolicy(**policy)  # type: ignore[arg-type]
    return RetryBackend(inner, pol, sleep=clock.sleep, clock=clock, rng=random.Random(1)), clock


def test_transient_errors_are_retried_until_success() -> None:
    inner = Flaky(3, TransientBackendError("flaky: 503 SlowDown"))
    rb, clock = wrap(inner)
    assert rb.load(H) == b"data"
    assert inner.calls == 4 and rb.retries == 3
    assert len(clock.sleeps) == 3


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    inner = Flaky(9, TransientBackendError("flaky: reset"))
    rb, clock = wrap(inner, attempts=10, base_delay=1.0, max_delay=8.0, max_time=1000)
    rb.save(H, b"x")
    for i, s in enumerate(clock.sleeps, start=1):
        ceiling = min(8.0, 2 ** (i - 1))
        assert ceiling / 2 <= s <= ceiling
    assert max(clock.sleeps) <= 8.0
    assert len(set(clock.sleeps)) > 5  # jittered, not a fixed schedule


def test_attempts_are_capped_and_the_final_error_is_permanent() -> None:
    inner = Flaky(100, TransientBackendError("flaky: 500 InternalError"))
    rb, _ = wrap(inner, attempts=4)
    with pytest.raises(TransientBackendError) as ei:
        rb.load(H)
    assert inner.calls == 4
    assert "gave up after 4 attempts" in str(ei.value)
    assert ei.value.transient is False  # nothing above retries it again


def test_total_time_is_capped() -> None:
    inner = Flaky(100, TransientBackendError("flaky: timeout"))
    rb, clock = wrap(inner, attempts=1000, base_delay=1.0, max_delay=10.0, max_time=30.0)
    with pytest.raises(BackendError):
        rb.stat(H)
    assert clock.now <= 30.0
    assert inner.calls < 20


@pytest.mark.parametrize("err", [
    PermissionDenied("flaky: 403 AccessDenied"), ObjectNotFound("flaky: 404"),
    ShortRead("flaky: range not satisfiable", transient=False), BackendError("flaky: 400 bad request"),
])
def test_permanent_errors_fail_fast(err: BackendError) -> None:
    inner = Flaky(1, err)
    rb, clock = wrap(inner)
    with pytest.raises(type(err)):
        rb.load(H)
    assert inner.calls == 1 and clock.sleeps == []


def test_final_error_names_backend_and_object() -> None:
    inner = Flaky(1, PermissionDenied("access denied", hint="check credentials"))
    rb, _ = wrap(inner)
    with pytest.raises(PermissionDenied) as ei:
        rb.save(H, b"x")
    assert "flaky:" in str(ei.value) and f"save {H}" in str(ei.value)
    assert ei.value.hint == "check credentials"


def test_a_broken_listing_restarts_without_duplicates() -> None:
    inner = Flaky(1, TransientBackendError("flaky: connection reset"))
    rb, _ = wrap(inner)
    assert [fi.name[0] for fi in rb.list(FileType.PACK)] == ["a", "b"]


def test_warnings_say_what_is_retried() -> None:
    msgs: list[str] = []
    inner = Flaky(1, TransientBackendError("flaky: save data/ab: 503 SlowDown"))
    clock = Clock()
    rb = RetryBackend(inner, RetryPolicy(), warn=msgs.append, sleep=clock.sleep, clock=clock)
    rb.save(H, b"x")
    assert len(msgs) == 1 and "503 SlowDown" in msgs[0] and "retrying in" in msgs[0] and "attempt 2/" in msgs[0]


def test_policy_from_options() -> None:
    p = RetryPolicy.from_options({"retry.attempts": "3", "retry.max-time": "9", "retry.base-delay": "0.1"})
    assert (p.attempts, p.max_time, p.base_delay) == (3, 9.0, 0.1)
