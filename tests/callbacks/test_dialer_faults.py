"""The callback promise under faults, on the scheduler with a real SQLite store and time passed in (issue 12):
an attempt is done only on evidence; what a crash or a PBX link outage cuts is retried with a back-off and
spends none of the customer's attempts; every expiry is a counted broken promise; nothing is dialled while the
PBX link is down; what the event log proves about a leg decides it after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ivr.callbacks.dialer import Dialer, DialerSettings, DialIds, DialResult, PbxView
from ivr.callbacks.policy import CallbackPolicy, CapRules, RetryRules
from ivr.store.callbacks import Attempt, AttemptCounts, CallbackRequest, CallbackStore, Consent
from ivr.store.eventlog import EventLog, read_events

T0 = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)  # 12:00 in New York: inside the legal window
NY = ("America/New_York",)


class Port:
    """The dialer's seam: answers each dial with the next scripted result; the PBX link can be down."""

    name = "test"

    def __init__(self, *results: DialResult) -> None:
        self.results = list(results)
        self.dialled: list[str] = []
        self.down: str | None = None
        self.view: dict[str, PbxView] = {}

    def ids(self, r: CallbackRequest) -> DialIds:
        return DialIds(sip_call_id=f"cid-{len(self.dialled)}")

    def unavailable(self) -> str | None:
        return self.down

    async def dial(self, r: CallbackRequest, attempt: Attempt, ids: DialIds) -> DialResult:
        self.dialled.append(r.id)
        return self.results.pop(0) if self.results else DialResult("no-answer")

    async def pbx_view(self, attempts: Sequence[Attempt]) -> Mapping[str, PbxView]:
        return {a.id: self.view.get(a.request_id, "gone") for a in attempts}


async def _open(tmp_path: Path) -> tuple[EventLog, CallbackStore]:
    log = await EventLog.open(tmp_path / "ivr.db", "s")
    return log, CallbackStore(log)


async def _file(store: CallbackStore, number: str, at: datetime = T0) -> str:
    r = await store.request(queue="support", number=number, zones=NY, arrival_at=at,
                            consent=Consent(at=at, number=number), now=at, quoted=(60.0, 300.0))
    return r.id


async def _settle(dialer: Dialer) -> None:
    for _ in range(200):  # bounded: the scripted port answers at once
        if not dialer.active:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("attempts did not finish")


async def _kept(tmp_path: Path) -> list[dict[str, object]]:
    return [e.data for e in await read_events(tmp_path / "ivr.db") if e.type == "callback.kept"]


async def test_nothing_is_dialled_or_charged_while_the_pbx_link_is_down(tmp_path: Path) -> None:
    log, store = await _open(tmp_path)
    try:
        rid = await _file(store, "+12125550123")
        port = Port(DialResult("answered", True))
        port.down = "AMI link to the PBX is down"
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0]), port, DialerSettings(clock="trust"), now=lambda: T0)
        for _ in range(5):
            assert await dialer.tick() == 0
        assert port.dialled == [] and await store.attempts(rid) == []
        assert dialer.status()["paused"] == "AMI link to the PBX is down"
        port.down = None
        assert await dialer.tick() == 1
        await _settle(dialer)
        assert (await store.get(rid)).state == "done" and dialer.status()["paused"] is None
    finally:
        await log.close()


async def test_an_attempt_never_sent_is_due_again_at_once_and_not_counted(tmp_path: Path) -> None:
    log, store = await _open(tmp_path)
    try:
        rid = await _file(store, "+12125550123")
        port = Port(DialResult("interrupted", detail="AMI link down; Originate not sent", sent=False),
                    DialResult("answered", True))
        policy = CallbackPolicy(site_zone=NY[0], retry=RetryRules(max_attempts=1, after_interruption=600))
        dialer = Dialer(store, policy, port, DialerSettings(clock="trust"), now=lambda: T0)
        assert await dialer.tick() == 1
        await _settle(dialer)
        assert (await store.get(rid)).state == "retry"
        assert (await store.attempt_counts(rid)).interrupted == 0
        dialer._held.clear()
        assert await dialer.tick() == 1  # no back-off: nothing went out
        await _settle(dialer)
        assert (await store.get(rid)).state == "done"
    finally:
        await log.close()


