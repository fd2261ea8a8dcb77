"""Slice selection: never-read packs first, then least recently read; ceil(1/f) runs read every pack."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from coffer.verify.integrity import select_slice, slice_size, summarize

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.1), (7, 1 / 7), (27, 0.5), (100, 0.1), (101, 0.1), (5, 1.0),
                                             (50, 0.3)])
def test_every_pack_read_after_ceil_one_over_f_runs(n: int, fraction: float) -> None:
    packs = {f"{i:064x}": 100 for i in range(n)}
    last: dict[str, datetime | None] = {}
    runs = math.ceil(1 / fraction - 1e-9)
    for r in range(runs):
        chosen = select_slice(packs, last, fraction)
        assert len(chosen) == slice_size(n, fraction)
        for p in chosen:
            last[p] = T0 + timedelta(days=r)
        if r < runs - 1 and n > runs:
            assert len(last) < n
    assert set(last) == set(packs)


def test_new_packs_jump_the_queue_and_old_reads_come_next() -> None:
    packs = {"a": 1, "b": 1, "c": 1, "d": 1}
    last: dict[str, datetime | None] = {"a": T0, "b": T0 + timedelta(days=1), "c": T0 + timedelta(days=2)}
    assert select_slice(packs, last, 0.5) == ["d", "a"]


def test_summary_reports_the_oldest_unverified_age() -> None:
    now = T0 + timedelta(days=10)
    packs = {"a": 1, "b": 1, "c": 1}
    cov = summarize(packs, {"a": T0, "b": T0, "c": T0 + timedelta(days=9)},
                    {"a": T0 + timedelta(days=8), "b": T0 + timedelta(days=3), "c": None},
                    {"a": True, "b": False, "c": None}, T0 + timedelta(days=8), now)
    assert cov.oldest_unverified == timedelta(days=7)
    assert (cov.packs, cov.never_read, cov.failed) == (3, 1, 1)
