"""PostgreSQL physical backup use cases: wal-push, wal-fetch, base backups, restore-db, WAL expiry.

``wal_push`` returns only when the file is durably stored **and** a snapshot references it, so
neither coffer's nor restic's forget/prune can remove it afterwards (see ``sources.postgres.wal`` for
why forget leaves WAL snapshots alone). It refuses truncated or foreign segments, accepts an
identical re-push, and fails loudly on a different file under a name already archived.

Speed: one push costs one process start, one key derivation, one shared lock (restic's lock
protocol includes a 0.2 s re-check) and three small writes (pack, index, snapshot). It does not
load the repository index (WAL barely deduplicates, and a busy archive has many index files), and
it lists snapshots through a local metadata cache. When other segments are already waiting in
``archive_status/*.ready`` it takes up to ``batch - 1`` of them along into the same snapshot and
remembers them; when PostgreSQL then asks for one of those, the push only checks the file against
what was stored and that its snapshot still exists (no password, no lock). ``bench/run_wal.py``
measures both paths.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import random
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any, cast

from coffer import __version__, env
from coffer.actions.session import RepoAccess, open_repo
from coffer.engine.backup import Archiver, BackupRequest, BackupResult, StreamInput
from coffer.errors import CofferError, RestoreError, SourceError, UsageError
from coffer.sources.base import Source, VerifyOutcome
from coffer.sources.dbcommon import MANIFEST_NAME, free_port
from coffer.sources.postgres import retention
from coffer.sources.postgres.archive import (
    ContentReader,
    iter_content,
    remember,
    root_file,
    snapshot_metas,
    write_file,
)
from coffer.sources.postgres.cluster import ThrowawayCluster, os_user
from coffer.sources.postgres.physical import (
    BASE_NAME,
    drill_base_backup,
    extract_base_tar,
    finish_extract,
    pg_time,
    write_recovery,
)
from coffer.sources.postgres.setup import ArchiveAccess, Scripts, backend_env, check_scripts, write_scripts
from coffer.sources.postgres.status import ArchiveLag
from coffer.sources.postgres.status import archive_lag as wal_archive_lag
from coffer.sources.postgres.wal import (
    BACKUP_LABEL_PREFIX,
    BACKUP_STOP_PREFIX,
    LABEL_PREFIX,
    SYSID_PREFIX,
    TAG_WAL,
    WAL_START_PREFIX,
    SnapMeta,
    WalCatalog,
    WalFileInfo,
    kind_of,
    tag_value,
    validate,
    wal_dataset_tag,
)
from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.registry import open_backend
from coffer.store.repository import Repository
from coffer.util.failpoints import failpoint

DEFAULT_DATASET = "postgres-wal"
PUSH_LOCK_WAIT = 60.0
MAX_BATCH_BYTES = 512 << 20


class WalConflict(CofferError):
    """A different file is already archived under this name."""


# ---------------------------------------------------------------------------------------- push state
class _PushState:
    """Files pushed ahead of PostgreSQL's request: name -> (sha256, snapshot ID), kept locally."""

    def __init__(self, cache_dir: str | None, url: str, dataset: str) -> None:
        from coffer.store.backend.cache import default_cache_dir

        key = hashlib.sha256(f"{url}\0{dataset}".encode()).hexdigest()[:24]
        self.dir = os.path.join(cache_dir or default_cache_dir(), "wal-pushed", key)

    def get(self, name: str) -> tuple[str, str] | None:
        try:
            with open(os.path.join(self.dir, name), encoding="ascii") as f:
                digest, snap = f.read().split()
            return digest, snap
        except (OSError, ValueError):
            return None

    def put(self, name: str, digest: str, snap: str) -> None:
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            tmp = os.path.join(self.dir, f".{name}.{secrets.token_hex(4)}")
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{digest} {snap}\n")
            os.replace(tmp, os.path.join(self.dir, name))
        except OSError:
            pass  # only an optimisation

    def forget_upto(self, name: str) -> None:
        with contextlib.suppress(OSError):
            for n in os.listdir(self.dir):
                if n <= name and not n.startswith("."):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.dir, n))


@dataclass
class PushResult:
    name: str
    status: str  # stored, already-archived, pushed-ahead
    snapshot: str
    batch: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror}") from None


