"""What ``ivr check`` adds to a flow file's schema errors: the flow language's own advice.

The schema says *what* is wrong ("expected object, got int 2000"); these say what the admin most likely meant
(``transfer: {extension: 2000}``), in the flow language's words. Pure: schema errors in, text out.
"""

from __future__ import annotations

from functools import cache

import jsonschema

from ivr.flows import hours
from ivr.yamlpos import SchemaHints, schema

SCHEMA = "flows/schema.json"
NODE_SETTINGS = ("next", "failure", "description", "resolved")
"""A node's keys beside its one action."""


def _bad_flow_name(value: object) -> str:
    return f"'{value}' is not a valid name: use letters, digits, _ and -, starting with a letter"


def _bad_name(value: object) -> str:
    return f"'{value}' is not a valid name: use letters, digits, _ and -, starting with a letter or _"


def _bad_lang(value: object) -> str:
    return f"'{value}' is not a language code: use a lowercase ISO 639 code such as en, es or ko"


def _unknown_key(key: str, allowed: list[str]) -> str | None:
    """A key that is fine, one level up or down from where it was written."""
    if key in NODE_SETTINGS and "next" not in allowed:
        return f"{key}: belongs to the node, beside its action, not inside it"
    if "options" in allowed and all(c in "0123456789*#" for c in key) and 1 <= len(key) <= 4:
        return "a menu option goes under options:, indented like the other options"
    return None


def _value(err: jsonschema.ValidationError) -> str | None:
    path = list(err.absolute_path)
    if err.validator == "type" and err.validator_value == "object":
        if path[-1:] == ["transfer"]:
            return f"write transfer: {{extension: {err.instance}}} or transfer: {{queue: {err.instance}}}"
        if len(path) == 2 and path[0] == "nodes":
            return "a node is a mapping with one action, e.g. {goto: next_node} or {hangup: true}"
    if err.validator == "dependentRequired" and not path:
        return "a flow has flow:, start:, nodes:"
    return None


@cache
def flow_hints() -> SchemaHints:
    top = schema(SCHEMA)
    defs = top["$defs"]
    patterns = {
        defs["time_range"]["pattern"]: hours.range_problem,
        defs["date"]["pattern"]: hours.date_problem,
        top["properties"]["flow"]["pattern"]: _bad_flow_name,
        defs["name"]["pattern"]: _bad_name,
        defs["lang"]["pattern"]: _bad_lang,
    }
    return SchemaHints(patterns=patterns, aliases={"next": "goto"}, unknown_key=_unknown_key, value=_value)
