"""kill -9 at random points during backup, forget (with its prune), prune and copy (T1, T2, T3).

For every command a template repository is built once, and the command is run once on a copy with
``COFFER_FAILPOINT_LOG`` to list every crash site it passes (pack, index and snapshot writes, index
and pack deletions, snapshot removals). Then, for each test case, a seeded random (site, n-th pass) is
chosen from that list, the command runs on a fresh copy with ``COFFER_FAILPOINT=<site>:<n>=kill`` and
dies by SIGKILL there. Afterwards:

* ``restic check --read-data`` passes;
* every snapshot that must exist does, and every snapshot that exists restores byte-identically
  (restored by restic, compared with the manifest of the source taken at backup time);
* running the command again completes (past the dead process' stale lock), and leaves exactly the
  expected snapshots, again accepted by ``restic check --read-data``.

20 points per command by default (``COFFER_CRASH_SEED`` picks them); ``COFFER_CRASH_EXTRA=N`` adds
N more per command as slow tests, and the slow tests also kill after a random delay (no failpoint).
Templates are built once per session and shared by the xdist workers.
"""

from __future__ import annotations

import collections
import fcntl
import os
import pickle
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coffer.store.backend.local import LocalBackend
from coffer.store.repository import Repository
from conftest import COFFER, PASSWORD, _env, _runner, need_tool
from helpers.repos import History, init_repo, make_history, snapshot_ids, write_random
from helpers.treecompare import EntryMeta, assert_trees_equal, snapshot_tree

pytestmark = pytest.mark.restic

SEED = int(os.environ.get("COFFER_CRASH_SEED", "20261126"))
POINTS = 20
EXTRA = int(os.environ.get("COFFER_CRASH_EXTRA", "0"))
RANDOM_DELAYS = 3  # slow mode: kills after a random delay, per command
PACK = "256k"  # small packs: many crash sites with little data


