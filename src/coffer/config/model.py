"""The plan: one pydantic schema that is the single source of every option a plan file may hold.

``coffer plan schema`` prints this schema as JSON Schema, ``coffer plan check`` validates against it,
and everything that runs a plan receives the frozen objects defined here, never a raw dict. A
rule about an option (its type, default, range, cross-references) is written once, here.

Relative filesystem paths in a plan (repository paths, dataset paths, password files, the catalog)
are relative to the plan file's directory, so a plan and its neighbours can move together; the
loader passes that directory as the validation context ``base_dir``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from coffer.policy import objectives
from coffer.policy.rule321 import Holder
from coffer.util.durations import format_duration, parse_duration

DATASET_TYPES = ("files", "postgres", "postgres-wal", "mysql", "sqlite")
DATASET_TAG_PREFIX = "dataset="


# ------------------------------------------------------------------------------------ value types
def _duration(v: Any) -> timedelta:
    if isinstance(v, timedelta):
        return v
    if not isinstance(v, str):
        raise ValueError(f"not a duration: {v!r} (write e.g. 30m, 25h, 7d, 1y)")
    return parse_duration(v)


Duration = Annotated[
    timedelta,
    PlainValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d+)?[smhdwy])+$",
                    "description": "a duration: s, m, h, d, w, y (365 d), e.g. 25h, 7d, 1h30m"}),
]


def _fraction(v: Any) -> float:
    """0.1, "10%" or "1/10": the share of packs one check run reads."""
    try:
        if isinstance(v, bool):
            raise ValueError
        if isinstance(v, int | float):
            f = float(v)
        elif isinstance(v, str) and v.strip().endswith("%"):
            f = float(v.strip()[:-1]) / 100
        elif isinstance(v, str) and "/" in v:
            a, b = v.split("/", 1)
            f = float(a) / float(b)
        elif isinstance(v, str):
            f = float(v)
        else:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a fraction: {_q(v)} (write e.g. 10%, 0.1 or 1/7)") from None
    if not 0 < f <= 1:
        raise ValueError(f"must be more than 0 and at most 100%: {_q(v)}")
    return f


Fraction = Annotated[
    float,
    PlainValidator(_fraction),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?%$|^\d+/\d+$"}],
                    "description": "share of packs per check run: 0.1, 10% or 1/10"}),
]

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(v).lower()) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"not a size: {_q(v)} (write e.g. 500M, 2G, 1.5T)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


Size = Annotated[
    int,
    PlainValidator(_size),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?[KMGT]?$"}],
                    "description": "bytes, or a size like 500M, 2G"}),
]


class Schedule:
    """When a dataset is backed up: a cron expression, ``every <duration>``, or ``on-change``.

    What the rest of coffer needs from a schedule is the longest possible gap between two runs
    (for RPO feasibility and for how stale a copy may be); ``max_gap()`` computes it once.
    Schedules say when a scheduler (a timer, cron, the daemon) should call ``coffer run``; the run
    itself does what it is asked, whenever it is asked.
    """

    __slots__ = ("_gap", "expr", "interval", "kind", "text")

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.expr = ""
        self.interval: timedelta | None = None
        if self.text == "on-change":
            self.kind = "on-change"
        elif self.text.startswith("every "):
            self.kind = "interval"
            self.interval = parse_duration(self.text[len("every "):])
        else:
            self.kind = "cron"
            fields = self.text.split()
            if not self.text.startswith("@") and len(fields) != 5:
                raise ValueError(f"not a schedule: {_q(text)} (a 5-field cron expression like \"0 2 * * *\", "
                                 f"\"every 4h\" or \"on-change\")")
            if not croniter.is_valid(self.text):
                raise ValueError(f"bad cron expression: {_q(text)}")
            self.expr = self.text
        self._gap = self._compute_gap()

    def _compute_gap(self) -> timedelta | None:
        if self.kind == "on-change":
            return None
        if self.kind == "interval":
            return self.interval
        # The longest gap over a year of firings (weekday-only schedules have a 3-day gap at weekends).
        start = datetime(2025, 1, 1, tzinfo=UTC)
        it = croniter(self.expr, start)
        prev = it.get_next(datetime)
        gap = timedelta(0)
        for n in range(5000):
            nxt = it.get_next(datetime)
            gap = max(gap, nxt - prev)
            prev = nxt
            if n >= 1 and nxt - start > timedelta(days=366):
                break
        return gap

    def max_gap(self) -> timedelta | None:
        """Longest time between two runs; None for on-change (it depends on the data)."""
        return self._gap

    def next_after(self, t: datetime) -> datetime | None:
        """The first firing after ``t`` (UTC); None for on-change."""
        if self.kind == "interval":
            assert self.interval is not None
            return t + self.interval
        if self.kind == "cron":
            nxt: datetime = croniter(self.expr, t.astimezone(UTC)).get_next(datetime)
            return nxt
        return None

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Schedule({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _schedule(v: Any) -> Schedule:
    if isinstance(v, Schedule):
        return v
    if not isinstance(v, str):
        raise ValueError(f"not a schedule: {_q(v)} (a cron expression like \"0 2 * * *\", \"every 4h\" "
                         f"or \"on-change\")")
    return Schedule(v)


ScheduleField = Annotated[
    Schedule,
    PlainValidator(_schedule),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["0 2 * * *", "every 4h", "on-change", "@daily"],
                    "description": "cron expression (5 fields or @daily etc.), 'every <duration>' or 'on-change'"}),
]


def _resolve_path(v: str, info: ValidationInfo) -> str:
    """Relative paths are relative to the plan file's directory."""
    base = (info.context or {}).get("base_dir") if info.context else None
    v = os.path.expanduser(v)
    if base and not os.path.isabs(v):
        return os.path.normpath(os.path.join(base, v))
    return v


