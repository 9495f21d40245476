"""The callback dialer in `ivr run`, dialling real sipp phones on loopback (dial via SIP).

A request is filed through the durable store (another SQLite connection; WAL lets the daemon run on); the
daemon's dialer finds it due and calls the customer's phone, a sipp UAS:
- answers and presses 1 (RFC 2833): the callback flow transfers the customer to the queue by the site's
  transfer mode (bridge, to a second sipp playing the agent); the request is done, the promise recorded;
- busy (486, Q.850 17): retried after the configured interval, then expired after max attempts;
- 404: invalid, never retried;
- rings and never answers: CANCEL at the ring timeout, no-answer, a retry scheduled after the interval;
- answers and presses nothing: not confirmed, retried.
Outside the calling window and with an unsynchronised clock, nothing is dialled.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ivr.callbacks.dialer import probe_clock
from ivr.store.callbacks import CallbackStore, Consent
from ivr.store.eventlog import EventLog, read_events
from tests.conftest import Env
from tests.integration.appliance import free_port, run_appliance

SCENARIOS = Path(__file__).parent / "sipp"
pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")

# The sample callback flow with short menu waits, so a silent customer is given up on quickly.
SHORT_CALLBACK_FLOW = """
flow: callback
languages: [en]
timezone: America/New_York
start: offer
prompts:
  offer: "This is your callback from Acme. Press 1 to be connected."
  connecting: "Connecting you now."
  later: "We will try again later."
  sorry: "Sorry, no agent is free."
nodes:
  offer:
    menu: {prompt: offer, timeout: 3, max_no_input: 1, max_no_match: 1, options: {1: connect}}
    failure: later
  connect:
    transfer: {queue: "${queue}", prompt: connecting}
    failure: sorry
  later:
    hangup: later
  sorry:
    hangup: sorry
