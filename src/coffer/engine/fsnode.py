"""Tree nodes from the filesystem, recording metadata exactly as restic does.

restic stores atime = mtime (so unchanged files give identical tree bytes), keeps only
permission/type/setuid/setgid/sticky mode bits, and writes ``links`` for everything but
directories, ``size`` only for regular files, ``device`` only for device nodes.
"""

from __future__ import annotations

import errno
import os
import stat as st

from coffer import env
from coffer.store.format import tree
from coffer.store.format.tree import Node
from coffer.util import gotime


def node_from_stat(name: bytes, path: bytes, s: os.stat_result, *, read_xattrs: bool = True) -> tuple[Node, str | None]:
    """A node for ``path`` (not following symlinks). Returns (node, warning or None)."""
    mode = s.st_mode
    typ = tree.node_type_from_mode(mode)
    mtime = gotime.format_ns(s.st_mtime_ns)
    n = Node(
        name=name, type=typ, mode=tree.go_mode(mode), mtime=mtime, atime=mtime,
        ctime=gotime.format_ns(s.st_ctime_ns), uid=s.st_uid, gid=s.st_gid,
        user=env.user_name(s.st_uid), group=env.group_name(s.st_gid), inode=s.st_ino, device_id=s.st_dev,
    )
    warning = None
    if typ == "file":
        n.size = s.st_size
        n.links = s.st_nlink
        n.content = []
    elif typ == "dir":
        pass
    elif typ == "symlink":
        n.links = s.st_nlink
        try:
            n.linktarget = os.readlink(path)
        except OSError as e:
            warning = f"readlink: {e.strerror}"
    elif typ in ("dev", "chardev"):
        n.links = s.st_nlink
        n.device = s.st_rdev
    if read_xattrs:
        xa, w = read_xattr_list(path)
        n.xattrs = xa
        warning = warning or w
    return n, warning


_NO_XATTR = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM, errno.ENOSYS)


def read_xattr_list(path: bytes | int) -> tuple[list[tuple[str, bytes]] | None, str | None]:
    """Extended attributes of ``path`` (not following a symlink) or of an open fd."""
    nofollow = {} if isinstance(path, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(path, **nofollow)
    except OSError as e:
        if e.errno in _NO_XATTR:
            return None, None
        return None, f"listxattr: {e.strerror}"
    if not names:
        return None, None
    out = []
    for name in names:
        try:
            out.append((name, os.getxattr(path, name, **nofollow)))
        except OSError as e:
            if e.errno not in _NO_XATTR:
                return out or None, f"getxattr {name}: {e.strerror}"
    return out or None, None


def unchanged(s: os.stat_result, prev: Node) -> bool:
    """restic's change test (type, mtime, ctime, size, inode), plus the fields that decide
    whether the previous node's encoding can be reused verbatim."""
    return (
        prev.type == "file"
        and st.S_ISREG(s.st_mode)
        and prev.size == s.st_size
        and prev.inode == s.st_ino
        and prev.content is not None
        and prev.mtime == gotime.format_ns(s.st_mtime_ns)
        and prev.ctime == gotime.format_ns(s.st_ctime_ns)
    )


def same_metadata(s: os.stat_result, prev: Node) -> bool:
    """Fields beyond restic's change test that a freshly made node would carry."""
    return (
        prev.mode == tree.go_mode(s.st_mode)
        and prev.uid == s.st_uid
        and prev.gid == s.st_gid
        and prev.device_id == s.st_dev
        and prev.links == s.st_nlink
        and prev.atime == prev.mtime
    )
