"""Data look-ups (issue 17, item 1): the ``http`` node of the sample flow ``account`` against a real accounts back end
(tests/lookup_server.py: aiohttp on 127.0.0.1), through the simulator's fixtures, through the real client, and
with the back end dead (the circuit breaker: N callers, one request, one timeout)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivr.adapters.lookup import FixtureLookups, HttpLookups
from ivr.config import LookupConfig
from ivr.engine.call import LookupRequest
from ivr.flows import jsonpath
from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.lookup_server import TOKEN, AccountServer

FIXTURE = str(Path(__file__).parents[1] / "flows" / "samples" / "accounts.json")  # the sample answers, as JSON
ACCOUNT_ANSWER = {"id": "345678", "balance": "1234.50", "due": {"date": "2026-12-15"}}


@pytest.fixture
def server() -> Iterator[AccountServer]:
    s = AccountServer().start()
    try:
        yield s
    finally:
        s.stop()


class Clock:
    """The breakers' clock, moved by the test: a cool-down passes without waiting for it."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def backend(server: AccountServer, **over: Any) -> dict[str, LookupConfig]:
    return {"accounts": LookupConfig(name="accounts", url=server.url, headers={"Authorization": TOKEN}, **over)}


def simulate(env: Env, *args: str) -> dict[str, Any]:
    r = env.ivr("simulate", "account", *args, "--json")
    assert r.code == 0, r.err
    return dict(r.json())


# -- the response paths ---------------------------------------------------------------------------------------


def test_response_paths_reach_one_field_or_say_which_step_is_missing() -> None:
    doc = {"balance": {"dollars": 42}, "invoices": [{"due": "2026-12-15"}], "due-date": "x"}
    assert jsonpath.find(doc, jsonpath.parse("$.balance.dollars")) == 42
    assert jsonpath.find(doc, jsonpath.parse("$.invoices[0].due")) == "2026-12-15"
    assert jsonpath.find(doc, jsonpath.parse("$.invoices[-1]['due']")) == "2026-12-15"
    assert jsonpath.find(doc, jsonpath.parse("$['due-date']")) == "x"
    with pytest.raises(KeyError, match=r"\$\.invoices\[1\]"):
        jsonpath.find(doc, jsonpath.parse("$.invoices[1].due"))
    for bad in ("balance", "$.invoices[*]", "$..due", "$.a b"):
        with pytest.raises(jsonpath.PathError):
            jsonpath.parse(bad)


# -- the adapter against the real back end ---------------------------------------------------------------------


async def test_lookup_sends_the_configs_secret_and_returns_the_answer(server: AccountServer) -> None:
    lookups = HttpLookups(backend(server))
    try:
        got = await lookups.fetch(LookupRequest("accounts", "GET", "/accounts/345678"))
        missing = await lookups.fetch(LookupRequest("accounts", "GET", "/accounts/999999"))
        posted = await lookups.fetch(LookupRequest("accounts", "POST", "/echo", body={"account": "345678"}))
        unknown = await lookups.fetch(LookupRequest("billing", "GET", "/x"))
    finally:
        await lookups.aclose()
    assert got.outcome == "ok" and got.status == 200 and got.body["balance"] == "1234.50"
    assert (missing.outcome, missing.status) == ("http_error", 404)
    assert posted.status == 404 and server.bodies == [{"account": "345678"}]
    assert {auth for _, _, auth in server.requests} == {TOKEN}  # from the config, never from the flow
    assert unknown.outcome == "not_configured" and "no back end 'billing'" in unknown.detail
    assert lookups.open_circuits() == []  # a 404 is an answer: the host is alive


async def test_only_idempotent_methods_are_retried(server: AccountServer) -> None:
    lookups = HttpLookups(backend(server, retries=1))
    try:
        server.statuses = [503]
        got = await lookups.fetch(LookupRequest("accounts", "GET", "/accounts/345678"))
        server.statuses = [503]
        posted = await lookups.fetch(LookupRequest("accounts", "POST", "/accounts/345678", body={}))
    finally:
        await lookups.aclose()
    assert (got.outcome, got.attempts) == ("ok", 2)
    assert (posted.outcome, posted.status, posted.attempts) == ("http_error", 503, 1)  # a POST is never sent twice
    assert [m for m, _, _ in server.requests] == ["GET", "GET", "POST"]


