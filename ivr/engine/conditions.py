"""Evaluate branch conditions against call variables. Pure: variables in, bool out."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ivr.flows.model import AllOf, AnyOf, Condition, NotOf, Test


def _num(x: object) -> float | None:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _compare(op: str, have: object, want: object) -> bool:
    a, b = _num(have), _num(want)
    if a is None or b is None:  # strings such as times "09:30" compare as text
        a, b = str(have), str(want)  # type: ignore[assignment]
    if op == "lt":
        return a < b  # type: ignore[operator]
    if op == "le":
        return a <= b  # type: ignore[operator]
    if op == "gt":
        return a > b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


def _equal(have: object, want: object) -> bool:
    a, b = _num(have), _num(want)
    if a is not None and b is not None:
        return a == b
    return str(have) == str(want)


def evaluate(cond: Condition, variables: Mapping[str, object]) -> bool:
    if isinstance(cond, AllOf):
        return all(evaluate(c, variables) for c in cond.items)
    if isinstance(cond, AnyOf):
        return any(evaluate(c, variables) for c in cond.items)
    if isinstance(cond, NotOf):
        return not evaluate(cond.item, variables)
    assert isinstance(cond, Test)
    have = variables.get(cond.var)
    if cond.op == "is_set":
        return (have not in (None, "")) == bool(cond.value)
    if have is None:
        return cond.op == "not_equals"
    if cond.op == "equals":
        return _equal(have, cond.value)
    if cond.op == "not_equals":
        return not _equal(have, cond.value)
    if cond.op == "in":
        return any(_equal(have, v) for v in cond.value)  # type: ignore[attr-defined]
    if cond.op == "matches":
        return re.search(str(cond.value), str(have)) is not None
    if cond.op == "starts_with":
        return str(have).startswith(str(cond.value))
    return _compare(cond.op, have, cond.value)


def interpolate(template: object, variables: Mapping[str, object]) -> object:
    """``"${caller}"`` → the variable's value; non-strings pass through."""
    if not isinstance(template, str):
        return template
    return re.sub(r"\$\{([^}]*)\}", lambda m: str(variables.get(m.group(1), "")), template)
