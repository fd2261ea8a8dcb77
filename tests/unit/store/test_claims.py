"""The claim table: the first claim of an ID wins, across processes, and a full table never hides a blob."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from coffer.store.claims import ClaimTable


def _ids(n: int, salt: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(salt + i.to_bytes(4, "little")).digest() for i in range(n)]


def test_first_claim_wins_and_seeded_ids_are_known() -> None:
    t = ClaimTable.create(100)
    try:
        seeded, fresh = _ids(50, b"seed"), _ids(50, b"new")
        t.add_many(seeded)
        assert t.count == 50
        assert not any(t.claim(i) for i in seeded)
        assert all(t.claim(i) for i in fresh)
        assert not any(t.claim(i) for i in fresh)
        assert t.count == 100
    finally:
        t.close(remove=True)


def test_a_full_table_says_store_for_new_ids_and_known_for_old_ones() -> None:
    t = ClaimTable(os.path.join("/tmp", f"claims-test-{os.getpid()}"), create_slots=1 << 4)
    try:
        first = _ids(12)  # 3/4 of 16 slots
        assert all(t.claim(i) for i in first)
        extra = _ids(5, b"x")
        assert all(t.claim(i) for i in extra)  # full: every new ID is stored (a duplicate at worst)
        assert all(t.claim(i) for i in extra)
        assert not any(t.claim(i) for i in first)  # what is in the table is still found
    finally:
        t.close(remove=True)


_CLAIMER = """
import sys
from coffer.store.claims import ClaimTable
t = ClaimTable(sys.argv[1])
ids = [bytes.fromhex(x) for x in sys.stdin.read().split()]
if sys.argv[2] == "reverse":
    ids.reverse()
print(" ".join(i.hex() for i in ids if t.claim(i)))
"""


def test_concurrent_processes_claim_each_id_exactly_once() -> None:
    t = ClaimTable.create(20_000)
    ids = _ids(10_000)
    data = " ".join(i.hex() for i in ids).encode()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _CLAIMER, t.path, "reverse" if k % 2 else "forward"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE) for k in range(3)]
        outs = [p.communicate(data, timeout=120)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs)
        every = [bytes.fromhex(x) for out in outs for x in out.decode().split()]
        assert len(every) == len(ids) and set(every) == set(ids)
        assert t.count == len(ids)
    finally:
        t.close(remove=True)
