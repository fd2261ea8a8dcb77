"""The forget use case: choose snapshots by policy (or by ID), then delete exactly those files.

Split in two so a front-end can show the decision before anything changes, and so ``--dry-run``
is simply "plan, and do not apply": :func:`plan_forget` reads and decides, :func:`apply_forget`
deletes. Deleting a snapshot file is atomic, so a crash leaves every snapshot either whole or gone
(reliability T3); the data they referenced stays until a prune.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from coffer.engine import snapshots as snapsel
from coffer.errors import BackendError, CofferError, ObjectNotFound, UsageError
from coffer.policy.retention import ForgetDecision, GroupBy, RetentionPolicy, decide
from coffer.store.backend.base import FileType, Handle
from coffer.store.format.snapshot import Snapshot
from coffer.store.repository import Repository
from coffer.util import gotime
from coffer.util.failpoints import failpoint


@dataclass(frozen=True)
class ForgetRequest:
    policy: RetentionPolicy = field(default_factory=RetentionPolicy)
    group_by: GroupBy = field(default_factory=GroupBy)
    filter: snapsel.SnapshotFilter = field(default_factory=snapsel.SnapshotFilter)
    snapshot_ids: tuple[str, ...] = ()  # explicit IDs are removed without a policy


@dataclass
class ForgetPlan:
    """What forget will remove, and why (``decision`` is None when IDs were given explicitly)."""

    request: ForgetRequest
    decision: ForgetDecision | None
    explicit: list[Snapshot] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # IDs that matched nothing, unreadable snapshots

    @property
    def remove(self) -> list[Snapshot]:
        if self.decision is None:
            return list(self.explicit)
        return self.decision.remove


def plan_forget(repo: Repository, req: ForgetRequest, *, now_ns: int | None = None) -> ForgetPlan:
    """List the snapshots, select them by the filter or by ID, and apply the policy per group."""
    messages: list[str] = []
    snaps = repo.list_snapshots(
        on_error=lambda sid, e: messages.append(f"could not load snapshot {sid.hex()[:8]}: {e}"))
    # A stable input order, so snapshots with equal times are decided the same way every run.
    snaps.sort(key=lambda s: s.id)
    if req.snapshot_ids:
        if not req.filter.empty and "latest" not in req.snapshot_ids:
            messages.append("Ignoring filters as there are explicit snapshot ids given")
        chosen: dict[bytes, Snapshot] = {}
        for spec in req.snapshot_ids:
            try:
                s = snapsel.find(snaps, spec, req.filter if spec == "latest" else None)
            except (snapsel.SnapshotNotFound, UsageError) as e:
                messages.append(f"Ignoring {spec!r}: {e}")
                continue
            chosen[s.id] = s
        return ForgetPlan(req, None, list(chosen.values()), messages)
    selected = [s for s in snaps if req.filter.matches(s)]
    decision = decide(selected, req.policy, req.group_by, now_ns=gotime.now_ns() if now_ns is None else now_ns)
    return ForgetPlan(req, decision, [], messages)


def apply_forget(
    repo: Repository, snapshots: Sequence[Snapshot], *, on_removed: Callable[[int, int], None] | None = None,
) -> list[bytes]:
    """Delete these snapshot files (under an exclusive lock). Returns the IDs removed."""
    removed: list[bytes] = []
    if snapshots and repo.lock_guard:
        repo.lock_guard()
    for i, s in enumerate(sorted(snapshots, key=lambda x: x.id)):
        failpoint("forget_before_remove")
        try:
            repo.backend.remove(Handle(FileType.SNAPSHOT, s.id.hex()))
        except ObjectNotFound:
            pass  # already gone (a second forget, or a crash after the delete)
        except BackendError as e:
            raise CofferError(f"unable to remove snapshot {s.id.hex()[:8]}: {e}", hint=e.hint) from None
        failpoint("forget_after_remove")
        removed.append(s.id)
        if on_removed is not None:
            on_removed(i + 1, len(snapshots))
    return removed
