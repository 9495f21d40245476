"""Issue 17's "done when", by a real call: sipp dials the sample flow ``account`` (103), keys an account number;
the daemon looks it up over HTTP in the accounts back end (tests/lookup_server.py, aiohttp on 127.0.0.1) with the
config's secret, reads the balance and due date back, and on 1 hands the caller to the billing queue by AMI
Redirect (the test AMI peer, the real protocol on loopback) with the account number set on the caller's channel
(``IVR_VAR_ACCOUNT``, inherited: what the dialplan puts in the agent's caller name, docs/asterisk)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ivr.flows import spoken
from ivr.store.eventlog import read_events
from tests.ami.peer import AmiPeer
from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import start_appliance, stop_appliance, wait_for_call
from tests.integration.test_calls import keys_by, sipp
from tests.lookup_server import TOKEN, AccountServer

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")

CHANNEL = "PJSIP/trunk-00000042"


def with_channel_header(scenario: str) -> str:
    """The INVITE as Asterisk's dialplan sends it to the box (docs/asterisk section 2): the caller's channel."""
    header = f"      X-IVR-Caller-Channel: {CHANNEL}\n"
    return scenario.replace("      Max-Forwards: 70\n", "      Max-Forwards: 70\n" + header, 1)


async def test_account_lookup_by_a_real_call_hands_the_account_to_the_agents_channel(env: Env) -> None:
    peer = AmiPeer()  # Asterisk, answering on this test's loop; the call runs in a thread beside it
    await peer.start()
    server = AccountServer().start()
    try:
        call = await asyncio.to_thread(run_call, env, peer.port, server)
    finally:
        server.stop()
        await peer.stop()
    assert call["flow"] == "account"
    assert call["path"] == ["account", "lookup", "balance", "offer", "agent"]
    assert call["outcome"] == "transferred" and call["outcome_detail"] == "queue billing"
    v = call["variables"]
    assert (v["account"], v["balance"], v["due_date"]) == ("345678", "1234.50", "2026-12-15")
    assert server.requests == [("GET", "/accounts/345678", TOKEN)]  # the config's secret, one request
    # the agent's channel: the variables set on the caller's channel before it moved (inherited: "__")
    assert peer.variables[(CHANNEL, "IVR_VAR_ACCOUNT")] == "345678"
    assert peer.variables[(CHANNEL, "IVR_CALL_ID")] == call["call_id"]
    redirect = peer.actions("Redirect")[0]
    assert (redirect.get("Channel"), redirect.get("Context"), redirect.get("Exten")) == (CHANNEL, "ivr-queue",
                                                                                          "billing")
    events = await read_events(env.state / "ivr.db", call["call_id"])
    lookup = next(e.data for e in events if e.type == "http.lookup")
    assert (lookup["outcome"], lookup["status"], lookup["lookup"]) == ("ok", 200, "accounts")
    played = [p for e in events if e.type == "prompt.played" for p in e.data["prompts"]]
    # said aloud from pre-rendered fragments: "one thousand two hundred thirty-four dollars and fifty cents",
    # "December fifteenth twenty twenty-six" (ivr/flows/spoken.py; tests/test_spoken.py has the words)
    money, date = spoken.words("money", "1234.50", "en"), spoken.words("date", "2026-12-15", "en")
    start = played.index("balance_is")
    assert played[start:start + 2 + len(money) + len(date)] == ["balance_is", *money, "due_on", *date]
    moved = next(e.data for e in events if e.type == "transfer")
    assert moved["ok"] and moved["data"] == ["account"]
    # the look-up is a KPI: counted, not failed, the caller's wait as the event recorded it
    kpi = env.ivr("kpi", "--since", "1h", "--json").json()
    totals = kpi["totals"]
    assert (totals["lookups"]["value"], totals["lookup_failure_rate"]["value"]) == (1, 0.0)
    assert totals["lookup_wait_p50"]["value"] == lookup["latency_ms"]
    assert kpi["lookups_by_name"]["accounts"]["lookups"]["value"] == 1


def run_call(env: Env, ami_port: int, server: AccountServer) -> dict[str, Any]:
    with env.config.open("a", encoding="utf-8") as f:
        f.write(f"ami: {{host: 127.0.0.1, port: {ami_port}, username: ivr, secret: s3cret, ping_interval: 30}}\n"
                "transfer: {mode: ami}\n" + server.yaml())
    daemon, port, log = start_appliance(env)
    try:
        deadline = time.monotonic() + 30
        while env.ivr("status").json().get("ami") != "connected" and time.monotonic() < deadline:
            time.sleep(0.1)
        # the account, then (while the balance is read: typed ahead for the menu after it) 1 for an agent;
        # after the Redirect Asterisk would end our leg: sipp does not, so the box hangs up after its wait
        steps, te = keys_by("rfc2833", "345678# 1", env.root)
        sipp(with_channel_header(scenarios.call("account by sipp", steps, telephone_event=te)), port, env.root,
             service="103")
        return dict(wait_for_call(env))
    except BaseException:
        print(Path(log).read_text()[-4000:])
        raise
    finally:
        stop_appliance(daemon)
