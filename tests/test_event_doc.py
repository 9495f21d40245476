"""docs/event-log.md against the code: every event type the code can write is documented with its fields, and
nothing documented is gone, so the doc a central analyst reads never drifts from the log (issue 13)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "event-log.md"
TYPE = re.compile(r"[a-z_]+(\.[a-z_]+)*")
#: call → index of the event type among its positional arguments: ``rec.event("t", ...)``,
#: ``ctx.event("t", ...)``, ``events.append("t", call_id, ...)``, ``self._event(db, "t", call_id, ...)``,
#: ``self._row("t", call_id, {...})``
EMITTERS = {"event": 0, "append": 0, "_event": 1, "_row": 0}
#: fields ``CallContext.event`` adds to every event with a ``node`` (ivr/engine/context.py)
NODE_EVENT_FIELDS = {"flow", "flow_version"}


def emitted() -> tuple[dict[str, set[str]], set[str]]:
    """Event type → field names, from every call site in ivr/; and the types some of whose fields are not
    literal (``**data``), whose documented fields can only be checked one way."""
    fields: dict[str, set[str]] = {}
    open_ended: set[str] = set()
    for path in sorted((REPO / "ivr").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            at = EMITTERS.get(node.func.attr)
            if at is None or len(node.args) <= at or (node.func.attr == "append" and len(node.args) < 2):
                continue
            arg = node.args[at]
            options = [arg.body, arg.orelse] if isinstance(arg, ast.IfExp) else [arg]
            types = [o.value for o in options if isinstance(o, ast.Constant) and isinstance(o.value, str)]
            types = [t for t in types if TYPE.fullmatch(t)]
            if not types:
                continue
            names: set[str] = set()
            opaque = False
            for kw in node.keywords:
                if kw.arg is not None:
                    names.add(kw.arg)
                elif isinstance(kw.value, ast.Dict):
                    names |= {k.value for k in kw.value.keys if isinstance(k, ast.Constant)}
                else:
                    opaque = True
            for extra in node.args[at + 1:]:
                if isinstance(extra, ast.Dict):
                    names |= {k.value for k in extra.keys if isinstance(k, ast.Constant)}
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "ctx" and "node" in names:
                names |= NODE_EVENT_FIELDS
            for t in types:
                fields.setdefault(t, set()).update(names)
                if opaque:
                    open_ended.add(t)
    return fields, open_ended


def documented() -> list[tuple[list[str], set[str]]]:
    """The ``| type | fields | meaning |`` rows under "Event types": the backticked types of the first column
    (``a`` / ``b``: types that share a row) and the comma-separated field names of the second."""
    text = DOC.read_text(encoding="utf-8")
    text = text[text.index("## Event types"):text.index("## Schema migrations")]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("| `"):
            continue
        rows.append((re.findall(r"`([^`]+)`", cells[0]), {n.strip() for n in cells[1].split(",") if n.strip()}))
    return rows


def test_every_event_the_code_writes_is_documented_and_nothing_more() -> None:
    code, _ = emitted()
    doc = {t for types, _ in documented() for t in types}
    assert len(code) > 60, sorted(code)  # the collector still finds the call sites
    assert sorted(set(code) - doc) == [], "written but not in docs/event-log.md"
    assert sorted(doc - set(code)) == [], "in docs/event-log.md but never written"


def test_every_field_is_documented_for_its_type() -> None:
    code, open_ended = emitted()
    rows = documented()
    missing = {t: sorted(code.get(t, set()) - names) for types, names in rows for t in types
               if code.get(t, set()) - names}
    assert missing == {}, "fields written but not documented"
    # a row shared by types documents the union of their fields; opaque ``**data`` writes are checked one way
    gone = {"/".join(types): sorted(names - set().union(*(code.get(t, set()) for t in types)))
            for types, names in rows if not open_ended & set(types)
            and names - set().union(*(code.get(t, set()) for t in types))}
    assert gone == {}, "fields documented but never written"