async def test_crashes_spend_none_of_the_customers_attempts_and_back_off(tmp_path: Path) -> None:
    """Six interruptions (the box's crashes) with max_attempts 3 used to expire the request unserved."""
    log, store = await _open(tmp_path)
    try:
        rid = await _file(store, "+12125550123")
        now = [T0]
        policy = CallbackPolicy(site_zone=NY[0], retry=RetryRules(intervals=(300.0, 900.0), max_attempts=3,
                                                                  after_interruption=60.0, max_interruptions=10))
        port = Port(*[DialResult("interrupted", detail="dialer stopped")] * 6, DialResult("answered", True))
        dialer = Dialer(store, policy, port, DialerSettings(clock="trust"), now=lambda: now[0])
        gaps = []
        for _ in range(7):
            dialer._held.clear()  # the stored next_attempt_at alone decides (a restart forgets the monotonic guard)
            assert await dialer.tick() == 1
            await _settle(dialer)
            r = await store.get(rid)
            if r.state == "done":
                break
            assert r.state == "retry" and r.next_attempt_at is not None
            nxt = datetime.fromisoformat(r.next_attempt_at.replace("Z", "+00:00"))
            gaps.append((nxt - now[0]).total_seconds())
            dialer._held.clear()
            now[0] = nxt - timedelta(seconds=1)
            assert await dialer.tick() == 0  # never before its back-off
            now[0] = nxt
        assert (await store.get(rid)).state == "done" and len(port.dialled) == 7
        # back-off doubles from 60 s, capped at the longest retry interval
        assert [round(g) for g in gaps] == [60, 120, 240, 480, 900, 900]
        assert await store.attempt_counts(rid) == AttemptCounts(1, 6)
    finally:
        await log.close()


async def test_a_crash_loop_is_bounded_and_its_expiry_counted(tmp_path: Path) -> None:
    log, store = await _open(tmp_path)
    try:
        rid = await _file(store, "+12125550123")
        now = [T0]
        policy = CallbackPolicy(site_zone=NY[0], retry=RetryRules(after_interruption=1.0, max_interruptions=3))
        port = Port(*[DialResult("interrupted")] * 3)
        dialer = Dialer(store, policy, port, DialerSettings(clock="trust"), now=lambda: now[0])
        for _ in range(3):
            dialer._held.clear()
            await dialer.tick()
            await _settle(dialer)
            now[0] += timedelta(seconds=10)
        r = await store.get(rid)
        assert r.state == "expired" and "interrupted 3 times" in r.reason
        [k] = await _kept(tmp_path)
        assert k["request_id"] == rid and k["kept"] is False
    finally:
        await log.close()


async def test_an_expiry_decided_at_reconciliation_is_a_counted_broken_promise(tmp_path: Path) -> None:
    log, store = await _open(tmp_path)
    try:
        rid = await _file(store, "+12125550123")
        await store.begin_attempt(rid, T0)  # (the box died mid-attempt)
        late = T0 + timedelta(hours=7, minutes=59, seconds=30)  # the back-off would pass the 8 h expiry
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0]), Port(), DialerSettings(clock="trust"),
                        now=lambda: late)
        assert list((await dialer.reconcile()).values()) == ["interrupted"]
        assert (await store.get(rid)).state == "expired"
        [k] = await _kept(tmp_path)
        assert k["request_id"] == rid and k["kept"] is False
    finally:
        await log.close()


async def test_a_customer_the_log_shows_with_an_agent_is_never_dialled_again(tmp_path: Path) -> None:
    """Crash while the SIP callback leg was bridged to an agent: the leg's own record proves it."""
    log, store = await _open(tmp_path)
    try:
        bridged = await _file(store, "+12125550123")
        pressed_only = await _file(store, "+12125550124")
        a1 = await store.begin_attempt(bridged, T0, sip_call_id="cb-1")
        a2 = await store.begin_attempt(pressed_only, T0, sip_call_id="cb-2")
        for att, leg in ((a1, "leg-1"), (a2, "leg-2")):
            await log.append("callback.leg", leg, request_id=att.request_id, attempt_id=att.id, sip_call_id="x")
            await log.append("menu.choice", leg, node="offer", key="1", via="dtmf")
        await log.append("transfer.progress", "leg-1", node="connect", stage="bridged", kind="queue",
                         destination="support", agent_call_id="agent-1")
        port = Port()
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0]), port, DialerSettings(clock="trust"),
                        now=lambda: T0 + timedelta(seconds=5))
        decided = await dialer.reconcile()
        assert decided == {a1.id: "connected", a2.id: "interrupted"}
        assert (await store.get(bridged)).state == "done"
        assert (await store.get(pressed_only)).state == "retry"  # pressed 1, never handed over: called again
        [k] = await _kept(tmp_path)
        assert k["request_id"] == bridged
        for _ in range(3):
            dialer._held.clear()
            await dialer.tick()
            await _settle(dialer)
        assert bridged not in port.dialled
    finally:
        await log.close()


