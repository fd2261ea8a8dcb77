"""Key files: one per password, each wrapping the same master key (``restic key``).

Adding a key writes a new key file and then proves it opens with the new password before
reporting success (a key that does not open is removed again). Changing the password adds the
new key first and removes the old one only after that, so an interruption at any point leaves
the old or the new password working, never neither.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from coffer import env
from coffer.errors import BackendError, CofferError, FormatError, IntegrityError, ObjectNotFound, UsageError
from coffer.store.backend.base import FileType, Handle
from coffer.store.format import kdf, keyfile
from coffer.store.repository import Repository


class KeyRefused(CofferError):
    """The key operation would lock people out (e.g. removing the key in use)."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    id: str  # 64-hex storage ID
    file: keyfile.KeyFile
    current: bool  # the key this process opened the repository with


def load_key(repo: Repository, key_id: str) -> keyfile.KeyFile:
    return keyfile.KeyFile.from_bytes(repo.backend.load(Handle(FileType.KEY, key_id)))


def list_keys(repo: Repository, warn: Callable[[str], None] | None = None) -> list[KeyEntry]:
    """Every readable key file, in storage-ID order; unreadable ones are reported to ``warn``."""
    out = []
    for fi in sorted(repo.list_files(FileType.KEY), key=lambda f: f.name):
        try:
            kf = load_key(repo, fi.name)
        except ObjectNotFound:
            continue
        except (FormatError, BackendError) as e:
            if warn:
                warn(f"LoadKey() failed: {e}")
            continue
        out.append(KeyEntry(fi.name, kf, fi.name == repo.key_id))
    return out


def resolve_key_id(repo: Repository, prefix: str) -> str:
    return repo.resolve_id(FileType.KEY, prefix).hex()


def current_params(repo: Repository) -> kdf.ScryptParams:
    """The scrypt cost of the key in use: restic calibrated it for this repository's users."""
    try:
        return load_key(repo, repo.key_id).params
    except (FormatError, BackendError):
        return kdf.DEFAULT_PARAMS


def add_key(
    repo: Repository, password: str, params: kdf.ScryptParams | None = None, *,
    username: str = "", hostname: str = "",
) -> str:
    """Write a key file for ``password`` wrapping the repository's master key; return its ID."""
    if not password:
        raise UsageError("an empty password is not allowed")
    kf = keyfile.new_keyfile(
        password, repo.key, username=username or env.username(), hostname=hostname or env.hostname(),
        params=params or current_params(repo),
    )
    raw = kf.to_bytes()
    key_id = hashlib.sha256(raw).hexdigest()
    h = Handle(FileType.KEY, key_id)
    repo.backend.save(h, raw)
    # Read it back through storage and open it: a key that does not work must not stay around.
    try:
        master = load_key(repo, key_id).open(password)
        ok = master == repo.key
    except (FormatError, BackendError):
        ok = False
    if not ok:
        try:
            repo.backend.remove(h)
        except BackendError:
            pass
        raise IntegrityError("failed to access repository with new key: the written key file does not open")
    return key_id


def remove_key(repo: Repository, key_id: str) -> None:
    """Delete a key file (full ID). Refuses the key this process is using."""
    if key_id == repo.key_id:
        raise KeyRefused("refusing to remove key currently used to access repository")
    repo.backend.remove(Handle(FileType.KEY, key_id))


def change_password(
    repo: Repository, new_password: str, params: kdf.ScryptParams | None = None, *,
    username: str = "", hostname: str = "",
) -> str:
    """Replace the key in use by one for ``new_password``: add the new key, then remove the old."""
    old = repo.key_id
    new = add_key(repo, new_password, params, username=username, hostname=hostname)
    repo.key_id = new
    try:
        repo.backend.remove(Handle(FileType.KEY, old))
    except ObjectNotFound:
        pass
    return new
