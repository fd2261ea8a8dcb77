"""Compare two directory trees by content and metadata, the way a restore must reproduce them.

``snapshot_tree`` walks a tree with ``lstat`` (never following symlinks) and records, for every
entry, the fields a backup tool is expected to preserve; ``assert_trees_equal`` compares two such
records (or two paths) and fails with a readable list of differences.

Hard links are compared as groups, not by ``st_nlink`` (links outside the tree would count there):
each file records the smallest relative path in the tree sharing its inode, or None when no other
entry of the tree does.
"""

from __future__ import annotations

import hashlib
import os
import stat as st
from collections.abc import Iterable
from typing import NamedTuple

DEFAULT_XATTR_PREFIXES = ("user.", "trusted.", "security.capability")


class EntryMeta(NamedTuple):
    kind: str  # file, dir, symlink, fifo, chardev, blockdev, socket
    mode: int  # full st_mode: type, permissions, setuid/setgid/sticky
    uid: int
    gid: int
    size: int  # regular files only, 0 for everything else
    mtime_ns: int
    atime_ns: int
    linktarget: bytes | None
    rdev: int | None  # device nodes only
    xattrs: tuple[tuple[str, bytes], ...]
    sha256: str | None  # regular files only
    link_group: bytes | None  # hard-link group (smallest relpath in the tree sharing the inode)


_KINDS = {
    st.S_IFREG: "file", st.S_IFDIR: "dir", st.S_IFLNK: "symlink", st.S_IFIFO: "fifo",
    st.S_IFCHR: "chardev", st.S_IFBLK: "blockdev", st.S_IFSOCK: "socket",
}


def _hash_file(path: bytes) -> str:
    """SHA-256 of a file, read without updating its atime where the kernel allows (owner or root)."""
    h = hashlib.sha256()
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, flags)
    with open(fd, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _xattrs(path: bytes, prefixes: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        if not n.startswith(prefixes):
            continue
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def snapshot_tree(
    path: str | os.PathLike[str] | bytes, *, xattr_prefixes: tuple[str, ...] = DEFAULT_XATTR_PREFIXES,
    hash_files: bool = True,
) -> dict[bytes, EntryMeta]:
    """Every entry below ``path`` (and ``path`` itself as ``b""``), keyed by raw relative path."""
    root = os.fsencode(path)
    raw: dict[bytes, tuple[os.stat_result, bytes]] = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        s = os.lstat(full)
        raw[rel] = (s, full)
        if st.S_ISDIR(s.st_mode):
            with os.scandir(full) as it:
                for e in it:
                    stack.append(os.path.join(rel, e.name) if rel else e.name)
    groups: dict[tuple[int, int], list[bytes]] = {}
    for rel, (s, _) in raw.items():
        if st.S_ISREG(s.st_mode) and s.st_nlink > 1:
            groups.setdefault((s.st_dev, s.st_ino), []).append(rel)
    out: dict[bytes, EntryMeta] = {}
    for rel, (s, full) in raw.items():
        mode = s.st_mode
        kind = _KINDS.get(st.S_IFMT(mode), "unknown")
        is_file = kind == "file"
        members = groups.get((s.st_dev, s.st_ino)) if is_file else None
        out[rel] = EntryMeta(
            kind=kind, mode=mode, uid=s.st_uid, gid=s.st_gid, size=s.st_size if is_file else 0,
            mtime_ns=s.st_mtime_ns, atime_ns=s.st_atime_ns,
            linktarget=os.readlink(full) if kind == "symlink" else None,
            rdev=s.st_rdev if kind in ("chardev", "blockdev") else None,
            xattrs=_xattrs(full, xattr_prefixes),
            sha256=_hash_file(full) if is_file and hash_files else None,
            link_group=min(members) if members and len(members) > 1 else None,
        )
    return out


def _fields(m: EntryMeta, *, times: bool, atime: bool) -> dict[str, object]:
    d = m._asdict()
    if not times:
        d.pop("mtime_ns")
        d.pop("atime_ns")
    elif not atime:
        d.pop("atime_ns")
    return d


def diff_trees(
    a: dict[bytes, EntryMeta], b: dict[bytes, EntryMeta], *, ignore_root_times: bool = True,
    compare_atime: bool = False, ignore_paths: Iterable[bytes] = (), ignore_fields: Iterable[str] = (),
) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    skip = set(ignore_paths)
    drop = set(ignore_fields)
    out: list[str] = []
    for rel in sorted(set(a) | set(b)):
        if rel in skip:
            continue
        name = os.fsdecode(rel) or "."
        if rel not in b:
            out.append(f"{name}: only in the first tree")
            continue
        if rel not in a:
            out.append(f"{name}: only in the second tree")
            continue
        times = not (rel == b"" and ignore_root_times)
        fa = _fields(a[rel], times=times, atime=compare_atime)
        fb = _fields(b[rel], times=times, atime=compare_atime)
        for k in fa:
            if k not in drop and fa[k] != fb[k]:
                va, vb = fa[k], fb[k]
                if k == "mode":
                    va, vb = oct(a[rel].mode), oct(b[rel].mode)
                out.append(f"{name}: {k} differs: {va!r} != {vb!r}")
    return out


def assert_trees_equal(
    a: str | os.PathLike[str] | bytes | dict[bytes, EntryMeta],
    b: str | os.PathLike[str] | bytes | dict[bytes, EntryMeta],
    *, ignore_root_times: bool = True, compare_atime: bool = False, ignore_paths: Iterable[bytes] = (),
    ignore_fields: Iterable[str] = (),
) -> None:
    """Fail with a list of differences unless the two trees (paths or snapshots) are equal.

    ``ignore_root_times``: the top directory's own times are not compared (a restore target's root
    usually is not a restored node). ``compare_atime`` is off by default because restic records
    atime = mtime unless ``--with-atime`` is given.
    """
    sa = a if isinstance(a, dict) else snapshot_tree(a)
    sb = b if isinstance(b, dict) else snapshot_tree(b)
    diffs = diff_trees(
        sa, sb, ignore_root_times=ignore_root_times, compare_atime=compare_atime, ignore_paths=ignore_paths,
        ignore_fields=ignore_fields,
    )
    if diffs:
        shown = "\n  ".join(diffs[:60])
        more = f"\n  ... and {len(diffs) - 60} more" if len(diffs) > 60 else ""
        raise AssertionError(f"trees differ ({len(diffs)} differences):\n  {shown}{more}")


__all__ = ["EntryMeta", "assert_trees_equal", "diff_trees", "snapshot_tree"]
