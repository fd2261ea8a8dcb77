"""Snapshot files: the root tree of one backup, with when, where from and by whom."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coffer.errors import FormatError
from coffer.store.format import gojson
from coffer.util import gotime

_KNOWN = (
    "time", "parent", "tree", "paths", "hostname", "username", "uid", "gid", "excludes", "tags",
    "original", "program_version", "summary",
)


@dataclass(slots=True)
class Snapshot:
    time: str
    tree: bytes
    paths: list[str]
    hostname: str = ""
    username: str = ""
    uid: int = 0
    gid: int = 0
    excludes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    parent: bytes | None = None
    original: bytes | None = None
    program_version: str = ""
    summary: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id: bytes = b""  # storage ID, set when loaded or saved; not part of the JSON

    @property
    def time_ns(self) -> int:
        return gotime.parse_ns(self.time)

    def to_json(self) -> bytes:
        p = ['{"time":' + gojson.string(self.time)]
        if self.parent:
            p.append('"parent":"%s"' % self.parent.hex())
        p.append('"tree":"%s"' % self.tree.hex())
        p.append('"paths":' + gojson.string_list(self.paths))
        if self.hostname:
            p.append('"hostname":' + gojson.string(self.hostname))
        if self.username:
            p.append('"username":' + gojson.string(self.username))
        if self.uid:
            p.append('"uid":%d' % self.uid)
        if self.gid:
            p.append('"gid":%d' % self.gid)
        if self.excludes:
            p.append('"excludes":' + gojson.string_list(self.excludes))
        if self.tags:
            p.append('"tags":' + gojson.string_list(self.tags))
        if self.original:
            p.append('"original":"%s"' % self.original.hex())
        if self.program_version:
            p.append('"program_version":' + gojson.string(self.program_version))
        if self.summary:
            p.append('"summary":' + gojson.dumps(self.summary))
        for k, v in self.extra.items():
            p.append(gojson.string(k) + ":" + gojson.dumps(v))
        return (",".join(p) + "}").encode()

    @classmethod
    def from_json(cls, raw: bytes, id_: bytes = b"") -> Snapshot:
        o = gojson.loads(raw, "snapshot")
        if not isinstance(o, dict):
            raise FormatError("snapshot: not a JSON object")
        try:
            t = o["time"]
            gotime.parse(t)
            tree = o.get("tree")
            if not tree:
                raise FormatError("snapshot has no tree")
            snap = cls(
                time=t,
                tree=_id(tree),
                paths=[str(x) for x in (o.get("paths") or [])],
                hostname=str(o.get("hostname") or ""),
                username=str(o.get("username") or ""),
                uid=int(o.get("uid") or 0),
                gid=int(o.get("gid") or 0),
                excludes=[str(x) for x in (o.get("excludes") or [])],
                tags=[str(x) for x in (o.get("tags") or [])],
                parent=_id(o["parent"]) if o.get("parent") else None,
                original=_id(o["original"]) if o.get("original") else None,
                program_version=str(o.get("program_version") or ""),
                summary=o.get("summary") or None,
                extra={k: v for k, v in o.items() if k not in _KNOWN},
                id=id_,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"snapshot: malformed ({e})") from None
        return snap

    def to_display_dict(self) -> dict[str, Any]:
        """The object ``snapshots --json`` prints (restic adds id and short_id)."""
        d: dict[str, Any] = {"time": self.time}
        if self.parent:
            d["parent"] = self.parent.hex()
        d["tree"] = self.tree.hex()
        d["paths"] = self.paths
        if self.hostname:
            d["hostname"] = self.hostname
        if self.username:
            d["username"] = self.username
        if self.uid:
            d["uid"] = self.uid
        if self.gid:
            d["gid"] = self.gid
        if self.excludes:
            d["excludes"] = self.excludes
        if self.tags:
            d["tags"] = self.tags
        if self.original:
            d["original"] = self.original.hex()
        if self.program_version:
            d["program_version"] = self.program_version
        if self.summary:
            d["summary"] = self.summary
        d.update(self.extra)
        d["id"] = self.id.hex()
        d["short_id"] = self.id.hex()[:8]
        return d


def _id(s: Any) -> bytes:
    b = bytes.fromhex(s)
    if len(b) != 32:
        raise ValueError("invalid ID length")
    return b
