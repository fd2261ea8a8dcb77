"""coffer's chunker against the real restic binary: same polynomial, same files, same blob IDs.

restic stores every chunk as a blob whose ID is the SHA-256 of the plaintext chunk, and lists a
file's blobs in order in its tree node's ``content``. So if coffer cuts a file exactly where
restic does, the SHA-256 of each coffer chunk equals restic's blob IDs, in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer.store.chunker import MAX_SIZE, MIN_SIZE, Chunker

pytestmark = [
    pytest.mark.restic,
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic binary not installed"),
]

MiB = 1024 * 1024


def pseudo_random(seed: str, n: int) -> bytes:
    """Deterministic incompressible bytes, fast (SHAKE-256 output)."""
    return hashlib.shake_256(seed.encode()).digest(n)


def restic(repo: Path, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "RESTIC_PASSWORD": "x", "RESTIC_REPOSITORY": str(repo)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    env.pop("RESTIC_PASSWORD_COMMAND", None)
    proc = subprocess.run(
        ["restic", "--no-cache", "--quiet", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"restic {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def walk_files(repo: Path, tree_id: str) -> Iterator[dict[str, Any]]:
    """Every file node in the tree, recursively (``restic ls --json`` in 0.14 omits content)."""
    for node in json.loads(restic(repo, "cat", "blob", tree_id))["nodes"]:
        if node["type"] == "file":
            yield node
        elif node["type"] == "dir":
            yield from walk_files(repo, node["subtree"])


def constant_byte_without_cut(chunker: Chunker) -> int:
    """A byte value whose runs restic never cuts by content, so they end at MAX_SIZE.

    In a run of one byte value c the window fingerprint is constant; it matches the split mask
    for one c in about 2^20, so trying a few values always finds one (zero runs are the opposite
    case: the fingerprint of 64 zero bytes is 0, so zeros cut at every MIN_SIZE).
    """
    for c in (0xAA, 0x55, 0xFF, 0x01, 0x7E):
        if chunker.split(bytes([c]) * (MAX_SIZE + 1))[0] == MAX_SIZE:
            return c
    raise AssertionError("no byte value without a content cut found")  # pragma: no cover


@pytest.fixture(scope="module")
def restic_backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, list[str]]]:
    """(polynomial, data dir, {file name: restic's content blob IDs}) for a fresh repository."""
    base = tmp_path_factory.mktemp("restic-chunker")
    repo = base / "repo"
    data = base / "data"
    data.mkdir()
    restic(repo, "init")
    config = json.loads(restic(repo, "cat", "config"))
    pol = int(config["chunker_polynomial"], 16)

    run_byte = constant_byte_without_cut(Chunker(pol))
    (data / "random.bin").write_bytes(pseudo_random("coffer-restic-compat", 20 * MiB + 12345))
    (data / "runs.bin").write_bytes(
        pseudo_random("head", MiB + 77)
        + bytes(3 * MiB + 5)  # zeros: cut at every MIN_SIZE
        + pseudo_random("middle", MiB)
        + bytes([run_byte]) * (MAX_SIZE + 2 * MiB + 3)  # no content cut: a MAX_SIZE cut
        + pseudo_random("tail", MiB // 3)
    )
    (data / "small.bin").write_bytes(pseudo_random("small", MIN_SIZE - 1))
    # Every restic command pays ~0.8 s of key derivation, so use as few as possible.
    out = restic(repo, "backup", "--json", "--compression", "off", "random.bin", "runs.bin", "small.bin", cwd=data)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["message_type"] == "summary"
    tree = json.loads(restic(repo, "cat", "snapshot", summary["snapshot_id"]))["tree"]
    contents = {node["name"]: node["content"] for node in walk_files(repo, tree)}
    return pol, data, contents


@pytest.mark.parametrize("name", ["random.bin", "runs.bin", "small.bin"])
def test_chunk_ids_match_restic(restic_backup: tuple[int, Path, dict[str, list[str]]], name: str) -> None:
    pol, data, contents = restic_backup
    chunker = Chunker(pol)
    with open(data / name, "rb") as f:
        ours = [hashlib.sha256(chunk).hexdigest() for chunk in chunker.iter_chunks(f)]
    assert ours == contents[name]

    # and split() on the whole file agrees with iter_chunks
    blob = (data / name).read_bytes()
    cuts = chunker.split(blob)
    assert [hashlib.sha256(blob[a:b]).hexdigest() for a, b in zip([0, *cuts], cuts)] == contents[name]


def test_runs_file_exercises_min_and_max_cuts(restic_backup: tuple[int, Path, dict[str, list[str]]]) -> None:
    """Guard the test data itself: the special cuts we mean to compare really happen."""
    pol, data, _ = restic_backup
    blob = (data / "runs.bin").read_bytes()
    cuts = Chunker(pol).split(blob)
    lengths = [b - a for a, b in zip([0, *cuts], cuts)]
    assert MAX_SIZE in lengths
    assert lengths.count(MIN_SIZE) >= 3
