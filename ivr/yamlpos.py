"""YAML with positions, and JSON Schema errors mapped back to ``file:line:column``.

Config and flow files share this: ruamel.yaml keeps each mapping's and sequence's line/column (``.lc``),
so a schema error's path (``nodes/main/menu/timeout``) can be pointed at the exact place in the file.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode

from ivr.errors import Problem

STR_TAG = "tag:yaml.org,2002:str"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
INT_TAG = "tag:yaml.org,2002:int"
MERGE_TAG = "tag:yaml.org,2002:merge"
_PHONE = re.compile(r"\+[0-9]|0[0-9]")
"""``+15550100``, ``0044…``, ``007``: a dialed number or an extension, never the integer YAML would make of it
(15550100 loses the ``+`` and would route other calls)."""


class _DuplicateKeyError(MarkedYAMLError):
    """A key given twice in one mapping, compared as typed (so ``4`` and ``"4"`` are one key)."""


class _AsTypedConstructor(RoundTripConstructor):
    """Mapping keys as their source text, and dates and phone numbers as text: admins write ``007:`` and
    ``"4":`` as menu keys, and YAML's int/float/null/date readings of them (7, two keys 4, a crash on
    2027-02-30) are never meant. Values keep their YAML types (``timeout: 5`` is a number), except dates,
    which the checks parse with a message at the value, and numbers written with ``+`` or a leading 0."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, ScalarNode) and node.style is None and (
                node.tag == TIMESTAMP_TAG or (node.tag == INT_TAG and _PHONE.match(str(node.value)))):
            node.tag = STR_TAG
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: Any, maptyp: Any, deep: bool = False) -> Any:  # type: ignore[override]  # ruamel's own signature
        if isinstance(node, MappingNode):
            first: dict[str, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue
                if key_node.style is None and key_node.tag != MERGE_TAG:  # ``<<: *defaults`` still merges
                    key_node.tag = STR_TAG
                text = str(key_node.value)
                if text in first and key_node.tag == STR_TAG and first[text].tag == STR_TAG:
                    raise _DuplicateKeyError(
                        problem=f"duplicate key '{text}' (first at line {first[text].start_mark.line + 1}): "
                        "a key may appear once in a mapping; remove or rename one",
                        problem_mark=key_node.start_mark)
                first.setdefault(text, key_node)
        return super().construct_mapping(node, maptyp, deep=deep)


def load_yaml(path: Path, display: str | None = None, *, as_typed: bool = False) -> tuple[Any, list[Problem]]:
    """Parse one YAML file keeping positions; a syntax error becomes a Problem, never an exception.

    ``as_typed``: mapping keys and dates stay the text the author typed (flow files; see _AsTypedConstructor).
    """
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, 1, 1, f"cannot read file: {exc}")]
    yaml = YAML(typ="rt")
    if as_typed:
        yaml.Constructor = _AsTypedConstructor
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        line, col, what = _explain(exc, text)
        return None, [Problem(name, line, col, f"YAML syntax error: {what}")]
    except ValueError as exc:  # a value YAML could not construct (a date that does not exist, ...)
        return None, [Problem(name, 1, 1, f"YAML error: {exc}")]
    except Exception as exc:  # ruamel raises assorted types for odd bytes; report, don't crash
        return None, [Problem(name, 1, 1, f"YAML error: {exc}")]
    return doc, _comment_keys(name, text) if as_typed else []


