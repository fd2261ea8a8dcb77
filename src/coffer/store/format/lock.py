"""Lock files, in restic's JSON so that restic and coffer honour each other's locks."""

from __future__ import annotations

from dataclasses import dataclass

from coffer.errors import FormatError
from coffer.store.format import gojson
from coffer.util import gotime

MAX_LOCK_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class LockInfo:
    time: str
    exclusive: bool
    hostname: str
    username: str
    pid: int
    uid: int = 0
    gid: int = 0

    @property
    def time_ns(self) -> int:
        return gotime.parse_ns(self.time)

    def to_json(self) -> bytes:
        p = ['{"time":' + gojson.string(self.time), '"exclusive":' + ("true" if self.exclusive else "false"),
             '"hostname":' + gojson.string(self.hostname), '"username":' + gojson.string(self.username),
             '"pid":%d' % self.pid]
        if self.uid:
            p.append('"uid":%d' % self.uid)
        if self.gid:
            p.append('"gid":%d' % self.gid)
        return (",".join(p) + "}").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LockInfo:
        if len(raw) > MAX_LOCK_SIZE:
            raise FormatError("lock file too large")
        o = gojson.loads(raw, "lock")
        try:
            info = cls(
                time=str(o["time"]), exclusive=bool(o.get("exclusive", False)),
                hostname=str(o.get("hostname", "")), username=str(o.get("username", "")),
                pid=int(o.get("pid", 0)), uid=int(o.get("uid") or 0), gid=int(o.get("gid") or 0),
            )
            gotime.parse(info.time)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"lock: malformed ({e})") from None
        return info