def _ready_files(path: str, name: str, known: set[str], limit: int) -> list[str]:
    """Other complete segments PostgreSQL has queued (archive_status/*.ready), oldest first."""
    status = os.path.join(os.path.dirname(path) or ".", "archive_status")
    try:
        ready = sorted(n[:-6] for n in os.listdir(status) if n.endswith(".ready"))
    except OSError:
        return []
    out = []
    for n in ready:
        if n == name or n in known or len(n) != 24:
            continue
        out.append(n)
        if len(out) >= limit:
            break
    return out


def wal_push(access: RepoAccess, path: str, dataset: str = DEFAULT_DATASET, *, cache_dir: str | None = None,
             batch: int = 8, host: str | None = None) -> PushResult:
    t0 = time.monotonic()
    name = os.path.basename(path)
    kind_of(name)
    data = _read(path)
    info = validate(name, data)
    digest = hashlib.sha256(data).hexdigest()
    state = _PushState(cache_dir, access.url, dataset)
    rec = state.get(name)
    if rec is not None and rec[0] == digest and _snapshot_exists(access, rec[1]):
        state.forget_upto(name)
        return PushResult(name, "pushed-ahead", rec[1], seconds=time.monotonic() - t0)
    access = replace(access, retry_lock=max(access.retry_lock, PUSH_LOCK_WAIT))
    with open_repo(access, "shared") as repo:
        cat = WalCatalog.build(snapshot_metas(repo, cache_dir), dataset)
        holder = cat.holder(name)
        if holder is not None:
            _load_index_tolerant(repo)
            stored = _stored_digest(repo, holder, name)
            if stored != digest:
                raise WalConflict(
                    f"{name} is already archived in dataset {dataset!r} (snapshot {holder.id[:8]}) with different "
                    "content; refusing to overwrite it",
                    hint="two clusters may be archiving into the same dataset, or this server was restored "
                         "without a new timeline; give each cluster its own --dataset")
            state.put(name, digest, holder.id)
            return PushResult(name, "already-archived", holder.id, seconds=time.monotonic() - t0)
        files: list[tuple[str, bytes, WalFileInfo]] = [(name, data, info)]
        if batch > 1 and info.kind == "segment":
            total = len(data)
            for n in _ready_files(path, name, set(cat.files), batch - 1):
                try:
                    d2 = _read(os.path.join(os.path.dirname(path), n))
                    i2 = validate(n, d2)
                except SourceError:
                    continue  # PostgreSQL will hand it to us itself, and then it fails loudly
                if i2.sysid != info.sysid or total + len(d2) > MAX_BATCH_BYTES:
                    break
                files.append((n, d2, i2))
                total += len(d2)
        snap = _store_wal(repo, files, dataset, host, info)
        remember(repo, SnapMeta(snap.id.hex(), snap.time_ns, tuple(snap.tags), tuple(snap.paths), snap.hostname),
                 cache_dir)
    sid = snap.id.hex()
    for n, d, _ in files[1:]:
        state.put(n, hashlib.sha256(d).hexdigest(), sid)
    state.forget_upto(name)
    return PushResult(name, "stored", sid, [n for n, _, _ in files], time.monotonic() - t0)


def _load_index_tolerant(repo: Repository) -> None:
    """The index, skipping files this user cannot read: in a local repository written by several users
    (root's base backups, postgres's WAL) the WAL's own index files are the ones that matter here."""
    repo.load_index(on_error=lambda iid, e: None)


def _snapshot_exists(access: RepoAccess, sid: str) -> bool:
    try:
        backend = open_backend(access.url, access.options)
    except CofferError:
        return False
    try:
        return backend.exists(Handle(FileType.SNAPSHOT, sid))
    except CofferError:
        return False
    finally:
        backend.close()


def _stored_digest(repo: Repository, holder: SnapMeta, name: str) -> str:
    snap = repo.load_snapshot(bytes.fromhex(holder.id))
    node = root_file(repo, snap.tree, name)
    h = hashlib.sha256()
    for chunk in iter_content(repo, node):
        h.update(chunk)
    return h.hexdigest()


