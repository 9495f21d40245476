"""Counters and arithmetic in ``set`` (issue 17 item 9): a PIN asked at most three times by a counter the flow
keeps itself, a price computed from collected digits, bad values and bad expressions — through the real
``ivr simulate`` and ``ivr check``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ivr.flows.arith import NotComputable, counter, parse
from tests.conftest import Env

FLOW = """
flow: counting
numbers: ["700"]
languages: [en]
timezone: America/New_York
start: ask
prompts:
  ask: "Enter your PIN, then press pound."
  locked: "Too many tries. Goodbye."
  total: "Your total is ready."
  bye: "Goodbye."
nodes:
  ask:
    collect: {prompt: ask, into: pin, min_digits: 4, max_digits: 4, timeout: 3}
    next: count
    failure: count
  count:
    set: {tries: {add: 1}}
    next: right
  right:
    branch:
      - {if: {var: pin, equals: "1234"}, goto: price}
      - {if: {var: tries, ge: 3}, goto: locked}
    next: ask
  price:
    set: {qty: 3, total: {expr: "(${qty} * 250 + ${tries}) / 2"}, half: {expr: "7 // 2"}}
    next: said
  said:
    play: total
    next: bye
  locked:
    hangup: locked
  bye:
    hangup: bye
"""


@pytest.fixture
def counting(env: Env) -> Env:
    (env.flows / "counting.yaml").write_text(FLOW, encoding="utf-8")
    return env


def run(env: Env, *keys: str) -> dict[str, Any]:
    args = [a for k in keys for a in ("-i", k)]
    r = env.ivr("simulate", "counting", *args, "--json")
    assert r.code == 0, r.err
    return r.json()  # type: ignore[no-any-return]


def test_a_counter_ends_the_retries_after_three(counting: Env) -> None:
    r = run(counting, "1111#", "2222#", "3333#", "1234#")
    assert r["detail"] == "locked" and r["variables"]["tries"] == 3
    assert r["path"].count("ask") == 3  # the fourth PIN is never asked for


def test_arithmetic_on_collected_and_counted_values(counting: Env) -> None:
    r = run(counting, "9999#", "1234#")
    assert r["detail"] == "bye"
    assert r["variables"]["tries"] == 2
    assert r["variables"]["total"] == 376  # (3 * 250 + 2) / 2, a whole number stays whole
    assert r["variables"]["half"] == 3


def test_a_value_that_is_not_a_number_leaves_the_variable_empty_and_says_why(counting: Env) -> None:
    text = FLOW.replace('set: {tries: {add: 1}}', 'set: {tries: {add: "${lang}"}}')
    (counting.flows / "counting.yaml").write_text(text, encoding="utf-8")
    r = counting.ivr("simulate", "counting", "-i", "1111#", "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["variables"]["tries"] == ""
    ev = counting.ivr("events", "--simulated", "--json", "--call", result["call_id"], "--type", "vars.set")
    [first, *_] = [json.loads(line) for line in ev.out.splitlines()]
    assert first["data"]["errors"] == {"tries": "lang is 'en', not a number"}


@pytest.mark.parametrize(("expr", "message"), [
    ("__import__('os').system('true')", "is not allowed"),
    ("2 ** 99999", "'2 ** 99999' is not allowed"),
    ("${qty} *", "is not an expression"),
    ("abs(${qty})", "is not allowed"),
])
def test_check_rejects_an_expression_at_its_line(counting: Env, expr: str, message: str) -> None:
    text = FLOW.replace('(${qty} * 250 + ${tries}) / 2', expr.replace('"', '\\"'))
    (counting.flows / "counting.yaml").write_text(text, encoding="utf-8")
    r = counting.ivr("check", "--no-render")
    assert r.code == 1
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "expr:" in t and "qty: 3" in t)
    assert f"counting.yaml:{line}:" in r.out and message in r.out, r.out


def test_check_names_an_unknown_variable_in_an_expression(counting: Env) -> None:
    (counting.flows / "counting.yaml").write_text(FLOW.replace("${tries}) / 2", "${triez}) / 2"), encoding="utf-8")
    r = counting.ivr("check", "--no-render")
    assert r.code == 1 and "unknown variable 'triez' (did you mean 'tries'?)" in r.out, r.out


def test_parse_and_evaluate() -> None:
    assert parse("${a} % 4 + -${b}").evaluate({"a": "10", "b": 1.5}) == 0.5
    assert counter("n", -1).evaluate({}) == -1
    with pytest.raises(NotComputable, match="division by zero"):
        parse("1 / ${z}").evaluate({"z": "0"})
    with pytest.raises(NotComputable, match="too large"):
        parse("${a} * ${a} * ${a}").evaluate({"a": "1e6"})
    with pytest.raises(ValueError, match="not a number or a"):
        counter("n", "lots")
