"""Global keys (issue 17 item 5): keys every menu of a flow answers — 0 for the operator, * back to the
previous menu, # to hear the menu again — unless the menu has its own option on the key or opts out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Env

FLOW = """
flow: keys
numbers: ["703"]
languages: [en]
timezone: America/New_York
start: main
global_keys: {"0": operator, "*": back, "#": repeat}
prompts:
  main: "Main menu. For orders press 1, for returns press 2."
  orders: "Orders. For a new order press 1, for an old one press 2."
  returns: "Returns. Press 0 to hear our returns policy."
  policy: "Returns are free for thirty days."
  quiet: "Enter one for yes."
  op: "Connecting you to an operator."
  bye: "Goodbye."
nodes:
  main:
    menu: {prompt: main, timeout: 2, options: {1: orders, 2: returns}}
    failure: bye
  orders:
    menu: {prompt: orders, timeout: 2, max_no_match: 2, options: {1: bye, 2: quiet}}
    failure: bye
  returns:
    menu: {prompt: returns, timeout: 2, options: {0: policy}}
    failure: bye
  policy:
    play: policy
    next: bye
  quiet:
    menu: {prompt: quiet, timeout: 2, max_no_match: 1, global_keys: false, options: {1: bye}}
    failure: bye
  operator:
    hangup: op
  bye:
    hangup: bye
"""


@pytest.fixture
def keys(env: Env) -> Env:
    (env.flows / "keys.yaml").write_text(FLOW, encoding="utf-8")
    return env


def simulate(env: Env, *keys: str) -> dict[str, Any]:
    r = env.ivr("simulate", "keys", *[a for k in keys for a in ("-i", k)], "--json")
    assert r.code == 0, r.err
    return r.json()  # type: ignore[no-any-return]


def said(r: dict[str, Any]) -> list[str]:
    return [line.removeprefix("  ♪ ") for line in r["transcript"] if line.startswith("  ♪ ")]


def test_zero_reaches_the_operator_from_any_menu(keys: Env) -> None:
    r = simulate(keys, "1", "0")
    assert r["path"] == ["main", "orders", "operator"] and "Connecting you to an operator." in said(r)


def test_star_goes_back_and_hash_repeats_without_counting(keys: Env) -> None:
    r = simulate(keys, "1", "#", "#", "*", "2", "0")
    # orders said three times (two repeats are not no-matches: max_no_match is 2), back to main, returns
    assert r["path"] == ["main", "orders", "main", "returns", "policy", "bye"]
    assert said(r).count("Orders. For a new order press 1, for an old one press 2.") == 3
    ev = keys.ivr("events", "--simulated", "--json", "--call", r["call_id"])
    events = [json.loads(line) for line in ev.out.splitlines()]
    assert [e["type"] for e in events].count("menu.repeat") == 2
    assert not any(e["type"] == "menu.no_match" for e in events)
    back = next(e for e in events if e["type"] == "menu.choice" and e["data"].get("global_key") == "back")
    assert back["data"]["node"] == "orders" and back["data"]["target"] == "main"


def test_a_menus_own_option_wins_and_a_menu_may_opt_out(keys: Env) -> None:
    assert simulate(keys, "2", "0")["path"] == ["main", "returns", "policy", "bye"]  # its own 0
    r = simulate(keys, "1", "2", "0")
    assert r["path"] == ["main", "orders", "quiet", "bye"]  # global_keys: false: 0 is a no-match there
    assert "no match for '0' (1 of 1)" in "\n".join(r["transcript"])


def test_back_in_the_first_menu_is_a_no_match(keys: Env) -> None:
    r = simulate(keys, "*", "1", "0")
    assert r["path"] == ["main", "orders", "operator"]
    assert "no match for '*' (1 of 3)" in "\n".join(r["transcript"])


def test_check_finds_a_wrong_global_key(keys: Env) -> None:
    (keys.flows / "keys.yaml").write_text(FLOW.replace('"0": operator', '"0": operater'), encoding="utf-8")
    r = keys.ivr("check", "--no-render")
    line = next(i for i, t in enumerate(FLOW.splitlines(), 1) if t.startswith("global_keys"))
    assert r.code == 1 and f"keys.yaml:{line}:" in r.out and "unknown node 'operater'" in r.out, r.out
    (keys.flows / "keys.yaml").write_text(FLOW.replace("  operator:\n", "  back:\n").replace('"0": operator',
                                                                                             '"0": back'),
                                          encoding="utf-8")
    r = keys.ivr("check", "--no-render")
    assert r.code == 1 and "'back' is both a node and the global key action back" in r.out, r.out
