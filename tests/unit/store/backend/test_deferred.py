"""The backend a forked worker opens: no connection until the first request, then one."""

from __future__ import annotations

from pathlib import Path

from coffer.store.backend.base import Backend, BackendProperties, FileType, Handle
from coffer.store.backend.deferred import DeferredBackend
from coffer.store.backend.local import LocalBackend


def test_connects_on_first_request_and_only_once(tmp_path: Path) -> None:
    opened: list[Backend] = []

    def connect() -> Backend:
        b = LocalBackend(str(tmp_path / "repo"))
        opened.append(b)
        return b

    props = BackendProperties(connections=7)
    d = DeferredBackend(connect, props, "somewhere")
    assert d.properties is props and d.location == "somewhere"
    assert not d.connected and opened == []
    d.close()  # closing an unused one connects nothing
    assert opened == []
    d.create()
    h = Handle(FileType.SNAPSHOT, "ab" * 32)
    d.save(h, b"payload")
    assert d.load(h, 2, 3) == b"ylo" and d.exists(h) and d.stat(h).size == 7
    assert [fi.name for fi in d.list(FileType.SNAPSHOT)] == [h.name]
    d.remove(h)
    assert not d.exists(h)
    assert len(opened) == 1 and d.connected