def _explain(exc: MarkedYAMLError, text: str) -> tuple[int, int, str]:
    """Where a YAML error really is, and what to do about it. The parser notices many mistakes late (an
    unclosed quote or bracket at the end of the file, a stray ``*`` as "undefined alias"), so the opening
    it was inside is preferred to the place it gave up."""
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = str(exc.problem or "")
    context = str(exc.context or "")
    lines = text.splitlines()
    opened = _open_quote(lines, line, col)
    if opened is not None:
        qline, qcol, quote = opened
        start = lines[qline - 1][qcol - 1:].rstrip()
        start = start if len(start) <= 40 else start[:39] + "…"
        if qline < line:
            return qline, qcol, (f"unclosed quote: {start} is not closed on its line, so YAML read the text on "
                                 f"to line {line} as part of it (close it with {quote})")
        read = lines[qline - 1][qcol - 1:col - 1].rstrip()
        return qline, qcol, (f"unclosed quote: YAML read {read} as one text, up to the {quote} meant to open the "
                             f"next one (close this text with {quote})")
    cm = exc.context_mark
    if cm is not None and context.startswith("while parsing a flow") and cm.line + 1 < line:
        opening = lines[cm.line][cm.column] if cm.line < len(lines) and cm.column < len(lines[cm.line]) else "["
        closing = {"[": "]", "{": "}"}.get(opening, "]")
        return cm.line + 1, cm.column + 1, (f"unclosed '{opening}': no '{closing}' before line {line} "
                                            f"(close it with '{closing}' on this line)")
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    at_cm = ""
    if cm is not None and cm.line < len(lines):
        at_cm = lines[cm.line][cm.column:]
    if "alias" in context or "alias" in problem or at_cm.startswith("*"):
        if cm is not None and at_cm.startswith("*"):
            line, col = cm.line + 1, cm.column + 1
        word = re.match(r"\*[^\s:,\]}]*", (lines[line - 1][col - 1:] if 0 < line <= len(lines) else "*")) or None
        token = word.group(0) if word else "*"
        rest = lines[line - 1][col - 1 + len(token):].lstrip() if 0 < line <= len(lines) else ""
        what = "key" if rest.startswith(":") else "value"
        hint = f'quote the key: "{token}":' if what == "key" else f'quote it: "{token}"'
        return line, col, f"'{token}' starts a YAML alias (a reference to an &anchor): {hint}"
    if "\t" in problem or "'\\t'" in problem:
        return line, col, "a tab: YAML indents with spaces only (replace the tab with spaces)"
    if problem.startswith("mapping values are not allowed"):
        return line, col, ("unexpected ':' — this line is indented deeper than the key above it, or a value "
                           "has ': ' in it (line it up with the keys beside it, or quote the value)")
    if "expected <block end>" in problem:
        first = len(source) - len(source.lstrip()) + 1
        above = next(((i + 1, len(t) - len(t.lstrip()) + 1) for i in range(line - 2, -1, -1)
                      if (t := lines[i]).strip() and not t.lstrip().startswith("#")
                      and len(t) - len(t.lstrip()) + 1 > first), None)
        where = f": line {above[0]} starts in column {above[1]}, this one in column {first}" if above else ""
        return line, first, (f"this line does not line up with the keys around it{where} (keys of one mapping "
                             "start in the same column; check which of the two is indented wrongly)")
    if problem.startswith("could not find expected ':'") and cm is not None:
        key = lines[cm.line][cm.column:].split()[0] if cm.line < len(lines) and lines[cm.line][cm.column:].split() \
            else "the key"
        return cm.line + 1, cm.column + 1, (f"'{key}' has no ':' after it (write {key}: — or, if it is text that "
                                            "goes on from the line above, indent it further or quote it)")
    if isinstance(exc, _DuplicateKeyError):
        return line, col, problem
    return line, col, problem or context or "invalid YAML"


def _open_quote(lines: list[str], line: int, col: int) -> tuple[int, int, str] | None:
    """The quote an error at (line, col) is explained by: one still open there; one that closed on that
    line having opened on an earlier one (a forgotten closing quote swallows text up to the next quote); or
    one that closed just before the error around text that looks like YAML (``"a., b: "c"``: the quote meant
    to open ``c`` closed the first text instead).

    A small scanner of YAML's quoting (``"..."`` with backslash escapes, ``'...'`` with ``''``, ``#``
    comments): enough to see which quote a parse error happened inside."""
    quote: tuple[int, int, str] | None = None
    spanning: tuple[int, int, str] | None = None
    swallowed: tuple[int, int, str] | None = None
    for i, text in enumerate(lines[:line], 1):
        j = 0
        while j < len(text):
            c = text[j]
            if quote is not None:
                q = quote[2]
                if q == '"' and c == "\\":
                    j += 2
                    continue
                if c == q:
                    if q == "'" and j + 1 < len(text) and text[j + 1] == "'":
                        j += 2
                        continue
                    if i == line and quote[0] < line and spanning is None:
                        spanning = quote
                    inner = text[quote[1]:j] if quote[0] == i else ""
                    if i == line and j < col - 1 and not text[j + 1:col - 1].strip() and re.search(r"[,:] ", inner):
                        swallowed = quote
                    quote = None
            elif c == "#" and (j == 0 or text[j - 1] in " \t"):
                break
            elif c in "\"'" and (j == 0 or text[j - 1] in " \t[{,:-?"):
                if i == line and j >= col - 1:
                    break
                quote = (i, j + 1, c)
            j += 1
    if quote is not None and quote[0] < line:
        return quote
    return spanning or swallowed


_COMMENT_KEY = re.compile(r"^(\s*)#\s*:(\s|$)")


