"""check --read-data with the pack verification in worker processes, beside the tree walk.

Forced on with ``COFFER_CHECK_PROCESSES=2`` (by default only reads of 64 MiB or more use them):
findings of both halves are reported, and a clean repository passes.
"""

from __future__ import annotations

from pathlib import Path

from coffer.store.backend.local import LocalBackend
from coffer.store.format.pack import BlobType
from coffer.store.repository import Repository
from conftest import PASSWORD, Runner
from e2e.test_corruption import _flip, _victim_location, setup  # noqa: F401 - the fixture

WORKERS = {"COFFER_CHECK_PROCESSES": "2"}


def test_clean_repository_passes(setup: tuple[Path, Path], tmp_path: Path, coffer: Runner) -> None:  # noqa: F811
    repo, _ = setup
    log = tmp_path / "sites"
    r = coffer("check", "--read-data", repo=repo, env={**WORKERS, "COFFER_FAILPOINT_LOG": str(log)})
    assert b"no errors were found" in r.stdout + r.stderr
    packs = sum(1 for _ in (repo / "data").rglob("*") if _.is_file())
    assert log.read_text().count("check_worker_pack") == packs, "the workers did not verify every pack"


def test_damaged_data_and_a_lost_tree_pack_are_both_reported(
    setup: tuple[Path, Path], coffer: Runner  # noqa: F811
) -> None:
    repo, src = setup
    pack, off = _victim_location(repo, src)
    _flip(pack, off)
    r = Repository.open(LocalBackend(str(repo)), PASSWORD)
    r.load_index()
    root = r.list_snapshots()[0].tree
    loc = r.index.lookup(BlobType.TREE, root)
    assert loc is not None and loc.pack_id.hex() != pack.name
    tree_pack = repo / "data" / loc.pack_id.hex()[:2] / loc.pack_id.hex()
    tree_pack.unlink()
    out = coffer("check", "--read-data", repo=repo, env=WORKERS, check=False)
    err = out.stderr.decode(errors="replace")
    assert out.returncode == 1, err
    assert pack.name in err, err  # the data half: the damaged pack, read and verified by a worker
    assert loc.pack_id.hex() in err and root.hex() in err, err  # the walk: the missing pack and its tree
