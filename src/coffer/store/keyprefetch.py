"""Deriving the master key while the backend is still being opened.

Opening a repository is a chain: connect (for S3, importing botocore and building a client costs a
few tenths of a second of CPU), read the config, list and read the key files, then scrypt the
password (~0.15 s with restic's parameters). scrypt releases the GIL, so when this machine already
holds the repository's key files it can run on the other core while the connection is being made:
a local repository's ``keys`` directory is right there, and a remote repository's key files are
in the metadata cache (``<cache>/<repository ID>/keys``), found through a small hint file that
maps the URL to the repository ID (written after each successful open).

Nothing is trusted for it: a cached key file is used only if its SHA-256 is its name and that name
is among the key files the repository lists, and the master key it yields must still
authenticate the config read from the repository.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading

from coffer.errors import FormatError, IntegrityError
from coffer.store.format import crypto, keyfile

MAX_CANDIDATES = 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _hint_path(cache_dir: str, url: str) -> str:
    return os.path.join(cache_dir, "repositories", hashlib.sha256(url.encode()).hexdigest()[:32])


def remember(cache_dir: str, url: str, repo_id: str) -> None:
    """Note which repository ``url`` is, for the next open (best effort, like the cache itself)."""
    p = _hint_path(cache_dir, url)
    try:
        with open(p, encoding="ascii") as f:
            if f.read().strip() == repo_id:
                return
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = f"{p}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(repo_id + "\n")
        os.replace(tmp, p)
    except OSError:
        pass


def _key_dir(url: str, local_path: str | None, cache_dir: str | None) -> str | None:
    if local_path is not None:
        return os.path.join(local_path, "keys")
    if cache_dir is None:
        return None
    try:
        with open(_hint_path(cache_dir, url), encoding="ascii") as f:
            repo_id = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return os.path.join(cache_dir, repo_id, "keys") if _HEX64.match(repo_id) else None


def _candidates(key_dir: str, key_hint: str | None) -> list[tuple[str, bytes]]:
    try:
        names = sorted(n for n in os.listdir(key_dir) if _HEX64.match(n))
    except OSError:
        return []
    if key_hint:
        names.sort(key=lambda n: not n.startswith(key_hint))
    out = []
    for name in names[:MAX_CANDIDATES]:
        try:
            with open(os.path.join(key_dir, name), "rb") as f:
                raw = f.read(keyfile.MAX_KEYFILE_SIZE + 1)
        except OSError:
            continue
        if hashlib.sha256(raw).hexdigest() == name:  # exactly the repository's file of that name
            out.append((name, raw))
    return out


class KeyPrefetch:
    """scrypt over key files this machine holds, in a thread, started before the backend is open."""

    def __init__(self, candidates: list[tuple[str, bytes]], password: str) -> None:
        self._candidates = candidates
        self._password = password
        self._found: tuple[str, crypto.CryptoKey] | None = None
        self._failed: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="key-derivation", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, url: str, password: str, *, local_path: str | None, cache_dir: str | None,
              key_hint: str | None = None) -> KeyPrefetch | None:
        key_dir = _key_dir(url, local_path, cache_dir)
        candidates = _candidates(key_dir, key_hint) if key_dir is not None else []
        return cls(candidates, password) if candidates else None

    def _run(self) -> None:
        for name, raw in self._candidates:
            try:
                self._found = (name, keyfile.KeyFile.from_bytes(raw).open(self._password))
                return
            except (IntegrityError, FormatError):
                self._failed.add(name)

    def take(self, names: list[str]) -> tuple[crypto.CryptoKey, str] | None:
        """The master key and its key file's name, if one of ``names`` (the key files the
        repository lists) opened with the password; waits for the thread either way."""
        self.close()
        if self._found is not None and self._found[0] in names:
            return self._found[1], self._found[0]
        return None

    def close(self) -> None:
        """Wait for the thread (whoever started it must, before anything forks)."""
        self._thread.join()

    def failed(self) -> set[str]:
        """Key files the password did not open (after ``take``): no need to try them again."""
        return set(self._failed)
