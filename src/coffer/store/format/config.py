"""The repository ``config`` file: version, repository ID and chunker polynomial."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from coffer.errors import FormatError
from coffer.store.format import gojson

SUPPORTED_VERSIONS = (1, 2)


@dataclass(frozen=True, slots=True)
class RepoConfig:
    version: int
    id: str
    chunker_polynomial: int

    def to_bytes(self) -> bytes:
        return gojson.dumps(
            {"version": self.version, "id": self.id, "chunker_polynomial": format(self.chunker_polynomial, "x")}
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RepoConfig:
        obj = gojson.loads(raw, "config")
        try:
            version = obj["version"]
            rid = obj["id"]
            pol = int(obj["chunker_polynomial"], 16)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"config: malformed ({e})") from None
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            raise FormatError(
                f"unsupported repository version {version!r}",
                hint="this coffer reads repository versions 1 and 2",
            )
        if not isinstance(rid, str) or not rid:
            raise FormatError("config: missing repository ID")
        return cls(version, rid, pol)

    @classmethod
    def new(cls, version: int, polynomial: int) -> RepoConfig:
        if version not in SUPPORTED_VERSIONS:
            raise FormatError(f"cannot create repository version {version}")
        return cls(version, os.urandom(32).hex(), polynomial)

    def to_json_pretty(self) -> str:
        return json.dumps(
            {"version": self.version, "id": self.id, "chunker_polynomial": format(self.chunker_polynomial, "x")},
            indent=2,
        )
