"""Issue 13: the records a KPI reads. One node naming (``flow.node`` inside a sub-flow) in every event and
outcome detail, the call's flow and version on every node-level event, the site's zone per call, resolved
nodes, simulations kept out of the site's log, and ``ivr events`` streaming NDJSON from a sequence number."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tests.conftest import Env

OPEN = "2026-12-01T10:00"  # a Tuesday morning in New York
#: main → billing (account 1234567 confirmed, "pay online", resolved) → survey (4, 10) → goodbye
BILLING_ONLINE = ("-i", "1", "-i", "1234567#", "-i", "1", "-i", "1", "-i", "4", "-i", "10")


def simulated_events(env: Env, *args: str) -> list[dict[str, Any]]:
    r = env.ivr("events", "--simulated", "--json", *args)
    assert r.code == 0, r.err
    return [json.loads(line) for line in r.out.splitlines()]


def test_sub_flow_nodes_are_named_flow_dot_node_and_carry_the_calls_flow(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", OPEN, *BILLING_ONLINE, "--json")
    assert r.code == 0, r.err
    result = r.json()
    events = [e for e in simulated_events(env) if e["call_id"] == result["call_id"]]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e["data"])
    # the same name in node.entered, collect.value, survey.answer and subflow.return as in the path
    assert by_type["collect.value"][0]["node"] == "billing.account"
    assert [d["node"] for d in by_type["survey.answer"]] == ["survey.csat", "survey.nps"]
    assert [d["node"] for d in by_type["subflow.return"]] == ["billing.done", "survey.back"]
    assert [d["next"] for d in by_type["subflow.return"]] == ["survey", "goodbye"]
    assert [d["to"] for d in by_type["subflow.enter"]] == ["billing", "survey"]
    assert by_type["menu.choice"][1] | {"flow_version": ""} == {
        "node": "billing.billing_menu", "key": "1", "via": "dtmf", "target": "billing.online", "flow": "main",
        "flow_version": ""}
    entered = {d["node"] for d in by_type["node.entered"]}
    for type_, items in by_type.items():
        for d in items:
            if "node" in d:
                assert d["node"] in entered, (type_, d)
                # grouped by the call's flow (the line the caller dialled) and the version it ran on
                assert (d["flow"], d["flow_version"]) == ("main", result["version"]), (type_, d)
    # the site's zone on the call, so a central store buckets it by the site's day
    assert by_type["call.started"][0]["zone"] == "America/New_York"
    # billing's "pay online" read-out marks the task done: contained, countable without guessing
    assert by_type["call.resolved"] == [{"node": "billing.online", "flow": "main",
                                         "flow_version": result["version"]}]
    assert by_type["call.ended"][0]["resolved"] is True
    [row] = [c for c in env.calls(simulated=True) if c["call_id"] == result["call_id"]]
    assert (row["zone"], row["resolved"], row["outcome"]) == ("America/New_York", 1, "hangup")


def test_the_outcome_detail_names_a_sub_flow_node_like_the_path(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", OPEN, "-i", "1", "-i", "hangup", "--json")
    assert r.code == 0, r.err
    assert r.json()["outcome"] == "caller_hangup" and r.json()["detail"] == "billing.account"
    assert r.json()["path"][-1] == "billing.account"
    [row] = [c for c in env.calls(simulated=True) if c["call_id"] == r.json()["call_id"]]
    assert row["resolved"] == 0


def test_simulations_stay_out_of_the_sites_log(env: Env) -> None:
    r = env.ivr("simulate", "survey", "-i", "hangup", "--json")
    assert r.code == 0, r.err
    assert env.calls() == []  # KPIs read the site's log: no simulated call in it
    assert "ivr calls --simulated" in env.ivr("calls").out
    assert [c["call_id"] for c in env.calls(simulated=True)] == [r.json()["call_id"]]
    assert not (env.state / "ivr.db").exists() or not sqlite3.connect(env.state / "ivr.db").execute(
        "SELECT count(*) FROM calls").fetchone()[0]


def test_simulation_still_obeys_the_sites_emergency_switch(env: Env) -> None:
    assert env.ivr("closed", "office", "on", "--reason", "storm").code == 0
    r = env.ivr("simulate", "main", "--at", OPEN, "--json")
    assert r.code == 0, r.err
    assert "closed" in r.json()["path"]


def test_events_stream_as_ndjson_after_a_sequence_number_and_by_type(env: Env) -> None:
    for _ in range(3):
        assert env.ivr("simulate", "survey", "-i", "4", "-i", "9").code == 0
    everything = simulated_events(env)
    assert len(everything) > 10 and [e["seq"] for e in everything] == sorted(e["seq"] for e in everything)
    first_call_end = next(e["seq"] for e in everything if e["type"] == "call.ended")
    r = env.ivr("events", "--simulated", "--json", "--after-seq", str(first_call_end), "--type", "survey.answer")
    lines = r.out.splitlines()
    # one event per line, each a complete JSON object: no array around them, nothing held back to the end
    assert not r.out.lstrip().startswith("[") and len(lines) == 4
    answers = [json.loads(line) for line in lines]
    assert all(a["type"] == "survey.answer" and a["seq"] > first_call_end for a in answers)
    assert [a["data"]["value"] for a in answers] == [4, 9, 4, 9]
    r = env.ivr("events", "--simulated", "--json", "--type", "call.started", "--type", "call.ended")
    assert [json.loads(line)["type"] for line in r.out.splitlines()] == ["call.started", "call.ended"] * 3


def test_check_refuses_resolved_on_a_hand_over(env: Env) -> None:
    """``resolved: true`` counts self-service; a transfer's own outcome already says where the caller went."""
    (env.flows / "bad.yaml").write_text(
        "flow: bad\nnumbers: ['555']\nstart: agent\nnodes:\n"
        "  agent:\n    transfer: {queue: support}\n    resolved: true\n", encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1
    assert any(line.endswith("bad.yaml:7:5: node 'agent': resolved: true marks a task done in the IVR, but a "
                             "transfer node hands the caller to the PBX (its outcome already says so)")
               for line in r.out.splitlines()), r.out + r.err
