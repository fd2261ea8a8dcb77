"""How big snapshots are, counted the ways ``restic stats --mode`` counts.

* ``restore-size``: every node of every snapshot, sizes as restored (a hard-linked file's size
  counts once per snapshot: same inode and device, more than one link).
* ``files-by-contents``: files unique by their content (the sequence of data blob IDs).
* ``raw-data``: the blobs the snapshots reference, each once, at their stored (packed) size.
* ``blobs-per-file``: files unique by content, counting each of their distinct blobs at
  plaintext size.

Subtrees are read once where that cannot change the result: in ``restore-size`` a subtree
without hard-linked files is summed once per tree ID and reused; the other modes skip any tree
they have already seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from coffer.engine.treewalk import allow_deep_trees, join, subtree_of
from coffer.errors import BlobNotFound, UsageError
from coffer.store.format.pack import BlobType
from coffer.store.format.snapshot import Snapshot
from coffer.store.format.tree import Node
from coffer.store.repository import Repository

RESTORE_SIZE = "restore-size"
FILES_BY_CONTENTS = "files-by-contents"
RAW_DATA = "raw-data"
BLOBS_PER_FILE = "blobs-per-file"
MODES = (RESTORE_SIZE, FILES_BY_CONTENTS, RAW_DATA, BLOBS_PER_FILE)


@dataclass(slots=True)
class StatsResult:
    mode: str
    total_size: int = 0
    total_file_count: int = 0
    total_blob_count: int = 0
    snapshots_count: int = 0

    def as_json(self) -> dict[str, int]:
        """The object ``restic stats --json`` prints (``total_blob_count`` omitted when 0)."""
        d = {"total_size": self.total_size, "total_file_count": self.total_file_count}
        if self.total_blob_count:
            d["total_blob_count"] = self.total_blob_count
        d["snapshots_count"] = self.snapshots_count
        return d


def _hardlinked(node: Node) -> bool:
    """A node whose size must be counted once per (inode, device) within a snapshot."""
    return node.type != "dir" and node.links != 1 and node.size > 0 and node.inode != 0


class StatsCollector:
    def __init__(self, repo: Repository, mode: str = RESTORE_SIZE) -> None:
        if mode not in MODES:
            raise UsageError(f"unknown counting mode: {mode} (use the -h flag to get a list of supported modes)")
        allow_deep_trees()
        self.repo = repo
        self.mode = mode
        self.result = StatsResult(mode)
        # restore-size
        self._sums: dict[bytes, tuple[int, int]] = {}  # tree -> (nodes, bytes), hard-link free trees only
        self._inodes: set[tuple[int, int]] = set()
        # files-by-contents / blobs-per-file
        self._unique_files: set[bytes] = set()
        self._file_blobs: dict[bytes, set[bytes]] = {}
        # raw-data (and tree skipping for the content modes)
        self._seen_trees: set[bytes] = set()
        self._blobs: set[bytes] = set()

    def add_snapshots(self, snaps: Iterable[Snapshot]) -> StatsResult:
        for s in snaps:
            self.add_snapshot(s)
        return self.finish()

    def add_snapshot(self, snap: Snapshot) -> None:
        self.result.snapshots_count += 1
        if self.mode == RESTORE_SIZE:
            self._inodes = set()
            count, size, _ = self._restore_size(snap.tree)
            self.result.total_file_count += count
            self.result.total_size += size
        elif self.mode == RAW_DATA:
            self._used_blobs(snap.tree)
        else:
            self._by_contents(snap.tree, b"/")

    def finish(self) -> StatsResult:
        if self.mode == RAW_DATA and self._blobs:
            idx = self.repo.index
            r = self.result
            for h in self._blobs:
                if len(h) == 33:
                    loc = idx.lookup(BlobType.TREE, h[1:])
                else:
                    loc = idx.lookup(BlobType.DATA, h)
                if loc is None:
                    kind = "tree" if len(h) == 33 else "data"
                    raise BlobNotFound(f"blob <{kind}/{h[-32:].hex()[:8]}> not found")
                r.total_size += loc.blob.length
                r.total_blob_count += 1
            self._blobs = set()
        return self.result

    # ------------------------------------------------------------------------------ modes
    def _restore_size(self, tree_id: bytes) -> tuple[int, int, bool]:
        memo = self._sums.get(tree_id)
        if memo is not None:
            return memo[0], memo[1], False
        count = size = 0
        hard = False
        for node in self.repo.load_tree(tree_id):
            count += 1
            if _hardlinked(node):
                hard = True
                key = (node.inode, node.device_id)
                if key not in self._inodes:
                    self._inodes.add(key)
                    size += node.size
            else:
                size += node.size
            if node.type == "dir":
                c, s, h = self._restore_size(subtree_of(node, node.name))
                count += c
                size += s
                hard = hard or h
        if not hard:
            self._sums[tree_id] = (count, size)
        return count, size, hard

    def _used_blobs(self, tree_id: bytes) -> None:
        stack = [tree_id]
        while stack:
            tid = stack.pop()
            if tid in self._seen_trees:
                continue
            self._seen_trees.add(tid)
            self._blobs.add(b"T" + tid)
            for node in self.repo.load_tree(tid):
                if node.type == "file":
                    self._blobs.update(node.content or ())
                elif node.type == "dir":
                    stack.append(subtree_of(node, node.name))

    def _by_contents(self, tree_id: bytes, prefix: bytes) -> None:
        if tree_id in self._seen_trees:
            return  # every file below was counted (or deliberately skipped) already
        self._seen_trees.add(tree_id)
        r = self.result
        for node in self.repo.load_tree(tree_id):
            path = join(prefix, node.name)
            fid = hashlib.sha256(b"".join(node.content or ())).digest()
            if fid not in self._unique_files:
                self._unique_files.add(fid)
                if self.mode == FILES_BY_CONTENTS:
                    r.total_size += node.size
                    r.total_file_count += 1
                else:
                    self._count_blobs(path, node)
            if node.type == "dir":
                self._by_contents(subtree_of(node, path), path)

    def _count_blobs(self, path: bytes, node: Node) -> None:
        r = self.result
        for bid in node.content or ():
            seen = self._file_blobs.get(path)
            if seen is None:
                seen = self._file_blobs[path] = set()
                r.total_file_count += 1
            if bid not in seen:
                loc = self.repo.index.lookup(BlobType.DATA, bid)
                if loc is None:
                    raise BlobNotFound(f"blob {bid.hex()} not found for {path.decode('utf-8', 'replace')}")
                r.total_size += loc.blob.plain_length
                seen.add(bid)
                r.total_blob_count += 1


def collect(repo: Repository, snaps: Iterable[Snapshot], mode: str = RESTORE_SIZE) -> StatsResult:
    return StatsCollector(repo, mode).add_snapshots(snaps)
