"""`ivr kpi` over real calls (issue 13): sipp callers walk a small line that resolves a task, hands callers to an
agent (a sipp agent answers the bridge), fails a hand-over (the agent is busy), loses a caller in the menu and
takes a CSAT answer; `ivr kpi --json` then shows the counts a contact-center analyst expects."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import free_port, run_appliance, wait_for_call
from tests.integration.test_callbacks import sipp_ok, sipp_uas, stop
from tests.integration.test_calls import keys_by, sipp

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")

KPI_FLOW = """
flow: line
numbers: ["700"]
start: menu
prompts:
  hello: "For your balance press 1. For an agent press 2. To rate us press 3."
  balance: "Your balance is ten dollars."
  connecting: "Connecting you."
  rate: "Rate us from 1 to 5."
  thanks: "Thank you."
  sorry: "Sorry, nobody is free."
  bye: "Goodbye."
nodes:
  menu:
    menu: {prompt: hello, timeout: 8, max_no_input: 1, max_no_match: 1, options: {1: balance, 2: agent, 3: rate}}
    failure: bye
  balance:
    play: balance
    resolved: true
    next: bye
  agent:
    transfer: {queue: support, prompt: connecting}
    failure: sorry
  rate:
    survey: {prompt: rate, scale: csat, into: csat, thanks: thanks, max_attempts: 1}
    next: bye
  sorry:
    hangup: sorry
  bye:
    hangup: bye
"""


def kpi(env: Env, *args: str) -> dict[str, Any]:
    r = env.ivr("kpi", "--since", "1h", "--json", *args)
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    return out


def test_kpi_counts_real_calls(env: Env) -> None:
    agent_port = free_port()
    (env.flows / "line.yaml").write_text(KPI_FLOW, encoding="utf-8")
    with env.config.open("a") as f:
        f.write(f"transfer: {{mode: bridge, bridge_proxy: '127.0.0.1:{agent_port}', ring_timeout: 5}}\n")
    outcomes: list[str] = []
    for _env, port, _log in run_appliance(env):
        def press(keys: str, name: str, hangup: str = "ivr", port: int = port) -> None:
            steps, te = keys_by("rfc2833", keys, env.root) if keys else ([("pause", "1500")], True)
            sipp(scenarios.call(name, steps, telephone_event=te, hangup=hangup), port, env.root, service="700")
            outcomes.append(str(wait_for_call(env)["outcome"]))

        press("1", "resolved")
        agent = sipp_uas("cb_agent_talk.xml", agent_port, env.root)  # answers, talks 3 s, hangs up
        try:
            press("2", "to an agent")
            sipp_ok(agent, "agent")
        finally:
            stop(agent)
        (env.root / "busy").mkdir()
        busy = sipp_uas("uas_busy.xml", agent_port, env.root / "busy")
        try:
            press("2", "agent busy")
        finally:
            stop(busy)
        press("3 5", "survey")
        press("", "hangs up in the menu", hangup="caller")
    assert outcomes == ["hangup", "transferred", "transfer_failed", "hangup", "caller_hangup"], outcomes

    # worked by hand (docs/kpi.md): 5 calls; dispositions resolved, transferred, transfer_failed, self_served
    # (the survey), abandoned (the menu hang-up)
    t = kpi(env)["totals"]
    assert t["ivr_calls"]["value"] == 5
    assert (t["containment"]["value"], t["containment"]["n"]) == (0.4, 5)  # (self_served 1 + resolved 1) / 5
    assert (t["containment_resolved"]["value"], t["containment_resolved"]["n"]) == (0.2, 5)
    assert (t["transfer_rate"]["value"], t["transfer_rate"]["n"]) == (0.2, 5)
    assert (t["transfer_failure_rate"]["value"], t["transfer_failure_rate"]["n"]) == (0.5, 2)
    assert (t["csat"]["value"], t["csat"]["n"]) == (1.0, 1)  # a 5 of 5 is satisfied
    # every call comes from the same number: each but the last was followed by a repeat within 24 h
    assert (t["fcr_24h"]["value"], t["fcr_24h"]["n"], t["fcr_24h"]["provisional"]) == (0.2, 5, True)
    by_node = kpi(env)["ivr_abandon_by_node"]
    assert {k: v["detail"]["abandoned"] for k, v in by_node.items() if v["detail"]["abandoned"]} == {"menu": 1}
    assert by_node["menu"]["n"] == 5
    by_flow = kpi(env, "--by", "flow")
    assert [g["key"] for g in by_flow["groups"]] == ["line"]
    text = env.ivr("kpi", "--since", "1h")
    assert text.code == 0 and "n=5" in text.out


def test_kpi_refuses_a_bad_period(env: Env) -> None:
    r = env.ivr("kpi", "--since", "yesterday-ish")
    assert r.code == 2 and "neither a span" in r.err
    r = env.ivr("kpi", "--since", "1h", "--until", "2h")
    assert r.code == 2 and "not after" in r.err
