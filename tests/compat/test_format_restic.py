"""coffer's codecs against repositories written by the real restic binary (v1 and v2).

Everything is read with the codec modules directly (no repository layer, no CLI): key files,
config, snapshots, index files, pack headers, blobs, trees and a live lock. Wherever restic's
bytes can be reproduced, they are: key files, config, snapshots, index files and locks must
re-encode to exactly what restic wrote, and trees to the same bytes and hence the same tree IDs.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coffer.errors import IntegrityError
from coffer.store.format import compression, crypto, ids, pack, tree
from coffer.store.format.config import RepoConfig
from coffer.store.format.crypto import CryptoKey
from coffer.store.format.index import IndexFile
from coffer.store.format.keyfile import KeyFile
from coffer.store.format.lock import LockInfo
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.util import gotime

pytestmark = [
    pytest.mark.restic,
    # In CI (COFFER_REQUIRE_ALL=1) a missing restic must fail, as tests/conftest.py demands.
    pytest.mark.skipif(
        shutil.which("restic") is None and os.environ.get("COFFER_REQUIRE_ALL") != "1",
        reason="restic binary not installed",
    ),
]

PASSWORD = "pw"
TAG = "a<b&c"
MiB = 1 << 20
BAD_TARGET = b"bad\xfftarget"  # a symlink target that is not UTF-8

# name -> content (bytes) for regular files in the source tree
FILES: dict[bytes, bytes] = {
    b"tab\tname.txt": b"tab",
    b'we"ird\\name.txt': b"quote and backslash",
    b"ctl\x01\x1bname": b"control characters",
    b"bad\xff\xfename": b"not UTF-8",
    b"<>&.txt": b"html",
    "line\u2028sep".encode(): b"line separator",
    "été😀.txt".encode(): b"unicode",
    b"empty": b"",
    b"big.bin": hashlib.shake_256(b"coffer big file").digest(3 * MiB),
    b"suid": b"#!/bin/sh\n",
    b"skip.tmp": b"excluded",
}


def make_source(src: Path) -> bool:
    """The fixture tree. Returns whether extended attributes could be set."""
    root = os.fsencode(src)
    os.makedirs(root)
    for name, data in FILES.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    os.chmod(os.path.join(root, b"suid"), 0o4755)
    os.link(os.path.join(root, b"empty"), os.path.join(root, b"empty-hardlink"))
    os.symlink(b"target dir/<x>&y", os.path.join(root, b"link"))
    os.mkfifo(os.path.join(root, b"fifo"))
    sub = os.path.join(root, b"sub")
    os.mkdir(sub)
    os.chmod(sub, 0o1777)
    with open(os.path.join(sub, b"inner.txt"), "wb") as f:
        f.write(b"inner")
    os.symlink(BAD_TARGET, os.path.join(sub, b"oddlink"))
    try:
        os.setxattr(os.path.join(root, b"tab\tname.txt"), "user.coffer", b"\x00\xffvalue")
        return True
    except OSError:
        return False


@dataclass
class Fixture:
    path: Path
    version: int
    src: Path
    xattrs: bool
    key_id: str = ""
    master: CryptoKey | None = None
    lock_name: str = ""
    lock_raw: bytes = b""
    lock_pid: int = 0
    lock_seen_ns: int = 0
    blobs: dict[bytes, tuple[PackedBlob, bytes]] = field(default_factory=dict)  # id -> (entry, plaintext)

    def files(self, kind: str) -> Iterator[tuple[str, bytes]]:
        for p in sorted((self.path / kind).iterdir()):
            yield p.name, p.read_bytes()

    def unpacked(self, raw: bytes) -> bytes:
        assert self.master is not None
        plain = crypto.open_(self.master, raw)
        if self.version == 1:
            assert plain[:1] == b"{"
        else:
            assert plain[0] == compression.UNPACKED_V2_ZSTD  # restic always compresses in v2
        return compression.decode_unpacked(plain, self.version)


def restic(repo: Path, *args: str, cwd: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = PASSWORD
    proc = subprocess.run(
        ["restic", "-r", str(repo), "--no-cache", "-q", *args],
        env=env, cwd=cwd, capture_output=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, f"restic {' '.join(args)} failed:\n{proc.stderr.decode(errors='replace')}"


def capture_lock(fx: Fixture, meanwhile: Callable[[], None]) -> None:
    """Start a stdin backup, copy its (shared) lock file while it waits for input, then finish it.

    ``meanwhile`` runs while the stdin backup starts up (shared locks do not conflict); once it has
    returned, its own lock is gone and the only lock left is the stdin backup's.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = PASSWORD
    proc = subprocess.Popen(
        ["restic", "-r", str(fx.path), "--no-cache", "-q", "backup", "--stdin", "--stdin-filename", "stdin.txt"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        meanwhile()
        deadline = time.monotonic() + 60
        while not fx.lock_raw:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            assert time.monotonic() < deadline, "restic never created a lock"
            for p in (fx.path / "locks").iterdir():
                # skip restic's "<id>-tmp-<random>" files, which may still be half written
                if ids.is_id_hex(p.name):
                    fx.lock_name, fx.lock_raw = p.name, p.read_bytes()
            time.sleep(0.02)
        fx.lock_pid, fx.lock_seen_ns = proc.pid, time.time_ns()
        assert proc.stdin is not None
        proc.stdin.write(b"from stdin\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def build(path: Path, src: Path, version: int, xattrs: bool) -> Fixture:
    fx = Fixture(path, version, src, xattrs)
    restic(path, "init", "--repository-version", str(version))
    restic(path, "backup", "--tag", TAG, "--tag", "plain", "--exclude", "*.tmp", "src", cwd=src.parent)
    # a second snapshot of src (it gets a parent), overlapping a stdin backup whose lock we read
    capture_lock(fx, lambda: restic(path, "backup", "--tag", TAG, "--exclude", "*.tmp", "src", cwd=src.parent))
    # Open the key with coffer once per repository (scrypt with restic's calibrated cost).
    ((fx.key_id, raw),) = fx.files("keys")
    fx.master = KeyFile.from_bytes(raw).open(PASSWORD)
    # Every blob of every pack, checked against its header, MAC and hash on the way.
    for d in sorted((path / "data").iterdir()):
        for p in sorted(d.iterdir()):
            data = p.read_bytes()
            for entry, plain in read_pack(fx.master, data, version):
                fx.blobs[entry.id] = (entry, plain)
    return fx


def read_pack(key: CryptoKey, data: bytes, version: int) -> list[tuple[PackedBlob, bytes]]:
    hlen = pack.header_length(data[-4:], len(data))
    entries = pack.decode_header(crypto.open_(key, data[-4 - hlen : -4]), version)
    pack.check_layout(entries, hlen, len(data))
    out = []
    for e in entries:
        plain = crypto.open_(key, data[e.offset : e.offset + e.length])
        if e.compressed:
            plain = compression.decompress_blob(plain, e.uncompressed_length)
        assert hashlib.sha256(plain).digest() == e.id
        out.append((e, plain))
    return out


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Fixture]:
    base = tmp_path_factory.mktemp("restic-format")
    src = base / "src"
    xattrs = make_source(src)
    with ThreadPoolExecutor(2) as ex:  # restic init spends seconds calibrating scrypt: build both at once
        futures = {v: ex.submit(build, base / f"repo-v{v}", src, v, xattrs) for v in (1, 2)}
        return {v: f.result() for v, f in futures.items()}


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fx(request: pytest.FixtureRequest, repos: dict[int, Fixture]) -> Fixture:
    return repos[request.param]


# --- tests ----------------------------------------------------------------------------------------


def test_file_names_are_content_hashes(fx: Fixture) -> None:
    for kind in ("keys", "snapshots", "index"):
        for name, raw in fx.files(kind):
            assert hashlib.sha256(raw).hexdigest() == name
    for d in (fx.path / "data").iterdir():
        for p in d.iterdir():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name and p.name[:2] == d.name
    assert hashlib.sha256(fx.lock_raw).hexdigest() == fx.lock_name


def test_key_file(fx: Fixture) -> None:
    ((_, raw),) = fx.files("keys")
    kf = KeyFile.from_bytes(raw)
    assert kf.to_bytes() == raw  # same Go JSON, field for field and byte for byte
    assert len(kf.salt) == 64 and kf.params.r >= 1 and kf.params.n & (kf.params.n - 1) == 0
    gotime.parse(kf.created)
    assert kf.created.endswith("Z") or kf.created[-6] in "+-"
    # (the fixture opened this key file with the password: KeyFile.open gave fx.master)
    assert fx.master is not None and fx.master.valid()
    if fx.version == 2:  # one wrong-password check is enough (each costs a restic-sized scrypt)
        with pytest.raises(IntegrityError):
            kf.open(PASSWORD + "x")


def test_config(fx: Fixture) -> None:
    assert fx.master is not None
    plain = crypto.open_(fx.master, (fx.path / "config").read_bytes())
    assert plain[:1] == b"{"  # never compressed, no version byte
    cfg = RepoConfig.from_bytes(plain)
    assert cfg.to_bytes() == plain
    assert cfg.version == fx.version
    assert cfg.chunker_polynomial.bit_length() == 54  # degree 53
    assert len(bytes.fromhex(cfg.id)) == 32


def test_snapshots(fx: Fixture) -> None:
    snaps = []
    for name, raw in fx.files("snapshots"):
        js = fx.unpacked(raw)
        s = Snapshot.from_json(js, bytes.fromhex(name))
        assert s.to_json() == js
        snaps.append(s)
    assert len(snaps) == 3
    files = [s for s in snaps if s.paths == [str(fx.src)]]
    assert len(files) == 2 and all(TAG in s.tags and s.excludes == ["*.tmp"] for s in files)
    first, second = sorted(files, key=lambda s: s.time_ns)
    assert first.parent is None and second.parent == first.id
    assert first.tags == [TAG, "plain"] and first.username == pwd.getpwuid(os.getuid()).pw_name
    (stdin,) = (s for s in snaps if s not in files)
    assert stdin.paths == ["/stdin.txt"] and not stdin.tags
    assert all(s.hostname == socket.gethostname() for s in snaps)
    for s in snaps:
        assert s.tree in fx.blobs and fx.blobs[s.tree][0].type is BlobType.TREE


def test_index_matches_pack_headers(fx: Fixture) -> None:
    indexed: dict[bytes, list[PackedBlob]] = {}
    for _name, raw in fx.files("index"):
        js = fx.unpacked(raw)
        idx = IndexFile.from_json(js)
        assert idx.to_json() == js  # json.Encoder output, trailing newline included
        for p in idx.packs:
            indexed.setdefault(p.id, []).extend(p.blobs)
    on_disk = {bytes.fromhex(p.name): p for d in (fx.path / "data").iterdir() for p in d.iterdir()}
    assert set(indexed) == set(on_disk)
    assert fx.master is not None
    for pid, path in on_disk.items():
        data = path.read_bytes()
        hlen = pack.header_length(data[-4:], len(data))
        header = pack.decode_header(crypto.open_(fx.master, data[-4 - hlen : -4]), fx.version)
        assert sorted(header, key=lambda b: b.offset) == sorted(indexed[pid], key=lambda b: b.offset)
        assert len({b.type for b in header}) == 1  # data and tree blobs never share a pack
        # re-encoding the header gives restic's plaintext bytes
        assert pack.encode_header(header) == crypto.open_(fx.master, data[-4 - hlen : -4])
    entries = [e for e, _ in fx.blobs.values()]
    if fx.version == 1:
        assert not any(e.compressed for e in entries)
    else:
        assert all(e.compressed for e in entries if e.type is BlobType.TREE)


def test_trees_reencode_byte_for_byte(fx: Fixture) -> None:
    trees = [(bid, plain) for bid, (e, plain) in fx.blobs.items() if e.type is BlobType.TREE]
    assert len(trees) >= 4
    lossy = 0
    for bid, raw in trees:
        again = tree.encode_tree(tree.decode_tree(raw))
        if b"\\ufffd" in raw:
            # restic 0.14 wrote a non-UTF-8 link target as a lossy string (each bad byte -> \ufffd
            # escape) and nothing else; decoding cannot tell an escape from a real U+FFFD.
            lossy += 1
            assert again == raw.replace(b"\\ufffd", "\ufffd".encode())
        else:
            assert again == raw
            assert hashlib.sha256(again).digest() == bid  # identical tree IDs
    assert lossy == 1


def walk(fx: Fixture, tree_id: bytes, prefix: bytes = b"") -> Iterator[tuple[bytes, tree.Node]]:
    for n in tree.decode_tree(fx.blobs[tree_id][1]):
        yield prefix + n.name, n
        if n.type == "dir" and n.subtree is not None:
            yield from walk(fx, n.subtree, prefix + n.name + b"/")


def source_snapshot(fx: Fixture) -> Snapshot:
    snaps = [Snapshot.from_json(fx.unpacked(raw)) for _, raw in fx.files("snapshots")]
    return next(s for s in snaps if s.paths == [str(fx.src)])


def test_nodes_match_the_source(fx: Fixture) -> None:
    """Node values as coffer decodes them equal what lstat says, formatted coffer's way."""
    snap = source_snapshot(fx)
    root = tree.decode_tree(fx.blobs[snap.tree][1])
    assert [n.name for n in root] == [b"src"] and root[0].type == "dir"
    nodes = dict(walk(fx, snap.tree))
    src = os.fsencode(fx.src.parent)
    expected_names = {b"src"} | {
        os.path.relpath(os.path.join(dp, n), src)
        for dp, dns, fns in os.walk(os.path.join(src, b"src")) for n in dns + fns
    }
    expected_names.discard(b"src/skip.tmp")
    assert set(nodes) == expected_names
    for path, n in nodes.items():
        st_ = os.lstat(os.path.join(src, path))
        assert n.type == tree.node_type_from_mode(st_.st_mode)
        assert n.mode == tree.go_mode(st_.st_mode)
        assert n.mtime == gotime.format_ns(st_.st_mtime_ns)  # Go formats in the local zone too
        assert n.ctime == gotime.format_ns(st_.st_ctime_ns)
        assert n.atime == n.mtime  # restic stores atime = mtime by default
        assert (n.uid, n.gid, n.inode, n.device_id) == (st_.st_uid, st_.st_gid, st_.st_ino, st_.st_dev)
        assert n.user == pwd.getpwuid(st_.st_uid).pw_name
        if n.type == "file":
            data = b"".join(fx.blobs[c][1] for c in n.content or [])
            with open(os.path.join(src, path), "rb") as f:
                assert data == f.read()
            assert n.size == st_.st_size and n.links == st_.st_nlink and n.content is not None
        else:
            assert n.content is None and n.size == 0
        if n.type == "dir":
            assert n.subtree is not None and n.links == 0
        if n.type == "symlink":
            target = os.readlink(os.path.join(src, path))
            assert n.linktarget == target.decode("utf-8", "replace").encode()
    assert nodes[b"src/empty"].content == [] and nodes[b"src/empty"].links == 2
    sizes = [len(fx.blobs[c][1]) for c in nodes[b"src/big.bin"].content or []]
    assert sum(sizes) == 3 * MiB and all(512 * 1024 <= n <= 8 * MiB for n in sizes[:-1])
    assert nodes[b"src/suid"].mode & tree.GO_SETUID and nodes[b"src/sub"].mode & tree.GO_STICKY
    assert nodes[b"src/fifo"].mode & tree.GO_NAMED_PIPE
    if fx.xattrs:
        assert nodes[b"src/tab\tname.txt"].xattrs == [("user.coffer", b"\x00\xffvalue")]


def test_fresh_non_utf8_link_target_matches_restic_string(fx: Fixture) -> None:
    """For a non-UTF-8 target, coffer writes Go's lossy string (as 0.14 does) plus linktarget_raw."""
    (raw,) = [p for e, p in fx.blobs.values() if e.type is BlobType.TREE and b"oddlink" in p]
    odd = next(n for n in tree.decode_tree(raw) if n.name == b"oddlink")
    lossy = odd.to_json().split(',"linktarget":')[1].split(",")[0]
    assert lossy.encode() == b'"bad' + "\ufffd".encode() + b'target"'
    restic_string = raw.split(b'"linktarget":')[1].split(b",")[0]
    assert restic_string == b'"bad\\ufffdtarget"'
    fresh = tree.Node(name=b"oddlink", type="symlink", linktarget=BAD_TARGET).to_json()
    assert ',"linktarget":"bad\\ufffdtarget","linktarget_raw":"YmFk/3RhcmdldA=="' in fresh


def test_lock(fx: Fixture) -> None:
    js = fx.unpacked(fx.lock_raw)
    info = LockInfo.from_json(js)
    assert info.to_json() == js
    assert not info.exclusive and info.pid == fx.lock_pid
    assert info.hostname == socket.gethostname()
    assert info.username == pwd.getpwuid(os.getuid()).pw_name
    assert (info.uid, info.gid) == (os.getuid(), os.getgid())
    assert 0 <= fx.lock_seen_ns - info.time_ns < 60 * 1_000_000_000
    assert not list((fx.path / "locks").iterdir())  # restic removed it when done


def test_mode_bits_are_restics(fx: Fixture) -> None:
    nodes = dict(walk(fx, source_snapshot(fx).tree))
    assert nodes[b"src"].mode == tree.GO_DIR | stat.S_IMODE(os.stat(fx.src).st_mode)
    assert nodes[b"src/link"].mode == tree.GO_SYMLINK | 0o777
