"""store.keys: listing, adding, removing keys, and changing a password without a window of lock-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffer.errors import BackendError, IntegrityError, NoKeyFound, ObjectNotFound, UsageError
from coffer.store import keys
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf, keyfile
from coffer.store.repository import Repository

PW = "first password"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)
OTHER_KDF = kdf.ScryptParams(n=1 << 11, r=8, p=1)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(str(tmp_path / "repo")), PW, params=FAST_KDF)


def reopen(repo: Repository, password: str) -> Repository:
    return Repository.open(LocalBackend(repo.backend.location), password)


def key_names(repo: Repository) -> set[str]:
    return {fi.name for fi in repo.list_files(FileType.KEY)}


def test_list_marks_the_current_key(repo: Repository) -> None:
    entries = keys.list_keys(repo)
    assert len(entries) == 1
    e = entries[0]
    assert e.current and e.id == repo.key_id and e.file.params == FAST_KDF
    second = keys.add_key(repo, "second")
    entries = keys.list_keys(repo)
    assert {x.id for x in entries} == {repo.key_id, second}
    assert [x.current for x in entries if x.id == second] == [False]
    assert entries == sorted(entries, key=lambda x: x.id)


def test_add_key_opens_with_new_password_and_keeps_master_key(repo: Repository) -> None:
    new = keys.add_key(repo, "second", username="alice", hostname="box")
    assert new in key_names(repo) and len(new) == 64
    r2 = reopen(repo, "second")
    assert r2.key == repo.key and r2.key_id == new
    assert reopen(repo, PW).key_id == repo.key_id  # the old one still works
    kf = keys.load_key(repo, new)
    assert (kf.username, kf.hostname) == ("alice", "box")
    assert kf.params == FAST_KDF  # new keys cost what the key in use costs
    other = keys.add_key(repo, "third", OTHER_KDF)
    assert keys.load_key(repo, other).params == OTHER_KDF


def test_add_key_defaults_user_and_host(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    from coffer import env

    monkeypatch.setattr(env, "username", lambda: "u1")
    monkeypatch.setattr(env, "hostname", lambda: "h1")
    kf = keys.load_key(repo, keys.add_key(repo, "x"))
    assert (kf.username, kf.hostname) == ("u1", "h1")


def test_add_key_refuses_empty_password(repo: Repository) -> None:
    with pytest.raises(UsageError):
        keys.add_key(repo, "")
    assert len(key_names(repo)) == 1


def test_add_key_removes_a_key_that_does_not_open(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    before = key_names(repo)

    def broken_open(self: keyfile.KeyFile, password: str) -> object:
        raise IntegrityError("simulated bad key file")

    monkeypatch.setattr(keyfile.KeyFile, "open", broken_open)
    with pytest.raises(IntegrityError, match="failed to access repository with new key"):
        keys.add_key(repo, "second")
    assert key_names(repo) == before


def test_remove_key(repo: Repository) -> None:
    other = keys.add_key(repo, "second")
    with pytest.raises(keys.KeyRefused, match="refusing to remove key currently used to access repository"):
        keys.remove_key(repo, repo.key_id)
    keys.remove_key(repo, other)
    assert key_names(repo) == {repo.key_id}
    with pytest.raises(NoKeyFound):
        reopen(repo, "second")
    with pytest.raises(ObjectNotFound):
        keys.remove_key(repo, other)


def test_resolve_key_id_by_prefix(repo: Repository) -> None:
    assert keys.resolve_key_id(repo, repo.key_id[:6]) == repo.key_id
    with pytest.raises(ObjectNotFound):
        keys.resolve_key_id(repo, "zz" if not repo.key_id.startswith("zz") else "yy")


def test_change_password(repo: Repository) -> None:
    old = repo.key_id
    new = keys.change_password(repo, "new password", username="bob")
    assert repo.key_id == new != old
    assert key_names(repo) == {new}
    assert reopen(repo, "new password").key == repo.key
    with pytest.raises(NoKeyFound):
        reopen(repo, PW)
    assert keys.load_key(repo, new).username == "bob"


def test_change_password_crash_before_removal_leaves_both_working(
    repo: Repository, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The new key is written first: a failure removing the old one locks nobody out."""
    old = repo.key_id

    def failing_remove(self: LocalBackend, h: Handle) -> None:
        raise BackendError("simulated crash before the old key was removed")

    monkeypatch.setattr(LocalBackend, "remove", failing_remove)
    with pytest.raises(BackendError):
        keys.change_password(repo, "new password")
    monkeypatch.undo()
    assert old in key_names(repo) and len(key_names(repo)) == 2
    assert reopen(repo, PW).key == repo.key
    assert reopen(repo, "new password").key == repo.key


def test_change_password_failed_add_keeps_old_key(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    old = repo.key_id

    def failing_save(self: LocalBackend, h: Handle, data: object) -> None:
        raise BackendError("simulated full disk")

    monkeypatch.setattr(LocalBackend, "save", failing_save)
    with pytest.raises(BackendError):
        keys.change_password(repo, "new password")
    monkeypatch.undo()
    assert key_names(repo) == {old} and repo.key_id == old
    assert reopen(repo, PW).key == repo.key


def test_list_skips_unreadable_key_files(repo: Repository) -> None:
    junk = b"not json"
    import hashlib

    name = hashlib.sha256(junk).hexdigest()
    repo.backend.save(Handle(FileType.KEY, name), junk)
    warnings: list[str] = []
    entries = keys.list_keys(repo, warn=warnings.append)
    assert [e.id for e in entries] == [repo.key_id]
    assert len(warnings) == 1 and "LoadKey() failed" in warnings[0]
