"""`ivr callbacks list|show|cancel|retry` over the callback store: what an operator sees and may change, and
clear refusals for unknown ids and moves the state machine forbids."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from ivr.store.callbacks import CallbackStore, Consent
from ivr.store.eventlog import EventLog
from tests.conftest import Env


def file(env: Env, number: str, *, dialing: bool = False, ended_ago: float | None = None) -> str:
    async def go() -> str:
        now = datetime.now(UTC)
        async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
            store = CallbackStore(log)
            r = await store.request(queue="support", number=number, zones=("America/New_York",), arrival_at=now,
                                    consent=Consent(at=now, number=number), now=now)
            if dialing or ended_ago is not None:
                att = await store.begin_attempt(r.id, now, sip_call_id="cb-1@127.0.0.1")
                if ended_ago is not None:
                    await store.finish_attempt(att.id, "busy", now - timedelta(seconds=ended_ago), "SIP 486")
                    await store.schedule_retry(r.id, now + timedelta(hours=1), now, "busy")
            return r.id

    return asyncio.run(go())


def test_list_show_cancel(env: Env) -> None:
    assert env.ivr("callbacks", "list").out.startswith("no callbacks")
    a = file(env, "+12125550123")
    b = file(env, "+12125550124", dialing=True)
    out = env.ivr("callbacks", "list").out
    assert a in out and b in out and "requested" in out and "dialing" in out
    shown = env.ivr("callbacks", "show", a[:30])  # an unambiguous prefix will do
    assert shown.code == 0 and "+12125550123" in shown.out
    assert "in flight" in env.ivr("callbacks", "show", b).out

    r = env.ivr("callbacks", "cancel", a)
    assert r.code == 0 and "cancelled" in r.out
    assert a not in env.ivr("callbacks", "list").out and a in env.ivr("callbacks", "list", "--all").out
    [row] = [x for x in env.ivr("callbacks", "list", "--all", "--json").json() if x["id"] == a]
    assert row["state"] == "cancelled" and row["reason"] == "cancelled by an operator"

    again = env.ivr("callbacks", "cancel", a)
    assert again.code == 1 and "is cancelled: only a callback waiting to be dialled" in again.err
    busy = env.ivr("callbacks", "cancel", b)  # never pulled from under the dialer
    assert busy.code == 1 and "is dialing" in busy.err
    unknown = env.ivr("callbacks", "show", "nope")
    assert unknown.code == 1 and unknown.err.strip() == "no callback nope"


def test_retry_keeps_the_retry_interval(env: Env) -> None:
    with env.config.open("a") as f:
        f.write("callbacks: {dial: {via: sip, proxy: '127.0.0.1:5070'}, retry: {intervals: [600]}}\n")
    rid = file(env, "+12125550123", ended_ago=60)  # the last attempt ended a minute ago; next in an hour
    r = env.ivr("callbacks", "retry", rid)
    assert r.code == 0, r.err
    [row] = env.ivr("callbacks", "list", "--json").json()
    ended = datetime.now(UTC) - timedelta(seconds=60)
    at = datetime.fromisoformat(row["next_attempt_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=590) <= at - ended <= timedelta(seconds=610)  # 600 s after the attempt, not now
    cancelled = file(env, "+12125550125")
    env.ivr("callbacks", "cancel", cancelled)
    refused = env.ivr("callbacks", "retry", cancelled)
    assert refused.code == 1 and "can be retried" in refused.err


def test_callbacks_config_errors_are_reported_with_their_place(env: Env) -> None:
    text = env.config.read_text()
    env.config.write_text(text + "callbacks:\n  zone: Mars/Olympus\n  dial: {via: ami}\n", encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1
    lines = r.err.splitlines() + r.out.splitlines()
    at = f":{text.count(chr(10)) + 2}:9:"  # "  zone:" is the second line appended
    assert any(line.endswith("unknown time zone 'Mars/Olympus'") and at in line for line in lines), lines
    assert any("dial via ami needs an ami: section" in line for line in lines), lines
    env.config.write_text(text + "callbacks: {mode: sometimes}\n", encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1 and "mode" in r.err + r.out
    env.config.write_text(text + "callbacks: {region: US}\n", encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1 and "callbacks dialled by SIP need dial: {proxy: host:port}" in r.err + r.out


def test_the_command_leaves_the_daemons_live_calls_alone(env: Env) -> None:
    """A call in progress has no end yet; `ivr callbacks` beside the daemon must not mark it interrupted."""

    def commands_beside_it() -> list[dict[str, Any]]:
        file(env, "+12125550123")
        rid = env.ivr("callbacks", "list", "--json").json()[0]["id"]
        assert env.ivr("callbacks", "cancel", rid).code == 0
        return env.calls()

    async def live_call() -> list[dict[str, Any]]:
        # The log stays open (its owner lock held) while the commands run, as the daemon's does.
        async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
            await log.begin_call(call_id="live-1", channel="sip", caller="+12125550123", dialed="100",
                                 flow="main", version="v1")
            return await asyncio.to_thread(commands_beside_it)

    [call] = [c for c in asyncio.run(live_call()) if c["call_id"] == "live-1"]
    assert call["outcome"] is None and call["ended_at"] is None