def _nonempty(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


PlanPath = Annotated[str, AfterValidator(_nonempty), AfterValidator(_resolve_path)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64,
                            description="letters, digits, '.', '_' and '-'")]
Media = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$",
                             description="storage medium, e.g. nvme, ssd, hdd, nfs, s3, tape")]


def _q(v: object) -> str:
    import json

    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)


# ------------------------------------------------------------------------------------ repositories
class CheckPolicy(_Model):
    """How integrity checks read a repository: a slice of the packs per run, every pack in time."""

    interval: Duration = Field(default=timedelta(days=1), description="how often `coffer check --plan` runs")
    read: Fraction = Field(default=1 / 7, description="share of the packs each run reads (10%, 0.1, 1/7)")
    structure: bool = Field(default=True, description="also check snapshots, trees and index on each run")

    @property
    def period(self) -> timedelta:
        """Every pack is read at least once within this time (interval x runs per full pass)."""
        import math

        return self.interval * math.ceil(1 / self.read - 1e-9)


class Repository(_Model):
    """Where backups are stored, and what 3-2-1 needs to know about it."""

    name: Name
    url: str = Field(description="restic repository URL or local path (NFS mounts are local paths)")
    password_file: PlanPath | None = None
    password_command: str | None = Field(default=None, description="command printing the password")
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    media: Media
    site: str = Field(default="", description="where it physically is (for people; 3-2-1 uses `offsite`)")
    offsite: bool = False
    immutable: bool = Field(default=False,
                            description="cannot be deleted with the backup credentials (object lock, WORM)")
    options: dict[str, str] = Field(default_factory=dict, description="backend options (as -o key=value)")
    check: CheckPolicy | None = Field(default=None, description="overrides the datasets' check settings")

    @field_validator("url", mode="after")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        v = _nonempty(v)
        if re.match(r"^[a-z0-9]+:", v) and not v.startswith("local:"):
            return v
        if v.startswith("local:"):
            return "local:" + _resolve_path(v[len("local:"):], info)
        return _resolve_path(v, info)

    @field_validator("password_command", mode="after")
    @classmethod
    def _command(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                if not shlex.split(v):
                    raise ValueError("must not be empty")
            except ValueError as e:
                raise ValueError(f"not a command line: {e}") from None
        return v

    @model_validator(mode="after")
    def _one_password_source(self) -> Repository:
        given = [k for k in ("password_file", "password_command", "password_env") if getattr(self, k)]
        if len(given) != 1:
            raise PlanReferenceError([((), "needs exactly one of password_file, password_command, password_env"
                                       + (f" (has {', '.join(given)})" if given else ""))])
        return self

    @property
    def holder(self) -> Holder:
        return Holder(self.name, self.media, self.offsite, self.immutable)


# ------------------------------------------------------------------------------------ datasets
class Retention(_Model):
    """Which snapshots to keep, restic's ``forget`` rules (``keep_daily: 90`` = ``--keep-daily 90``)."""

    keep_last: int | None = Field(default=None, ge=0)
    keep_hourly: int | None = Field(default=None, ge=0)
    keep_daily: int | None = Field(default=None, ge=0)
    keep_weekly: int | None = Field(default=None, ge=0)
    keep_monthly: int | None = Field(default=None, ge=0)
    keep_yearly: int | None = Field(default=None, ge=0)
    keep_within: Duration | None = None
    keep_within_hourly: Duration | None = None
    keep_within_daily: Duration | None = None
    keep_within_weekly: Duration | None = None
    keep_within_monthly: Duration | None = None
    keep_within_yearly: Duration | None = None
    keep_tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_rule(self) -> Retention:
        if not any(v for v in self.model_dump().values()):
            raise PlanReferenceError([((), "needs at least one keep_* rule (forget would remove every snapshot)")])
        return self

    def horizon(self, gap: timedelta | None) -> timedelta | None:
        return objectives.retention_horizon(
            gap=gap, last=self.keep_last or 0, hourly=self.keep_hourly or 0, daily=self.keep_daily or 0,
            weekly=self.keep_weekly or 0, monthly=self.keep_monthly or 0, yearly=self.keep_yearly or 0,
            within=self.keep_within, within_hourly=self.keep_within_hourly, within_daily=self.keep_within_daily,
            within_weekly=self.keep_within_weekly, within_monthly=self.keep_within_monthly,
            within_yearly=self.keep_within_yearly,
        )

    def rules(self) -> dict[str, Any]:
        """The rules that are set, with restic's flag names (``keep-daily``) as keys."""
        return {k.replace("_", "-"): v for k, v in self.model_dump().items() if v}


def _copy_shorthand(v: Any) -> Any:
    return {"repository": v} if isinstance(v, str) else v


class CopyTarget(_Model):
    """Another repository that receives the dataset's snapshots (written as a name or a mapping)."""

    repository: str
    schedule: ScheduleField | None = Field(default=None, description="default: right after each backup")
    max_lag: Duration | None = Field(default=None, description="how far behind the primary it may fall "
                                                                "(default: RPO + the copy schedule's gap)")
    retention: Retention | None = Field(default=None, description="default: the dataset's retention")


class DrillCheck(_Model):
    """One check a drill runs against the restored data. Exactly one of the kinds is given."""

    name: str = ""
    command: list[str] | str | None = Field(
        default=None, description="run in the restored copy of the snapshot's first path (COFFER_DRILL_PATH); "
                                  "COFFER_DRILL_ROOT is the restore directory itself")
    expect_exit: int = 0
    timeout: Duration = Field(default=timedelta(minutes=10))
    exists: PlanPath | None = Field(default=None, description="an original path that must exist in the restore")
    min_files: int | None = Field(default=None, ge=0, description="at least this many files restored")
    sql: str | None = Field(default=None, description="database types: query run on the restored database")
    expect: str | None = Field(default=None, description="expected output of `sql`")
    database: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DrillCheck:
        kinds = [k for k in ("command", "exists", "min_files", "sql") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise PlanReferenceError([((), "a check needs exactly one of command, exists, min_files, sql"
                                       + (f" (has {', '.join(kinds)})" if kinds else ""))])
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("command", "exists", "min_files", "sql") if getattr(self, k) is not None)

    @property
    def argv(self) -> list[str]:
        if self.command is None:
            return []
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.command is not None:
            return " ".join(self.argv)
        if self.exists is not None:
            return f"exists {self.exists}"
        if self.min_files is not None:
            return f"at least {self.min_files} files"
        return f"sql {self.sql}"


class DrillPolicy(_Model):
    """Restore drills: how often, which snapshots (by age), where, and what proves the restore works."""

    interval: Duration = Field(default=timedelta(days=30))
    min_age: Duration = Field(default=timedelta(days=7), description="pick snapshots at least this old")
    max_age: Duration = Field(default=timedelta(days=21), description="... and at most this old")
    repository: str | None = Field(default=None, description="drill from this repository (default: the primary)")
    scratch: PlanPath | None = Field(default=None, description="directory for the isolated restore (default: $TMPDIR)")
    checks: list[DrillCheck] = Field(default_factory=list)

    @model_validator(mode="after")
    def _window(self) -> DrillPolicy:
        if self.min_age > self.max_age:
            raise PlanReferenceError([(("max_age",), f"max_age {format_duration(self.max_age)} is below min_age "
                                                     f"{format_duration(self.min_age)}")])
        return self


class _DatasetBase(_Model):
    name: Name
    repository: str = Field(description="primary repository (by name)")
    copies: list[Annotated[CopyTarget, BeforeValidator(_copy_shorthand)]] = Field(default_factory=list)
    schedule: ScheduleField
    retention: Retention
    rpo: Duration | None = Field(default=None, description="recovery point objective: max age of the newest backup")
    rto: Duration | None = Field(default=None, description="recovery time objective: max time to restore everything")
    drill: DrillPolicy | None = None
    check: CheckPolicy = Field(default_factory=CheckPolicy)
    tags: list[str] = Field(default_factory=list, description="extra tags on every snapshot")
    host: str | None = Field(default=None, description="host name recorded in snapshots (default: the plan's)")
    full_size: Size | None = Field(default=None, description="full restore size for RTO extrapolation "
                                                             "(default: the newest snapshot's size)")

    @property
    def snapshot_tag(self) -> str:
        """The tag that marks this dataset's snapshots in every repository (copies keep tags)."""
        return DATASET_TAG_PREFIX + self.name

    @property
    def copy_repositories(self) -> list[str]:
        return [c.repository for c in self.copies]

    @property
    def all_repositories(self) -> list[str]:
        return [self.repository, *self.copy_repositories]

    def copy_limit(self, copy: CopyTarget) -> timedelta | None:
        """How old the newest snapshot on a copy may be before the copy counts as lagging."""
        if copy.max_lag is not None:
            return copy.max_lag
        if self.rpo is None:
            return None
        gap = copy.schedule.max_gap() if copy.schedule is not None else None
        return self.rpo + (gap or timedelta(0))


class FilesDataset(_DatasetBase):
    """Directories and files (application data, /etc, VM images, logs)."""

    type: Literal["files"]
    paths: list[PlanPath] = Field(min_length=1)
    excludes: list[str] = Field(default_factory=list, description="restic exclude patterns")
    exclude_caches: bool = False
    one_file_system: bool = False


def _databases(v: Any) -> Any:
    if v == "all" or v is None:
        return ()
    if isinstance(v, str):
        raise ValueError(f"use \"all\" or a list of database names, not {_q(v)}")
    return v


_DB_JSON = WithJsonSchema({"anyOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}}],
                           "description": "\"all\" or a list of database names"})


class _DbConnection(_Model):
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    socket: PlanPath | None = Field(default=None, description="unix socket directory or file")
    user: str | None = None
    password_file: PlanPath | None = None
    password_env: str | None = None
    databases: Annotated[tuple[str, ...], BeforeValidator(_databases), _DB_JSON] = ()

    @model_validator(mode="after")
    def _password(self) -> _DbConnection:
        if self.password_file and self.password_env:
            raise PlanReferenceError([(("password_env",), "give password_file or password_env, not both")])
        return self

    @property
    def all_databases(self) -> bool:
        return not self.databases


class PostgresDataset(_DatasetBase, _DbConnection):
    """PostgreSQL logical dumps (one per database plus globals). Runtime: the databases issue."""

    type: Literal["postgres"]


class PostgresWalDataset(_DatasetBase, _DbConnection):
    """PostgreSQL base backups with continuous WAL archiving (point-in-time recovery)."""

    type: Literal["postgres-wal"]


class MysqlDataset(_DatasetBase, _DbConnection):
    """MariaDB/MySQL logical dumps."""

    type: Literal["mysql"]


class SqliteDataset(_DatasetBase):
    """A SQLite database file, copied with the online backup API."""

    type: Literal["sqlite"]
    path: PlanPath


Dataset = Annotated[
    FilesDataset | PostgresDataset | PostgresWalDataset | MysqlDataset | SqliteDataset,
    Field(discriminator="type"),
]
AnyDataset = FilesDataset | PostgresDataset | PostgresWalDataset | MysqlDataset | SqliteDataset


# ------------------------------------------------------------------------------------ the plan
class PlanReferenceError(ValueError):
    """Problems a validator found, each with the path (below the validated object) of the option.

    Raised from validators; the loader reads the paths back (pydantic keeps the exception in the
    error's context) so the message points at the exact option and line, not at its parent.
    """

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


class Plan(_Model):
    """A backup plan: repositories, datasets, and where coffer keeps its own records."""

    version: Literal[1] = 1
    host: str | None = Field(default=None, description="host name recorded in snapshots (default: this host)")
    catalog: PlanPath | None = Field(default=None, description="SQLite catalog of runs, checks and drills "
                                     "(default: /var/lib/coffer/catalog.db as root, else ~/.local/state/coffer/)")
    repositories: list[Repository] = Field(min_length=1)
    datasets: list[Dataset] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Plan:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        repos: dict[str, int] = {}
        for i, r in enumerate(self.repositories):
            if r.name in repos:
                problems.append((("repositories", i, "name"), f"duplicate repository name {_q(r.name)} "
                                                              f"(also repositories[{repos[r.name]}])"))
            repos.setdefault(r.name, i)
        known = ", ".join(repos)
        seen: dict[str, int] = {}
        for i, d in enumerate(self.datasets):
            loc: tuple[str | int, ...] = ("datasets", i)
            if d.name in seen:
                problems.append(((*loc, "name"),
                                 f"duplicate dataset name {_q(d.name)} (also datasets[{seen[d.name]}])"))
            seen.setdefault(d.name, i)
            if d.repository not in repos:
                problems.append(((*loc, "repository"), f"unknown repository {_q(d.repository)} (known: {known})"))
            targets = {d.repository}
            for j, c in enumerate(d.copies):
                cloc = (*loc, "copies", j, "repository")
                if c.repository not in repos:
                    problems.append((cloc, f"unknown repository {_q(c.repository)} (known: {known})"))
                elif c.repository == d.repository:
                    problems.append((cloc, f"{_q(c.repository)} is the primary repository; a copy must go elsewhere"))
                elif c.repository in targets:
                    problems.append((cloc, f"{_q(c.repository)} is listed twice"))
                targets.add(c.repository)
            if d.drill is not None and d.drill.repository is not None and d.drill.repository not in targets:
                problems.append(((*loc, "drill", "repository"),
                                 f"{_q(d.drill.repository)} does not hold this dataset "
                                 f"(use one of: {', '.join(sorted(targets))})"))
        if problems:
            raise PlanReferenceError(problems)
        return self

    # -------------------------------------------------------------- lookups
    def repository(self, name: str) -> Repository:
        for r in self.repositories:
            if r.name == name:
                return r
        raise KeyError(name)

    def dataset(self, name: str) -> AnyDataset:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(name)

    def holders(self, dataset: AnyDataset) -> list[Holder]:
        return [self.repository(n).holder for n in dataset.all_repositories]

    def datasets_in(self, repository: str) -> Iterator[AnyDataset]:
        return (d for d in self.datasets if repository in d.all_repositories)

    def check_policy(self, repository: str) -> CheckPolicy:
        """A repository's own check settings, else the strictest of the datasets stored there."""
        repo = self.repository(repository)
        if repo.check is not None:
            return repo.check
        policies = [d.check for d in self.datasets_in(repository)]
        if not policies:
            return CheckPolicy()
        return CheckPolicy(interval=min(p.interval for p in policies), read=max(p.read for p in policies),
                           structure=any(p.structure for p in policies))

    def host_for(self, dataset: AnyDataset) -> str | None:
        return dataset.host or self.host

    def catalog_path(self) -> str:
        if self.catalog:
            return self.catalog
        if os.geteuid() == 0:
            return "/var/lib/coffer/catalog.db"
        state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return os.path.join(state, "coffer", "catalog.db")


def json_schema() -> dict[str, Any]:
    schema = Plan.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "coffer backup plan"
    return schema


def field_names() -> set[str]:
    """Every option name the schema knows (for "did you mean" suggestions)."""
    names: set[str] = set()
    for model in (Plan, Repository, CheckPolicy, Retention, CopyTarget, DrillCheck, DrillPolicy, FilesDataset,
                  PostgresDataset, PostgresWalDataset, MysqlDataset, SqliteDataset):
        names.update(model.model_fields)
    return names