def _comment_keys(name: str, text: str) -> list[Problem]:
    """``#: x`` meant as the pound key: YAML reads it as a comment and the option silently disappears."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        m = _COMMENT_KEY.match(line)
        if m:
            out.append(Problem(name, i, len(m.group(1)) + 1, "'#' starts a YAML comment, so this line is ignored: "
                               'quote the key: "#":'))
    return out


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


Explain = Callable[[Any], str | None]
"""Says what is wrong with a value that failed a ``pattern`` (e.g. "hour 25 is not an hour"), or None."""


@dataclass(frozen=True)
class SchemaHints:
    """What a schema's own domain adds to its errors; the generic ones (quote it, write true or false, did you
    mean) are built in. The flow loader's know menus, nodes and transfers (``ivr/flows/hints.py``)."""

    patterns: Mapping[str, Explain] = field(default_factory=dict)
    """A schema ``pattern`` → the value's own problem, since "does not match '^([01][0-9]|2[0-3]):...'"
    tells an admin nothing."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """An unknown key → the allowed key it is usually written for, when no allowed key is spelled close."""
    unknown_key: Callable[[str, list[str]], str | None] | None = None
    """(key, allowed keys) → what to do with a key that is not allowed here (it belongs elsewhere)."""
    value: Callable[[jsonschema.ValidationError], str | None] | None = None
    """A schema error → a hint to add in parentheses."""


def schema_problems(doc: Any, schema_name: str, file: str, package: str = "ivr",
                    hints: SchemaHints | None = None, source: str | None = None) -> list[Problem]:
    """Every schema violation in ``doc``, each at the position of the offending value.

    ``hints`` add what the schema's domain knows; ``source``, the file's text, lets a hint see what YAML
    dropped (a ``#`` meant as a value is a comment)."""
    hints = hints or SchemaHints()
    validator = jsonschema.Draft202012Validator(schema(schema_name, package))
    problems: list[Problem] = []
    text_lines = source.splitlines() if source else []
    errors = list(_leaf_errors(validator.iter_errors(_plain(doc))))
    typos: set[tuple[tuple[str | int, ...], str]] = set()  # (mapping, required key) a typo'd key stands for
    for err in errors:
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            for k in _extra_keys(err):
                line, col = key_position(doc, [*path, k])
                close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.7)
                if not close and hints.aliases.get(k) in allowed:
                    close = [hints.aliases[k]]
                if close:
                    typos.add((tuple(path), close[0]))
                elsewhere = hints.unknown_key(k, allowed) if hints.unknown_key else None
                problems.append(Problem(file, line, col, _unknown_key(k, allowed, close, elsewhere)))
    for err in errors:
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            continue
        if err.validator == "required" and all((tuple(path), r) in typos for r in _missing(err)):
            continue  # "did you mean 'prompt'?" on the typo says it; "'prompt' is required" would say it twice
        if "propertyNames" in err.relative_schema_path:
            line, col = key_position(doc, [*path, err.instance])
            problems.append(Problem(file, line, col, _name_message(path, err)))
            continue
        # A missing key is missed by the mapping's own key (``menu:``), not by its first entry.
        # (And a key with nothing after it: its value's position would be the next line's.)
        keyed = path and (err.validator == "required" or err.instance is None)
        line, col = key_position(doc, path) if keyed else position(doc, path)
        where = "/".join(str(p) for p in path) or "top level"
        if err.instance is None and err.validator != "required":
            problem = Problem(file, line, col, f"{where}: {_nothing(text_lines, line)}")
            if problem not in problems:  # one empty value fails its type and its enum: say it once
                problems.append(problem)
            continue
        problems.append(Problem(file, line, col, f"{where}: {_message(err, hints)}"))
    return problems


def _nothing(lines: list[str], line: int) -> str:
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    if re.search(r":\s+#", source):
        return "nothing is given here: '#' starts a YAML comment (quote it: \"#\")"
    return "nothing is given here; if its content is on the lines below, indent those lines under it"


def _unknown_key(key: str, allowed: list[str], close: list[str], elsewhere: str | None) -> str:
    listed = f"(allowed: {', '.join(allowed)})"
    if close:
        return f"unknown key '{key}' — did you mean '{close[0]}'? {listed}"
    if elsewhere:
        return f"unknown key '{key}': {elsewhere} {listed}"
    return f"unknown key '{key}' {listed}"


def _missing(err: jsonschema.ValidationError) -> list[str]:
    return [r for r in err.validator_value if isinstance(err.instance, dict) and r not in err.instance]


