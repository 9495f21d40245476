"""The dialer's pure decisions (clock verdict, pacing, outcome settlement, honest numbers), the queue-state
sources, and the scheduler itself on a real SQLite store with time passed in (the dial port here is the
dialler's own seam: it records what would have been dialled; the real SIP and AMI ports are exercised in
tests/integration/test_callbacks*.py and tests/ami/test_callbacks_ami.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ivr.adapters.callback_dial import sip_dial_settings
from ivr.callbacks.dialer import (
    STA_UNSYNC,
    TIME_ERROR,
    ClockStatus,
    Dialer,
    DialerSettings,
    DialIds,
    DialResult,
    PbxView,
    Settlement,
    channel_matches,
    clock_verdict,
    pacing_slots,
    plan_batch,
    promise_record,
    queue_position,
    settle,
)
from ivr.callbacks.ewt import EwtEstimate, QueueEventKind
from ivr.callbacks.policy import CallbackPolicy, RetryRules
from ivr.callbacks.queuestate import AmiQueueWaits, RecordsQueueWaits, records_to_queues
from ivr.proto.ami import event
from ivr.store.callbacks import Attempt, CallbackRequest, CallbackStore, Consent
from ivr.store.eventlog import EventLog, read_events

T0 = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)  # 12:00 in New York: inside the legal window
NY = ("America/New_York",)


# -- the clock ---------------------------------------------------------------------------------------------


def test_clock_verdict_trusts_only_a_synchronised_kernel_clock() -> None:
    assert clock_verdict((0, 0x2001), None).synced
    assert not clock_verdict((TIME_ERROR, 0), None).synced
    assert not clock_verdict((0, STA_UNSYNC), None).synced  # TIME_OK but the unsync bit set: not trusted
    assert clock_verdict(None, "NTPSynchronized=yes\n").synced
    assert not clock_verdict(None, "NTPSynchronized=no\n").synced
    unknown = clock_verdict(None, None)
    assert not unknown.synced and unknown.source == "none"


# -- pacing ------------------------------------------------------------------------------------------------


def req(rid: str, queue: str = "support") -> CallbackRequest:
    return CallbackRequest(rid, "s", queue, "+12125550123", NY, "2026-07-01T16:00:00Z", "", "", "requested", None,
                           "", "", "", "", None, None, None, 0, None, "")


class Waits:
    def __init__(self, free: dict[str, int | None], seconds: float | None = None) -> None:
        self.free = free
        self.seconds = seconds

    def estimate(self, queue: str) -> EwtEstimate:
        return EwtEstimate(self.seconds) if self.seconds is not None else EwtEstimate.unknown("thin-traffic")

    def free_agents(self, queue: str) -> int | None:
        return self.free.get(queue)


def test_pacing_never_dials_more_callbacks_than_free_agents() -> None:
    s = DialerSettings(max_concurrent=10)
    due = [req("a"), req("b"), req("c"), req("d", "sales")]
    chosen, waiting = plan_batch(due, {}, Waits({"support": 2, "sales": 0}), s)
    assert [r.id for r in chosen] == ["a", "b"]  # arrival order, two free agents in support
    assert waiting == {"c": "pacing", "d": "pacing"}
    # one already ringing in support: one more
    chosen, _ = plan_batch(due, {"support": 1}, Waits({"support": 2, "sales": 0}), s)
    assert [r.id for r in chosen] == ["a"]
    # held by the monotonic retry guard
    chosen, waiting = plan_batch(due, {}, Waits({"support": 2, "sales": 0}), s, frozenset({"a"}))
    assert [r.id for r in chosen] == ["b", "c"] and waiting["a"] == "held"


def test_pacing_without_queue_state_uses_max_concurrent_and_customer_first_dials_ahead() -> None:
    s = DialerSettings(max_concurrent=2)
    chosen, _ = plan_batch([req("a"), req("b"), req("c", "sales")], {}, None, s)
    assert [r.id for r in chosen] == ["a", "b"]
    chosen, _ = plan_batch([req("a"), req("b")], {"sales": 1}, None, s)
    assert [r.id for r in chosen] == ["a"]  # the cap is for all queues together
    cf = replace(s, mode="customer-first", lead_seconds=30)
    assert pacing_slots(0, 0, EwtEstimate(20.0), cf) == 1  # the head of the queue moves within 30 s
    assert pacing_slots(0, 0, EwtEstimate(90.0), cf) == 0
    assert pacing_slots(0, 0, EwtEstimate(20.0), s) == 0  # agent-first waits for a free agent


# -- outcomes ----------------------------------------------------------------------------------------------


def test_settle_maps_call_outcomes_to_the_request() -> None:
    assert settle(DialResult("answered", confirmed=True)) == Settlement("connected", True, None)
    assert settle(DialResult("answered")) == Settlement("connected", False, "not-confirmed")
    assert settle(DialResult("invalid")).retry_reason == "invalid"
    assert settle(DialResult("busy")).attempt_outcome == "busy"
    assert settle(DialResult("interrupted")).attempt_outcome == "interrupted"
    assert settle(DialResult("weird")).attempt_outcome == "failed"


def test_promise_record_compares_the_quote_with_the_time_to_agent() -> None:
    r = replace(req("a"), quoted_low=300.0, quoted_high=480.0, attempts=1)
    arrival = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
    kept = promise_record(r, arrival + timedelta(seconds=200), DialResult("answered", True,
                          agent_at=arrival + timedelta(seconds=420)), arrival + timedelta(seconds=500))
    assert kept["kept"] is True and kept["time_to_dial"] == 200.0 and kept["time_to_agent"] == 420.0
    assert kept["ewt_error"] == 30.0  # 420 s against the middle of 300-480
    late = promise_record(r, None, DialResult("answered", True, agent_at=arrival + timedelta(seconds=900)),
                          arrival + timedelta(seconds=950))
    assert late["kept"] is False
    never = promise_record(r, None, None, arrival + timedelta(hours=9))
    assert never["kept"] is False and never["time_to_agent"] is None


def test_a_callback_enters_the_queue_at_the_place_its_arrival_earned() -> None:
    assert queue_position([100.0, 200.0, 300.0], 250.0) == 3  # behind the two who came first
    assert queue_position([100.0], 50.0) == 1 and queue_position([], 50.0) == 1


def test_asterisk_channel_names_match_their_dial_string() -> None:
    assert channel_matches("Local/5551234@ivr-callback", "Local/5551234@ivr-callback-00000002;1")
    assert not channel_matches("Local/555123@ivr-callback", "Local/5551234@ivr-callback-00000002;1")


# -- queue state -------------------------------------------------------------------------------------------


def rows(*items: tuple[float, str, str, dict[str, object]]) -> list[tuple[str, str, str, str]]:
    out = []
    for t, call, type_, data in items:
        wall = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append((wall, call, type_, json.dumps(data)))
    return out


def test_records_give_handle_times_and_callers_still_in_the_queue() -> None:
    now = 1_800_000_000.0
    r = rows((now - 600, "c1", "queue.offer", {"queue": "support"}),
             (now - 300, "c1", "transfer", {"kind": "queue", "destination": "support", "ok": True}),
             (now - 200, "c2", "queue.offer", {"queue": "support"}),
             (now - 199, "c2", "transfer", {"kind": "queue", "destination": "support", "ok": True}),  # a REFER
             (now - 100, "c3", "queue.offer", {"queue": "support"}),
             (now - 50, "c4", "queue.offer", {"queue": "support"}),
             (now - 40, "c4", "call.ended", {"outcome": "caller_hangup"}))
    q = records_to_queues(r, now, 3600)["support"]
    completes = [e for e in q.events if e.kind is QueueEventKind.COMPLETE]
    assert [c.duration for c in completes] == [300.0]  # the 1 s handover says nothing about agents
    assert q.in_queue == 1  # c3 is still waiting or talking
    assert any(e.kind is QueueEventKind.ABANDON and e.caller == "c4" for e in q.events)


async def test_records_source_reads_the_event_log(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "ivr.db", "s")
    try:
        for i in range(3):
            await log.append("queue.offer", f"c{i}", queue="support")
        waits = RecordsQueueWaits({"support": 2}, log.db)
        await waits.refresh()
        assert waits.free_agents("support") == 0  # three callers handed over, two agents: none free
        est = waits.estimate("support")
        assert est.seconds is None and est.reason == "thin-traffic"  # no finished handovers yet: unknown
        assert waits.free_agents("sales") is None and waits.estimate("sales").reason == "unknown-queue"
    finally:
        await log.close()


class _Snap:
    def __init__(self, waiting: int, logged_in: int, available: int) -> None:
        self.waiting, self.logged_in, self.available = waiting, logged_in, available


class _Monitor:
    link_up = fresh = True

    def __init__(self, snaps: dict[str, _Snap]) -> None:
        self.state = self
        self.snaps = snaps

    def snapshot(self, name: str) -> _Snap | None:
        return self.snaps.get(name)


def test_ami_source_feeds_queue_events_to_the_estimator() -> None:
    now = 1_800_000_000.0
    waits = AmiQueueWaits(_Monitor({"support": _Snap(waiting=3, logged_in=2, available=0)}), None,
                          clock=lambda: now)
    t = now - 3000
    for i in range(12):  # callers each waiting 60 s, served one every 120 s while the queue was busy
        caller = f"17000000{i}.1"
        waits.observe(event("QueueCallerJoin", {"Queue": "support", "Uniqueid": caller, "Timestamp": str(t)}), t)
        waits.observe(event("AgentConnect", {"Queue": "support", "Uniqueid": caller,
                                             "Timestamp": str(t + 60)}), t + 60)
        t += 120
    waits.observe(event("Newchannel", {"Uniqueid": "x"}), now)  # not a queue event: ignored
    est = waits.estimate("support")
    assert est.known and est.method == "hol-rate" and est.seconds is not None
    # 4th in line; while callers waited (55 s each past the 5 s minimum), one left the queue every ~55 s
    assert 3 * 60 <= est.seconds <= 5 * 60
    assert waits.free_agents("support") == 0
    assert waits.estimate("sales").reason == "unknown-queue" and waits.free_agents("sales") is None


# -- the scheduler on a real store --------------------------------------------------------------------------


class RecordingPort:
    """Records what the dialer sends; answers every call with ``result``."""

    name = "test"

    def __init__(self, result: DialResult) -> None:
        self.result = result
        self.dialled: list[tuple[str, str]] = []

    def ids(self, r: CallbackRequest) -> DialIds:
        return DialIds(sip_call_id=f"cid-{len(self.dialled)}")

    def unavailable(self) -> str | None:
        return None

    async def dial(self, r: CallbackRequest, attempt: Attempt, ids: DialIds) -> DialResult:
        self.dialled.append((r.id, ids.sip_call_id))
        return self.result

    async def pbx_view(self, attempts: Sequence[Attempt]) -> Mapping[str, PbxView]:
        return {}


async def _store(tmp_path: Path) -> tuple[EventLog, CallbackStore]:
    log = await EventLog.open(tmp_path / "ivr.db", "s")
    return log, CallbackStore(log)


async def _file(store: CallbackStore, number: str, at: datetime) -> str:
    r = await store.request(queue="support", number=number, zones=NY, arrival_at=at,
                            consent=Consent(at=at, number=number), now=at, quoted=(60.0, 300.0))
    return r.id


async def _settle(dialer: Dialer) -> None:
    for _ in range(100):  # bounded: the attempt tasks finish at once with the recording port
        if not dialer.active:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("attempts did not finish")


async def test_unsynchronised_clock_dials_nothing(tmp_path: Path) -> None:
    log, store = await _store(tmp_path)
    try:
        rid = await _file(store, "+12125550123", T0)
        port = RecordingPort(DialResult("answered", True))
        clock = ClockStatus(False, "adjtimex", "kernel clock not synchronised")
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0]), port, DialerSettings(clock="ntp"), now=lambda: T0,
                        clock_probe=lambda mode: clock)
        for _ in range(5):
            assert await dialer.tick() == 0
        assert port.dialled == [] and (await store.get(rid)).state == "requested"
        assert dialer.status()["clock_synced"] is False
        clock = ClockStatus(True, "adjtimex", "synchronised")
        dialer._clock_checked = -1e18  # the next probe is due (normally 10 s later on the monotonic clock)
        assert await dialer.tick() == 1
        await _settle(dialer)
        assert (await store.get(rid)).state == "done"
    finally:
        await log.close()


async def test_retry_is_not_dialled_before_its_interval_and_expires_after_max_attempts(tmp_path: Path) -> None:
    log, store = await _store(tmp_path)
    try:
        rid = await _file(store, "+12125550123", T0)
        now = [T0]
        policy = CallbackPolicy(site_zone=NY[0], retry=RetryRules(intervals=(600.0,), max_attempts=2))
        port = RecordingPort(DialResult("busy", detail="SIP 486"))
        dialer = Dialer(store, policy, port, DialerSettings(clock="trust"), now=lambda: now[0])
        assert await dialer.tick() == 1
        await _settle(dialer)
        r = await store.get(rid)
        assert r.state == "retry" and r.next_attempt_at is not None and r.next_attempt_at.startswith("2026-07-01T16:10")
        now[0] = T0 + timedelta(seconds=599)
        dialer._held.clear()  # only the stored time decides here
        assert await dialer.tick() == 0
        now[0] = T0 + timedelta(seconds=601)
        assert await dialer.tick() == 1
        await _settle(dialer)
        r = await store.get(rid)
        assert r.state == "expired" and "max attempts" in r.reason and len(port.dialled) == 2
        kept = [e.data for e in await read_events(tmp_path / "ivr.db") if e.type == "callback.kept"]
        assert kept and kept[-1]["kept"] is False
    finally:
        await log.close()


async def test_outside_the_window_nothing_is_dialled_and_old_requests_expire(tmp_path: Path) -> None:
    log, store = await _store(tmp_path)
    try:
        night = datetime(2026, 7, 2, 6, 0, tzinfo=UTC)  # 02:00 in New York
        rid = await _file(store, "+12125550123", night)
        port = RecordingPort(DialResult("answered", True))
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0]), port, DialerSettings(clock="trust"),
                        now=lambda: night)
        assert await dialer.tick() == 0 and port.dialled == []
        later = night + timedelta(hours=9)  # past the 8 h expiry before the window opened long enough
        dialer.now = lambda: later
        await dialer.tick()
        assert (await store.get(rid)).state == "expired" and port.dialled == []
    finally:
        await log.close()


async def test_restart_settles_an_outcome_left_without_its_next_state(tmp_path: Path) -> None:
    log, store = await _store(tmp_path)
    try:
        rid = await _file(store, "+12125550123", T0)
        att = await store.begin_attempt(rid, T0, sip_call_id="x")
        await store.finish_attempt(att.id, "no-answer", T0 + timedelta(seconds=30), "SIP 487")
        # (the process died here, before schedule_retry)
        policy = CallbackPolicy(site_zone=NY[0], retry=RetryRules(intervals=(300.0,), max_attempts=3))
        dialer = Dialer(store, policy, RecordingPort(DialResult("busy")), DialerSettings(clock="trust"),
                        now=lambda: T0 + timedelta(seconds=60))
        await dialer.reconcile()
        r = await store.get(rid)
        assert r.state == "retry" and r.next_attempt_at is not None
        assert r.next_attempt_at.startswith("2026-07-01T16:05:30")  # 300 s after the attempt ended
    finally:
        await log.close()


class FlakyPbxPort(RecordingPort):
    """A PBX that cannot be asked at first (the AMI link is down), then says where the call is."""

    def __init__(self) -> None:
        super().__init__(DialResult("answered", True))
        self.down = True
        self.seen: PbxView = "up"

    async def pbx_view(self, attempts: Sequence[Attempt]) -> Mapping[str, PbxView]:
        if self.down:
            raise ConnectionError("AMI not connected")
        return {a.id: self.seen for a in attempts}


async def test_reconcile_waits_for_the_pbx_rather_than_guess(tmp_path: Path) -> None:
    log, store = await _store(tmp_path)
    try:
        rid = await _file(store, "+12125550123", T0)
        await store.begin_attempt(rid, T0, channel="Local/+12125550123@ivr-callback-dial")
        port = FlakyPbxPort()
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0]), port, DialerSettings(clock="trust"), now=lambda: T0)
        assert await dialer.reconcile() == {} and not dialer.reconciled
        assert (await store.get(rid)).state == "dialing" and len(await store.in_flight()) == 1
        assert await dialer.tick() == 0 and port.dialled == []  # still "dialing": never dialled again
        port.down = False  # the customer is still ringing or at "press 1": nothing proven, nothing redialled
        assert await dialer.reconcile() == {} and dialer.status()["in_doubt"] == 1
        assert await dialer.tick() == 0 and port.dialled == [] and (await store.get(rid)).state == "dialing"
        port.seen = "queued"  # then Asterisk shows the channel in app_queue: proof
        decided = await dialer.reconcile()
        assert list(decided.values()) == ["connected"] and dialer.reconciled
        assert (await store.get(rid)).state == "done" and port.dialled == []
    finally:
        await log.close()


def test_sip_callbacks_use_the_named_account_for_from_and_digest() -> None:
    from ivr.config import CallbacksConfig, SipAccount

    acc = SipAccount("sip:2000@pbx.example.com", "pbx.example.com:5060", "2000", "pw")
    cb = CallbacksConfig(sip_proxy="192.0.2.10:5060", sip_account="sip:2000@pbx.example.com", display="Acme")
    s = sip_dial_settings(cb, [acc], "127.0.0.1")
    assert s.proxy == "192.0.2.10:5060" and s.from_uri == "sip:2000@pbx.example.com"
    assert s.credentials == ("2000", "pw") and s.from_display == "Acme"
    plain = sip_dial_settings(CallbacksConfig(sip_proxy="[::1]:5070"), [acc], "127.0.0.1")
    assert plain.proxy == "[::1]:5070" and plain.credentials is None and plain.from_uri == "sip:ivr@127.0.0.1"


async def test_a_number_in_two_zones_is_dialled_only_in_their_overlap(tmp_path: Path) -> None:
    log, store = await _store(tmp_path)
    try:
        zones = ("America/New_York", "America/Los_Angeles")
        early = datetime(2026, 7, 1, 13, 30, tzinfo=UTC)  # 09:30 in New York, 06:30 in Los Angeles
        r = await store.request(queue="support", number="+12125550123", zones=zones, arrival_at=early,
                                consent=Consent(at=early, number="+12125550123"), now=early)
        port = RecordingPort(DialResult("answered", True))
        now = [early]
        dialer = Dialer(store, CallbackPolicy(site_zone=NY[0]), port, DialerSettings(clock="trust"),
                        now=lambda: now[0])
        assert await dialer.tick() == 0 and port.dialled == []
        now[0] = datetime(2026, 7, 1, 15, 1, tzinfo=UTC)  # 08:01 in Los Angeles: both windows open
        assert await dialer.tick() == 1
        await _settle(dialer)
        assert port.dialled[0][0] == r.id
    finally:
        await log.close()
