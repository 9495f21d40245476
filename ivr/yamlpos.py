"""YAML with positions, and JSON Schema errors mapped back to ``file:line:column``.

Config and flow files share this: ruamel.yaml keeps each mapping's and sequence's line/column (``.lc``),
so a schema error's path (``nodes/main/menu/timeout``) can be pointed at the exact place in the file.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from ivr.errors import Problem


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, list[Problem]]:
    """Parse one YAML file keeping positions; a syntax error becomes a Problem, never an exception."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, 1, 1, f"cannot read file: {exc}")]
    yaml = YAML(typ="rt")
    try:
        return yaml.load(text), []
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        return None, [Problem(name, line, col, f"YAML syntax error: {what}")]
    except Exception as exc:  # ruamel raises assorted types for odd bytes; report, don't crash
        return None, [Problem(name, 1, 1, f"YAML error: {exc}")]


def position(doc: Any, path: list[str | int] | tuple[str | int, ...], *, key: bool = False) -> tuple[int, int]:
    """1-based line/column of the node at ``path`` (or its key), falling back to the nearest parent."""
    node = doc
    best = (1, 1)
    if isinstance(node, CommentedMap | CommentedSeq):
        best = (node.lc.line + 1, node.lc.col + 1)
    for i, step in enumerate(path):
        last = i == len(path) - 1
        try:
            if isinstance(node, CommentedMap) and (real := _real_key(node, step)) is not None:
                line, col = node.lc.key(real) if (key and last) else node.lc.value(real)
                best = (line + 1, col + 1)
                node = node[real]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
                line, col = node.lc.item(step)
                best = (line + 1, col + 1)
                node = node[step]
            else:
                break
        except (KeyError, TypeError, AttributeError):
            break
    return best


def _real_key(node: CommentedMap, step: str | int) -> str | int | None:
    """The mapping's own key for a path step: YAML keys like ``1:`` are ints, schema paths say "1"."""
    if step in node:
        return step
    return next((k for k in node if str(k) == str(step)), None)


def key_position(doc: Any, path: list[str | int] | tuple[str | int, ...]) -> tuple[int, int]:
    return position(doc, path, key=True)


@cache
def schema(name: str, package: str = "ivr") -> dict[str, Any]:
    """A JSON Schema shipped in ``package`` (the same file editors use for completion)."""
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return json.loads(text)


def _plain(value: Any) -> Any:
    """ruamel's round-trip types → plain dict/list/scalars for jsonschema."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # dates, timestamps: validated as strings


def load_settings(path: Path, schema_name: str, package: str = "ivr") -> dict[str, Any]:
    """A settings file (the box's ivr.yaml, the center's central.yaml) read with positions and checked
    against its schema; ConfigError listing every problem, each at its file:line:column."""
    from ivr.errors import ConfigError

    name = str(path)
    if not path.is_file():
        raise ConfigError([Problem(name, 1, 1, "config file not found")])
    doc, problems = load_yaml(path, name)
    if problems:
        raise ConfigError(problems)
    doc = doc if doc is not None else {}
    if not isinstance(doc, dict):
        raise ConfigError([Problem(name, 1, 1, "the config is a mapping of settings")])
    problems = schema_problems(doc, schema_name, name, package=package)
    if problems:
        raise ConfigError(problems)
    return doc


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): where plain HTTP is allowed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def schema_problems(doc: Any, schema_name: str, file: str, package: str = "ivr") -> list[Problem]:
    """Every schema violation in ``doc``, each at the position of the offending value."""
    validator = jsonschema.Draft202012Validator(schema(schema_name, package))
    problems: list[Problem] = []
    for err in _leaf_errors(validator.iter_errors(_plain(doc))):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = _extra_keys(err)
            for k in extra:
                line, col = key_position(doc, [*path, k])
                allowed = sorted(err.schema.get("properties", {}))
                problems.append(Problem(file, line, col, f"unknown key '{k}' (allowed: {', '.join(allowed)})"))
            continue
        line, col = position(doc, path)
        where = "/".join(str(p) for p in path) or "top level"
        problems.append(Problem(file, line, col, f"{where}: {_message(err)}"))
    return problems


def _leaf_errors(errors: Iterator[jsonschema.ValidationError]) -> Iterator[jsonschema.ValidationError]:
    """For anyOf/oneOf failures report the branch that got furthest, not a wall of alternatives."""
    for err in errors:
        if err.validator in ("anyOf", "oneOf") and err.context:
            best = jsonschema.exceptions.best_match(err.context)
            yield from _leaf_errors(iter([best]))
        else:
            yield err


def _extra_keys(err: jsonschema.ValidationError) -> list[str]:
    props = err.schema.get("properties", {})
    patterns = err.schema.get("patternProperties", {})
    return [
        k
        for k in err.instance
        if k not in props and not any(re.search(p, k) for p in patterns)
    ]


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "required":
        return str(err.message).replace("is a required property", "is required")
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
    if err.validator == "type":
        return f"expected {err.validator_value}, got {type(err.instance).__name__} {err.instance!r}"
    return str(err.message)
