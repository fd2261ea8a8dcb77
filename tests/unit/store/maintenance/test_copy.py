"""Copy's pure decisions: which destination snapshot already is a copy, and how pack reads group."""

from __future__ import annotations

from dataclasses import replace

from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.store.maintenance.copy import MAX_RUN, MERGE_GAP, _runs, find_copied, original_id, similar

SRC = Snapshot(time="2026-01-02T03:04:05.123456789Z", tree=b"\x01" * 32, paths=["/data"], hostname="h",
               username="u", tags=["daily"], id=b"\xaa" * 32)


def test_original_id_prefers_the_original_field() -> None:
    assert original_id(SRC) == SRC.id
    assert original_id(replace(SRC, original=b"\xbb" * 32)) == b"\xbb" * 32


def test_a_copy_is_recognised_by_original_and_content() -> None:
    copy = replace(SRC, id=b"\xcc" * 32, original=SRC.id, parent=b"\xdd" * 32)
    assert similar(SRC, copy)
    assert find_copied(SRC, [copy]) is copy
    # the same original but different content (a rewritten snapshot) is not the same snapshot
    assert find_copied(SRC, [replace(copy, tags=["weekly"])]) is None
    assert find_copied(SRC, [replace(copy, tree=b"\x02" * 32)]) is None
    # a copy of a copy points at the first original
    again = replace(copy, id=b"\xee" * 32)
    assert find_copied(copy, [again]) is again


def test_unrelated_snapshots_with_equal_content_are_not_copies() -> None:
    other = replace(SRC, id=b"\x11" * 32)
    assert find_copied(SRC, [other]) is None


def _b(off: int, n: int) -> PackedBlob:
    return PackedBlob(BlobType.DATA, off.to_bytes(32, "big"), off, n, 0)


def test_reads_of_one_pack_are_merged_over_small_holes_and_capped() -> None:
    blobs = [_b(0, 100), _b(100, 100), _b(200 + MERGE_GAP - 1, 10), _b(10 * MERGE_GAP, 10)]
    runs = _runs(list(reversed(blobs)))
    assert [[b.offset for b in r] for r in runs] == [[0, 100, 200 + MERGE_GAP - 1], [10 * MERGE_GAP]]
    big = [_b(i * (MAX_RUN // 2), MAX_RUN // 2) for i in range(5)]
    assert all(r[-1].offset + r[-1].length - r[0].offset <= MAX_RUN for r in _runs(big))
