"""The durable callback queue on a real SQLite file: dedupe, attempts, retries, crash safety, state machine."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ivr.callbacks.dialer import Dialer, DialerSettings, DialIds, DialResult, PbxView
from ivr.callbacks.policy import CallbackPolicy, RetryRules
from ivr.store.callbacks import (
    Attempt,
    AttemptCounts,
    AttemptRefused,
    CallbackRequest,
    CallbackStore,
    Consent,
    IllegalTransition,
)
from ivr.store.eventlog import EventLog, read_events

T0 = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
NY = ("America/New_York",)


def consent(at: datetime, number: str = "+14155552671") -> Consent:
    return Consent(at=at, number=number, heard="callback-offer,readback", pressed="1")


async def open_store(path: Path) -> tuple[EventLog, CallbackStore]:
    log = await EventLog.open(path, "site-a")
    return log, CallbackStore(log)


async def test_request_dedupe_attempts_retries_done(tmp_path: Path) -> None:
    log, store = await open_store(tmp_path / "ivr.db")
    try:
        first = await store.request(queue="support", number="+14155552671", zones=NY, arrival_at=T0,
                                    consent=consent(T0), now=T0, call_id="call-1", quoted=(300, 480))
        assert first.created
        # the same number asks again later (a later arrival): one request, the earlier place in line kept
        t1 = T0 + timedelta(minutes=5)
        again = await store.request(queue="support", number="+14155552671", zones=NY, arrival_at=t1,
                                    consent=consent(t1), now=t1, call_id="call-2")
        assert again.id == first.id and not again.created
        other = await store.request(queue="support", number="+12125550123", zones=NY,
                                    arrival_at=T0 - timedelta(minutes=1), consent=consent(T0, "+12125550123"), now=t1)
        req = await store.get(first.id)
        assert req.arrival_at.startswith("2026-07-01T16:00:00") and req.consent_at.startswith("2026-07-01T16:05")
        assert await store.count_requests(since=T0, number="+14155552671") == 2
        assert await store.count_requests(since=T0) == 3
        # due in arrival order; the window filter drops what it says is closed
        due = await store.due(t1, 10)
        assert [r.id for r in due] == [other.id, first.id]
        assert [r.id for r in await store.due(t1, 1)] == [other.id]
        assert await store.due(t1, 10, is_open=lambda r, now: r.id != other.id) == [req]

        a1 = await store.begin_attempt(first.id, t1, channel="ami", action_id="act-1")
        assert (await store.get(first.id)).state == "dialing" and a1.n == 1
        with pytest.raises(AttemptRefused):  # no second attempt in flight
            await store.begin_attempt(first.id, t1)
        await store.finish_attempt(a1.id, "no-answer", t1 + timedelta(seconds=40))
        retry_at = t1 + timedelta(minutes=10)
        await store.schedule_retry(first.id, retry_at, t1 + timedelta(seconds=40), "no answer")
        with pytest.raises(AttemptRefused, match="not due"):  # no redial inside the retry interval
            await store.begin_attempt(first.id, t1 + timedelta(minutes=5))
        assert first.id not in [r.id for r in await store.due(t1 + timedelta(minutes=5), 10)]
        assert first.id in [r.id for r in await store.due(retry_at, 10)]
        a2 = await store.begin_attempt(first.id, retry_at, sip_call_id="abc@box")
        await store.finish_attempt(a2.id, "connected", retry_at + timedelta(seconds=20))
        await store.complete(first.id, retry_at + timedelta(minutes=3))
        done = await store.get(first.id)
        assert done.state == "done" and done.attempts == 2 and done.next_attempt_at is None
        assert [a.outcome for a in await store.attempts(first.id)] == ["no-answer", "connected"]
        # a new request for the number after the first is done is a new callback
        t2 = retry_at + timedelta(minutes=5)
        new = await store.request(queue="support", number="+14155552671", zones=NY, arrival_at=t2,
                                  consent=consent(t2), now=t2)
        assert new.created and new.id != first.id
    finally:
        await log.close()
    events = await read_events(tmp_path / "ivr.db")
    states = [(e.data["from"], e.data["to"]) for e in events
              if e.type == "callback.state" and e.data["request_id"] == first.id]
    assert states == [("requested", "dialing"), ("dialing", "no-answer"), ("no-answer", "retry"),
                      ("retry", "dialing"), ("dialing", "connected"), ("connected", "done")]
    types = [e.type for e in events if e.data.get("request_id") == first.id]
    assert types[:2] == ["callback.requested", "callback.updated"]
    assert types.count("callback.attempt.started") == 2 and types.count("callback.attempt.ended") == 2


async def test_illegal_transitions_are_refused(tmp_path: Path) -> None:
    log, store = await open_store(tmp_path / "ivr.db")
    try:
        r = await store.request(queue="q", number="+14155552671", zones=NY, arrival_at=T0, consent=consent(T0),
                                now=T0)
        with pytest.raises(IllegalTransition):
            await store.complete(r.id, T0)  # requested -> done
        with pytest.raises(IllegalTransition):
            await store.transition(r.id, "connected", T0)
        a = await store.begin_attempt(r.id, T0)
        with pytest.raises(IllegalTransition):
            await store.cancel(r.id, T0)  # dialing: the attempt must end first
        await store.finish_attempt(a.id, "invalid", T0)
        with pytest.raises(IllegalTransition):
            await store.schedule_retry(r.id, T0, T0)  # an invalid number is never retried
        await store.expire(r.id, T0, "invalid number")
        with pytest.raises(IllegalTransition):
            await store.cancel(r.id, T0)
        assert (await store.get(r.id)).state == "expired"
    finally:
        await log.close()
    db = sqlite3.connect(tmp_path / "ivr.db")
    with pytest.raises(sqlite3.IntegrityError):  # the schema refuses a state that does not exist
        db.execute("UPDATE callback_requests SET state='teleported'")


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from datetime import datetime, UTC
    from pathlib import Path
    from ivr.store.eventlog import EventLog
    from ivr.store.callbacks import CallbackStore, Consent

    async def main() -> None:
        log = await EventLog.open(Path(sys.argv[1]), "site-a")
        store = CallbackStore(log)
        now = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
        r = await store.request(queue="support", number="+14155552671", zones=("America/New_York",),
                                arrival_at=now, consent=Consent(now, "+14155552671", "offer", "1"), now=now)
        a = await store.begin_attempt(r.id, now, channel="ami", action_id="act-9")
        print("ATTEMPT", r.id, a.id, flush=True)
        for _ in range(600):  # "dialing": the parent kills us here
            time.sleep(0.1)

    asyncio.run(main())
""")


