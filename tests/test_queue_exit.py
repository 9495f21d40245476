"""A caller leaves the PBX queue by key to ask for a callback (Asterisk ``[ivr-queue-exit]``): the PBX dials
``callback-request`` with X-IVR-Queue / X-IVR-Queue-Entered; the sample flow flows/queue_exit.yaml takes
the request without a wait estimate and files it with the time the caller entered the PBX queue.

Through the real engine, the simulator's call, a real SQLite callback store, the sample flows as shipped;
and ``ivr simulate --header`` from the command line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.adapters.simulator import NarratingRecorder, SimulatedCall, StatedWaits
from ivr.callbacks.desk import Desk
from ivr.callbacks.policy import CallbackPolicy
from ivr.config import Config
from ivr.engine.context import Outcome
from ivr.engine.offer import parse_arrival
from ivr.engine.runner import run_call
from ivr.flows.model import FlowSet
from ivr.flowset import load_flowset
from ivr.store.callbacks import CallbackRequest, CallbackStore
from ivr.store.eventlog import CallRecorder, Event, EventLog, read_events
from tests.conftest import Env, SteppingClock

SAMPLE_FLOWS = Path(__file__).resolve().parent.parent / "flows"
NY = ZoneInfo("America/New_York")
NY_CALLER = "+12125550123"
NOON_NY = datetime(2026, 12, 1, 12, 0, tzinfo=NY).astimezone(UTC)  # a Tuesday
ENTERED = NOON_NY - timedelta(minutes=7, seconds=30)  # when the caller joined the PBX queue
POLICY = CallbackPolicy(site_zone="America/New_York")


def pbx_headers(queue: str | None = "support", entered: str | None = None) -> dict[str, str]:
    """What ``[ivr-headers]`` adds to the PBX's INVITE after the caller pressed 1 in the queue."""
    out = {"X-IVR-Caller-Channel": "PJSIP/trunk-00000007", "X-IVR-Arrival": str(int(ENTERED.timestamp()) - 40)}
    if queue is not None:
        out["X-IVR-Queue"] = queue
        out["X-IVR-Queue-Entered"] = entered if entered is not None else str(int(ENTERED.timestamp()))
        out["X-IVR-Queue-Position"] = "4"
    return out


