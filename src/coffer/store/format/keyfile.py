"""Key files (``keys/<id>``): the master key wrapped by a password-derived user key."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

from coffer.errors import FormatError, IntegrityError
from coffer.store.format import crypto, gojson, kdf
from coffer.util import gotime

SALT_SIZE = 64
MAX_KEYFILE_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class KeyFile:
    created: str
    username: str
    hostname: str
    params: kdf.ScryptParams
    salt: bytes
    data: bytes  # crypto container around the master-key JSON

    def to_bytes(self) -> bytes:
        b64 = base64.b64encode
        obj = {
            "created": self.created,
            "username": self.username,
            "hostname": self.hostname,
            "kdf": "scrypt",
            "N": self.params.n,
            "r": self.params.r,
            "p": self.params.p,
            "salt": b64(self.salt).decode(),
            "data": b64(self.data).decode(),
        }
        return gojson.dumps(obj).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> KeyFile:
        if len(raw) > MAX_KEYFILE_SIZE:
            raise FormatError("key file too large")
        obj = gojson.loads(raw, "key file")
        try:
            if obj.get("kdf") != "scrypt":
                raise FormatError(f"key file: unsupported KDF {obj.get('kdf')!r}")
            params = kdf.ScryptParams(int(obj["N"]), int(obj["r"]), int(obj["p"]))
            salt = base64.b64decode(obj["salt"], validate=True)
            data = base64.b64decode(obj["data"], validate=True)
            kf = cls(
                created=str(obj.get("created", "")),
                username=str(obj.get("username", "")),
                hostname=str(obj.get("hostname", "")),
                params=params, salt=salt, data=data,
            )
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise FormatError(f"key file: malformed ({e})") from None
        if len(salt) != SALT_SIZE:
            raise FormatError(f"key file: salt must be {SALT_SIZE} bytes, got {len(salt)}")
        params.check()
        return kf

    def user_key(self, password: str) -> crypto.CryptoKey:
        raw = kdf.derive(password.encode("utf-8"), self.salt, self.params, 64)
        return crypto.CryptoKey.from_bytes(raw)

    def open(self, password: str) -> crypto.CryptoKey:
        """Return the master key, or raise IntegrityError if the password does not fit."""
        plain = crypto.open_(self.user_key(password), self.data)
        try:
            obj = json.loads(plain)
        except ValueError:
            raise IntegrityError("key file: master key JSON unreadable") from None
        return crypto.CryptoKey.from_json_obj(obj)


def new_keyfile(
    password: str, master: crypto.CryptoKey, *, username: str, hostname: str,
    params: kdf.ScryptParams = kdf.DEFAULT_PARAMS,
) -> KeyFile:
    salt = os.urandom(SALT_SIZE)
    user = crypto.CryptoKey.from_bytes(kdf.derive(password.encode("utf-8"), salt, params, 64))
    data = crypto.seal(user, json.dumps(master.to_json_obj(), separators=(",", ":")).encode())
    return KeyFile(
        created=gotime.format_ns(gotime.now_ns()), username=username, hostname=hostname,
        params=params, salt=salt, data=data,
    )
