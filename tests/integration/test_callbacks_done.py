"""Issue 7's "done when", end to end on real calls: a caller (sipp) in the support queue hears the wait,
presses 1 for a callback, keys the number to call (its caller ID is not a real number), confirms it; the
request is committed before "confirmed" is played. The daemon is SIGKILLed and restarted; the dialer calls
the customer's phone (a second sipp), which answers and presses 1, and the customer is transferred (bridged
to a third sipp playing the agent). Every step is in the records.

The wait comes from the appliance's own records (no AMI): an hour of finished support handovers of 300 s
each and three callers in the queue now with one agent give an estimate well over the node's 60 s; while
the restart happens the queue drains (those three calls end), so an agent is free and the dialer may call.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uuid6

from ivr.store.eventlog import BOOT_ID, EventLog, read_events
from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import start_appliance, wait_for_call
from tests.integration.test_callbacks import (
    attempts,
    callbacks_yaml,
    events,
    free_port,
    sipp_ok,
    sipp_uas,
    stop,
    wait_state,
)
from tests.integration.test_calls import sipp as sipp_caller

pytestmark = pytest.mark.skipif(subprocess.run(["which", "sipp"], capture_output=True).returncode != 0,
                                reason="sipp (Debian sip-tester) not installed")

QUEUE_FLOW = """
flow: cbq
numbers: ["600"]
start: q
prompts:
  hold: "Please hold for the next support agent."
  bye: "Goodbye."
nodes:
  q:
    queue: {name: support, prompt: hold, callback: {offer: true, min_wait_seconds: 60}}
    failure: bye
  bye:
    hangup: bye
"""


def _wall(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def seed_records(db: Path, now: datetime) -> list[str]:
    """Past support handovers (the appliance's own records) and three calls in the queue right now."""
    async with await EventLog.open(db, "test-site") as log:
        async def put(t: datetime, call_id: str, type_: str, data: dict[str, object]) -> None:
            row = (str(uuid6.uuid7()), "test-site", BOOT_ID, _wall(t), time.monotonic_ns(), call_id, type_,
                   json.dumps(data))
            await log.transaction(lambda conn: EventLog.insert(conn, row))

        for i in range(10):
            t0 = now - timedelta(minutes=58) + timedelta(minutes=5 * i)
            await put(t0, f"past-{i}", "queue.offer", {"queue": "support", "offered": False})
            await put(t0 + timedelta(seconds=300), f"past-{i}", "transfer",
                      {"kind": "queue", "destination": "support", "ok": True, "detail": "bridged"})
        waiting = [f"waiting-{i}" for i in range(3)]
        for c in waiting:
            await put(now - timedelta(seconds=60), c, "queue.offer", {"queue": "support", "offered": False})
        return waiting


async def drain(db: Path, calls: list[str]) -> None:
    async with await EventLog.open(db, "test-site") as log:
        for c in calls:
            await log.append("call.ended", c, outcome="transferred", detail="agent took the call", path=[])


def test_a_caller_asks_for_a_callback_and_is_called_back_after_a_crash(env: Env) -> None:
    customer_port, agent_port = free_port(), free_port()
    (env.flows / "cbq.yaml").write_text(QUEUE_FLOW, encoding="utf-8")
    with env.config.open("a") as f:
        f.write(f"transfer: {{mode: bridge, bridge_proxy: '127.0.0.1:{agent_port}', ring_timeout: 10}}\n")
        f.write(callbacks_yaml(customer_port, extra=" queues: {support: {agents: 1}},"))
    db = env.state / "ivr.db"
    waiting = asyncio.run(seed_records(db, datetime.now(UTC)))

    proc, port, log = start_appliance(env)
    try:
        # the caller: 1 = call me back; the caller ID is no real number, so it keys one, #, then 1 = confirm
        # (the first key by RFC 2833, the rest by SIP INFO: sipp's RFC 2833 pcaps last 1.2 s each and carry fixed
        # timestamps, so a second "1" from the same pcap would rightly be taken for a repeat of the first)
        keys = [("pause", "2500"), ("pcap", "1"), ("pause", "2500"),
                *[("info", d) for d in "2125550123#"], ("pause", "3000"), ("info", "1")]
        sipp_caller(scenarios.call("callback request", keys), port, env.root, service="600", timeout=90)
        call = wait_for_call(env)
        assert call["flow"] == "cbq" and call["outcome"] == "callback", (call, log.read_text()[-3000:])
        [confirmed] = [e.data for e in asyncio.run(read_events(db, str(call["call_id"])))
                       if e.type == "callback.confirmed"]
        rid = str(confirmed["request_id"])
        assert confirmed["number"] == "+12125550123"
        assert attempts(env, rid) == []  # no agent free: not dialled yet
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    asyncio.run(drain(db, waiting))  # meanwhile the agent took the callers ahead: one agent is free
    customer = sipp_uas("cb_customer_press1.xml", customer_port, env.root)
    agent = sipp_uas("uas_answer_bye.xml", agent_port, env.root)
    proc, port, log = start_appliance(env)
    try:
        row = wait_state(env, rid, ("done", "expired"), timeout=90)
        sipp_ok(customer, "customer")
        sipp_ok(agent, "agent")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        stop(customer)
        stop(agent)
    assert row["state"] == "done", (row, attempts(env, rid), log.read_text()[-3000:])

    # every step in the records, in order: the offer and consent on the caller's call ...
    caller_events = [e.type for e in asyncio.run(read_events(db, str(call["call_id"])))]
    order = ("queue.offer", "callback.offer.accepted", "callback.requested", "callback.confirmed")
    for earlier, later in zip(order, order[1:], strict=False):
        assert caller_events.index(earlier) < caller_events.index(later), caller_events
    assert row["consent_number"] == "+12125550123" and "2125550123#" in row["consent_pressed"]
    assert row["quoted_low"] is not None and row["quoted_high"] >= 60
    # ... the request's life, the dial after the restart, the customer's leg transferred to the agent
    states = [e["to"] for e in events(env, "callback.state") if e["request_id"] == rid]
    assert states == ["dialing", "connected", "done"]
    [att] = attempts(env, rid)
    assert att["outcome"] == "connected" and att["detail"].startswith("confirmed: flow transferred")
    [leg] = [e for e in events(env, "callback.leg") if e["request_id"] == rid]
    leg_call = next(c for c in env.calls() if c["call_id"] == leg["_call_id"])
    assert leg_call["flow"] == "callback" and leg_call["outcome"] == "transferred"
    assert leg_call["path"] == ["offer", "connect"]
    [kept] = [e for e in events(env, "callback.kept") if e["request_id"] == rid]
    assert kept["time_to_agent"] is not None and kept["leg_call_id"] == leg["_call_id"]
    starts = [e for e in asyncio.run(read_events(db)) if e.type == "daemon.started"]
    assert len(starts) == 2
