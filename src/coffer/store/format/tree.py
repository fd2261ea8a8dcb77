"""Tree blobs: a directory's nodes as compact JSON, byte-identical to what restic writes."""

from __future__ import annotations

import base64
import stat as st
import sys
from dataclasses import dataclass, field
from typing import Any

from coffer.errors import FormatError
from coffer.store.format import gojson, goquote

# Go os.FileMode bits (not st_mode!).
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_NAMED_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHAR_DEVICE = 1 << 21
GO_STICKY = 1 << 20
GO_IRREGULAR = 1 << 19
_GO_TYPE_BITS = GO_DIR | GO_SYMLINK | GO_DEVICE | GO_NAMED_PIPE | GO_SOCKET | GO_CHAR_DEVICE | GO_IRREGULAR

_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time
NODE_TYPES = ("file", "dir", "symlink", "dev", "chardev", "fifo", "socket", "irregular")
MAX_TREE_NODES = 10_000_000


def go_mode(st_mode: int) -> int:
    """Unix st_mode -> Go FileMode as restic stores it (perm | type | setuid | setgid | sticky)."""
    m = st_mode & 0o777
    fmt = st.S_IFMT(st_mode)
    if fmt == st.S_IFDIR:
        m |= GO_DIR
    elif fmt == st.S_IFLNK:
        m |= GO_SYMLINK
    elif fmt == st.S_IFBLK:
        m |= GO_DEVICE
    elif fmt == st.S_IFCHR:
        m |= GO_DEVICE | GO_CHAR_DEVICE
    elif fmt == st.S_IFIFO:
        m |= GO_NAMED_PIPE
    elif fmt == st.S_IFSOCK:
        m |= GO_SOCKET
    if st_mode & st.S_ISUID:
        m |= GO_SETUID
    if st_mode & st.S_ISGID:
        m |= GO_SETGID
    if st_mode & st.S_ISVTX:
        m |= GO_STICKY
    return m


def unix_perm(go: int) -> int:
    """Go FileMode -> the permission part of st_mode (with setuid/setgid/sticky), for chmod."""
    m = go & 0o777
    if go & GO_SETUID:
        m |= st.S_ISUID
    if go & GO_SETGID:
        m |= st.S_ISGID
    if go & GO_STICKY:
        m |= st.S_ISVTX
    return m


def node_type_from_mode(st_mode: int) -> str:
    fmt = st.S_IFMT(st_mode)
    return {
        st.S_IFREG: "file", st.S_IFDIR: "dir", st.S_IFLNK: "symlink", st.S_IFBLK: "dev",
        st.S_IFCHR: "chardev", st.S_IFIFO: "fifo", st.S_IFSOCK: "socket",
    }.get(fmt, "irregular")


