"""WAL files as they are stored: names, validation at push, tags, and the archive's catalog.

Every archived file is one file in the root of a snapshot tagged ``wal`` and
``wal-dataset=<name>`` (usually one file per snapshot; a push that takes other ready segments along
stores them in the same snapshot). The snapshot's ``paths`` are ``/<file name>``, so the catalog of
an archive is built from snapshot metadata alone, without reading trees, and every archived
segment is referenced by a snapshot from the moment ``wal-push`` returns.

Why ``wal-dataset=`` and not the plan's ``dataset=`` tag: the plan's retention applies keep rules
to ``dataset=`` snapshots grouped by host, which would thin out WAL like any other backup. WAL must
instead be kept exactly as long as a kept base backup needs it (``policy.wal``). restic's and
coffer's ``forget`` with the default grouping (host + paths) never remove a WAL snapshot either:
each has its own paths, so it is the newest (and kept) snapshot of its own group.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from coffer.errors import SourceError

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial$")
BACKUP_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")

TAG_WAL = "wal"
TAG_BASE = "basebackup"
WAL_DATASET_PREFIX = "wal-dataset="
SYSID_PREFIX = "pg-sysid="
LABEL_PREFIX = "pg-label="
WAL_START_PREFIX = "pg-wal-start="
BACKUP_LABEL_PREFIX = "pg-backup-label="
BACKUP_STOP_PREFIX = "pg-backup-stop="  # epoch seconds (rounded up) when the backup with that label ended

XLP_LONG_HEADER = 0x0002
MAX_TEXT_FILE = 1 << 20


def wal_dataset_tag(dataset: str) -> str:
    return WAL_DATASET_PREFIX + dataset


def tag_value(tags: Iterable[str], prefix: str) -> str | None:
    for t in tags:
        if t.startswith(prefix):
            return t[len(prefix):]
    return None


def tag_values(tags: Iterable[str], prefix: str) -> list[str]:
    return [t[len(prefix):] for t in tags if t.startswith(prefix)]


# ---------------------------------------------------------------------------------------- names
def kind_of(name: str) -> str:
    """segment, partial, backup, history; anything else is refused."""
    if SEGMENT_RE.match(name):
        return "segment"
    if PARTIAL_RE.match(name):
        return "partial"
    if BACKUP_RE.match(name):
        return "backup"
    if HISTORY_RE.match(name):
        return "history"
    raise SourceError(f"{name!r} is not a WAL file name PostgreSQL archives "
                      "(segment, .partial, .backup or .history)")


def timeline_of(name: str) -> int:
    return int(name[:8], 16)


def position_key(name: str) -> str:
    """Sorts segments (and .backup/.partial files) by WAL position, whatever the timeline."""
    return name[8:24]


def segment_name(tli: int, lsn: int, seg_size: int) -> str:
    segno = lsn // seg_size
    per_id = 0x100000000 // seg_size
    return "%08X%08X%08X" % (tli, segno // per_id, segno % per_id)


def parse_lsn(text: str) -> int:
    hi, _, lo = text.strip().partition("/")
    try:
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise SourceError(f"not a WAL location: {text!r}") from None


def next_segment(name: str, seg_size: int) -> str:
    per_id = 0x100000000 // seg_size
    log, seg = int(name[8:16], 16), int(name[16:24], 16) + 1
    if seg >= per_id:
        log, seg = log + 1, 0
    return "%s%08X%08X" % (name[:8], log, seg)


# ---------------------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class WalFileInfo:
    name: str
    kind: str
    size: int
    sysid: int | None = None
    seg_size: int | None = None
    backup_label: str | None = None  # for .backup files: the base backup's label
    backup_start: str | None = None  # for .backup files: START WAL file
    backup_stop_s: int | None = None  # for .backup files: STOP TIME, epoch seconds rounded up


def validate(name: str, data: bytes) -> WalFileInfo:
    """Refuse what PostgreSQL would never hand an archive_command: truncated or foreign segments."""
    kind = kind_of(name)
    if kind in ("segment", "partial"):
        return _validate_segment(name, data, kind)
    if len(data) > MAX_TEXT_FILE:
        raise SourceError(f"{name}: {len(data)} bytes is too large for a {kind} file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{name}: a {kind} file must be text") from None
    if kind == "backup":
        fields = parse_backup_file(text)
        if "START WAL LOCATION" not in fields:
            raise SourceError(f"{name}: not a backup history file (no START WAL LOCATION)")
        m = re.search(r"\(file ([0-9A-F]{24})\)", fields["START WAL LOCATION"])
        return WalFileInfo(name, kind, len(data), backup_label=fields.get("LABEL"),
                           backup_start=m.group(1) if m else None,
                           backup_stop_s=parse_pg_log_time(fields.get("STOP TIME", "")))
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#") and not re.match(r"^\d+\s+[0-9A-F]+/[0-9A-F]+", s):
            raise SourceError(f"{name}: not a timeline history file (line {s[:40]!r})")
    return WalFileInfo(name, kind, len(data))


def _validate_segment(name: str, data: bytes, kind: str) -> WalFileInfo:
    size = len(data)
    base = name[:24]
    if size < (1 << 20) or size > (1 << 30) or size & (size - 1):
        raise SourceError(f"{name}: {size} bytes is not a WAL segment size (a power of two, 1 MB to 1 GB); "
                          "the file is truncated or not a WAL segment")
    if size < 40:
        raise SourceError(f"{name}: too short")
    for fmt in ("<", ">"):
        magic, info, tli, pageaddr, _rem = struct.unpack_from(fmt + "HHIQI", data, 0)
        if magic >> 8 in (0xD0, 0xD1):
            break
    else:
        raise SourceError(f"{name}: no WAL page header at the start (magic {magic:#06x}); "
                          "the file is not a WAL segment or is damaged")
    sysid, seg_size, blcksz = struct.unpack_from(fmt + "QII", data, 24)
    if not info & XLP_LONG_HEADER:
        raise SourceError(f"{name}: the first page has no long header; the file is damaged")
    if seg_size != size:
        raise SourceError(f"{name}: the header says {seg_size} bytes but the file has {size}; "
                          "the file is truncated or damaged")
    if blcksz < 1024 or blcksz > 65536 or blcksz & (blcksz - 1):
        raise SourceError(f"{name}: implausible WAL block size {blcksz}; the file is damaged")
    per_id = 0x100000000 // size
    log, seg = int(base[8:16], 16), int(base[16:24], 16)
    if seg >= per_id:
        raise SourceError(f"{name}: segment number out of range for {size}-byte segments")
    if pageaddr != (log * per_id + seg) * size:
        raise SourceError(f"{name}: the header's WAL address {pageaddr >> 32:X}/{pageaddr & 0xFFFFFFFF:X} does not "
                          "match the file name; the file is damaged or renamed")
    if tli == 0 or tli > int(base[:8], 16):
        raise SourceError(f"{name}: the header's timeline {tli} does not fit the file name")
    return WalFileInfo(name, kind, size, sysid=sysid, seg_size=size)


def parse_pg_log_time(text: str) -> int | None:
    """``2026-11-26 21:22:16 UTC`` (or ``+03``, ``-0330``) as epoch seconds, rounded up; None when the
    zone is an abbreviation we cannot resolve reliably."""
    import calendar
    import time as _time

    m = re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)?\s*(\S*)$", text.strip())
    if not m:
        return None
    try:
        base = calendar.timegm(_time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None
    zone = m.group(2)
    if zone in ("", "UTC", "GMT", "Z", "UCT"):
        off = 0
    else:
        z = re.match(r"^([+-])(\d\d):?(\d\d)?$", zone)
        if not z:
            return None
        off = (int(z.group(2)) * 3600 + int(z.group(3) or 0) * 60) * (1 if z.group(1) == "+" else -1)
    return base - off + 1


def parse_backup_file(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


# ---------------------------------------------------------------------------------------- catalog
@dataclass(frozen=True)
class SnapMeta:
    """What the catalog needs of one snapshot (cached locally: snapshots never change)."""

    id: str
    time_ns: int
    tags: tuple[str, ...]
    paths: tuple[str, ...]
    hostname: str = ""


@dataclass
class WalCatalog:
    """One dataset's archive: every archived file name and the snapshots that hold it."""

    dataset: str
    files: dict[str, list[SnapMeta]] = field(default_factory=dict)
    wal_snapshots: list[SnapMeta] = field(default_factory=list)
    base_backups: list[SnapMeta] = field(default_factory=list)

    @classmethod
    def build(cls, snaps: Sequence[SnapMeta], dataset: str) -> WalCatalog:
        cat = cls(dataset)
        wtag = wal_dataset_tag(dataset)
        dtag = "dataset=" + dataset
        for s in sorted(snaps, key=lambda x: (x.time_ns, x.id)):
            if TAG_WAL in s.tags and wtag in s.tags:
                cat.wal_snapshots.append(s)
                for p in s.paths:
                    cat.files.setdefault(p.lstrip("/"), []).append(s)
            elif TAG_BASE in s.tags and dtag in s.tags:
                cat.base_backups.append(s)
        return cat

    def holder(self, name: str) -> SnapMeta | None:
        """The oldest snapshot holding ``name`` (the first push wins; later identical ones are copies)."""
        h = self.files.get(name)
        return h[0] if h else None

    def names(self) -> list[str]:
        return sorted(self.files)

    def segments_after(self, name: str, limit: int) -> list[str]:
        """The next archived segments on ``name``'s timeline, in order, at most ``limit``."""
        tli = name[:8]
        out = sorted(n for n in self.files if len(n) == 24 and n.startswith(tli) and n > name)
        return out[:limit]

    def newest_segment(self) -> str | None:
        segs = [n for n in self.files if SEGMENT_RE.match(n)]
        return max(segs, key=lambda n: (position_key(n), n)) if segs else None

    def backup_end_time(self, label: str) -> int | None:
        """When the base backup with this label ended: the STOP TIME of its .backup history file, else
        (a time zone we cannot read) the push time of that file, which is later."""
        for s in self.wal_snapshots:
            labels = tag_values(s.tags, BACKUP_LABEL_PREFIX)
            if label in labels:
                stops = tag_values(s.tags, BACKUP_STOP_PREFIX)
                if len(labels) == 1 and len(stops) == 1 and stops[0].isdigit():
                    # STOP TIME has whole seconds (rounded up when stored); the push came after the stop too
                    return min(int(stops[0]) * 1_000_000_000, s.time_ns)
                return s.time_ns
        return None

    def gaps(self, start: str, seg_size: int, stop: str | None = None) -> list[str]:
        """Segments missing on ``start``'s timeline between ``start`` and the newest one (or ``stop``)."""
        tli = start[:8]
        have = {n for n in self.files if len(n) == 24 and n.startswith(tli)}
        last = stop or max((n for n in have if n >= start), default=None)
        if last is None:
            return []
        missing = []
        n = start
        guard = 0
        while n <= last and guard < 1_000_000:
            if n not in have:
                missing.append(n)
            n = next_segment(n, seg_size)
            guard += 1
        return missing
