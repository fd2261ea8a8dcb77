"""Integrity checks in slices: read part of a repository's packs per run, all of them per period.

Reading every pack every night is too slow for a large repository and reading a random share
leaves some packs unread for months by bad luck. So each run reads the packs that have gone
longest without a read — never-read packs first — and a ledger (kept by the caller in the
catalog) records when each pack was last read. With ``n`` packs and a fraction ``f``, a run reads
``ceil(n*f)`` packs, so after ``ceil(1/f)`` runs every pack present at the start has been read
once, whatever was added meanwhile.

This module reads and decides; it records nothing. The ledger comes in as values and the results
go out as values (``actions.integrity`` persists them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from coffer.errors import BackendError
from coffer.policy.objectives import Coverage
from coffer.store.backend.base import FileType
from coffer.store.maintenance.check import Finding, check, check_packs, load_check_index
from coffer.store.repository import Repository


@dataclass(slots=True)
class SliceResult:
    repository_id: str
    packs: dict[str, int]  # every pack file in the repository now: hex ID -> size
    read: dict[str, bool] = field(default_factory=dict)  # packs read this run -> verified OK
    bytes_read: int = 0
    findings: list[Finding] = field(default_factory=list)  # structure and data findings (errors, warnings)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def damaged(self) -> list[str]:
        return sorted(p for p, ok in self.read.items() if not ok)


def slice_size(total: int, fraction: float) -> int:
    if total == 0:
        return 0
    return min(total, max(1, math.ceil(total * fraction - 1e-9)))


def select_slice(packs: Mapping[str, int], last_read: Mapping[str, datetime | None], fraction: float) -> list[str]:
    """The packs to read this run: never read first, then least recently read (ties by ID)."""
    def key(p: str) -> tuple[int, float, str]:
        t = last_read.get(p)
        return (0, 0.0, p) if t is None else (1, t.timestamp(), p)

    return sorted(packs, key=key)[: slice_size(len(packs), fraction)]


def list_packs(repo: Repository) -> dict[str, int]:
    """Every pack file in the repository (the ledger's universe: what is stored, not only what the
    index names, so an unreferenced pack is read and reported too)."""
    return {fi.name: fi.size for fi in repo.list_files(FileType.PACK)}


def run_slice(repo: Repository, fraction: float, last_read: Mapping[str, datetime | None], *,
              structure: bool = True) -> SliceResult:
    """Check the repository's structure (optional) and read this run's slice of packs."""
    res = SliceResult(repository_id=repo.config.id, packs={})
    try:
        res.packs = list_packs(repo)
    except BackendError as e:
        res.findings.append(Finding("error", "list_failed", "repository", f"cannot list pack files: {e}"))
        return res
    if structure:
        structural = check(repo)
        res.findings.extend(f for f in structural.findings if f.severity in ("error", "warning"))
    chosen = select_slice(res.packs, last_read, fraction)
    if not chosen:
        return res
    nbytes = 0

    def done(pack_id: bytes, n: int) -> None:
        nonlocal nbytes
        nbytes += n

    index = load_check_index(repo)
    found = check_packs(repo, [bytes.fromhex(p) for p in chosen], index=index, on_pack_done=done)
    bad = {f.object.split("/", 1)[1] for f in found if f.severity == "error" and f.object.startswith("pack/")}
    res.read = {p: p not in bad for p in chosen}
    res.bytes_read = nbytes
    res.findings.extend(f for f in found if f.severity in ("error", "warning"))
    return res


def summarize(
    packs: Mapping[str, int],
    first_seen: Mapping[str, datetime],
    last_read: Mapping[str, datetime | None],
    last_ok: Mapping[str, bool | None],
    last_check: datetime | None,
    now: datetime,
) -> Coverage:
    """The ledger, reduced to what status judges: how long has the least recently read pack waited?

    A pack the ledger has never seen (written after the last check) waits in the queue; its age is
    unknown, so it counts as never read without stretching the oldest age.
    """
    oldest = None
    never = failed = 0
    for p in packs:
        read = last_read.get(p)
        if read is None:
            never += 1
        if last_ok.get(p) is False:
            failed += 1
        since = read or first_seen.get(p)
        if since is not None:
            age = now - since
            oldest = age if oldest is None or age > oldest else oldest
    return Coverage(packs=len(packs), never_read=never, failed=failed, oldest_unverified=oldest,
                    last_check=last_check)