async def test_a_dead_back_end_costs_one_timeout_then_fails_fast_until_a_probe_finds_it_back(
        server: AccountServer) -> None:
    clock = Clock()
    lookups = HttpLookups(backend(server, timeout=0.3, breaker_cool_down=30.0), clock=clock)
    request = LookupRequest("accounts", "GET", "/accounts/345678")
    try:
        server.hang = True
        first = await lookups.fetch(request)
        others = [await lookups.fetch(request) for _ in range(5)]
        assert first.outcome == "timeout" and first.attempts == 1  # no retry after a timeout
        assert [r.outcome for r in others] == ["circuit_open"] * 5
        assert len(server.requests) == 1 and lookups.open_circuits() == [first.host]
        clock.t += 31  # cool-down over: one probe goes, and the host is still dead
        probe = await lookups.fetch(request)
        assert probe.outcome == "timeout" and len(server.requests) == 2
        assert (await lookups.fetch(request)).outcome == "circuit_open"  # open again for another cool-down
        server.hang = False
        clock.t += 31
        assert (await lookups.fetch(request)).outcome == "ok"  # the probe closes the circuit
        assert (await lookups.fetch(request)).outcome == "ok"
        assert lookups.open_circuits() == []
    finally:
        server.hang = False
        await lookups.aclose()


async def test_fixture_answers_by_method_and_url() -> None:
    lookups = FixtureLookups.from_file(Path(FIXTURE))
    ok = await lookups.fetch(LookupRequest("accounts", "GET", "/accounts/345678"))
    missing = await lookups.fetch(LookupRequest("accounts", "GET", "/accounts/999999"))
    slow = await lookups.fetch(LookupRequest("accounts", "GET", "/accounts/555555"))
    none = await lookups.fetch(LookupRequest("accounts", "POST", "/payments"))
    assert ok.outcome == "ok" and ok.body == ACCOUNT_ANSWER
    assert (missing.outcome, missing.status) == ("http_error", 404)
    assert slow.outcome == "timeout"
    assert none.outcome == "not_configured" and "POST /payments" in none.detail


# -- the sample flow, simulated --------------------------------------------------------------------------------



def test_sample_flow_reads_back_balance_and_due_date_then_hands_the_account_to_the_agent(env: Env) -> None:
    r = simulate(env, "--http-fixture", FIXTURE, "-i", "345678#", "-i", "1")
    assert r["path"] == ["account", "lookup", "balance", "offer", "agent"]
    assert r["outcome"] == "transferred" and r["detail"] == "queue billing"
    assert (r["variables"]["balance"], r["variables"]["due_date"]) == ("1234.50", "2026-12-15")
    said = r["transcript"][r["transcript"].index("  ♪ Your balance is"):][:15]
    assert " ".join(line.removeprefix("  ♪ ") for line in said) == (
        "Your balance is one thousand two hundred thirty-four dollars and fifty cents "
        "and your payment is due on December fifteenth twenty twenty-six")
    assert any(line.startswith("  ⇒ transfer to queue billing with account=345678") for line in r["transcript"])
    recorded = {c["call_id"]: c for c in env.calls(simulated=True)}[r["call_id"]]
    assert recorded["resolved"]  # the caller heard the balance: self-served, then chose an agent


@pytest.mark.parametrize(("account", "outcome"), [("999999", "http_error"), ("555555", "timeout")])
def test_sample_flow_sends_an_unknown_account_or_a_slow_back_end_to_an_agent(env: Env, account: str,
                                                                               outcome: str) -> None:
    r = simulate(env, "--http-fixture", FIXTURE, "-i", f"{account}#")
    assert r["path"] == ["account", "lookup", "unavailable", "agent"]
    assert "balance" not in r["variables"]
    assert any(line.startswith(f"  ⇄ GET accounts /accounts/${{account}}: {outcome}") for line in r["transcript"])
    assert any(line.startswith(f"  ⇒ transfer to queue billing with account={account}") for line in r["transcript"])


def test_simulate_without_a_fixture_uses_the_configs_back_end(env: Env, server: AccountServer) -> None:
    with env.config.open("a", encoding="utf-8") as f:
        f.write(server.yaml())
    r = simulate(env, "-i", "345678#", "-i", "2")
    assert r["path"] == ["account", "lookup", "balance", "offer", "bye"]
    assert r["variables"]["balance"] == "1234.50"
    assert server.requests == [("GET", "/accounts/345678", TOKEN)]
    events = asyncio.run(read_events(env.state / "simulate.db", r["call_id"]))
    lookup = next(e.data for e in events if e.type == "http.lookup")
    assert lookup["outcome"] == "ok" and lookup["url"] == "/accounts/${account}"
    assert lookup["vars"] == ["balance", "due_date"]
    assert TOKEN not in json.dumps([e.data for e in events])  # the secret is never recorded


