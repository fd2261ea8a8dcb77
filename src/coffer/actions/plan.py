"""The plan as the other actions use it: load it, judge it, reach its repositories and catalog.

``plan_findings`` is the "does this plan make sense" evaluation of ``coffer plan check``: the
plan's own values handed to the pure policy rules (3-2-1, RPO feasibility, retention vs drill
window, drills present). ``access`` turns a plan repository into the ``RepoAccess`` every engine
use case takes, resolving its password source at the moment it is needed.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from coffer.actions.session import RepoAccess, open_repo
from coffer.config.load import load_plan
from coffer.config.model import AnyDataset, Plan, Repository
from coffer.errors import ConfigError, RepositoryNotFound
from coffer.policy import objectives, rule321
from coffer.policy.findings import Finding
from coffer.state.catalog import Catalog
from coffer.store.backend.registry import open_backend
from coffer.store.repository import Repository as StoreRepository
from coffer.util.process import Command, run

__all__ = ["access", "dataset_findings", "init_repositories", "load_plan", "open_catalog", "plan_findings"]


def dataset_findings(plan: Plan, d: AnyDataset) -> list[Finding]:
    gap = d.schedule.max_gap()
    out = list(rule321.evaluate_plan(d.name, plan.holders(d)))
    out.append(objectives.rpo_feasibility(d.name, str(d.schedule), gap, d.rpo))
    missing_drill = objectives.drills_planned(d.name, d.drill is not None, d.rto)
    if missing_drill is not None:
        out.append(missing_drill)
    if d.drill is not None:
        drill_repo = d.drill.repository or d.repository
        retention = d.retention
        for c in d.copies:
            if c.repository == drill_repo and c.retention is not None:
                retention = c.retention
        out.append(objectives.retention_covers_drills(d.name, retention.horizon(gap), d.drill.min_age,
                                                      d.drill.max_age))
    return out


def plan_findings(plan: Plan) -> list[Finding]:
    """Everything ``coffer plan check`` says about a valid plan, dataset by dataset."""
    out: list[Finding] = []
    for d in plan.datasets:
        out.extend(dataset_findings(plan, d))
    return out


# ------------------------------------------------------------------------------------ repositories
def _password(repo: Repository) -> str:
    where = f"repository {repo.name}"
    if repo.password_env:
        pw = os.environ.get(repo.password_env, "")
        if not pw:
            raise ConfigError(f"{where}: environment variable {repo.password_env} is not set or empty")
        return pw
    if repo.password_file:
        try:
            with open(repo.password_file, encoding="utf-8") as f:
                pw = f.read().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"{where}: cannot read password file {repo.password_file}: {e.strerror}") from None
        if not pw:
            raise ConfigError(f"{where}: password file {repo.password_file} is empty")
        return pw
    assert repo.password_command is not None
    r = run(Command(argv=shlex.split(repo.password_command)), timeout=120)
    pw = r.stdout.decode("utf-8", "replace").rstrip("\r\n")
    if not pw:
        raise ConfigError(f"{where}: password command printed nothing")
    return pw


def access(repo: Repository) -> RepoAccess:
    """How to open a plan repository; the password is resolved lazily, once."""
    cache: list[str] = []

    def password() -> str:
        if not cache:
            cache.append(_password(repo))
        return cache[0]

    return RepoAccess(url=repo.url, password=password, options=dict(repo.options))


def open_catalog(plan: Plan) -> Catalog:
    return Catalog.open(plan.catalog_path())


@dataclass(frozen=True, slots=True)
class InitResult:
    repository: str
    created: bool
    id: str


def init_repositories(plan: Plan) -> list[InitResult]:
    """Create every plan repository that does not exist yet.

    Copies get the chunker parameters of the dataset's primary repository, so that a file backed
    up to both chunks identically and copying deduplicates (``init --copy-chunker-params``).
    """
    out: list[InitResult] = []
    polynomial: dict[str, int] = {}
    order = sorted(plan.repositories, key=lambda r: not any(d.repository == r.name for d in plan.datasets))
    for r in order:
        try:
            with open_repo(access(r), "none") as repo:
                polynomial[r.name] = repo.config.chunker_polynomial
                out.append(InitResult(r.name, False, repo.config.id))
                continue
        except RepositoryNotFound:
            pass
        primaries = [d.repository for d in plan.datasets if r.name in d.copy_repositories]
        poly = next((polynomial[p] for p in primaries if p in polynomial), None)
        backend = open_backend(r.url, dict(r.options))
        try:
            created = StoreRepository.init(backend, access(r).get_password(), polynomial=poly)
        finally:
            backend.close()
        polynomial[r.name] = created.config.chunker_polynomial
        out.append(InitResult(r.name, True, created.config.id))
    order_names = [r.name for r in plan.repositories]
    return sorted(out, key=lambda x: order_names.index(x.repository))