@dataclass
class Scenario:
    """One command to crash (plain data, so one worker can build it and the others load it)."""

    name: str
    template: Path  # copied per crash point: holds "repo" (and whatever the command reads)
    argv: list[str]
    manifests: dict[str, dict[bytes, EntryMeta]]  # snapshot ID -> manifest, for snapshots made beforehand
    must_exist: set[str]  # snapshot IDs that must survive any crash
    final: set[str] | None = None  # exact snapshot IDs after the rerun, when known in advance
    new_manifest: dict[bytes, EntryMeta] | None = None  # backup: the manifest of the snapshot it makes
    by_original: dict[str, dict[bytes, EntryMeta]] = field(default_factory=dict)  # copy: source ID -> manifest
    pool: list[tuple[str, int]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # for every run of the command

    def run(self, work: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([COFFER, *self.argv], cwd=work, capture_output=True, timeout=300,
                              env=_env(work / "repo", PASSWORD, {**self.env, **(env or {})}))

    def manifest_of(self, work: Path, sid: str) -> dict[bytes, EntryMeta]:
        if sid in self.manifests:
            return self.manifests[sid]
        if self.new_manifest is not None:  # a backup makes exactly one new kind of snapshot
            return self.new_manifest
        snap = Repository.open(LocalBackend(str(work / "repo")), PASSWORD).load_snapshot(bytes.fromhex(sid))
        assert snap.original is not None and snap.original.hex() in self.by_original, f"unexpected snapshot {sid}"
        return self.by_original[snap.original.hex()]

    def final_count(self, after_crash: int) -> int:
        if self.name.startswith("backup"):
            return after_crash + 1  # the rerun adds one more, whether or not the killed run got to commit
        return len(self.by_original)  # copy: each source snapshot exactly once


# ---------------------------------------------------------------------------------------------- the checks


def _verify(scn: Scenario, work: Path, *, crashed_with: set[str] | None = None) -> set[str]:
    """restic check --read-data; the snapshots that must exist do; each (new) one restores exactly.

    restic runs with --no-lock: the killed process' lock is still there (stale: same host, dead PID),
    and the rerun must get past it on its own. After the rerun, snapshots already restored after the
    crash are covered by check --read-data.
    """
    repo = work / "repo"
    restic = _runner(need_tool("restic"), "restic")
    restic("--no-lock", "check", "--read-data", repo=repo)
    have = snapshot_ids(repo)
    missing = scn.must_exist - have
    assert not missing, f"snapshots lost: {sorted(missing)}"
    for sid in sorted(have - (crashed_with or set())):
        target = work / f"restored-{sid[:8]}"
        restic("--no-lock", "restore", sid, "--target", str(target), repo=repo)
        assert_trees_equal(scn.manifest_of(work, sid), target / "src")
        shutil.rmtree(target)
    if crashed_with is not None:
        if scn.final is not None:
            assert have == scn.final
        else:
            assert len(have) == scn.final_count(len(crashed_with)), sorted(have)
    return have


# Sites whose number of passes depends on how parallel uploads fill packs (copy's pipeline): a run may
# pass them fewer times than the traced run did.
_VARYING = {"before_pack_put", "after_pack_put", "before_index_put", "after_index_put"}


def _crash_at(scn: Scenario, tmp: Path, site: str, n: int) -> None:
    work = tmp / "work"
    shutil.copytree(scn.template, work, symlinks=True)
    r = scn.run(work, {"COFFER_FAILPOINT": f"{site}:{n}=kill"})
    if r.returncode == 0 and site in _VARYING and n > 1:
        pass  # packs are filled in parallel: this run made fewer than the traced one; check it anyway
    else:
        assert r.returncode == -signal.SIGKILL, f"not killed at {site}:{n} (rc {r.returncode}): {r.stderr.decode()}"
    have = _verify(scn, work)
    r = scn.run(work)
    assert r.returncode == 0, f"rerun after a crash at {site}:{n} failed: {r.stderr.decode()}"
    _verify(scn, work, crashed_with=have)


def _crash_after_delay(scn: Scenario, tmp: Path, delay: float) -> None:
    work = tmp / "work"
    shutil.copytree(scn.template, work, symlinks=True)
    p = subprocess.Popen([COFFER, *scn.argv], cwd=work, env=_env(work / "repo", PASSWORD, scn.env),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    have = _verify(scn, work)
    r = scn.run(work)
    assert r.returncode == 0, r.stderr.decode()
    _verify(scn, work, crashed_with=have)


# ---------------------------------------------------------------------------------------------- templates


def _trace(scn: Scenario, tmp: Path) -> list[tuple[str, int]]:
    """Every (site, n-th pass) the command goes through, from one run with the failpoint log on."""
    work = tmp / f"trace-{scn.name}"
    shutil.copytree(scn.template, work, symlinks=True)
    log = tmp / f"trace-{scn.name}.log"
    r = scn.run(work, {"COFFER_FAILPOINT_LOG": str(log)})
    assert r.returncode == 0, r.stderr.decode()
    counts = collections.Counter(log.read_text().split())
    shutil.rmtree(work)
    log.unlink()
    return [(site, n) for site in sorted(counts) for n in range(1, counts[site] + 1)]


def _history(base: Path, versions: int) -> History:
    return make_history(init_repo(base / "repo"), base, versions=versions, file_size=150_000, pack_size=PACK,
                        in_process=True)


def _build_backup(base: Path) -> Scenario:
    h = _history(base, 2)
    rnd = random.Random(7)
    for k in range(9):  # one blob (and one 256 KiB pack) each: a dozen packs, two dozen crash sites
        write_random(h.src / "new" / f"n{k}.bin", 270_000 + rnd.randrange(30_000), rnd)
    old = {s.id: s.manifest for s in h.snaps}
    return Scenario("backup", base, ["backup", "--pack-size", PACK, "src"], old, set(old),
                    new_manifest=snapshot_tree(h.src))


def _build_backup_workers(base: Path) -> Scenario:
    """The same backup with the data work in worker processes from the first file: a kill at any
    site, in the parent or in a worker, takes the whole command down."""
    scn = _build_backup(base)
    scn.name = "backup-workers"
    scn.env = {"COFFER_BACKUP_PROCESS_THRESHOLD": "0", "COFFER_BACKUP_PROCESSES": "2"}
    return scn


def _build_forget(base: Path) -> Scenario:
    h = _history(base, 8)
    keep = {s.id for s in h.snaps[-4:]}
    return Scenario("forget", base, ["forget", "--keep-last", "4", "--prune", "--max-unused", "0"],
                    {s.id: s.manifest for s in h.snaps}, keep, keep)


def _build_prune(base: Path) -> Scenario:
    h = _history(base, 8)
    coffer = _runner(COFFER, "coffer")
    coffer("forget", *[s.id for s in h.snaps[:4]], repo=h.repo)
    # an unreferenced pack, as a killed backup leaves it
    write_random(h.src / "orphan.bin", 600_000, random.Random(3))
    r = subprocess.run([COFFER, "backup", "--pack-size", PACK, "src"], cwd=base,
                       env=_env(h.repo, PASSWORD, {"COFFER_FAILPOINT": "after_pack_put:2=kill"}), capture_output=True)
    assert r.returncode == -signal.SIGKILL
    coffer("unlock", repo=h.repo)
    keep = {s.id for s in h.snaps[4:]}
    return Scenario("prune", base, ["prune", "--max-unused", "0"], {s.id: s.manifest for s in h.snaps[4:]}, keep,
                    keep)


def _build_copy(base: Path) -> Scenario:
    src_base = base / "source"
    src_base.mkdir()
    h = _history(src_base, 3)
    init_repo(base / "repo")
    (base / "pw").write_text(PASSWORD)
    return Scenario("copy", base, ["--pack-size", PACK, "copy", "--from-repo", str(src_base / "repo"),
                                   "--from-password-file", str(base / "pw")],
                    {}, set(), by_original={s.id: s.manifest for s in h.snaps})


BUILDERS = {"backup": _build_backup, "backup-workers": _build_backup_workers, "forget": _build_forget,
            "prune": _build_prune, "copy": _build_copy}


def _scenario(name: str, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Build the template once per session (the first xdist worker builds, the others wait and load)."""
    if name == "copy" and " copy " not in subprocess.run([COFFER, "--help"], capture_output=True).stdout.decode():
        pytest.skip("`coffer copy` is not available yet (being written in store/maintenance/copy.py)")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = shared / f"crash-template-{name}"
    with open(shared / f"crash-template-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = d / "scenario.pickle"
        if not done.exists():
            shutil.rmtree(d, ignore_errors=True)
            (d / "t").mkdir(parents=True)
            scn = BUILDERS[name](d / "t")
            scn.pool = _trace(scn, d)
            tmp = d / "scenario.tmp"
            tmp.write_bytes(pickle.dumps(dict(vars(scn))))  # plain fields: this module's name differs per worker
            tmp.rename(done)
        return Scenario(**pickle.loads(done.read_bytes()))


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Scenario]:
    """``scenarios(name)``: the command's scenario, built on first use."""
    cache: dict[str, Scenario] = {}

    def get(name: str) -> Scenario:
        if name not in cache:
            cache[name] = _scenario(name, tmp_path_factory)
        return cache[name]

    return get


def _point(scn: Scenario, i: int) -> tuple[str, int]:
    """The i-th crash point: a seeded shuffle of every (site, pass), cycled if there are fewer."""
    pool = list(scn.pool)
    random.Random(f"{SEED}-{scn.name}").shuffle(pool)
    return pool[i % len(pool)]


# ---------------------------------------------------------------------------------------------- tests

COMMANDS = list(BUILDERS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_enough_crash_sites(command: str, scenarios: Callable[[str], Scenario]) -> None:
    scn = scenarios(command)
    assert len(scn.pool) >= POINTS, f"{command}: only {len(scn.pool)} crash points: {scn.pool}"
    sites = {s for s, _ in scn.pool}
    want = {"backup": {"after_pack_put", "after_index_put", "after_snapshot_put"},
            "backup-workers": {"backup_worker_file", "after_pack_put", "after_index_put", "after_snapshot_put"},
            "forget": {"forget_before_remove", "prune_after_index_put", "prune_pack_delete"},
            "prune": {"prune_unreferenced_delete", "after_pack_put", "prune_after_index_put",
                      "prune_before_index_delete", "prune_pack_delete"},
            "copy": {"after_pack_put", "after_snapshot_put"}}[command]
    assert want <= sites, sorted(sites)


@pytest.mark.parametrize("i", range(POINTS))
@pytest.mark.parametrize("command", COMMANDS)
def test_kill_at_a_random_failpoint(command: str, i: int, scenarios: Callable[[str], Scenario], tmp_path: Path) -> None:
    scn = scenarios(command)
    site, n = _point(scn, i)
    _crash_at(scn, tmp_path, site, n)


@pytest.mark.slow
@pytest.mark.parametrize("i", range(POINTS, POINTS + EXTRA))
@pytest.mark.parametrize("command", COMMANDS)
def test_kill_at_more_failpoints(command: str, i: int, scenarios: Callable[[str], Scenario], tmp_path: Path) -> None:
    scn = scenarios(command)
    site, n = _point(scn, i)
    _crash_at(scn, tmp_path, site, n)


@pytest.mark.slow
@pytest.mark.parametrize("i", range(RANDOM_DELAYS))
@pytest.mark.parametrize("command", COMMANDS)
def test_kill_after_a_random_delay(command: str, i: int, scenarios: Callable[[str], Scenario], tmp_path: Path) -> None:
    scn = scenarios(command)
    # coffer needs most of a second to start; kill anywhere from then to well into the work
    delay = random.Random(f"{SEED}-{command}-delay-{i}").uniform(0.5, 2.5)
    _crash_after_delay(scn, tmp_path, delay)