@pytest.fixture(scope="module")
def flowset(prompt_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> FlowSet:
    config = Config(site_id="t", state_dir=tmp_path_factory.mktemp("qe") / "var", prompt_cache_dir=prompt_cache)
    return asyncio.run(load_flowset([SAMPLE_FLOWS], config))


@dataclass
class Run:
    outcome: Outcome
    lines: list[str]
    events: list[Event]
    requests: list[CallbackRequest]
    transfers: list[tuple[str, str]]

    def first(self, type: str) -> Event:
        return next(e for e in self.events if e.type == type)

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def exit_call(flowset: FlowSet, db: Path, headers: Mapping[str, str], script: Sequence[str], *,
              waits: dict[str, float] | None = None, clock: Callable[[], datetime] | None = None,
              caller: str = NY_CALLER) -> Run:
    """The PBX's call to ``callback-request`` (routed by the dialed name, as a real one is)."""

    async def go() -> Run:
        now = clock or SteppingClock(NOON_NY)
        async with await EventLog.open(db, "t") as log:
            store = CallbackStore(log)
            desk = Desk(store, POLICY, StatedWaits(waits or {}), region="US", now=now)
            lines: list[str] = []
            call = SimulatedCall("qe-1", caller, "callback-request", script, emit=lines.append, headers=headers)
            rec = NarratingRecorder(CallRecorder(log, call.call_id), lines.append)
            outcome = await run_call(call, flowset, rec, now=now, callbacks=desk)
            async with log.db.execute("SELECT id FROM callback_requests ORDER BY requested_at") as cur:
                ids = [r[0] for r in await cur.fetchall()]
            requests = [await store.get(i) for i in ids]
            transfers = [(t.kind, t.destination) for t in call.transfers]
        return Run(outcome, lines, await read_events(db, "qe-1"), requests, transfers)

    return asyncio.run(go())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.sqlite"


def test_request_keeps_the_pbx_queue_entry_time_without_a_wait_estimate(flowset: FlowSet, db: Path) -> None:
    # No wait is known for the queue (no --wait, no PBX state): an ordinary queue node would make no offer.
    r = exit_call(flowset, db, pbx_headers(), ["1"])
    assert r.outcome.kind == "callback", r.lines
    assert r.first("node.entered").data["node"] == "which_queue"  # routed by the dialed name
    # Straight to the number: no wait quoted, no second "press 1 to be called back".
    assert not any("Your wait" in line or "To be called back" in line for line in r.lines)
    assert "  ♪ We will call you at" in r.lines
    assert r.lines[-2].startswith("  ♪ Thank you. Your callback is confirmed.")
    offer = r.first("queue.offer").data
    assert (offer["offered"], offer["reason"], offer["requested"]) == (True, "requested", True)
    assert offer["estimate"] is None and offer["queue"] == "support"
    arrival = r.first("queue.arrival").data
    assert arrival["kept"] is True and arrival["given"] == str(int(ENTERED.timestamp()))
    [req] = r.requests
    assert (req.queue, req.number, req.state) == ("support", NY_CALLER, "requested")
    # The place in line the PBX queue earned, not the moment of this call.
    assert datetime.fromisoformat(req.arrival_at) == ENTERED
    assert datetime.fromisoformat(req.requested_at) > NOON_NY
    assert req.consent_pressed == "queue:1 1"
    assert (req.quoted_low, req.quoted_high) == (None, None)
    assert r.transfers == []


def test_queue_name_comes_from_the_header(flowset: FlowSet, db: Path) -> None:
    r = exit_call(flowset, db, pbx_headers(queue="sales", entered=ENTERED.isoformat()), ["1"])
    assert r.outcome == Outcome("callback", f"sales {r.requests[0].id}")
    [req] = r.requests
    assert req.queue == "sales" and datetime.fromisoformat(req.arrival_at) == ENTERED


def test_another_number_can_be_given(flowset: FlowSet, db: Path) -> None:
    r = exit_call(flowset, db, pbx_headers(), ["2", "2125550199#", "1"])
    [req] = r.requests
    assert req.number == "+12125550199" and datetime.fromisoformat(req.arrival_at) == ENTERED


@pytest.mark.parametrize("entered", ["", "soon", str(int((NOON_NY + timedelta(hours=2)).timestamp())),
                                     str(int((NOON_NY - timedelta(days=3)).timestamp()))])
def test_an_unusable_entry_time_is_recorded_and_now_is_kept(flowset: FlowSet, db: Path, entered: str) -> None:
    r = exit_call(flowset, db, pbx_headers(entered=entered), ["1"])
    arrival = r.first("queue.arrival").data
    assert arrival["kept"] is False and arrival["reason"] and arrival["given"] == entered
    [req] = r.requests
    at = datetime.fromisoformat(req.arrival_at)
    assert at == datetime.fromisoformat(arrival["arrival"]) and NOON_NY < at < datetime.fromisoformat(req.requested_at)


def test_no_queue_header_goes_to_the_operator(flowset: FlowSet, db: Path) -> None:
    r = exit_call(flowset, db, pbx_headers(queue=None), [])
    assert r.outcome == Outcome("transferred", "extension 2000")
    assert "  ♪ Sorry, we could not find your place in line. Connecting you to the operator." in r.lines
    assert r.requests == [] and "queue.offer" not in r.types()


def test_outside_the_calling_window_the_caller_hears_why_and_goes_back_to_the_queue(flowset: FlowSet,
                                                                                      db: Path) -> None:
    late = datetime(2026, 12, 1, 22, 30, tzinfo=NY).astimezone(UTC)
    r = exit_call(flowset, db, pbx_headers(entered=str(int((late - timedelta(minutes=5)).timestamp()))), ["1"],
                  clock=SteppingClock(late))
    offer = r.first("queue.offer").data
    assert (offer["offered"], offer["reason"]) == (False, "window-closed")
    assert any("cannot call you back at this time" in line for line in r.lines)
    assert r.outcome == Outcome("queued", "support") and r.transfers == [("queue", "support")]
    assert r.requests == []


def test_no_number_confirmed_goes_back_to_the_queue(flowset: FlowSet, db: Path) -> None:
    r = exit_call(flowset, db, pbx_headers(), ["9", "silence", "silence", "silence"])
    assert r.outcome == Outcome("queued", "support") and r.requests == []
    assert r.transfers == [("queue", "support")]


def test_parse_arrival() -> None:
    now = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
    four = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
    epoch = int(four.timestamp())  # as Asterisk's ${EPOCH} gives it
    assert parse_arrival(str(epoch), now) == (four, None)
    assert parse_arrival(f"{epoch}.5", now)[0] == four + timedelta(milliseconds=500)
    assert parse_arrival("2026-12-01T11:00:00-05:00", now) == (datetime(2026, 12, 1, 16, 0, tzinfo=UTC), None)
    assert parse_arrival("2026-12-01T16:00:00Z", now) == (datetime(2026, 12, 1, 16, 0, tzinfo=UTC), None)
    assert parse_arrival("2026-12-01T16:00:00", now) == (datetime(2026, 12, 1, 16, 0, tzinfo=UTC), None)
    # a PBX clock a little ahead: not in the future of this call
    assert parse_arrival("2026-12-01T17:02:00Z", now) == (now, None)
    for bad in ("", " ", "noon", "-5", "2026-13-01", "9" * 30, "2026-12-01T18:00:00Z", "2026-11-01T16:00:00Z"):
        at, why = parse_arrival(bad, now)
        assert at == now and why, bad


# -- the command line ---------------------------------------------------------------------------------------


def test_simulate_with_pbx_headers(env: Env) -> None:
    # --at pins the clock to 12:00 in New York; the caller joined the PBX queue 7.5 minutes before.
    r = env.ivr("simulate", "queue_exit", "--json", "--at", "2026-12-01T12:00", "--caller", NY_CALLER,
                "--header", "X-IVR-Queue=support",
                "--header", f"X-IVR-Queue-Entered={int(ENTERED.timestamp())}", "-i", "1")
    assert r.code == 0, r.out + r.err
    result = json.loads(r.out)
    assert result["outcome"] == "callback"
    assert result["variables"]["sip_x_ivr_queue"] == "support"
    assert f"  ☏ place in line from {ENTERED.isoformat()}" in result["transcript"]
    assert "  ✓ callback asked for in the queue" in result["transcript"]


def test_simulate_rejects_a_header_that_is_not_x(env: Env) -> None:
    r = env.ivr("simulate", "queue_exit", "--header", "From=sip:evil@x", "-i", "1")
    assert r.code == 2 and "bad --header 'From=sip:evil@x'" in r.err


def test_simulate_without_headers_reaches_the_operator(env: Env) -> None:
    r = env.ivr("simulate", "queue_exit", "--json")
    assert r.code == 0, r.out + r.err
    assert json.loads(r.out)["outcome"] == "transferred"
