"""Plan files: a valid plan loads into frozen values; every kind of mistake names file, line and option."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from coffer.config.load import PlanError, load_plan, parse_plan
from coffer.config.model import FilesDataset, Plan, Schedule, json_schema

REPO_ROOT = Path(__file__).resolve().parents[3]

VALID = """\
version: 1
catalog: state/catalog.db
repositories:
  - name: nvme
    url: repos/nvme
    password_env: PW
    media: nvme
  - name: offsite
    url: s3:https://s3.example.net/bucket
    password_file: secret.pass
    media: s3
    offsite: true
    immutable: true
datasets:
  - name: app
    type: files
    paths: [data/app]
    schedule: "0 2 * * *"
    retention:
      keep_daily: 90
    repository: nvme
    copies: [offsite]
    rpo: 25h
    rto: 4h
    drill:
      checks:
        - exists: data/app/index.html
  - name: pg
    type: postgres
    host: db1
    port: 5432
    user: backup
    password_file: /etc/coffer/pg.pass
    databases: all
    schedule: every 4h
    retention: {keep_daily: 30}
    repository: nvme
    copies: [offsite]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    p = write(tmp_path, text)
    with pytest.raises(PlanError) as ei:
        load_plan(p)
    return [str(x) for x in ei.value.problems]


def test_valid_plan_loads_frozen_with_paths_relative_to_the_plan(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, VALID))
    assert plan.catalog == str(tmp_path / "state" / "catalog.db")
    nvme = plan.repository("nvme")
    assert nvme.url == str(tmp_path / "repos" / "nvme")
    assert plan.repository("offsite").url == "s3:https://s3.example.net/bucket"  # URLs are left alone
    assert plan.repository("offsite").password_file == str(tmp_path / "secret.pass")
    app = plan.dataset("app")
    assert isinstance(app, FilesDataset)
    assert app.paths == [str(tmp_path / "data" / "app")]
    assert app.rpo == timedelta(hours=25)
    assert app.copies[0].repository == "offsite"
    assert app.drill is not None and app.drill.min_age == timedelta(days=7) and app.drill.max_age == timedelta(days=21)
    assert app.drill.checks[0].exists == str(tmp_path / "data" / "app" / "index.html")
    assert app.snapshot_tag == "dataset=app"
    assert app.schedule.max_gap() == timedelta(days=1)
    pg = plan.dataset("pg")
    assert pg.type == "postgres" and pg.all_databases  # type: ignore[union-attr]
    assert pg.schedule.max_gap() == timedelta(hours=4)
    with pytest.raises(ValidationError):
        app.rpo = timedelta(hours=1)  # type: ignore[misc]


def test_schedules() -> None:
    assert Schedule("0 2 * * 1-5").max_gap() == timedelta(days=3)  # the weekend
    assert Schedule("*/15 * * * *").max_gap() == timedelta(minutes=15)
    assert Schedule("@hourly").max_gap() == timedelta(hours=1)
    assert Schedule("every 90m").max_gap() == timedelta(minutes=90)
    assert Schedule("on-change").max_gap() is None


def test_json_schema_is_printable_and_names_every_dataset_type() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    for t in ("files", "postgres", "postgres-wal", "mysql", "sqlite"):
        assert f'"{t}"' in text
    assert "rpo" in text and "password_command" in text