def test_bad_fixture_file_is_refused(env: Env, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {status: 200}\n")
    r = env.ivr("simulate", "account", "--http-fixture", str(bad), "-i", "345678#")
    assert r.code == 2 and "response 1 needs url:" in r.err


# -- ivr check and ivr graph ------------------------------------------------------------------------------------

LOOKUP_FLOW = """
flow: t
numbers: ["900"]
start: look
prompts:
  bye: "Bye."
nodes:
  look:
    http:
      url: /accounts/${acct}
      into: {balance: "$.balance[x]"}
      on_timeout: nowhere
    next: bye
  bye:
    hangup: bye
"""


def test_check_reports_look_up_mistakes_at_their_lines(env: Env) -> None:
    (env.flows / "t.yaml").write_text(LOOKUP_FLOW, encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1
    out = r.out + r.err
    assert "t.yaml:10:12: url '/accounts/${acct}' is relative: name the back end" in out
    assert "t.yaml:10:12: unknown variable 'acct'" in out
    assert "t.yaml:11:23: bad response path: '$.balance[x]': cannot read from column 10" in out
    assert "t.yaml:12:19: unknown node 'nowhere'" in out


def test_graph_draws_the_look_up_with_its_timeout_and_failure_targets(env: Env, tmp_path: Path) -> None:
    r = env.ivr("graph", "account", "-o", str(tmp_path / "a.dot"))
    assert r.code == 0, r.err
    dot = (tmp_path / "a.dot").read_text()
    assert '"account:lookup" [label="lookup\\n[http]\\nGET accounts: /accounts/${account}", shape=cylinder' in dot
    assert '"account:lookup" -> "account:unavailable" [label="timeout"' in dot
    assert '"account:lookup" -> "account:unavailable" [label="failure"' in dot
    assert '"account:agent" [label="agent\\n[transfer]\\n→ billing with account"' in dot


# -- the daemon: one shared client, one breaker for every caller -------------------------------------------------


def test_dead_back_end_costs_one_timeout_for_all_callers_of_the_daemon(env: Env, server: AccountServer) -> None:
    """N callers while the accounts back end takes connections and never answers: the first waits the look-up's
    timeout, the others go straight to the agent (circuit open), and the back end sees one request."""
    with env.config.open("a", encoding="utf-8") as f:
        f.write(server.yaml(timeout=0.5, breaker="{cool_down: 600}"))
    server.hang = True
    log = env.root / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 120  # a cold prompt cache: every sample prompt is rendered first
        while not (env.state / "ivr.sock").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert (env.state / "ivr.sock").exists(), log.read_text()
        outs = []
        for _ in range(4):
            r = env.ivr("simulate", "account", "--live", "-i", "345678#")
            assert r.code == 0, r.err + log.read_text()
            outs.append(r.out)
        status = env.ivr("status").json()
        assert status["lookups"]["backends"] == ["accounts"]
        assert status["lookups"]["open_circuits"] == [f"127.0.0.1:{server.port}"]
        address = status["metrics"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
            metrics = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert len(server.requests) == 1
    counted = {s.labels["outcome"]: s.value for s in metrics["ivr_lookups"].samples if s.name.endswith("_total")}
    assert counted == {"ok": 0, "timeout": 1, "circuit_open": 3}
    assert [s.value for s in metrics["ivr_lookup_circuits_open"].samples] == [1]
    assert [s.value for s in metrics["ivr_lookup_seconds"].samples if s.name.endswith("_count")] == [1]
    lookups = [line.strip() for out in outs for line in out.splitlines() if "⇄" in line]
    assert [line.split(": ")[1].split(" (")[0] for line in lookups] == ["timeout"] + ["circuit_open"] * 3
    for out in outs:  # every caller was still handed to an agent with the account number they keyed
        assert "  ⇒ transfer to queue billing with account=345678" in out
        assert "[unavailable] play" in out and "[agent] transfer" in out


def test_values_for_the_agent_lose_line_breaks_and_unset_ones_are_left_out(env: Env) -> None:
    flow = ('flow: d\nnumbers: ["901"]\nstart: s\nnodes:\n  s:\n    set: {note: "a\\r\\nX-Evil: 1", empty: ""}\n'
            "    next: t\n  t:\n    transfer: {extension: 200, data: [note, empty, caller]}\n")
    (env.flows / "d.yaml").write_text(flow, encoding="utf-8")
    r = env.ivr("simulate", "d", "--json", "--caller", "+15551234567")
    assert r.code == 0, r.err
    told = [line for line in r.json()["transcript"] if "⇒ transfer" in line]
    assert told[0].startswith("  ⇒ transfer to extension 200 with note=aX-Evil: 1, caller=+15551234567")


COMFORT_FLOW = """
flow: slow
numbers: ["902"]
start: look
prompts:
  wait: "One moment please."
  found: "Found it."
  slow: "Our system is slow today."
nodes:
  look:
    http:
      lookup: accounts
      url: /accounts/345678
      timeout: 1
      into: {balance: $.balance}
      comfort: {prompt: wait, after: %s}
      on_timeout: slow
    next: found
    failure: slow
  found:
    hangup: found
  slow:
    hangup: slow
"""


def test_a_caller_waiting_on_a_slow_back_end_hears_the_comfort_prompt_once(env: Env, server: AccountServer) -> None:
    with env.config.open("a", encoding="utf-8") as f:
        f.write(server.yaml())
    (env.flows / "slow.yaml").write_text(COMFORT_FLOW % "0.05", encoding="utf-8")
    server.hang = True  # the answer never comes: the look-up runs into its timeout
    r = env.ivr("simulate", "slow", "--json")
    assert r.code == 0, r.err
    transcript = r.json()["transcript"]
    assert transcript.count("  ♪ One moment please.") == 1
    assert r.json()["path"] == ["look", "slow"]  # on_timeout
    assert any("timeout" in line and "comfort prompt played" in line for line in transcript)


def test_a_quick_answer_plays_no_comfort_prompt(env: Env, server: AccountServer) -> None:
    with env.config.open("a", encoding="utf-8") as f:
        f.write(server.yaml())
    (env.flows / "slow.yaml").write_text(COMFORT_FLOW % "20", encoding="utf-8")
    r = env.ivr("simulate", "slow", "--json")
    assert r.code == 0, r.err
    assert r.json()["path"] == ["look", "found"] and r.json()["variables"]["balance"] == "1234.50"
    assert "  ♪ One moment please." not in r.json()["transcript"]


def test_check_warns_of_a_back_end_the_config_does_not_have(env: Env) -> None:
    with env.config.open("a", encoding="utf-8") as f:
        f.write("lookups: {acounts: {url: 'https://crm.example.com'}}\n")
    r = env.ivr("check", "--no-render")
    assert r.code == 0, r.out + r.err
    assert ("flows/account.yaml:33:3: warning: node 'lookup': back end 'accounts' is not in the config's lookups: "
            "(acounts) (did you mean 'acounts'?); its look-ups will fail") in r.out


POST_FLOW = """
flow: post
numbers: ["903"]
start: s
prompts:
  bye: "Bye."
nodes:
  s:
    set: {acct: "0042", n: 7}
    next: look
  look:
    http:
      lookup: accounts
      method: post
      url: /echo?who=${acct}
      body: {account: "${acct}", tries: "${n}", note: "caller ${caller}", tags: ["${acct}", x]}
    next: bye
    failure: bye
  bye:
    hangup: bye
"""


def test_a_post_sends_its_json_body_built_from_variables(env: Env, server: AccountServer) -> None:
    with env.config.open("a", encoding="utf-8") as f:
        f.write(server.yaml())
    (env.flows / "post.yaml").write_text(POST_FLOW, encoding="utf-8")
    r = env.ivr("simulate", "post", "--json", "--caller", "+15551230000")
    assert r.code == 0, r.err
    assert server.bodies == [{"account": "0042", "tries": 7, "note": "caller +15551230000", "tags": ["0042", "x"]}]
    assert [(m, p) for m, p, _ in server.requests] == [("POST", "/echo")]
    assert r.json()["path"] == ["s", "look", "bye"]


def test_live_refuses_a_fixture(env: Env) -> None:
    r = env.ivr("simulate", "account", "--live", "--http-fixture", FIXTURE)
    assert r.code == 2 and "--http-fixture cannot be used with --live" in r.err


def test_a_sensitive_look_up_is_said_to_the_caller_but_recorded_masked(env: Env) -> None:
    flow = (env.flows / "account.yaml").read_text(encoding="utf-8")
    (env.flows / "account.yaml").write_text(flow.replace("      on_timeout: unavailable\n",
                                                         "      on_timeout: unavailable\n      sensitive: true\n"))
    r = simulate(env, "--http-fixture", FIXTURE, "-i", "345678#", "-i", "2")
    assert r["path"] == ["account", "lookup", "balance", "offer", "bye"]
    recorded = {c["call_id"]: c for c in env.calls(simulated=True)}[r["call_id"]]
    assert "1234.50" not in json.dumps(recorded) and "2026-12-15" not in json.dumps(recorded)
    events = asyncio.run(read_events(env.state / "simulate.db", r["call_id"]))
    assert "1234.50" not in json.dumps([e.data for e in events])