def _name_message(path: list[str | int], err: jsonschema.ValidationError) -> str:
    pattern = err.validator_value if err.validator == "pattern" else None
    if path and path[-1] == "nodes" and pattern:
        return (f"node id '{err.instance}' is not a valid name: use letters, digits, _ and - "
                f"({pattern})")
    return f"key '{err.instance}': {err.message}"


def _leaf_errors(errors: Iterable[jsonschema.ValidationError]) -> Iterator[jsonschema.ValidationError]:
    """For anyOf/oneOf failures report the closest branch, not a wall of alternatives: one whose type fits
    the value (a string that is a bad time range is a bad time range, not "expected array"), and of those the
    one whose errors go deepest into the value (the dict that has a bad key, not "expected boolean")."""
    for err in errors:
        if err.validator in ("anyOf", "oneOf") and err.context:
            yield from _leaf_errors(_closest_branch(err.context))
        else:
            yield err


def _closest_branch(context: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for e in context:
        branches.setdefault(e.relative_schema_path[0] if e.relative_schema_path else 0, []).append(e)

    def rank(errs: list[jsonschema.ValidationError]) -> tuple[bool, int, int]:
        leaves = list(_leaf_errors(errs))
        return (not _misfit(errs), -len(leaves), max(len(e.relative_path) for e in errs))

    return max(branches.values(), key=rank)


def _misfit(errs: list[jsonschema.ValidationError]) -> bool:
    """The value is not even of this branch's kind: wrong type, not the one constant, or (a nested anyOf)
    of none of its branches' kinds."""
    for e in errs:
        if e.relative_path:
            continue
        if e.validator in ("type", "const"):
            return True
        if e.validator in ("anyOf", "oneOf") and e.context:
            nested: dict[Any, list[jsonschema.ValidationError]] = {}
            for c in e.context:
                nested.setdefault(c.relative_schema_path[0] if c.relative_schema_path else 0, []).append(c)
            if all(_misfit(b) for b in nested.values()):
                return True
    return False


def _extra_keys(err: jsonschema.ValidationError) -> list[str]:
    props = err.schema.get("properties", {})
    patterns = err.schema.get("patternProperties", {})
    return [
        k
        for k in err.instance
        if k not in props and not any(re.search(p, k) for p in patterns)
    ]


def _message(err: jsonschema.ValidationError, hints: SchemaHints) -> str:
    text = _plain_message(err, hints)
    extra = hints.value(err) if hints.value else None
    return f"{text} ({extra})" if extra and not text.endswith(")") else text  # one hint is enough


def _plain_message(err: jsonschema.ValidationError, hints: SchemaHints) -> str:
    if err.validator == "required":
        return str(err.message).replace("is a required property", "is required")
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
    if err.validator == "type":
        got = f"expected {_types(err.validator_value)}, got {type(err.instance).__name__} {err.instance!r}"
        wants_text = "string" in (err.validator_value if isinstance(err.validator_value, list)
                                  else [err.validator_value])
        if wants_text and isinstance(err.instance, int | float) and not isinstance(err.instance, bool):
            got += f' (quote it: "{err.instance}")'
        elif "boolean" in str(err.validator_value) and isinstance(err.instance, str):
            got += " (write true or false)"
        elif err.validator_value == "array" and isinstance(err.instance, str | int | float):
            got += f" (write it as a list: [{err.instance}])"
        elif err.validator_value in ("number", "integer") and isinstance(err.instance, str) and \
                (m := re.match(r"\s*([0-9]+(\.[0-9]+)?)\s*[a-z]*\s*$", err.instance)):
            got += f" (write just the number: {m.group(1)})"
        elif isinstance(err.instance, str) and (m := re.fullmatch(r"([A-Za-z_]+):(\S.*)", err.instance)):
            got += f" (put a space after the colon: {m.group(1)}: {m.group(2)})"
        return got
    if err.validator == "pattern" and err.validator_value in hints.patterns:
        why = hints.patterns[err.validator_value](err.instance)
        if why:
            return why
    if err.validator == "dependentRequired" and isinstance(err.instance, dict):
        for key, needs in err.validator_value.items():
            missing = [n for n in needs if key in err.instance and n not in err.instance]
            if missing:
                return f"{key}: needs {' and '.join(m + ':' for m in missing)} too"
    if err.validator == "minProperties" and not err.instance:
        return "is empty: give at least one entry"
    return str(err.message)


def _types(value: Any) -> str:
    return " or ".join(value) if isinstance(value, list) else str(value)
