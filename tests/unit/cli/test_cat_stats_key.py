"""`coffer cat`, `stats` and `key` as processes: restic 0.14's outputs, byte-exact where it prints raw."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffer.store.backend.base import FileType
from coffer.store.backend.local import LocalBackend
from coffer.store.format import kdf
from coffer.store.format.lock import LockInfo
from coffer.store.repository import Repository
from coffer.util import gotime

COFFER = str(Path(sys.executable).parent / "coffer")
PW = "pw"
FAST_KDF = kdf.ScryptParams(n=1 << 10, r=8, p=1)


def run(repo: Path, *args: str, password: str = PW, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
    env.update(COFFER_REPOSITORY=str(repo), COFFER_PASSWORD=password, COFFER_HOSTNAME="testhost", TZ="UTC")
    if input is None:
        r = subprocess.run([COFFER, *args], env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    else:
        r = subprocess.run([COFFER, *args], env=env, capture_output=True, timeout=120, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"coffer {' '.join(args)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}")
    return r


def out(repo: Path, *args: str) -> str:
    return run(repo, *args).stdout.decode()


@dataclass
class Fixture:
    repo: Path
    src: Path
    snap: str  # the only snapshot of src
    big: bytes


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    base = tmp_path_factory.mktemp("csk")
    repo = base / "repo"
    Repository.init(LocalBackend(str(repo)), PW, params=FAST_KDF)
    src = base / "src"
    (src / "d").mkdir(parents=True)
    big = os.urandom(1_500_000)  # three or so chunks? at least one; random so blobs are unique
    (src / "big.bin").write_bytes(big)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "d" / "dup.txt").write_bytes(b"alpha")  # same content, not a link
    os.link(src / "big.bin", src / "d" / "big-link.bin")  # a hard link: restored size counts once
    (src / "empty").write_bytes(b"")
    os.symlink("a.txt", src / "sym")
    run(repo, "backup", str(src), "--time", "2024-01-01 10:00:00")
    snaps = json.loads(out(repo, "snapshots", "--json"))
    return Fixture(repo, src, snaps[0]["id"], big)


def open_repo(fx: Fixture) -> Repository:
    r = Repository.open(LocalBackend(str(fx.repo)), PW)
    r.load_index()
    return r


# ==================================================================================== cat
def test_cat_config_and_masterkey(fx: Fixture) -> None:
    r = open_repo(fx)
    cfg = out(fx.repo, "cat", "config")
    assert cfg == ('{\n  "version": %d,\n  "id": "%s",\n  "chunker_polynomial": "%x"\n}\n'
                   % (r.version, r.config.id, r.config.chunker_polynomial))
    mk = json.loads(out(fx.repo, "cat", "masterkey"))
    assert mk == r.key.to_json_obj()
    assert list(mk) == ["mac", "encrypt"] and list(mk["mac"]) == ["k", "r"]


def test_cat_snapshot(fx: Fixture) -> None:
    text = out(fx.repo, "cat", "snapshot", fx.snap[:7])
    assert text.startswith('{\n  "time": "') and text.endswith("}\n")
    doc = json.loads(text)
    assert "id" not in doc and "short_id" not in doc
    assert doc["paths"] == [str(fx.src)] and doc["hostname"] == "testhost"
    assert json.loads(out(fx.repo, "cat", "snapshot", "latest")) == doc
    assert json.loads(out(fx.repo, "cat", "snapshot", fx.snap)) == doc
    r = run(fx.repo, "cat", "snapshot", "ffffffff", check=False)
    assert r.returncode == 1


def test_cat_index_key_and_lock(fx: Fixture) -> None:
    r = open_repo(fx)
    iid = r.list_ids(FileType.INDEX)[0]
    raw = run(fx.repo, "cat", "index", iid.hex()[:8]).stdout
    assert raw == r.load_unpacked(FileType.INDEX, iid) + b"\n"  # as stored, then a newline (restic's Println)
    assert "packs" in json.loads(raw)
    key = json.loads(out(fx.repo, "cat", "key", r.key_id[:8]))
    assert list(key) == ["created", "username", "hostname", "kdf", "N", "r", "p", "salt", "data"]
    assert (key["N"], key["r"], key["p"]) == (FAST_KDF.n, FAST_KDF.r, FAST_KDF.p)
    info = LockInfo(time=gotime.format_ns(gotime.now_ns(), 0), exclusive=False, hostname="h", username="u", pid=42,
                    uid=1000, gid=1000)
    lid = r.save_unpacked(FileType.LOCK, info.to_json())
    try:
        text = out(fx.repo, "--no-lock", "cat", "lock", lid.hex())
        assert json.loads(text) == json.loads(info.to_json())
        assert text.startswith('{\n  "time": ') and '\n  "exclusive": false,\n' in text
    finally:
        from coffer.store.backend.base import Handle

        r.backend.remove(Handle(FileType.LOCK, lid.hex()))


def test_cat_pack_and_blob_are_raw(fx: Fixture) -> None:
    r = open_repo(fx)
    pid = next(iter(r.index.pack_ids))
    data = run(fx.repo, "cat", "pack", pid.hex()[:10]).stdout
    assert hashlib.sha256(data).digest() == pid
    # the first data blob of big.bin: its plaintext is a prefix of the file
    tree = json.loads(run(fx.repo, "cat", "tree", f"latest:{fx.src}").stdout)
    node = next(n for n in tree["nodes"] if n["name"] == "big.bin")
    first = run(fx.repo, "cat", "blob", node["content"][0]).stdout
    assert fx.big.startswith(first) and len(first) > 0
    small = next(n for n in tree["nodes"] if n["name"] == "a.txt")
    assert run(fx.repo, "cat", "blob", small["content"][0][:12]).stdout == b"alpha"
    r2 = run(fx.repo, "cat", "blob", "00" * 32, check=False)
    assert r2.returncode == 1 and b"blob not found" in r2.stderr


def test_cat_tree_forms(fx: Fixture) -> None:
    snap = json.loads(out(fx.repo, "cat", "snapshot", fx.snap))
    root = run(fx.repo, "cat", "tree", fx.snap[:8]).stdout
    assert hashlib.sha256(root).hexdigest() == snap["tree"]  # raw bytes: their hash is the tree ID
    assert run(fx.repo, "cat", "tree", snap["tree"][:10]).stdout == root
    assert run(fx.repo, "cat", "tree", "latest").stdout == root
    sub = run(fx.repo, "cat", "tree", f"latest:{fx.src}/d").stdout
    assert sorted(n["name"] for n in json.loads(sub)["nodes"]) == ["big-link.bin", "dup.txt"]
    r = run(fx.repo, "cat", "tree", f"latest:{fx.src}/nope", check=False)
    assert r.returncode == 1 and b"not found" in r.stderr
    r = run(fx.repo, "cat", "tree", f"latest:{fx.src}/a.txt", check=False)
    assert r.returncode == 1 and b"not a directory" in r.stderr


def test_cat_usage_errors(fx: Fixture) -> None:
    r = run(fx.repo, "cat", "bogus", "x", check=False)
    assert r.returncode == 1 and b"invalid type" in r.stderr
    r = run(fx.repo, "cat", "index", check=False)
    assert r.returncode == 1 and b"type or ID not specified" in r.stderr


# ==================================================================================== stats
def test_stats_restore_size_counts_nodes_and_hardlinks_once(fx: Fixture) -> None:
    nodes = run(fx.repo, "ls", "--json", fx.snap).stdout.splitlines()[1:]
    sizes = {os.stat(fx.src / p).st_ino: os.stat(fx.src / p).st_size
             for p in ("big.bin", "a.txt", "d/dup.txt", "empty")}
    doc = json.loads(out(fx.repo, "stats", "--json", fx.snap))
    assert doc == {"total_size": sum(sizes.values()), "total_file_count": len(nodes), "snapshots_count": 1}
    assert list(doc) == ["total_size", "total_file_count", "snapshots_count"]
    text = out(fx.repo, "stats", "latest")
    assert text == (
        "scanning...\n"
        "Stats in restore-size mode:\n"
        "Snapshots processed:   1\n"
        f"   Total File Count:   {len(nodes)}\n"
        f"         Total Size:   {sum(sizes.values()) / 1024 / 1024:.3f} MiB\n"
    )


def test_stats_files_by_contents(fx: Fixture) -> None:
    doc = json.loads(out(fx.repo, "stats", "--json", "--mode", "files-by-contents"))
    # big.bin (its link shares the content), alpha (a.txt, dup.txt), and one entry for "no content"
    # (dirs, the symlink and the empty file all have an empty content list)
    assert doc == {"total_size": len(fx.big) + 5, "total_file_count": 3, "snapshots_count": 1}


def test_stats_raw_data_and_blobs_per_file(fx: Fixture) -> None:
    r = open_repo(fx)
    entries = list(r.index.items())  # one snapshot: every blob in the repository is referenced once
    doc = json.loads(out(fx.repo, "stats", "--json", "--mode", "raw-data"))
    assert doc == {"total_size": sum(b.length for _, b in entries), "total_file_count": 0,
                   "total_blob_count": len(entries), "snapshots_count": 1}
    text = out(fx.repo, "stats", "--mode", "raw-data")
    assert f"   Total Blob Count:   {len(entries)}\n" in text and "Total File Count" not in text
    data_blobs = [b for _, b in entries if b.type.label == "data"]
    doc = json.loads(out(fx.repo, "stats", "--json", "--mode", "blobs-per-file"))
    assert doc["total_file_count"] == 2  # big.bin and a.txt: the first file of each content
    assert doc["total_blob_count"] == len(data_blobs)
    assert doc["total_size"] == len(fx.big) + 5


def test_stats_filters_and_errors(fx: Fixture) -> None:
    doc = json.loads(out(fx.repo, "stats", "--json", "--host", "nohost"))
    assert doc == {"total_size": 0, "total_file_count": 0, "snapshots_count": 0}
    r = run(fx.repo, "stats", "--mode", "bogus", check=False)
    assert r.returncode == 1 and b"unknown counting mode: bogus" in r.stderr
    r = run(fx.repo, "stats", "ffffffff")
    assert b"Ignoring" in r.stderr and b"Snapshots processed:   0" in r.stdout


# ==================================================================================== key
def test_key_list_add_remove_passwd(fx: Fixture, tmp_path: Path) -> None:
    repo = tmp_path / "krepo"
    Repository.init(LocalBackend(str(repo)), PW, params=FAST_KDF)
    table = out(repo, "key", "list").splitlines()
    assert table[0] == " ID        User  Host  Created"
    assert re.fullmatch(r"-+", table[1]) and table[-1] == table[1] and len(table) == 4
    assert re.fullmatch(r"\*[0-9a-f]{8}  \S+ +\S+ +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", table[2])

    (tmp_path / "pw2").write_text("second\n")
    r = run(repo, "key", "add", "--new-password-file", str(tmp_path / "pw2"), "--user", "alice", "--host", "box")
    assert re.fullmatch(rb"saved new key as <Key of alice@box, created on \d{4}-.* \+0000 UTC>\n", r.stdout)
    keys = json.loads(out(repo, "key", "list", "--json"))
    assert [list(k) for k in keys] == [["current", "id", "userName", "hostName", "created"]] * 2
    assert sum(k["current"] for k in keys) == 1
    added = next(k for k in keys if not k["current"])
    assert (added["userName"], added["hostName"]) == ("alice", "box")
    # the trailing newline of the file is not part of the password
    assert json.loads(out_pw(repo, "second", "key", "list", "--json"))[0]["current"] in (True, False)
    assert next(k for k in json.loads(out_pw(repo, "second", "key", "list", "--json")) if k["current"])["id"] == \
        added["id"]

    current = next(k for k in keys if k["current"])["id"]
    r = run(repo, "key", "remove", current, check=False)
    assert r.returncode == 1 and b"refusing to remove key currently used to access repository" in r.stderr
    r = run(repo, "key", "remove", added["id"])
    assert r.stdout.startswith(b"removed key " + added["id"].encode())
    assert len(json.loads(out(repo, "key", "list", "--json"))) == 1
    assert run(repo, "key", "list", password="second", check=False).returncode == 12

    r = run(repo, "key", "passwd", input=b"third\n")  # no terminal: one line of stdin, as restic reads it
    assert r.stdout.startswith(b"reading repository password from stdin\nsaved new key as <Key of ")
    assert run(repo, "key", "list", check=False).returncode == 12  # the old password is gone
    after = json.loads(out_pw(repo, "third", "key", "list", "--json"))
    assert len(after) == 1 and after[0]["current"]


def out_pw(repo: Path, password: str, *args: str) -> str:
    return run(repo, *args, password=password).stdout.decode()


def test_key_usage_errors(fx: Fixture, tmp_path: Path) -> None:
    for args in (("key",), ("key", "remove"), ("key", "list", "x"), ("key", "bogus"), ("key", "add", "x")):
        r = run(fx.repo, *args, check=False)
        assert r.returncode == 1 and b"wrong number of arguments" in r.stderr, args
    r = run(fx.repo, "key", "add", check=False)  # no terminal, no file, and nothing on stdin
    assert r.returncode == 1 and b"an empty password is not a password" in r.stderr
    r = run(fx.repo, "key", "add", "--new-password-file", str(tmp_path / "missing"), check=False)
    assert r.returncode == 1 and b"does not exist" in r.stderr
    r = run(fx.repo, "key", "remove", "0000", check=False)
    assert r.returncode != 0