def _store_wal(repo: Repository, files: Sequence[tuple[str, bytes, WalFileInfo]], dataset: str, host: str | None,
               first: WalFileInfo) -> Any:
    tags = [TAG_WAL, "postgres", wal_dataset_tag(dataset)]
    sysid = next((i.sysid for _, _, i in files if i.sysid is not None), None)
    if sysid is not None:
        tags.append(SYSID_PREFIX + str(sysid))
    for _, _, i in files:
        if i.kind == "backup" and i.backup_label:
            tags.append(BACKUP_LABEL_PREFIX + i.backup_label.replace(" ", "_").replace(",", "_"))
            if i.backup_stop_s is not None:
                tags.append(BACKUP_STOP_PREFIX + str(i.backup_stop_s))
    streams = [StreamInput(n, functools.partial(io.BytesIO, d), None, mode=0o600) for n, d, _ in files]
    req = BackupRequest(streams=streams, tags=tags, host=host or env.hostname(),
                        program_version=f"coffer {__version__}")
    # No dedup lookup against the whole repository: WAL barely deduplicates, and loading a busy
    # archive's many small index files would dominate every push. Duplicates are harmless (prune).
    repo.index_loaded = True
    failpoint("wal_push_before_store")
    result = Archiver(repo, req).run()
    failpoint("wal_push_after_store")
    return result.snapshot


# ---------------------------------------------------------------------------------------- fetch
@dataclass
class FetchResult:
    name: str
    found: bool
    source: str = ""  # spool or snapshot ID
    prefetched: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _spool_dir(spool: str, dataset: str) -> str:
    return os.path.join(spool, re.sub(r"[^A-Za-z0-9._-]", "_", dataset))


def _move(src: str, dest: str) -> None:
    try:
        os.replace(src, dest)
    except OSError:
        tmp = f"{dest}.coffer-tmp-{secrets.token_hex(4)}"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        os.unlink(src)


def wal_fetch(access: RepoAccess, name: str, dest: str, dataset: str = DEFAULT_DATASET, *,
              spool: str | None = None, prefetch: int = 0, cache_dir: str | None = None) -> FetchResult:
    t0 = time.monotonic()
    kind_of(name)
    sp = _spool_dir(spool, dataset) if spool else None
    if sp is not None:
        cand = os.path.join(sp, name)
        if os.path.exists(cand):
            _move(cand, dest)
            _drop_spooled_before(sp, name)
            return FetchResult(name, True, "spool", seconds=time.monotonic() - t0)
    with open_repo(access, "none") as repo:
        cat = WalCatalog.build(snapshot_metas(repo, cache_dir), dataset)
        holder = cat.holder(name)
        if holder is None:
            return FetchResult(name, False, seconds=time.monotonic() - t0)
        _load_index_tolerant(repo)
        write_file(repo, root_file(repo, repo.load_snapshot(bytes.fromhex(holder.id)).tree, name), dest)
        got: list[str] = []
        if sp is not None and prefetch > 0 and len(name) == 24:
            os.makedirs(sp, mode=0o700, exist_ok=True)
            _drop_spooled_before(sp, name)
            trees: dict[str, bytes] = {}
            for n in cat.segments_after(name, prefetch):
                target = os.path.join(sp, n)
                if os.path.exists(target):
                    continue
                h = cat.holder(n)
                assert h is not None
                if h.id not in trees:
                    trees[h.id] = repo.load_snapshot(bytes.fromhex(h.id)).tree
                try:
                    write_file(repo, root_file(repo, trees[h.id], n), target)
                except CofferError:
                    break  # the request itself succeeded; the next call fetches it directly
                got.append(n)
    return FetchResult(name, True, holder.id, got, time.monotonic() - t0)


def _drop_spooled_before(sp: str, name: str) -> None:
    with contextlib.suppress(OSError):
        for n in os.listdir(sp):
            if (n < name and len(n) == 24) or ".coffer-tmp-" in n:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(sp, n))


# ---------------------------------------------------------------------------------------- backups
def backup_source(access: RepoAccess, source: Source, *, host: str | None = None,
                  extra_tags: Sequence[str] = ()) -> BackupResult:
    """One snapshot of a source's streams (a dump, a base backup), tagged; no parent, no partial result."""
    with source.inputs() as inp:
        req = BackupRequest(streams=inp.streams, paths=inp.paths, excludes=inp.excludes,
                            tags=list(dict.fromkeys([*inp.tags, *extra_tags])), host=host or env.hostname(),
                            program_version=f"coffer {__version__}")
        with open_repo(access, "shared") as repo:
            repo.load_index()
            return Archiver(repo, req).run()


# ---------------------------------------------------------------------------------------- choosing
def catalog(repo: Repository, dataset: str, cache_dir: str | None = None) -> WalCatalog:
    return WalCatalog.build(snapshot_metas(repo, cache_dir), dataset)


