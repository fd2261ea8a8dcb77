"""Plan files: YAML in, a validated frozen :class:`~coffer.config.model.Plan` out, or errors that
say *where*: ``plan.yaml:12: datasets[0].rpo: not a duration: "fast"``.

PyYAML's ``safe_load`` forgets positions, and pydantic only knows option paths. So the YAML is
composed into nodes first, and one walk builds both the data and a map from option path to line;
pydantic's error locations are then looked up in that map. The walk also refuses what YAML itself
lets slip: a key given twice (the later one would silently win), and non-text keys.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from coffer.config.model import DATASET_TYPES, Plan, PlanReferenceError, field_names
from coffer.errors import ConfigError

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in a plan file: where (file, line, option path) and what."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PlanError(ConfigError):
    """The plan file is not valid; ``problems`` lists every mistake found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid plan"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more, hint="run `coffer plan check` to see every problem")


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file. Raises :class:`PlanError` naming file, line and option."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read plan file {name}: {e.strerror}",
                          hint="give the plan with --plan FILE or set COFFER_PLAN") from None
    except UnicodeDecodeError as e:
        raise PlanError([Problem(name, 0, "", f"not UTF-8 text: {e.reason}")]) from None
    base_dir = os.path.dirname(os.path.abspath(name))
    return parse_plan(text, name, base_dir=base_dir)


def parse_plan(text: str, filename: str = "<plan>", *, base_dir: str | None = None) -> Plan:
    data, lines = _compose(text, filename)
    if data is None:
        raise PlanError([Problem(filename, 1, "", "the plan is empty")])
    if not isinstance(data, dict):
        raise PlanError([Problem(filename, lines.get((), 1), "", "the plan must be a mapping of options "
                                                               "(repositories:, datasets:, ...)")])
    try:
        return Plan.model_validate(data, context={"base_dir": base_dir} if base_dir else None)
    except ValidationError as e:
        raise PlanError(_problems(e, data, lines, filename)) from None


# ------------------------------------------------------------------------------------ YAML with lines
class _Loader(yaml.SafeLoader):
    pass


def _compose(text: str, filename: str) -> tuple[Any, dict[Loc, int]]:
    loader = _Loader(text)
    loader.name = filename
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Loc, int] = {}
        problems: list[Problem] = []
        data = _build(loader, node, (), lines, problems, filename)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = e.problem or e.context or "invalid YAML"
        raise PlanError([Problem(filename, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as e:
        raise PlanError([Problem(filename, 0, "", f"YAML error: {e}")]) from None
    finally:
        loader.dispose()
    if problems:
        raise PlanError(problems)
    return data, lines


def _build(loader: _Loader, node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem],
           filename: str) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            kline = knode.start_mark.line + 1
            if not isinstance(key, str):
                problems.append(Problem(filename, kline, _fmt_loc(loc), f"option names must be text, not {key!r}"))
                continue
            if key in out:
                problems.append(Problem(filename, kline, _fmt_loc((*loc, key)),
                                        f"given twice (first on line {lines[(*loc, key)]})"))
                continue
            lines[(*loc, key)] = kline
            out[key] = _build(loader, vnode, (*loc, key), lines, problems, filename)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*loc, i), lines, problems, filename) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# ------------------------------------------------------------------------------------ errors
def _problems(err: ValidationError, data: Any, lines: dict[Loc, int], filename: str) -> list[Problem]:
    out: list[Problem] = []
    for e in err.errors(include_url=False):
        loc = _strip_tags(tuple(e["loc"]), data)
        exc = (e.get("ctx") or {}).get("error")
        if isinstance(exc, PlanReferenceError):
            for sub, msg in exc.problems:
                full = (*loc, *sub)
                out.append(Problem(filename, _line(full, lines), _fmt_loc(full), msg))
            continue
        out.append(Problem(filename, _line(loc, lines), _fmt_loc(loc), _message(e, loc)))
    out.sort(key=lambda p: (p.line, p.path))
    return out


def _strip_tags(loc: Loc, data: Any) -> Loc:
    """Drop the tag pydantic inserts for a tagged union (``datasets.0.files.rpo``)."""
    out: list[str | int] = []
    cur = data
    for comp in loc:
        if isinstance(cur, dict) and isinstance(comp, str) and comp not in cur and cur.get("type") == comp:
            continue
        out.append(comp)
        if isinstance(cur, dict) and isinstance(comp, str):
            cur = cur.get(comp)
        elif isinstance(cur, list) and isinstance(comp, int) and 0 <= comp < len(cur):
            cur = cur[comp]
        else:
            cur = None
    return tuple(out)


def _line(loc: Loc, lines: dict[Loc, int]) -> int:
    """The line of the option, or of the nearest enclosing one that exists (for a missing option)."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 0


def _fmt_loc(loc: Loc) -> str:
    s = ""
    for comp in loc:
        s += f"[{comp}]" if isinstance(comp, int) else (f".{comp}" if s else comp)
    return s


def _quote(v: Any) -> str:
    try:
        return json.dumps(v, default=str)
    except (TypeError, ValueError):
        return repr(v)


def _message(e: Any, loc: Loc) -> str:
    t = e["type"]
    v = e.get("input")
    ctx = e.get("ctx") or {}
    if t == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(key.replace("-", "_"), sorted(field_names()), n=1, cutoff=0.6)
        return f"unknown option {_quote(key)}" + (f" (did you mean {close[0]}?)" if close else "")
    if t == "missing":
        return "missing required option"
    if t in ("value_error", "assertion_error"):
        msg = str(ctx.get("error", e["msg"]))
        return msg
    if t == "union_tag_invalid":
        return f"unknown dataset type {_quote(ctx.get('tag'))} (known: {', '.join(DATASET_TYPES)})"
    if t == "union_tag_not_found":
        return f"missing \"type\" (one of: {', '.join(DATASET_TYPES)})"
    if t == "literal_error":
        return f"must be {ctx.get('expected')}, not {_quote(v)}"
    if t in ("int_parsing", "int_type", "int_from_float"):
        return f"not a whole number: {_quote(v)}"
    if t in ("bool_parsing", "bool_type"):
        return f"not true or false: {_quote(v)}"
    if t == "string_type":
        if isinstance(v, bool):
            return (f"must be text, not {_quote(v)} (YAML reads unquoted yes/no/on/off as true/false: "
                    f"put the value in quotes)")
        return f"must be text, not {_quote(v)}"
    if t in ("list_type", "tuple_type"):
        return f"must be a list, not {_quote(v)}"
    if t in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of options, not {_quote(v)}"
    if t == "string_pattern_mismatch":
        if loc and loc[-1] == "media":
            return f"not a media name: {_quote(v)} (lower-case letters and digits, e.g. nvme, hdd, nfs, s3, tape)"
        return f"not a valid name: {_quote(v)} (letters, digits, '.', '_' and '-')"
    if t == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} entr{'y' if ctx.get('min_length', 1) == 1 else 'ies'}"
    if t in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{_quote(v)}: {e['msg'][0].lower()}{e['msg'][1:]}"
    return f"{e['msg']} (got {_quote(v)})"
