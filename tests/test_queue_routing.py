"""Queue-aware routing (issue 17 item 6): a flow branches on the queue's live state — the wait a caller
joining now would have, agents free, callers waiting — and unknown state is never taken for a figure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ivr.callbacks.ewt import EwtEstimate
from ivr.engine.steps import LiveVariables
from tests.conftest import Env

FLOW = """
flow: routed
numbers: ["701"]
languages: [en]
timezone: America/New_York
start: route
prompts:
  web: "Our lines are busy. You can also reach us on our web site."
  bye: "Goodbye."
nodes:
  route:
    branch:
      - if: {var: queue.support.wait, gt: 900}
        goto: long
      - if: {var: queue.support.wait, is_set: false}
        goto: unknown
    next: short
  long:
    play: web
    next: bye
  unknown:
    hangup: bye
  short:
    hangup: bye
  bye:
    hangup: bye
"""


@pytest.fixture
def routed(env: Env) -> Env:
    (env.flows / "routed.yaml").write_text(FLOW, encoding="utf-8")
    return env


def simulate(env: Env, *args: str) -> dict[str, Any]:
    r = env.ivr("simulate", "routed", *args, "--json")
    assert r.code == 0, r.err
    return r.json()  # type: ignore[no-any-return]


def test_a_long_queue_routes_elsewhere_and_the_event_says_why(routed: Env) -> None:
    r = simulate(routed, "--wait", "support=1200")
    assert r["path"] == ["route", "long", "bye"]
    assert "  ♪ Our lines are busy. You can also reach us on our web site." in r["transcript"]
    ev = routed.ivr("events", "--simulated", "--json", "--call", r["call_id"], "--type", "branch.taken")
    [taken] = [json.loads(line) for line in ev.out.splitlines()]
    assert taken["data"]["case"] == 1 and taken["data"]["live"] == {"queue.support.wait": 1200}


def test_a_short_queue_and_an_unknown_one(routed: Env) -> None:
    assert simulate(routed, "--wait", "support=120")["path"] == ["route", "short"]
    # no estimate at all: not "zero wait" — the flow's is_set: false case takes it
    assert simulate(routed)["path"] == ["route", "unknown"]


class Waits:
    def __init__(self, seconds: float | None, free: int | None, waiting: int | None) -> None:
        self.seconds, self.free, self.waiting = seconds, free, waiting

    def estimate(self, queue: str) -> EwtEstimate:
        return EwtEstimate(self.seconds) if self.seconds is not None else EwtEstimate.unknown("pbx-link-down")

    def free_agents(self, queue: str) -> int | None:
        return self.free

    def callers_waiting(self, queue: str) -> int | None:
        return self.waiting


def test_live_variables_read_each_fact_once_and_unknown_is_unset() -> None:
    from types import SimpleNamespace

    from ivr.callbacks.desk import Desk

    desk = Desk.__new__(Desk)
    desk.waits = Waits(412.6, 0, 7)
    ctx: Any = SimpleNamespace(variables={"caller": "+12125550123"}, callbacks=desk)
    live = LiveVariables(ctx)
    assert live.get("queue.support.wait") == 413
    assert live.get("queue.support.agents_available") == 0 and live.get("queue.support.callers_waiting") == 7
    assert live.get("caller") == "+12125550123" and live.get("nothing") is None
    assert live.seen() == {"live": {"queue.support.wait": 413, "queue.support.agents_available": 0,
                                    "queue.support.callers_waiting": 7}}
    desk.waits = Waits(None, None, None)  # the PBX link is down
    down = LiveVariables(ctx)
    assert down.get("queue.support.wait") is None and down.seen() == {"live": {"queue.support.wait": None}}


def test_check_refuses_an_unknown_queue_fact(routed: Env) -> None:
    (routed.flows / "routed.yaml").write_text(FLOW.replace("queue.support.wait, gt", "queue.support.waits, gt"),
                                              encoding="utf-8")
    r = routed.ivr("check", "--no-render")
    assert r.code == 1 and "unknown queue fact 'queue.support.waits'" in r.out, r.out