@dataclass(slots=True)
class Node:
    """One entry of a tree. ``name`` is raw bytes; IDs are raw 32-byte digests; times are Go strings."""

    name: bytes
    type: str
    mode: int = 0
    mtime: str = ""
    atime: str = ""
    ctime: str = ""
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    inode: int = 0
    device_id: int = 0
    size: int = 0
    links: int = 0
    linktarget: bytes = b""
    xattrs: list[tuple[str, bytes]] | None = None
    generic_attributes: dict[str, Any] | None = None
    device: int = 0
    content: list[bytes] | None = None
    subtree: bytes | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # fields from newer restic, kept on rewrite

    def to_json(self) -> str:
        p = ['{"name":', gojson.string(goquote.quote(self.name)), ',"type":', gojson.string(self.type)]
        if self.mode:
            p.append(',"mode":%d' % self.mode)
        p.append(',"mtime":%s,"atime":%s,"ctime":%s,"uid":%d,"gid":%d' % (
            gojson.string(self.mtime or _ZERO_TIME), gojson.string(self.atime or _ZERO_TIME),
            gojson.string(self.ctime or _ZERO_TIME), self.uid, self.gid))
        if self.user:
            p.append(',"user":' + gojson.string(self.user))
        if self.group:
            p.append(',"group":' + gojson.string(self.group))
        if self.inode:
            p.append(',"inode":%d' % self.inode)
        if self.device_id:
            p.append(',"device_id":%d' % self.device_id)
        if self.size:
            p.append(',"size":%d' % self.size)
        if self.links:
            p.append(',"links":%d' % self.links)
        if self.linktarget:
            try:
                p.append(',"linktarget":' + gojson.string(self.linktarget.decode("utf-8")))
            except UnicodeDecodeError:
                # Newer restic stores such targets raw; 0.14 reads the lossy string. Write both, the
                # string as Go does (each invalid byte becomes \ufffd, via surrogateescape).
                p.append(',"linktarget":' + gojson.string(self.linktarget.decode("utf-8", "surrogateescape")))
                p.append(',"linktarget_raw":"%s"' % base64.b64encode(self.linktarget).decode())
        if self.xattrs:
            p.append(',"extended_attributes":[' + ",".join(
                '{"name":%s,"value":"%s"}' % (gojson.string(n), base64.b64encode(v).decode())
                for n, v in self.xattrs) + "]")
        if self.generic_attributes:
            p.append(',"generic_attributes":' + gojson.dumps(self.generic_attributes))
        if self.device:
            p.append(',"device":%d' % self.device)
        if self.content is None:
            p.append(',"content":null')
        else:
            p.append(',"content":[' + ",".join('"' + c.hex() + '"' for c in self.content) + "]")
        if self.subtree is not None:
            p.append(',"subtree":"' + self.subtree.hex() + '"')
        if self.error:
            p.append(',"error":' + gojson.string(self.error))
        for k, v in self.extra.items():
            p.append("," + gojson.string(k) + ":" + gojson.dumps(v))
        p.append("}")
        return "".join(p)

    @classmethod
    def from_obj(cls, o: dict[str, Any]) -> Node:
        if o.keys() <= _COMMON_KEYS:
            n = _fast_node(o)
            if n is not None:
                return n
        try:
            name = goquote.unquote(o["name"])
            typ = o["type"]
            n = cls(name=name, type=typ)
            for k, v in o.items():
                setter = _SETTERS.get(k)
                if setter is None:
                    n.extra[k] = v
                else:
                    setter(n, v)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"tree: malformed node ({e})") from None
        if typ not in NODE_TYPES:
            raise FormatError(f"tree: node {name!r} has unknown type {typ!r}")
        return n

    @property
    def display_name(self) -> str:
        return self.name.decode("utf-8", "surrogateescape")


_COMMON_KEYS = frozenset((
    "name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group", "inode", "device_id",
    "size", "links", "content", "subtree", "device",
))
_NODE_TYPES = frozenset(NODE_TYPES)


_intern = sys.intern


def _fast_node(o: dict[str, Any]) -> Node | None:
    """The common node shapes, decoded without per-field dispatch (tree loading is on the
    no-change backup's hot path). Returns None to fall back to the careful path on anything odd."""
    g = o.get
    name, typ = g("name"), g("type")
    if type(typ) is not str:
        return None
    mode, uid, gid, inode = g("mode", 0), g("uid", 0), g("gid", 0), g("inode", 0)
    dev, size, links, device = g("device_id", 0), g("size", 0), g("links", 0), g("device", 0)
    mtime, atime, ctime, user, group = g("mtime", ""), g("atime", ""), g("ctime", ""), g("user", ""), g("group", "")
    if (
        type(name) is not str or typ not in _NODE_TYPES
        or type(mode) is not int or type(uid) is not int or type(gid) is not int or type(inode) is not int
        or type(dev) is not int or type(size) is not int or type(links) is not int or type(device) is not int
        or (mode | uid | gid | inode | dev | size | links | device) < 0
        or type(mtime) is not str or type(atime) is not str or type(ctime) is not str
        or type(user) is not str or type(group) is not str
    ):
        return None
    content = g("content")
    subtree = g("subtree")
    try:
        cids = None if content is None else [bytes.fromhex(x) for x in content]
        sid = None if subtree is None else bytes.fromhex(subtree)
        raw_name = goquote.unquote(name)
    except (TypeError, ValueError):
        return None
    if (cids is not None and any(len(x) != 32 for x in cids)) or (sid is not None and len(sid) != 32):
        return None
    # Big trees keep ~80k nodes in memory: share the strings that repeat (types, owners, and atime,
    # which restic sets equal to mtime) instead of holding a copy per node.
    if atime == mtime:
        atime = mtime
    return Node(raw_name, _intern(typ), mode, mtime, atime, ctime, uid, gid, _intern(user), _intern(group), inode,
                dev, size, links, b"", None, None, device, cids, sid)


