"""The 3-2-1 rule, judged on values: 3 copies of the data, on 2 different media, 1 of them offsite.

The live data counts as the first copy, so a dataset needs at least two backup copies, on at least
two distinct media, at least one of them offsite. A copy nobody can delete (object lock, WORM tape)
is what survives ransomware that stole the backup credentials, so its absence is flagged too.

The same rule is applied twice: to the plan (which repositories are *meant* to hold the dataset,
``coffer plan check``) and to the facts (which repositories *actually* hold a recent snapshot,
``coffer status``). The second is the one that matters at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coffer.policy.findings import Finding, Severity


@dataclass(frozen=True, slots=True)
class Holder:
    """A repository as the 3-2-1 rule sees it."""

    repository: str
    media: str
    offsite: bool
    immutable: bool = False


@dataclass(frozen=True, slots=True)
class _Gap:
    code: str
    severity: Severity
    message: str


def _gaps(holders: Sequence[Holder], *, immutability: bool) -> list[_Gap]:
    names = sorted({h.repository for h in holders})
    media = sorted({h.media for h in holders})
    gaps: list[_Gap] = []
    if len(names) < 2:
        where = f" ({names[0]})" if names else ""
        gaps.append(_Gap("rule321.copies", Severity.WARNING,
                         f"{len(names)} backup cop{'y' if len(names) == 1 else 'ies'}{where}: 3-2-1 needs the live "
                         f"data plus 2 backups"))
    if len(media) < 2:
        on = f"all on {media[0]}" if media else "no backup media"
        gaps.append(_Gap("rule321.media", Severity.WARNING,
                         f"{on}: 3-2-1 needs backups on 2 different media (one failure mode must not take both)"))
    if not any(h.offsite for h in holders):
        gaps.append(_Gap("rule321.offsite", Severity.CRITICAL,
                         "no offsite copy: a fire, flood or theft at the site loses every copy"))
    if immutability and not any(h.immutable for h in holders):
        gaps.append(_Gap("rule321.immutable", Severity.WARNING,
                         "no immutable copy: an attacker holding the backup credentials can delete every copy"))
    return gaps


def _met_message(holders: Sequence[Holder]) -> str:
    names = sorted({h.repository for h in holders})
    media = sorted({h.media for h in holders})
    offsite = sorted({h.repository for h in holders if h.offsite})
    return (f"3-2-1 met: live data + {len(names)} backups ({', '.join(names)}), "
            f"{len(media)} media ({', '.join(media)}), offsite: {', '.join(offsite)}")


def evaluate_plan(dataset: str, holders: Sequence[Holder]) -> list[Finding]:
    """Is the dataset *planned* to satisfy 3-2-1? ``holders``: its primary and copy repositories."""
    subject = f"dataset {dataset}"
    gaps = _gaps(holders, immutability=True)
    if not gaps:
        return [Finding(Severity.OK, "rule321.met", subject, _met_message(holders))]
    out = [Finding(g.severity, g.code, subject, g.message) for g in gaps]
    if all(g.code == "rule321.immutable" for g in gaps):
        out.insert(0, Finding(Severity.OK, "rule321.met", subject, _met_message(holders)))
    return out


def evaluate_facts(dataset: str, recent: Sequence[Holder], present: Sequence[Holder]) -> list[Finding]:
    """Does the dataset *actually* satisfy 3-2-1?

    ``recent``: repositories holding a snapshot of the dataset that is within its allowed age;
    ``present``: repositories holding any snapshot of it at all. A gap that only stale copies fill
    is a WARNING (the copies exist but lag); a gap nothing fills keeps its own severity.
    """
    subject = f"dataset {dataset}"
    if not _gaps(recent, immutability=False):
        return [Finding(Severity.OK, "rule321.met", subject, _met_message(recent))]
    present_gaps = {g.code: g for g in _gaps(present, immutability=False)}
    out: list[Finding] = []
    for g in _gaps(recent, immutability=False):
        if g.code in present_gaps:
            out.append(Finding(g.severity, g.code, subject, g.message))
        else:
            out.append(Finding(Severity.WARNING, g.code, subject,
                               f"{g.message.split(':')[0]} among recent snapshots (older copies exist but lag)"))
    return out