def guess_dataset(repo: Repository, cache_dir: str | None = None) -> str:
    """The one dataset holding base backups, when there is exactly one."""
    names = {tag_value(m.tags, "dataset=") for m in snapshot_metas(repo, cache_dir) if "basebackup" in m.tags}
    names.discard(None)
    if len(names) == 1:
        return str(next(iter(names)))
    if not names:
        raise UsageError("the repository has no base backup (make one with `coffer pg-basebackup`)")
    raise UsageError(f"several datasets have base backups ({', '.join(sorted(str(n) for n in names))}); name one")


def choose_base(cat: WalCatalog, target_ns: int | None, snapshot: str | None = None) -> SnapMeta:
    """``--snapshot``: that base backup; ``--target-time``: the newest one complete before the target."""
    if snapshot:
        matches = [b for b in cat.base_backups if b.id.startswith(snapshot.lower())]
        if snapshot == "latest" and cat.base_backups:
            return cat.base_backups[-1]
        if len(matches) != 1:
            raise UsageError(f"no unique base backup of dataset {cat.dataset!r} matches {snapshot!r}"
                             + (f" ({len(matches)} match)" if matches else ""))
        return matches[0]
    if not cat.base_backups:
        raise RestoreError(f"dataset {cat.dataset!r} has no base backup")
    assert target_ns is not None
    for b in reversed(cat.base_backups):
        if b.time_ns > target_ns:
            continue
        label = tag_value(b.tags, LABEL_PREFIX)
        end = cat.backup_end_time(label) if label else None
        if end is not None and end > target_ns:
            continue  # still running at the target time: it cannot reach a consistent state before it
        return b
    oldest = cat.base_backups[0]
    raise RestoreError(f"no base backup of dataset {cat.dataset!r} finished before {pg_time(target_ns)}; the oldest "
                       f"started at {pg_time(oldest.time_ns)}")


def archive_window(cat: WalCatalog, base: SnapMeta, last_commit_ns: int | None = None) -> tuple[int, int] | None:
    """(earliest, latest) recovery target times this base backup can reach with the archived WAL.

    A target time is reached only when a commit after it was archived (else PostgreSQL stops with
    "recovery ended before configured recovery target was reached"), so the window ends at the last
    archived commit when that is known."""
    label = tag_value(base.tags, LABEL_PREFIX)
    start = (cat.backup_end_time(label) if label else None) or base.time_ns
    newest = max((s.time_ns for s in cat.wal_snapshots), default=None)
    if last_commit_ns is not None:
        newest = last_commit_ns - 1000 if newest is None else min(newest, last_commit_ns - 1000)
    if newest is None or newest <= start:
        return None
    return start, newest


_COMMIT_RE = re.compile(r"desc: (?:COMMIT|ABORT)(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d+)? UTC")


def last_archived_commit(repo: Repository, cat: WalCatalog, *, bin_dir: str | None = None,
                         look_back: int = 4) -> int | None:
    """The commit time of the newest transaction end in the archive (pg_waldump over the newest
    segments), or None when it cannot be told."""
    import calendar
    import tempfile

    from coffer.sources.postgres.conn import tool
    from coffer.util.process import Command, run

    try:
        waldump = tool("pg_waldump", bin_dir)
    except SourceError:
        return None
    segs = sorted((n for n in cat.files if len(n) == 24), key=lambda n: (n[8:24], n[:8]), reverse=True)
    if not segs:
        return None
    _load_index_tolerant(repo)
    with tempfile.TemporaryDirectory(prefix="coffer-waldump-") as tmp:
        for name in segs[:look_back]:
            holder = cat.holder(name)
            assert holder is not None
            path = os.path.join(tmp, name)
            try:
                write_file(repo, root_file(repo, repo.load_snapshot(bytes.fromhex(holder.id)).tree, name), path)
            except CofferError:
                continue
            r = run(Command([waldump, "--rmgr=Transaction", path], env={"TZ": "UTC", "PGTZ": "UTC"}),
                    check=False, timeout=120)
            found = [m for m in _COMMIT_RE.finditer(r.stdout.decode("utf-8", "replace"))]
            if found:
                best = 0
                for m in found:
                    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
                    frac = int(float(m.group(2) or "0") * 1e9)
                    best = max(best, secs * 1_000_000_000 + frac)
                return best
            os.unlink(path)
    return None