@pytest.mark.parametrize("example", sorted((REPO_ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    plan = load_plan(example)
    assert isinstance(plan, Plan)


# ------------------------------------------------------------------------------------ mistakes
MISTAKES = [
    # (kind, edit as (old, new), expected "line: path: message" fragment)
    ("unknown key with a suggestion", ("      keep_daily: 90", "      keep-daily: 90"),
     ':20: datasets[0].retention.keep-daily: unknown option "keep-daily" (did you mean keep_daily?)'),
    ("bad cron expression", ('schedule: "0 2 * * *"', 'schedule: "0 25 * * *"'),
     ':18: datasets[0].schedule: bad cron expression: "0 25 * * *"'),
    ("cron with the wrong number of fields", ('schedule: "0 2 * * *"', 'schedule: "0 2 * *"'),
     ":18: datasets[0].schedule: not a schedule"),
    ("unknown repository", ("    repository: nvme\n    copies: [offsite]\n    rpo",
                            "    repository: nvmee\n    copies: [offsite]\n    rpo"),
     ':21: datasets[0].repository: unknown repository "nvmee" (known: nvme, offsite)'),
    ("RPO not a duration", ("rpo: 25h", "rpo: fast"), ':23: datasets[0].rpo: not a duration: "fast"'),
    ("missing required option", ("    url: repos/nvme\n", ""), ":4: repositories[0].url: missing required option"),
    ("wrong type", ("paths: [data/app]", "paths: data/app"), ':17: datasets[0].paths: must be a list, not "data/app"'),
    ("unknown dataset type", ("type: postgres", "type: oracle"),
     ':28: datasets[1]: unknown dataset type "oracle" (known: files, postgres, postgres-wal, mysql, sqlite)'),
    ("duplicate dataset name", ("  - name: pg", "  - name: app"),
     ':28: datasets[1].name: duplicate dataset name "app" (also datasets[0])'),
    ("copy to the primary", ("    copies: [offsite]\n    rpo", "    copies: [nvme]\n    rpo"),
     ':22: datasets[0].copies[0].repository: "nvme" is the primary repository'),
    ("no password source", ("    password_env: PW\n", ""),
     ":4: repositories[0]: needs exactly one of password_file, password_command, password_env"),
    ("drill age window inverted",
     ("      checks:\n        - exists", "      min_age: 30d\n      checks:\n        - exists"),
     ":25: datasets[0].drill.max_age: max_age 21d is below min_age 30d"),
    ("read fraction out of range",
     ("    copies: [offsite]\n    rpo: 25h", "    copies: [offsite]\n    check: {read: 150%}\n    rpo: 25h"),
     ':23: datasets[0].check.read: must be more than 0 and at most 100%'),
    ("retention without rules", ("      keep_daily: 90", "      keep_tags: []"),
     ":19: datasets[0].retention: needs at least one keep_* rule"),
    ("port out of range", ("port: 5432", "port: 99999"), ":31: datasets[1].port: 99999: input should be less than"),
    ("databases neither all nor a list", ("databases: all", "databases: some"),
     ':34: datasets[1].databases: use "all" or a list of database names, not "some"'),
    ("bad media name", ("media: s3", "media: Amazon S3"), ':11: repositories[1].media: not a media name: "Amazon S3"'),
    ("key given twice", ("    media: nvme\n", "    media: nvme\n    media: ssd\n"),
     ":8: repositories[0].media: given twice (first on line 7)"),
    ("YAML syntax error", ("    rto: 4h", "    rto: [4h"), ": YAML syntax error"),
    ("not true/false", ("offsite: true", "offsite: maybe"), ':12: repositories[1].offsite: not true or false: "maybe"'),
]


@pytest.mark.parametrize(("kind", "edit", "expected"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_file_line_and_option(tmp_path: Path, kind: str, edit: tuple[str, str],
                                                 expected: str) -> None:
    old, new = edit
    assert old in VALID, old
    found = problems(tmp_path, VALID.replace(old, new, 1))
    path = str(tmp_path / "plan.yaml")
    assert any(p.startswith(path) and expected in p for p in found), "\n".join(found)


def test_at_least_ten_kinds_of_mistakes_are_covered() -> None:
    assert len({m[0] for m in MISTAKES}) >= 10


def test_several_problems_are_reported_together_sorted_by_line(tmp_path: Path) -> None:
    text = VALID.replace("rpo: 25h", "rpo: soon").replace("media: s3", "media: S3").replace("port: 5432", "port: x")
    found = problems(tmp_path, text)
    assert len(found) == 3
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)


def test_empty_and_non_mapping_plans(tmp_path: Path) -> None:
    assert problems(tmp_path, "") == [f"{tmp_path / 'plan.yaml'}:1: the plan is empty"]
    assert "must be a mapping" in problems(tmp_path, "- a\n- b\n")[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    from coffer.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot read plan file"):
        load_plan(tmp_path / "nope.yaml")


def test_parse_plan_without_a_file_keeps_relative_paths() -> None:
    plan = parse_plan(textwrap.dedent(VALID), "inline")
    assert plan.repository("nvme").url == "repos/nvme"
