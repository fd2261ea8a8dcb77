"""prune's decision as a pure function of facts: what to keep, repack and delete, and when to refuse."""

from __future__ import annotations

import hashlib

import pytest

from coffer.errors import UsageError
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.maintenance.check import implied_pack_size
from coffer.store.maintenance.prune import (
    MaxUnused,
    PruneFacts,
    PruneOptions,
    PruneRefused,
    bkey,
    decide,
    parse_size,
    tree_refs,
)

MiB = 1 << 20


def bid(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def pack(*blobs: tuple[str, int], t: BlobType = BlobType.DATA) -> list[PackedBlob]:
    out, off = [], 0
    for name, length in blobs:
        out.append(PackedBlob(t, bid(name), off, length, length - 32 + 10))
        off += length
    return out


def facts(packs: dict[str, list[PackedBlob]], used: set[str], *, stored: dict[str, int] | None = None,
          index_files: int = 1, target: int = 4 * MiB) -> PruneFacts:
    index_packs = {bid(p): bl for p, bl in packs.items()}
    if stored is None:
        sizes = {bid(p): implied_pack_size(bl) for p, bl in packs.items()}
    else:
        sizes = {bid(p): s for p, s in stored.items()}
    used_keys = set()
    for u in used:
        t, name = u.split(":", 1)
        used_keys.add(bkey(BlobType.TREE if t == "tree" else BlobType.DATA, bid(name)))
    return PruneFacts(used_keys, 1, [bid(f"idx{i}") for i in range(index_files)], index_packs, sizes,
                      target_pack_size=target)


def actions(plan: object) -> dict[str, str]:
    return {k: v.action for k, v in plan.packs.items()}  # type: ignore[attr-defined]


def test_fully_used_packs_are_kept_and_unused_ones_removed() -> None:
    f = facts({"p1": pack(("a", MiB), ("b", MiB)), "p2": pack(("c", MiB))}, {"data:a", "data:b"})
    plan = decide(f, PruneOptions())
    assert plan.packs[bid("p1")].action == "keep"
    assert plan.packs[bid("p2")].action == "remove"
    assert plan.stats.blobs_remove == 1 and plan.keep_blobs == set()
    assert plan.rewrite_index


def test_partly_used_packs_are_repacked_beyond_max_unused() -> None:
    f = facts({"p1": pack(("a", MiB), ("b", 3 * MiB)), "p2": pack(("c", 2 * MiB))}, {"data:a", "data:c"})
    plan = decide(f, PruneOptions())
    assert plan.packs[bid("p1")].action == "repack"
    assert plan.keep_blobs == {bid("a")}
    lenient = decide(f, PruneOptions(max_unused=MaxUnused("unlimited")))
    assert lenient.packs[bid("p1")].action == "keep" and not lenient.keep_blobs
    capped = decide(f, PruneOptions(max_repack_bytes=MiB))
    assert capped.packs[bid("p1")].action == "keep"


def test_unreferenced_packs_are_removed_first() -> None:
    f = facts({"p1": pack(("a", MiB))}, {"data:a"}, stored={"p1": implied_pack_size(pack(("a", MiB))), "orphan": 99})
    plan = decide(f, PruneOptions())
    assert plan.packs[bid("orphan")].action == "remove-unreferenced"
    assert plan.stats.size_unref == 99


def test_refuses_when_a_used_blob_is_in_no_index() -> None:
    f = facts({"p1": pack(("a", MiB))}, {"data:a", "data:gone"})
    with pytest.raises(PruneRefused, match="not in any index"):
        decide(f, PruneOptions())


def test_refuses_when_a_needed_pack_is_missing_but_forgets_unneeded_ones() -> None:
    packs = {"p1": pack(("a", MiB)), "p2": pack(("b", MiB))}
    f = facts(packs, {"data:a"}, stored={"p1": implied_pack_size(packs["p1"])})
    plan = decide(f, PruneOptions())
    assert plan.packs[bid("p2")].action == "forget-missing"
    f = facts(packs, {"data:a", "data:b"}, stored={"p1": implied_pack_size(packs["p1"])})
    with pytest.raises(PruneRefused, match="missing"):
        decide(f, PruneOptions())


def test_refuses_when_a_needed_pack_has_the_wrong_size() -> None:
    packs = {"p1": pack(("a", MiB))}
    f = facts(packs, {"data:a"}, stored={"p1": implied_pack_size(packs["p1"]) - 100})
    with pytest.raises(PruneRefused, match="does not match"):
        decide(f, PruneOptions())
    # an unneeded truncated pack is simply removed
    f = facts({**packs, "p2": pack(("b", MiB))}, {"data:a"},
              stored={"p1": implied_pack_size(packs["p1"]), "p2": 10})
    assert decide(f, PruneOptions()).packs[bid("p2")].action == "remove"


def test_duplicates_keep_exactly_one_used_copy() -> None:
    # "a" is stored twice: in p1 (with other used data) and alone in p2
    f = facts({"p1": pack(("a", MiB), ("b", MiB)), "p2": pack(("a", MiB))}, {"data:a", "data:b"})
    plan = decide(f, PruneOptions())
    assert plan.stats.blobs_duplicate == 1
    assert plan.packs[bid("p1")].action == "keep"
    assert plan.packs[bid("p2")].action == "remove"
    # the copy in a pack that goes away is not relied on: a blob only in repacked packs is copied
    f = facts({"p1": pack(("a", MiB), ("x", 3 * MiB)), "p2": pack(("a", MiB), ("y", 3 * MiB))}, {"data:a"})
    plan = decide(f, PruneOptions())
    gone = {p for p, d in plan.packs.items() if d.action in ("remove", "repack")}
    assert gone == {bid("p1"), bid("p2")}
    assert plan.keep_blobs == {bid("a")}


def test_tree_packs_with_unused_blobs_are_always_repacked() -> None:
    f = facts({"t1": pack(("t", 100_000), ("u", 100_000), t=BlobType.TREE)}, {"tree:t"})
    plan = decide(f, PruneOptions(max_unused=MaxUnused("unlimited")))
    assert plan.packs[bid("t1")].action == "repack"
    assert plan.keep_blobs == {bkey(BlobType.TREE, bid("t"))}


def test_a_fragmented_index_is_compacted() -> None:
    f = facts({"p1": pack(("a", MiB))}, {"data:a"}, index_files=5)
    plan = decide(f, PruneOptions())
    assert plan.rewrite_index and plan.notes
    assert not decide(facts({"p1": pack(("a", MiB))}, {"data:a"}), PruneOptions()).rewrite_index


def test_max_unused_parsing() -> None:
    assert MaxUnused.parse("5%").limit(1000) == 52
    assert MaxUnused.parse("0").limit(1000) == 0
    assert MaxUnused.parse("10M").limit(0) == 10 * MiB
    assert MaxUnused.parse("unlimited").limit(0) > 1 << 60
    for bad in ("", "100%", "-1%", "x"):
        with pytest.raises(UsageError):
            MaxUnused.parse(bad)
    assert parse_size("2k", "--x") == 2048


def test_tree_refs_reads_only_what_prune_needs() -> None:
    a, b = bid("a").hex(), bid("b").hex()
    raw = (f'{{"nodes":[{{"name":"d","type":"dir","subtree":"{a}"}},'
           f'{{"name":"f","type":"file","content":["{b}"]}},{{"name":"e","type":"file","content":[]}},'
           '{"name":"l","type":"symlink","linktarget":"x"}]}\n').encode()
    assert tree_refs(raw) == ([bid("a")], [bid("b")])
    with pytest.raises(Exception, match="malformed"):
        tree_refs(b'{"nodes":[{"type":"file","content":["abc"]}]}')