"""

NUMBER = "+12125550123"
ALWAYS = '[{start: "00:00", end: "24:00"}]'


def callbacks_yaml(customer_port: int, *, intervals: str = "[1]", max_attempts: int = 3, clock: str = "trust",
                   windows: str = ALWAYS, ring_timeout: float = 3, extra: str = "") -> str:
    return (f"callbacks: {{region: US, zone: America/New_York, clock: {clock}, poll_seconds: 0.2,{extra}"
            f" max_concurrent: 2, dial: {{via: sip, proxy: '127.0.0.1:{customer_port}', ring_timeout: {ring_timeout},"
            f" from: 'sip:+15550100@127.0.0.1', display: Acme}},"
            f" retry: {{intervals: {intervals}, max_attempts: {max_attempts}, expiry: 3600}}, windows: {windows}}}\n")


def configure(env: Env, customer_port: int, agent_port: int, mode: str = "bridge", **kw: Any) -> None:
    (env.flows / "callback.yaml").write_text(SHORT_CALLBACK_FLOW, encoding="utf-8")
    with env.config.open("a") as f:
        f.write(f"transfer: {{mode: {mode}, bridge_proxy: '127.0.0.1:{agent_port}', ring_timeout: 10}}\n")
        f.write(callbacks_yaml(customer_port, **kw))


def file_request(env: Env, number: str = NUMBER, queue: str = "support",
                 quoted: tuple[float, float] | None = (60.0, 600.0),
                 data: tuple[tuple[str, str], ...] = ()) -> tuple[str, bool]:
    """File a callback request as the queue node would (``data``: its ``data:`` values for the agent); returns
    (id, created) once it is committed."""

    async def go() -> tuple[str, bool]:
        now = datetime.now(UTC)
        async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
            r = await CallbackStore(log).request(
                queue=queue, number=number, zones=("America/New_York",), arrival_at=now,
                consent=Consent(at=now, number=number, heard="offer,readback", pressed="1"), now=now,
                quoted=quoted, data=data)
            return r.id, r.created

    return asyncio.run(go())


def request_row(env: Env, rid: str) -> dict[str, Any]:
    with sqlite3.connect(env.state / "ivr.db", timeout=10) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM callback_requests WHERE id=?", (rid,)).fetchone()
        return dict(row)


def attempts(env: Env, rid: str) -> list[dict[str, Any]]:
    with sqlite3.connect(env.state / "ivr.db", timeout=10) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM callback_attempts WHERE request_id=? ORDER BY n",
                                            (rid,))]


def wait_state(env: Env, rid: str, states: tuple[str, ...], timeout: float = 60.0) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for _ in range(int(timeout / 0.2)):
        row = request_row(env, rid)
        if row["state"] in states:
            return row
        time.sleep(0.2)
    raise AssertionError(f"request never reached {states}: {row} {attempts(env, rid)}")


def sipp_uas(scenario: str, port: int, workdir: Path, calls: int = 1, timeout: int = 90) -> subprocess.Popen[str]:
    d = workdir / f"sipp-{port}"
    d.mkdir(exist_ok=True)
    return subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / scenario), "-m", str(calls), "-i", "127.0.0.1", "-p", str(port),
         "-mi", "127.0.0.1", "-mp", str(free_port()), "-timeout", f"{timeout}s", "-timeout_error", "-nostdin",
         "-trace_err"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sipp_ok(proc: subprocess.Popen[str], name: str, timeout: float = 120) -> None:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"{name}: sipp exit {proc.returncode}\n{out[-1500:]}\n{err[-1500:]}"


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def gap(a: str, b: str) -> float:
    return (datetime.fromisoformat(b.replace("Z", "+00:00"))
            - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()


def events(env: Env, type_: str) -> list[dict[str, Any]]:
    return [e.data | {"_call_id": e.call_id} for e in asyncio.run(read_events(env.state / "ivr.db"))
            if e.type == type_]


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    yield from run_appliance(env)


@pytest.mark.parametrize("mode", ["bridge", "refer"])
def test_answered_and_pressed_1_is_transferred_and_done(env: Env, ports: tuple[int, int], mode: str) -> None:
    """With transfer.mode refer too: the leg the appliance placed cannot REFER, so it bridges (it used to fail
    the transfer and retry the customer until the attempts ran out)."""
    customer_port, agent_port = ports
    configure(env, customer_port, agent_port, mode=mode)
    customer = sipp_uas("cb_customer_press1.xml", customer_port, env.root)
    agent = sipp_uas("cb_agent_data.xml", agent_port, env.root)  # wants X-IVR-Var-ACCOUNT on the INVITE
    # the same number and queue twice: one request, with the later call's data for the agent. Both are filed
    # before the dialer runs: the data is read when the dial starts, and a CI run once dialled between the two.
    rid, created = file_request(env)
    again, created_again = file_request(env, data=(("ACCOUNT", "88812345"),))
    assert created and not created_again and again == rid
    try:
        for _env, _port, log in run_appliance(env):
            row = wait_state(env, rid, ("done", "expired"))
            assert row["state"] == "done", (row, attempts(env, rid), log.read_text()[-3000:])
            sipp_ok(customer, "customer")
            sipp_ok(agent, "agent")
    finally:
        stop(customer)
        stop(agent)
    [att] = attempts(env, rid)  # dialled once, though requested twice
    assert att["outcome"] == "connected" and att["sip_call_id"].startswith("cb-")
    # the customer's leg ran the callback flow and was transferred to the request's queue
    [leg] = [e for e in events(env, "callback.leg") if e["request_id"] == rid]
    call = next(c for c in env.calls() if c["call_id"] == leg["_call_id"])
    assert call["flow"] == "callback" and call["outcome"] == "transferred", call
    assert call["caller"] == NUMBER.lstrip("+") or call["caller"] == NUMBER
    [xfer] = [e for e in events(env, "transfer") if e["_call_id"] == leg["_call_id"]]
    assert xfer["destination"] == "support" and xfer["ok"] is True
    # the caller's data went with the leg's transfer (X-IVR-Var-ACCOUNT on the bridge's INVITE to the agent)
    assert xfer["data"] == ["ACCOUNT"]
    # honest numbers: the quoted range against the time to dial and to the agent
    [kept] = [e for e in events(env, "callback.kept") if e["request_id"] == rid]
    assert kept["time_to_dial"] is not None and kept["time_to_agent"] is not None
    assert kept["time_to_dial"] <= kept["time_to_agent"]
    assert kept["kept"] is True and kept["quoted_high"] == 600.0
    states = [e["to"] for e in events(env, "callback.state") if e["request_id"] == rid]
    assert states == ["dialing", "connected", "done"]


def test_busy_is_retried_after_the_interval_then_expires(env: Env, ports: tuple[int, int]) -> None:
    customer_port, agent_port = ports
    configure(env, customer_port, agent_port, intervals="[1, 2]", max_attempts=3)
    customer = sipp_uas("uas_busy.xml", customer_port, env.root, calls=3)
    try:
        for _ in run_appliance(env):
            rid, _ = file_request(env)
            row = wait_state(env, rid, ("expired", "done"), timeout=90)
            sipp_ok(customer, "customer")
    finally:
        stop(customer)
    assert row["state"] == "expired" and "max attempts" in row["reason"]
    atts = attempts(env, rid)
    assert [a["outcome"] for a in atts] == ["busy", "busy", "busy"]
    assert all("486" in a["detail"] for a in atts)
    # never redialled inside the retry interval: 1 s after the first, 2 s after the second
    assert gap(atts[0]["ended_at"], atts[1]["started_at"]) >= 1.0
    assert gap(atts[1]["ended_at"], atts[2]["started_at"]) >= 2.0


def test_not_found_is_invalid_and_never_retried(env: Env, ports: tuple[int, int]) -> None:
    customer_port, agent_port = ports
    configure(env, customer_port, agent_port)
    customer = sipp_uas("uas_not_found.xml", customer_port, env.root)
    try:
        for _env, _port, _log in run_appliance(env):
            rid, _ = file_request(env)
            row = wait_state(env, rid, ("expired", "done"))
            sipp_ok(customer, "customer")
            time.sleep(2.0)  # twice the retry interval: a retry would have started by now
            assert len(attempts(env, rid)) == 1
    finally:
        stop(customer)
    assert row["state"] == "expired" and "invalid" in row["reason"]
    [att] = attempts(env, rid)
    assert att["outcome"] == "invalid" and "404" in att["detail"]


def test_never_answered_is_cancelled_and_retried_later(env: Env, ports: tuple[int, int]) -> None:
    customer_port, agent_port = ports
    configure(env, customer_port, agent_port, intervals="[600]", ring_timeout=2)
    customer = sipp_uas("uas_ring_no_answer.xml", customer_port, env.root)  # expects our CANCEL
    try:
        for _ in run_appliance(env):
            rid, _ = file_request(env)
            row = wait_state(env, rid, ("retry", "expired", "done"))
            sipp_ok(customer, "customer")
    finally:
        stop(customer)
    assert row["state"] == "retry"
    [att] = attempts(env, rid)
    assert att["outcome"] == "no-answer"
    assert gap(att["ended_at"], row["next_attempt_at"]) >= 600 - 1


def test_answered_without_a_key_is_not_confirmed_and_retried(env: Env, ports: tuple[int, int]) -> None:
    customer_port, agent_port = ports
    configure(env, customer_port, agent_port, intervals="[600]")
    customer = sipp_uas("cb_customer_silent.xml", customer_port, env.root)
    try:
        for _ in run_appliance(env):
            rid, _ = file_request(env)
            row = wait_state(env, rid, ("retry", "expired", "done"))
            sipp_ok(customer, "customer")
    finally:
        stop(customer)
    assert row["state"] == "retry" and row["reason"] == "not-confirmed"
    [att] = attempts(env, rid)
    assert att["outcome"] == "connected"
    [leg] = [e for e in events(env, "callback.leg") if e["request_id"] == rid]
    call = next(c for c in env.calls() if c["call_id"] == leg["_call_id"])
    assert call["outcome"] == "hangup" and call["path"] == ["offer", "later"]


def _idle_ticks(env: Env, ticks: int = 10) -> dict[str, Any]:
    """Status once the dialer has made ``ticks`` more passes (bounded)."""
    first = env.ivr("status").json()["callbacks"]
    for _ in range(200):
        st = env.ivr("status").json()["callbacks"]
        if st["ticks"] >= first["ticks"] + ticks:
            return dict(st)
        time.sleep(0.1)
    raise AssertionError(f"the dialer made no passes: {first}")


def test_nothing_is_dialled_outside_the_calling_window(env: Env, ports: tuple[int, int]) -> None:
    customer_port, agent_port = ports
    # a window that opens six hours from now, for one minute (UTC, so the test does not depend on where it runs)
    start = datetime.now(UTC) + timedelta(hours=6)
    end = start + timedelta(minutes=1)
    windows = f'[{{start: "{start:%H:%M}", end: "{end:%H:%M}", zone: UTC}}]'
    configure(env, customer_port, agent_port, windows=windows)
    customer = sipp_uas("cb_customer_press1.xml", customer_port, env.root, timeout=30)
    try:
        for _ in run_appliance(env):
            rid, _ = file_request(env)
            st = _idle_ticks(env)
            assert st["clock_synced"] is True and st["due"] == 0 and st["active"] == 0
            assert request_row(env, rid)["state"] == "requested" and attempts(env, rid) == []
    finally:
        stop(customer)
    assert customer.returncode != 0  # the phone never rang: sipp was killed waiting for an INVITE


def test_nothing_is_dialled_while_the_clock_is_not_synchronised(env: Env, ports: tuple[int, int]) -> None:
    if probe_clock("ntp").synced:
        pytest.skip("this box's clock is synchronised; the dialer unit tests cover an unsynchronised one")
    customer_port, agent_port = ports
    configure(env, customer_port, agent_port, clock="ntp")
    for _ in run_appliance(env):
        rid, _ = file_request(env)
        st = _idle_ticks(env)
        assert st["clock_synced"] is False and "not synchronised" in st["clock"]
        assert request_row(env, rid)["state"] == "requested" and attempts(env, rid) == []
