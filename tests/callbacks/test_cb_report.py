"""`ivr callbacks report`: outcomes, promises kept, the EWT error against the wait that followed, and time to
first dial / to agent, from the requests and their `callback.kept` records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from ivr.callbacks.dialer import DialResult, promise_record
from ivr.callbacks.report import build_report, percentile
from ivr.store.callbacks import CallbackStore, Consent
from ivr.store.eventlog import EventLog
from tests.conftest import Env


def kept(rid: str, low: float | None, high: float | None, dial: float | None, agent: float | None) -> dict:
    k = None if high is None else (agent is not None and agent <= high)
    return {"request_id": rid, "quoted_low": low, "quoted_high": high, "time_to_dial": dial,
            "time_to_agent": agent, "kept": k}


def test_aggregates_outcomes_promises_and_ewt_error() -> None:
    reqs = [{"id": "a", "state": "done"}, {"id": "b", "state": "done"}, {"id": "c", "state": "expired"},
            {"id": "d", "state": "cancelled"}, {"id": "e", "state": "retry"}, {"id": "f", "state": "done"}]
    rows = [kept("a", 300, 480, 200, 420),  # mid 390: +30, inside
            kept("b", 300, 480, 500, 600),  # +210, outside, promise broken
            kept("c", 120, 240, None, None),  # expired: promise broken, no actual wait
            kept("f", None, None, 10, 40),  # asked for in the PBX queue with the wait unknown: no quote
            kept("zzz", 0, 60, 5, 10)]  # another period or queue: ignored
    r = build_report(reqs, rows)
    assert (r.requests, r.done, r.expired, r.cancelled, r.in_progress) == (6, 3, 1, 1, 1)
    assert (r.promises, r.kept, r.kept_rate) == (3, 1, 0.333)
    assert r.ewt_samples == 2 and r.ewt_mae == 120.0 and r.ewt_bias == 120.0 and r.ewt_in_range == 0.5
    assert (r.dial_p50, r.dial_p90) == (200, 500) and (r.agent_p50, r.agent_p90) == (420, 600)


def test_quotes_too_long_give_a_negative_bias_and_empty_periods_say_nothing() -> None:
    reqs = [{"id": str(i), "state": "done"} for i in range(4)]
    r = build_report(reqs, [kept(str(i), 400, 600, 30, 100 + 10 * i) for i in range(4)])
    assert r.ewt_bias is not None and r.ewt_bias < 0 and r.ewt_mae == -r.ewt_bias
    assert r.kept_rate == 1.0 and r.ewt_in_range == 0.0
    empty = build_report([], [])
    assert empty.requests == 0 and empty.kept_rate is None and empty.ewt_mae is None and empty.agent_p90 is None


def test_percentile_is_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 11)]
    assert percentile(xs, 50) == 5 and percentile(xs, 90) == 9 and percentile([7.0], 90) == 7
    assert percentile([], 50) is None


def test_report_command_over_a_real_store(env: Env) -> None:
    async def fill() -> None:
        now = datetime.now(UTC)
        async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
            store = CallbackStore(log)

            async def one(number: str, queue: str, quoted: tuple[float, float], *, agent_after: float | None,
                          age: timedelta = timedelta(minutes=30)) -> str:
                arrival = now - age
                r = await store.request(queue=queue, number=number, zones=("America/New_York",),
                                        arrival_at=arrival, consent=Consent(at=arrival, number=number),
                                        now=arrival, quoted=quoted)
                if agent_after is None:
                    await store.expire(r.id, now, "expiry passed before it could be dialled")
                    await log.append("callback.kept", None, **promise_record(await store.get(r.id), None, None, now))
                    return r.id
                dial_at = arrival + timedelta(seconds=agent_after - 30)
                att = await store.begin_attempt(r.id, dial_at, sip_call_id=f"cb-{number}@127.0.0.1")
                await store.finish_attempt(att.id, "connected", dial_at + timedelta(seconds=30), "confirmed")
                await store.complete(r.id, dial_at + timedelta(seconds=30))
                result = DialResult("answered", confirmed=True, agent_at=arrival + timedelta(seconds=agent_after))
                await log.append("callback.kept", None,
                                 **promise_record(await store.get(r.id), dial_at, result, now))
                return r.id

            await one("+12125550101", "support", (300, 480), agent_after=420)  # kept, +30 s
            await one("+12125550102", "support", (300, 480), agent_after=600)  # broken, +210 s
            await one("+12125550103", "support", (120, 240), agent_after=None)  # expired
            await one("+12125550104", "sales", (60, 120), agent_after=90)
            await one("+12125550105", "support", (60, 120), agent_after=90, age=timedelta(days=20))  # too old
            waiting = await store.request(queue="support", number="+12125550106", zones=("America/New_York",),
                                          arrival_at=now, consent=Consent(at=now, number="+12125550106"), now=now)
            await store.cancel(waiting.id, now, "cancelled by the caller")

    asyncio.run(fill())
    r = env.ivr("callbacks", "report", "--queue", "support", "--json")
    assert r.code == 0, r.err
    j = r.json()
    assert (j["requests"], j["done"], j["expired"], j["cancelled"]) == (4, 2, 1, 1)
    assert (j["promises"], j["kept"]) == (3, 1)
    assert j["ewt_mae"] == 120.0 and j["ewt_bias"] == 120.0 and j["ewt_in_range"] == 0.5
    assert (j["dial_p50"], j["dial_p90"]) == (390.0, 570.0) and (j["agent_p50"], j["agent_p90"]) == (420.0, 600.0)

    everything = env.ivr("callbacks", "report", "--days", "30", "--json").json()
    assert everything["requests"] == 6 and everything["done"] == 4
    text = env.ivr("callbacks", "report").out
    assert "requests          5" in text and "promise kept      2 of 4  (50.0 %)" in text
    assert "inside the quoted range 66.7 %" in text

    bad = env.ivr("callbacks", "report", "--since", "last tuesday")
    assert bad.code == 2 and "not an ISO 8601 time" in bad.err
    future = env.ivr("callbacks", "report", "--since", "2099-01-01", "--json").json()
    assert future["requests"] == 0 and future["kept_rate"] is None