def test_crash_mid_attempt_then_reconcile(tmp_path: Path) -> None:
    path = tmp_path / "ivr.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 30
        line = ""
        while not line.startswith("ATTEMPT") and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
        assert line.startswith("ATTEMPT"), "child never reached the attempt"
        _, request_id, attempt_id = line.split()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)

    async def after() -> None:
        log, store = await open_store(path)
        try:
            req = await store.get(request_id)
            assert req.state == "dialing" and req.attempts == 1
            flying = await store.in_flight()
            assert [a.id for a in flying] == [attempt_id] and flying[0].action_id == "act-9"
            now = datetime(2026, 7, 1, 16, 30, tzinfo=UTC)
            policy = CallbackPolicy(site_zone=NY[0], retry=RetryRules(after_interruption=300.0))
            dialer = Dialer(store, policy, _GonePort(), DialerSettings(clock="trust"), now=lambda: now)
            decided = await dialer.reconcile()  # no AMI answer: counted as gone
            assert decided == {attempt_id: "interrupted"}
            assert await store.in_flight() == []
            req = await store.get(request_id)
            assert req.state == "retry" and req.next_attempt_at is not None
            assert await store.due(now, 10) == []  # not redialled inside the back-off
            retry_at = now + timedelta(seconds=300)
            assert [r.id for r in await store.due(retry_at, 10)] == [request_id]
            assert await store.attempt_counts(request_id) == AttemptCounts(charged=0, interrupted=1)
        finally:
            await log.close()

    asyncio.run(after())


class _GonePort:
    name = "test"

    def ids(self, r: CallbackRequest) -> DialIds:
        return DialIds()

    def unavailable(self) -> str | None:
        return None

    async def dial(self, r: CallbackRequest, attempt: Attempt, ids: DialIds) -> DialResult:
        raise AssertionError("nothing is dialled here")

    async def pbx_view(self, attempts: Sequence[Attempt]) -> Mapping[str, PbxView]:
        return {}
