"""Source trees with the variety a backup tool must preserve, built deterministically."""

from __future__ import annotations

import os
import random
from pathlib import Path


def write_random(path: Path, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    path.write_bytes(rnd.randbytes(size))


def write_text(path: Path, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"backup", b"restore", b"coffer", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    path.write_bytes(bytes(out[:size]))


def make_tree(root: Path, *, big: bool = True, special: bool = True, seed: int = 1) -> Path:
    """A tree with files of many sizes, odd names, links, a hardlink pair, special files, xattrs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty").write_bytes(b"")
    (root / "small.txt").write_text("hello coffer\n")
    write_text(root / "text.log", 300_000, seed)
    sub = root / "sub" / "deeper"
    sub.mkdir(parents=True)
    write_random(sub / "r.bin", 70_000, seed + 1)
    if big:
        write_random(root / "big.bin", 3 * 1024 * 1024 + 123, seed + 2)
        write_text(root / "big.txt", 2 * 1024 * 1024 + 7, seed + 3)
    (root / "tab\tname.txt").write_text("tab")
    (root / 'we"ird\\name.txt').write_text("quote")
    (root / "a<b>&c.txt").write_text("html")
    os.symlink("small.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "small.txt", root / "hardlink.txt")
    os.chmod(root / "text.log", 0o640)
    (root / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "exec.sh", 0o4755)
    sticky = root / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    if special:
        bad = os.fsencode(str(root)) + b"/bad-\xff\xfe-name"
        with open(bad, "wb") as f:
            f.write(b"non-utf8 name")
        os.mkfifo(root / "fifo")
        try:
            os.setxattr(root / "small.txt", "user.coffer", b"xattr value")
        except OSError:
            pass
    os.utime(root / "small.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return root
