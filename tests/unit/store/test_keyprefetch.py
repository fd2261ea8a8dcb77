"""store.keyprefetch: the key derived from key files this machine holds while the backend opens,
used only when the repository lists that very file, never derived twice."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from coffer.errors import NoKeyFound
from coffer.store import keyprefetch, keys
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf, keyfile
from coffer.store.keyprefetch import KeyPrefetch
from coffer.store.repository import Repository

PW = "prefetch password"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(str(tmp_path / "repo")), PW, params=FAST_KDF)


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread each scrypt ran in."""
    seen: list[str] = []
    real = kdf.derive

    def counting(password: bytes, salt: bytes, params: kdf.ScryptParams, length: int = 64) -> bytes:
        seen.append(threading.current_thread().name)
        return real(password, salt, params, length)

    monkeypatch.setattr(keyfile.kdf, "derive", counting)
    return seen


def open_with(repo: Repository, password: str, prefetch: KeyPrefetch | None) -> Repository:
    return Repository.open(LocalBackend(repo.backend.location), password, prefetch=prefetch)


def test_a_local_repository_opens_with_the_key_derived_beforehand(repo: Repository, derivations: list[str]) -> None:
    pre = KeyPrefetch.start("", PW, local_path=repo.backend.location, cache_dir=None)
    assert pre is not None
    r = open_with(repo, PW, pre)
    assert r.key == repo.key and r.key_id == repo.key_id
    assert derivations == ["key-derivation"]  # once, in the helper thread
    assert not [t for t in threading.enumerate() if t.name == "key-derivation"]  # joined: forking stays safe


def test_a_wrong_password_derives_each_key_once(repo: Repository, derivations: list[str]) -> None:
    keys.add_key(repo, "second password")
    derivations.clear()
    pre = KeyPrefetch.start("", "wrong", local_path=repo.backend.location, cache_dir=None)
    with pytest.raises(NoKeyFound):
        open_with(repo, "wrong", pre)
    assert len(derivations) == 2


def test_a_key_file_the_repository_no_longer_lists_is_not_used(
    repo: Repository, tmp_path: Path, derivations: list[str]
) -> None:
    """A cached key file removed from the repository since (`key remove`): its master key would
    still be right, but the repository says that key is gone, so the listed one is derived."""
    cache = tmp_path / "cache"
    kept = keys.add_key(repo, PW)
    keydir = cache / repo.config.id / "keys"
    keydir.mkdir(parents=True)
    shutil.copy(Path(repo.backend.location) / "keys" / repo.key_id, keydir / repo.key_id)
    keyprefetch.remember(str(cache), "s3:somewhere/bucket", repo.config.id)
    repo.backend.remove(Handle(FileType.KEY, repo.key_id))
    derivations.clear()
    pre = KeyPrefetch.start("s3:somewhere/bucket", PW, local_path=None, cache_dir=str(cache))
    assert pre is not None
    r = open_with(repo, PW, pre)
    assert r.key_id == kept and r.key == repo.key
    assert derivations == ["key-derivation", threading.main_thread().name]


def test_cached_key_files_are_found_through_the_url_hint_and_checked(repo: Repository, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = "rest:http://host:8000/repo"
    assert KeyPrefetch.start(url, PW, local_path=None, cache_dir=str(cache)) is None  # nothing known yet
    keyprefetch.remember(str(cache), url, repo.config.id)
    keydir = cache / repo.config.id / "keys"
    keydir.mkdir(parents=True)
    raw = (Path(repo.backend.location) / "keys" / repo.key_id).read_bytes()
    (keydir / repo.key_id).write_bytes(raw[:-1] + b" ")  # damaged: its hash is not its name
    assert KeyPrefetch.start(url, PW, local_path=None, cache_dir=str(cache)) is None
    (keydir / repo.key_id).write_bytes(raw)
    pre = KeyPrefetch.start(url, PW, local_path=None, cache_dir=str(cache))
    assert pre is not None and pre.take([repo.key_id]) == (repo.key, repo.key_id)
    assert KeyPrefetch.start("rest:http://other:8000/repo", PW, local_path=None, cache_dir=str(cache)) is None
    hint = next((cache / "repositories").iterdir())
    hint.write_text("not a repository id\n")
    assert KeyPrefetch.start(url, PW, local_path=None, cache_dir=str(cache)) is None
    assert not [n for n in os.listdir(cache / "repositories") if ".tmp-" in n]
