"""The in-memory index: first copy wins, data and tree blobs stay apart, tree packs are found."""

from __future__ import annotations

import os

from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.master_index import MasterIndex


def _blob(t: BlobType, bid: bytes, off: int = 0) -> PackedBlob:
    return PackedBlob(t, bid, off, 100, 0)


def test_first_copy_wins_and_types_stay_apart() -> None:
    idx = MasterIndex()
    same = os.urandom(32)
    p1, p2 = os.urandom(32), os.urandom(32)
    idx.add_pack(p1, [_blob(BlobType.DATA, same, 0)])
    idx.add_pack(p2, [_blob(BlobType.DATA, same, 50), _blob(BlobType.TREE, same, 0)])
    data, tree = idx.lookup(BlobType.DATA, same), idx.lookup(BlobType.TREE, same)
    assert data is not None and data.pack_id == p1 and data.blob.offset == 0
    assert tree is not None and tree.pack_id == p2 and tree.blob.type == BlobType.TREE
    assert idx.data_blob_ids() == [same]


def test_tree_pack_ids_are_the_packs_of_indexed_tree_blobs() -> None:
    idx = MasterIndex()
    data_pack, tree_pack, mixed_pack, dup_pack = (os.urandom(32) for _ in range(4))
    t1, t2 = os.urandom(32), os.urandom(32)
    idx.add_pack(data_pack, [_blob(BlobType.DATA, os.urandom(32)) for _ in range(3)])
    idx.add_pack(tree_pack, [_blob(BlobType.TREE, t1)])
    idx.add_pack(mixed_pack, [_blob(BlobType.DATA, os.urandom(32)), _blob(BlobType.TREE, t2, 100)])
    idx.add_pack(dup_pack, [_blob(BlobType.TREE, t1)])  # a second copy: the first one is the indexed one
    assert idx.tree_pack_ids() == {tree_pack, mixed_pack}
    assert idx.tree_pack_ids() == {pid for pid, b in idx.items() if b.type == BlobType.TREE}