async def test_a_call_maybe_still_up_is_never_redialled(tmp_path: Path) -> None:
    """An outage left the attempt in doubt: the request is not dialled again until the PBX says gone."""
    log, store = await _open(tmp_path)
    try:
        rid = await _file(store, "+12125550123")
        port = Port(DialResult("in-doubt", detail="AMI link lost; the PBX could not say"))
        port.view[rid] = "up"
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0], retry=RetryRules(after_interruption=0.0)), port,
                        DialerSettings(clock="trust"), now=lambda: T0)
        await dialer.tick()
        await _settle(dialer)
        assert (await store.get(rid)).state == "dialing" and dialer.status()["in_doubt"] == 1
        for _ in range(3):
            assert await dialer.tick() == 0
        assert port.dialled == [rid] and len(await store.in_flight()) == 1
        port.view[rid] = "gone"  # hung up at "press 1": nothing proves the queue
        await dialer.tick()
        await _settle(dialer)
        first = (await store.attempts(rid))[0]
        assert first.outcome == "interrupted" and (await store.attempt_counts(rid)).charged <= 1
        assert port.dialled == [rid, rid]  # dialled again only once the PBX said gone
    finally:
        await log.close()


async def test_the_per_number_dial_cap_holds_every_attempt(tmp_path: Path) -> None:
    log, store = await _open(tmp_path)
    try:
        rid = await _file(store, "+12125550123")
        other = await _file(store, "+12125550199")
        policy = CallbackPolicy(site_zone=NY[0], caps=CapRules(dials_per_number_per_day=2),
                                retry=RetryRules(intervals=(0.0,), max_attempts=10, after_interruption=0.0,
                                                 expiry=3 * 86400.0))
        port = Port(*[DialResult("interrupted")] * 10)
        now = [T0]
        dialer = Dialer(store, policy, port, DialerSettings(clock="trust", max_concurrent=1), now=lambda: now[0])
        for _ in range(8):
            dialer._held.clear()
            await dialer.tick()
            await _settle(dialer)
            now[0] += timedelta(seconds=1)
        assert port.dialled.count(rid) == 2 and port.dialled.count(other) == 2
        assert dialer.status()["waiting"] == {rid: "number-cap", other: "number-cap"}
        now[0] = T0 + timedelta(days=1, seconds=10)  # a day later the number may be rung again
        dialer._held.clear()
        await dialer.tick()
        await _settle(dialer)
        assert len(port.dialled) == 5
    finally:
        await log.close()


async def test_a_request_a_crash_cut_goes_behind_the_others(tmp_path: Path) -> None:
    """Defect 13: the oldest requests used to soak every crash (redialled first at each restart). Among due
    requests, one already interrupted waits behind those that were not, arrival order otherwise."""
    log, store = await _open(tmp_path)
    try:
        older = await _file(store, "+12125550123", T0)
        newer = await _file(store, "+12125550124", T0 + timedelta(seconds=5))
        port = Port(DialResult("interrupted", detail="dialer stopped"), DialResult("answered", True))
        now = [T0 + timedelta(seconds=10)]
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0], retry=RetryRules(after_interruption=0.0)), port,
                        DialerSettings(clock="trust", max_concurrent=1), now=lambda: now[0])
        await dialer.tick()  # the older one first, and a crash cuts it
        await _settle(dialer)
        now[0] += timedelta(seconds=1)
        dialer._held.clear()
        await dialer.tick()
        await _settle(dialer)
        assert port.dialled == [older, newer]
    finally:
        await log.close()
