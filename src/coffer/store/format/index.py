"""Index files: which pack holds which blob, at what offset and length."""

from __future__ import annotations

from dataclasses import dataclass, field

from coffer.errors import FormatError
from coffer.store.format import gojson
from coffer.store.format.pack import BlobType, PackedBlob


@dataclass(slots=True)
class IndexPack:
    id: bytes
    blobs: list[PackedBlob]


@dataclass(slots=True)
class IndexFile:
    packs: list[IndexPack] = field(default_factory=list)
    supersedes: list[bytes] = field(default_factory=list)

    def to_json(self) -> bytes:
        parts = ['{']
        if self.supersedes:
            parts.append('"supersedes":[' + ",".join('"%s"' % s.hex() for s in self.supersedes) + "],")
        parts.append('"packs":[')
        packs = []
        for p in self.packs:
            blobs = []
            for b in p.blobs:
                tail = ',"uncompressed_length":%d}' % b.uncompressed_length if b.uncompressed_length else "}"
                blobs.append(
                    '{"id":"%s","type":"%s","offset":%d,"length":%d%s'
                    % (b.id.hex(), "data" if b.type == BlobType.DATA else "tree", b.offset, b.length, tail)
                )
            packs.append('{"id":"%s","blobs":[%s]}' % (p.id.hex(), ",".join(blobs)))
        parts.append(",".join(packs))
        parts.append("]}\n")
        return "".join(parts).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> IndexFile:
        obj = gojson.loads(raw, "index")
        supersedes: list[bytes] = []
        if isinstance(obj, list):  # very old restic: a bare array of packs
            packs_obj = obj
        elif isinstance(obj, dict):
            packs_obj = obj.get("packs") or []
            try:
                supersedes = [bytes.fromhex(s) for s in obj.get("supersedes") or []]
            except (TypeError, ValueError):
                raise FormatError("index: invalid supersedes list") from None
        else:
            raise FormatError("index: not a JSON object")
        packs: list[IndexPack] = []
        dat, tree = BlobType.DATA, BlobType.TREE
        try:
            for p in packs_obj:
                pid = bytes.fromhex(p["id"])
                blobs = []
                for b in p["blobs"]:
                    t = b["type"]
                    bt = dat if t == "data" else tree if t == "tree" else BlobType.parse(t)
                    bid = bytes.fromhex(b["id"])
                    off, ln = b["offset"], b["length"]
                    ul = b.get("uncompressed_length") or 0
                    if not (type(off) is int and type(ln) is int and type(ul) is int) or off < 0 or ln < 32 or ul < 0:
                        raise FormatError("index: invalid blob offset or length")
                    if len(bid) != 32:
                        raise FormatError("index: invalid blob ID")
                    blobs.append(PackedBlob(bt, bid, off, ln, ul))
                if len(pid) != 32:
                    raise FormatError("index: invalid pack ID")
                packs.append(IndexPack(pid, blobs))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"index: malformed ({e})") from None
        return cls(packs, supersedes)
