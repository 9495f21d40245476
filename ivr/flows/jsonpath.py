"""The small JSONPath the ``http`` node maps response fields with: ``$``, ``.name``, ``['name']``, ``[index]``.

Enough to reach a field of a JSON document (``$.account.balance``, ``$.invoices[0].due``, ``$['due-date']``);
no wildcards, filters or slices, so every path names at most one value and ``ivr check`` can parse each one at
its line. Pure: a parse at load time, a walk at run time.
"""

from __future__ import annotations

import re

Step = str | int
"""A key of an object, or an index of an array (negative counts from the end)."""

_NAME = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)")
_INDEX = re.compile(r"\[(-?[0-9]+)\]")
_QUOTED = re.compile(r"\[(?:'([^']*)'|\"([^\"]*)\")\]")


class PathError(ValueError):
    """A path that does not parse; the message says where and what is expected."""


def parse(path: str) -> tuple[Step, ...]:
    """``$.a.b[0]['c d']`` → ``("a", "b", 0, "c d")``."""
    if not path.startswith("$"):
        raise PathError(f"'{path}' must start with $ (e.g. $.balance or $.invoices[0].due)")
    steps: list[Step] = []
    i = 1
    while i < len(path):
        for pattern in (_NAME, _INDEX, _QUOTED):
            m = pattern.match(path, i)
            if m is None:
                continue
            if pattern is _NAME:
                steps.append(m.group(1))
            elif pattern is _INDEX:
                steps.append(int(m.group(1)))
            else:
                steps.append(m.group(1) if m.group(1) is not None else m.group(2))
            i = m.end()
            break
        else:
            raise PathError(f"'{path}': cannot read from column {i + 1} ('{path[i:]}'); use .name, [index] or "
                            "['name'] (no wildcards or filters)")
    return tuple(steps)


_MISSING = object()


def find(doc: object, steps: tuple[Step, ...]) -> object:
    """The value at ``steps``, or raise KeyError naming the first step that is not there."""
    value = doc
    for n, step in enumerate(steps):
        got: object = _MISSING
        if isinstance(step, int) and isinstance(value, list):
            if -len(value) <= step < len(value):
                got = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            got = value.get(step, _MISSING)
        if got is _MISSING:
            raise KeyError(render(steps[:n + 1]))
        value = got
    return value


def render(steps: tuple[Step, ...]) -> str:
    out = "$"
    for s in steps:
        if isinstance(s, int):
            out += f"[{s}]"
        elif _NAME.fullmatch("." + s):
            out += "." + s
        else:
            out += f"['{s}']"
    return out
