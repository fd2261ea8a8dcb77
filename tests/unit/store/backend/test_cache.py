"""The metadata cache: ciphertext kept by name, damaged entries dropped and refetched, and never
asked whether something exists (T25)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from coffer.errors import ObjectNotFound
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.cache import CachedBackend, default_cache_dir
from coffer.store.backend.local import LocalBackend

REPO_ID = "c0" * 32


class Counting(LocalBackend):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.loads: list[str] = []

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self.loads.append(str(h))
        return super().load(h, offset, length)


def put(b: LocalBackend, t: FileType, data: bytes) -> Handle:
    h = Handle(t, hashlib.sha256(data).hexdigest())
    b.save(h, data)
    return h


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Counting, CachedBackend]:
    inner = Counting(str(tmp_path / "repo"))
    inner.create()
    return inner, CachedBackend(inner, str(tmp_path / "cache"), REPO_ID)


def test_snapshots_and_index_are_read_once(setup: tuple[Counting, CachedBackend], tmp_path: Path) -> None:
    inner, c = setup
    hs = put(inner, FileType.SNAPSHOT, b"snapshot bytes")
    hi = put(inner, FileType.INDEX, b"index bytes" * 100)
    for _ in range(3):
        assert c.load(hs) == b"snapshot bytes"
        assert c.load(hi, 5, 10) == (b"index bytes" * 100)[5:15]
    assert inner.loads == [str(hs), str(hi)]
    stored = tmp_path / "cache" / REPO_ID / "snapshots" / hs.name
    assert stored.read_bytes() == b"snapshot bytes"  # as stored in the repository: ciphertext stays ciphertext
    assert (tmp_path / "cache" / "CACHEDIR.TAG").read_bytes().startswith(b"Signature: 8a477f597d28d172789f06886806bc55")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_entry_is_dropped_and_refetched(setup: tuple[Counting, CachedBackend], tmp_path: Path,
                                                  damage: str) -> None:
    inner, c = setup
    h = put(inner, FileType.INDEX, os.urandom(5000))
    good = c.load(h)
    p = Path(c.path(h))
    raw = bytearray(p.read_bytes())
    if damage == "flip":
        raw[100] ^= 1
    elif damage == "truncate":
        raw = raw[:2000]
    else:
        raw = bytearray()
    p.write_bytes(bytes(raw))
    assert c.load(h) == good
    assert c.dropped == 1
    assert p.read_bytes() == good  # refetched and stored again
    assert len(inner.loads) == 2


def test_wrong_bytes_from_the_repository_are_not_cached(setup: tuple[Counting, CachedBackend]) -> None:
    inner, c = setup
    h = Handle(FileType.SNAPSHOT, "ee" * 32)
    inner.save(h, b"does not hash to its name")
    assert c.load(h) == b"does not hash to its name"  # the repository layer reports the damage
    assert not os.path.exists(c.path(h))


def test_existence_is_always_asked_of_the_repository(setup: tuple[Counting, CachedBackend]) -> None:
    inner, c = setup
    h = put(inner, FileType.SNAPSHOT, b"s1")
    c.load(h)
    inner.remove(h)  # pruned by another process
    assert not c.exists(h)
    with pytest.raises(ObjectNotFound):
        c.stat(h)
    assert [fi.name for fi in c.list(FileType.SNAPSHOT)] == []
    assert not os.path.exists(c.path(h))  # a complete listing evicted the stale entry


def test_only_tree_packs_are_cached(tmp_path: Path) -> None:
    inner = Counting(str(tmp_path / "repo"))
    inner.create()
    tree = put(inner, FileType.PACK, b"T" * 10_000)
    data = put(inner, FileType.PACK, b"D" * 10_000)
    c = CachedBackend(inner, str(tmp_path / "cache"), REPO_ID, is_tree_pack=lambda n: n == tree.name)
    for _ in range(3):
        assert c.load(tree, 100, 50) == b"T" * 50
        assert c.load(data, 100, 50) == b"D" * 50
    assert inner.loads.count(str(tree)) == 1
    assert inner.loads.count(str(data)) == 3
    assert not os.path.exists(c.path(data))


def test_writes_go_to_the_repository_and_the_cache(setup: tuple[Counting, CachedBackend]) -> None:
    inner, c = setup
    data = b"new snapshot"
    h = Handle(FileType.SNAPSHOT, hashlib.sha256(data).hexdigest())
    c.save(h, data)
    assert inner.load(h) == data
    inner.loads.clear()
    assert c.load(h) == data and inner.loads == []
    c.remove(h)
    assert not inner.exists(h) and not os.path.exists(c.path(h))


def test_an_unwritable_cache_does_not_fail(tmp_path: Path) -> None:
    inner = Counting(str(tmp_path / "repo"))
    inner.create()
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    msgs: list[str] = []
    c = CachedBackend(inner, str(blocker), REPO_ID, warn=msgs.append)
    h = put(inner, FileType.SNAPSHOT, b"s")
    assert c.load(h) == b"s" and c.load(h) == b"s"
    assert len(msgs) == 1 and "continuing without caching" in msgs[0]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COFFER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "coffer")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / ".cache" / "coffer")
    monkeypatch.setenv("COFFER_CACHE_DIR", "/elsewhere")
    assert default_cache_dir() == "/elsewhere"
