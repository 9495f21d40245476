"""Counters and arithmetic in ``set`` (``tries: {add: 1}``, ``total: {expr: "${price} * ${qty}"}``). Pure.

An expression is parsed once, when the flow loads (so ``ivr check`` reports a bad one at file:line), by
Python's own parser with only numbers, ``${variables}``, ``+ - * / // %`` and parentheses admitted: no
names, calls, powers or attributes, so no flow file can run code or build a huge number. Values are read
as numbers when the call gets there; a variable that is not set counts as 0 (a counter starts itself), one
that is not a number makes the result empty and says why.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_VAR = re.compile(r"\$\{([^}]*)\}")
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
MAX_MAGNITUDE = 1e15
"""Results beyond this are refused: money and counters never need more, and floats stop being exact."""


class NotComputable(ValueError):
    """A value the expression cannot use (not a number, division by zero, too large): the reason, said plainly."""


@dataclass(frozen=True)
class Arithmetic:
    """A ``set`` value computed from variables: ``{add: N}`` on the variable itself, or ``{expr: ...}``."""

    source: str
    """The expression as parsed, ``${name}`` placeholders standing for variables."""
    tree: ast.Expression
    variables: tuple[str, ...]
    """The variables it reads, in the placeholders' order (``_v0``, ``_v1`` …)."""

    def evaluate(self, variables: Mapping[str, object]) -> int | float:
        values = [_number(name, variables.get(name)) for name in self.variables]
        result = _eval(self.tree.body, values)
        if not math.isfinite(result) or abs(result) > MAX_MAGNITUDE:
            raise NotComputable(f"{self.source} is too large")
        return int(result) if float(result).is_integer() else round(result, 6)


def parse(source: str) -> Arithmetic:
    """``"${a} + 2 * ${b}"`` → :class:`Arithmetic`; ValueError with what is wrong, for ``ivr check``."""
    names: list[str] = []

    def placeholder(m: re.Match[str]) -> str:
        names.append(m.group(1).strip())
        return f"_v{len(names) - 1}"

    text = _VAR.sub(placeholder, source)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"'{source}' is not an expression ({exc.msg}): write numbers and ${{variables}} with "
                         "+ - * / // % and parentheses, e.g. \"${price} * ${qty}\"") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.operator | ast.unaryop):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            continue
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            continue
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            continue
        if isinstance(node, ast.Name) and re.fullmatch(r"_v\d+", node.id) and isinstance(node.ctx, ast.Load):
            continue
        if isinstance(node, ast.Load):
            continue
        what = ast.get_source_segment(text, node) or type(node).__name__
        what = re.sub(r"_v(\d+)", lambda m: f"${{{names[int(m.group(1))]}}}", what)
        raise ValueError(f"'{source}': '{what}' is not allowed (numbers, ${{variables}}, + - * / // % and "
                         "parentheses only; a variable is written ${name})")
    return Arithmetic(source, tree, tuple(names))


def counter(name: str, step: object) -> Arithmetic:
    """``{add: N}`` on variable ``name``: N a number or ``"${other}"`` (negative counts down)."""
    text = str(step).strip()
    if isinstance(step, bool) or not isinstance(step, int | float | str) or not (
            _VAR.fullmatch(text) or re.fullmatch(r"[-+]?\d+(\.\d+)?", text)):
        raise ValueError(f"add: '{step}' is not a number or a ${{variable}} (e.g. add: 1, add: -1, "
                         "add: \"${points}\")")
    return parse(f"${{{name}}} + ({text})")


def _number(name: str, value: object) -> float:
    if value is None or value == "":
        return 0.0  # a counter not yet set starts at 0
    if isinstance(value, bool):
        raise NotComputable(f"{name} is {value}, not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NotComputable(f"{name} is '{value}', not a number") from None
    if not math.isfinite(number):
        raise NotComputable(f"{name} is '{value}', not a number")
    return number


def _eval(node: ast.expr, values: list[float]) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # parse() admitted nothing else
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[int(node.id[2:])]
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, values))
    assert isinstance(node, ast.BinOp)
    left, right = _eval(node.left, values), _eval(node.right, values)
    if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
        raise NotComputable("division by zero")
    result = _BINARY[type(node.op)](left, right)
    if not math.isfinite(result) or abs(result) > MAX_MAGNITUDE:
        raise NotComputable("the result is too large")
    return result