# ---------------------------------------------------------------------------------------- restore-db
@dataclass
class RestoreDbRequest:
    to: str
    dataset: str | None = None
    target_time_ns: int | None = None
    snapshot: str | None = None
    start: bool = False
    port: int | None = None
    recovery_dir: str | None = None
    timeout: float = 3600
    cache_dir: str | None = None


@dataclass
class RestoreDbResult:
    dataset: str
    base: SnapMeta
    data_dir: str
    scripts: Scripts
    target: str | None
    started: bool = False
    port: int | None = None
    socket_dir: str | None = None
    ready_seconds: float | None = None
    last_replayed: str | None = None
    warnings: list[str] = field(default_factory=list)


def archive_access(access: RepoAccess, dataset: str) -> ArchiveAccess:
    return ArchiveAccess(url=access.url, password=access.get_password, dataset=dataset,
                         options={k: v for k, v in access.options.items() if k not in ("cache-dir",)},
                         env=backend_env())


def restore_db(access: RepoAccess, req: RestoreDbRequest,
               say: Callable[[str], None] = lambda s: None) -> RestoreDbResult:
    if (req.target_time_ns is None) == (req.snapshot is None):
        raise UsageError("give exactly one of --target-time and --snapshot")
    to = os.path.abspath(req.to)
    rdir = os.path.abspath(req.recovery_dir or to.rstrip("/") + ".coffer")
    user = os_user()
    with open_repo(access, "shared") as repo:
        dataset = req.dataset or guess_dataset(repo, req.cache_dir)
        cat = catalog(repo, dataset, req.cache_dir)
        base = choose_base(cat, req.target_time_ns, req.snapshot)
        say(f"base backup {base.id[:8]} of {pg_time(base.time_ns)} (dataset {dataset})")
        if req.target_time_ns is not None:
            last = last_archived_commit(repo, cat)
            if last is not None and req.target_time_ns >= last:
                raise RestoreError(
                    f"the archive has no commit after {pg_time(req.target_time_ns)} (the last archived commit is at "
                    f"{pg_time(last)}); PostgreSQL would stop with \"recovery ended before configured recovery "
                    "target was reached\"", hint="choose a target before the last archived commit, or restore "
                    "--snapshot latest; if the server still runs, SELECT pg_switch_wal() archives its newest WAL")
        repo.load_index()
        snap = repo.load_snapshot(bytes.fromhex(base.id))
        node = root_file(repo, snap.tree, BASE_NAME)
        reader = ContentReader(repo, node)
        try:
            info = extract_base_tar(cast(IO[bytes], reader), to)
        except BaseException:
            reader.close()
            raise
        say(f"extracted {info['files']} files ({info['bytes']} bytes) into {to}")
        seg_size = 16 << 20
        with contextlib.suppress(CofferError, ValueError):
            manifest = json.loads(b"".join(iter_content(repo, root_file(repo, snap.tree, MANIFEST_NAME))))
            seg_size = int(manifest.get("wal_segment_size") or seg_size)
    warnings = _gap_warnings(cat, base, seg_size)
    for w in warnings:
        say("warning: " + w)
    scripts = write_scripts(rdir, archive_access(access, dataset), user=user)
    check_scripts(scripts)
    target = pg_time(req.target_time_ns) if req.target_time_ns is not None else None
    port = req.port or (free_port() if req.start else None)
    sock = os.path.join(rdir, "run")
    os.makedirs(sock, mode=0o700, exist_ok=True)
    from coffer.sources.postgres.cluster import chown_tree

    chown_tree(sock, user)
    extra = {"unix_socket_directories": sock}
    write_recovery(to, restore_command=scripts.restore_command, target_time=target, immediate=target is None,
                   port=port, extra=extra)
    finish_extract(to, user)  # pg_control last: only now can this directory start
    res = RestoreDbResult(dataset, base, to, scripts, target)
    if req.start:
        cl = ThrowawayCluster(data_dir=to, workdir=rdir, port=port, drill=False, keep=True)
        cl.sock_dir = sock
        t0 = time.monotonic()
        cl.start(timeout=req.timeout, wait=False)
        try:
            cl.wait_promoted(req.timeout)
        except SourceError as e:
            raise RestoreError(f"the restored server did not finish recovery: {e}") from None
        res.started, res.port, res.socket_dir = True, cl.port, sock
        res.ready_seconds = time.monotonic() - t0
        res.last_replayed = cl.query("SELECT pg_last_xact_replay_timestamp()") or None
    return res