def _ids(v: Any) -> list[bytes] | None:
    if v is None:
        return None
    out = [bytes.fromhex(x) for x in v]
    for x in out:
        if len(x) != 32:
            raise ValueError("invalid content ID")
    return out


def _int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__}")
    return v


def _set_subtree(n: Node, v: Any) -> None:
    if v is not None:
        sid = bytes.fromhex(v)
        if len(sid) != 32:
            raise ValueError("invalid subtree ID")
        n.subtree = sid


def _set_linktarget_raw(n: Node, v: Any) -> None:
    if v is not None:
        n.linktarget = base64.b64decode(v, validate=True)


def _set_linktarget(n: Node, v: Any) -> None:
    if not n.linktarget:  # linktarget_raw (if present and seen first) wins
        n.linktarget = _str(v).encode("utf-8", "surrogateescape")


def _set_xattrs(n: Node, v: Any) -> None:
    if v is not None:
        n.xattrs = [(_str(a["name"]), base64.b64decode(a["value"] or "", validate=True)) for a in v]


_SETTERS: dict[str, Any] = {
    "name": lambda n, v: None,
    "type": lambda n, v: None,
    "mode": lambda n, v: setattr(n, "mode", _int(v)),
    "mtime": lambda n, v: setattr(n, "mtime", _str(v)),
    "atime": lambda n, v: setattr(n, "atime", _str(v)),
    "ctime": lambda n, v: setattr(n, "ctime", _str(v)),
    "uid": lambda n, v: setattr(n, "uid", _int(v)),
    "gid": lambda n, v: setattr(n, "gid", _int(v)),
    "user": lambda n, v: setattr(n, "user", _str(v)),
    "group": lambda n, v: setattr(n, "group", _str(v)),
    "inode": lambda n, v: setattr(n, "inode", _int(v)),
    "device_id": lambda n, v: setattr(n, "device_id", _int(v)),
    "size": lambda n, v: setattr(n, "size", _int(v)),
    "links": lambda n, v: setattr(n, "links", _int(v)),
    "linktarget": _set_linktarget,
    "linktarget_raw": _set_linktarget_raw,
    "extended_attributes": _set_xattrs,
    "generic_attributes": lambda n, v: setattr(n, "generic_attributes", v),
    "device": lambda n, v: setattr(n, "device", _int(v)),
    "content": lambda n, v: setattr(n, "content", _ids(v)),
    "subtree": _set_subtree,
    "error": lambda n, v: setattr(n, "error", _str(v)),
}


def encode_tree(nodes: list[Node]) -> bytes:
    """Tree blob plaintext. Nodes must already be sorted by name and unique (checked)."""
    for a, b in zip(nodes, nodes[1:]):
        if a.name >= b.name:
            raise FormatError(f"tree: nodes not sorted or duplicate name {b.name!r}")
    return ('{"nodes":[' + ",".join(n.to_json() for n in nodes) + "]}\n").encode("utf-8", "surrogateescape")


def encode_tree_parts(parts: list[str]) -> bytes:
    """Join already-encoded node JSON (the backup reuses unchanged nodes' encodings)."""
    return ('{"nodes":[' + ",".join(parts) + "]}\n").encode("utf-8", "surrogateescape")


def decode_tree(raw: bytes) -> list[Node]:
    obj = gojson.loads(raw, "tree")
    if not isinstance(obj, dict):
        raise FormatError("tree: not a JSON object")
    nodes_obj = obj.get("nodes")
    if nodes_obj is None:
        return []
    if not isinstance(nodes_obj, list) or len(nodes_obj) > MAX_TREE_NODES:
        raise FormatError("tree: invalid node list")
    nodes = []
    for o in nodes_obj:
        if not isinstance(o, dict):
            raise FormatError("tree: node is not an object")
        nodes.append(Node.from_obj(o))
    return nodes