def _gap_warnings(cat: WalCatalog, base: SnapMeta, seg_size: int) -> list[str]:
    start = tag_value(base.tags, WAL_START_PREFIX)
    if not start or not cat.wal_snapshots:
        return [] if cat.wal_snapshots else ["the archive holds no WAL for this dataset: only the base backup "
                                             "itself can be restored"]
    gaps = [g for g in cat.gaps(start, seg_size) if g > start]
    if gaps:
        return [f"{len(gaps)} WAL segment(s) missing from the archive after the base backup, first {gaps[0]}: "
                "recovery cannot go past it"]
    return []


# ---------------------------------------------------------------------------------------- drills
def pitr_drill(access: RepoAccess, dataset: str | None = None, *, target_ns: int | None = None,
               base: str | None = None, source: Any = None, marker_sql: str | None = None,
               rng: random.Random | None = None, cache_dir: str | None = None) -> tuple[SnapMeta, VerifyOutcome]:
    """Restore a base backup into a throwaway server and recover to a random time of the archive
    (or ``target_ns``) through wal-fetch; the source's checks then run on it."""
    with open_repo(access, "shared") as repo:
        ds = dataset or guess_dataset(repo, cache_dir)
        cat = catalog(repo, ds, cache_dir)
        if target_ns is not None:
            b = choose_base(cat, target_ns)
            window = None
        else:
            last_commit = last_archived_commit(repo, cat)
            cands = [b for b in cat.base_backups if archive_window(cat, b, last_commit)] if base is None else \
                [choose_base(cat, None, base)]
            if not cands:
                raise RestoreError(f"dataset {ds!r}: no base backup with archived commits after it to recover "
                                   "through")
            b = (rng or random.SystemRandom()).choice(cands)
            window = archive_window(cat, b, last_commit)
            if window is None:
                raise RestoreError(f"dataset {ds!r}: base backup {b.id[:8]} has no archived commit after it; "
                                   "a point-in-time drill needs one")
        repo.load_index()
        snap = repo.load_snapshot(bytes.fromhex(b.id))
        manifest = {}
        with contextlib.suppress(CofferError, ValueError):
            mnode = root_file(repo, snap.tree, MANIFEST_NAME)
            manifest = json.loads(b"".join(iter_content(repo, mnode)))
        reader = ContentReader(repo, root_file(repo, snap.tree, BASE_NAME))
        try:
            outcome = drill_base_backup(
                cast(IO[bytes], reader), manifest, checks=getattr(source, "checks", ()),
                row_counts=getattr(source, "row_counts", ()),
                archive=archive_access(access, ds), target_ns=target_ns, window=window, marker_sql=marker_sql,
                rng=rng)
        finally:
            reader.close()
    return b, outcome


# ---------------------------------------------------------------------------------------- expiry
@dataclass
class ExpireResult:
    dataset: str
    decision: retention.WalExpiry
    removed: list[str] = field(default_factory=list)


def expire_wal(access: RepoAccess, dataset: str, *, dry_run: bool = False,
               cache_dir: str | None = None) -> ExpireResult:
    """Forget the WAL snapshots no kept base backup needs (prune afterwards reclaims the space)."""
    with open_repo(access, "none" if dry_run else "exclusive") as repo:
        cat = catalog(repo, dataset, cache_dir)
        decision = retention.expire(cat.base_backups, cat.wal_snapshots)
        out = ExpireResult(dataset, decision)
        if not dry_run and decision.remove:
            if repo.lock_guard:
                repo.lock_guard()
            for s in decision.remove:
                with contextlib.suppress(CofferError):
                    repo.backend.remove(Handle(FileType.SNAPSHOT, s.id))
                    out.removed.append(s.id)
        return out


# ---------------------------------------------------------------------------------------- status
def archive_lag(repo: Repository | None, dataset: str, *, conn: Any = None, data_dir: str | None = None,
                rpo_seconds: float | None = None, now_ns: int | None = None,
                cache_dir: str | None = None) -> ArchiveLag:
    """Age of the newest archived WAL in the repository, and failed pushes the server reports."""
    metas = snapshot_metas(repo, cache_dir) if repo is not None else None
    return wal_archive_lag(metas, dataset, conn=conn, data_dir=data_dir, rpo_seconds=rpo_seconds, now_ns=now_ns)

