"""A scheduled callback slot ("to choose a time, press 2"): the pure slot function (calling windows, zones,
DST), and the queue node's dialogue through the real engine, the simulator's call and a real SQLite store;
the chosen slot is the request's scheduled time and the dialer does not dial it before then."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.callbacks.dialer import Dialer, DialerSettings, DialResult, ScheduleHours
from ivr.callbacks.policy import CallingWindow, RetryRules, end_of_tomorrow, next_slots
from ivr.config import Config
from ivr.flows.model import FlowSet
from ivr.flowset import load_flowset
from tests.callbacks.test_dialer import RecordingPort, _settle
from tests.conftest import Env, SteppingClock
from tests.test_callback_offer import POLICY, Site, after, scenario

NY = ZoneInfo("America/New_York")
LEGAL = (CallingWindow(),)  # 08:00-21:00 in each callee zone

SCHED_FLOW = """
flow: sched
default: true
languages: [en, es]
voices: {en: en-us, es: es}
timezone: America/New_York
start: q
nodes:
  q:
    queue:
      name: support
      callback: {min_wait_seconds: 120, schedule: true}
"""

# The agents' hours (issue 17 item 9): Christmas Eve closes at noon, Christmas Day is a holiday.
HOURS_FLOW = """
flow: short
languages: [en, es]
voices: {en: en-us, es: es}
timezone: America/New_York
start: q
hours:
  agents:
    timezone: America/New_York
    weekly: {mon-fri: "08:00-18:00"}
    overrides:
      - {date: 2026-12-24, hours: "08:00-12:00", name: Christmas Eve}
    holidays:
      - {date: 2026-12-25, name: Christmas Day}
nodes:
  q:
    queue:
      name: support
      callback: {min_wait_seconds: 120, schedule: true, hours: agents}
"""


def ny(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=NY).astimezone(UTC)


# -- the slot function (pure) ---------------------------------------------------------------------------


def test_slots_are_on_the_half_hour_inside_the_window_with_a_margin() -> None:
    now = ny(2026, 12, 1, 12, 8)
    until = end_of_tomorrow(now, "America/New_York")
    assert next_slots(now, until, ["America/New_York"], "America/New_York", LEGAL) == [
        ny(2026, 12, 1, 12, 30), ny(2026, 12, 1, 13), ny(2026, 12, 1, 13, 30)]
    late = ny(2026, 12, 1, 20, 5)
    m10 = timedelta(minutes=10)
    assert next_slots(late, until, ["America/New_York"], "America/New_York", LEGAL, margin=m10) == [
        ny(2026, 12, 1, 20, 30), ny(2026, 12, 2, 8), ny(2026, 12, 2, 8, 30)]  # 21:00 is closing time
    assert next_slots(late, until, ["America/New_York"], "America/New_York", LEGAL,
                      margin=timedelta(minutes=45))[0] == ny(2026, 12, 2, 8)  # 20:30 leaves too little time
    assert next_slots(late, ny(2026, 12, 2, 4), ["America/New_York"], "America/New_York", LEGAL) == [
        ny(2026, 12, 1, 20, 30)]  # nothing after `until` (the request would expire)
    # exactly on a slot: the next one (slots are after `earliest`)
    assert next_slots(ny(2026, 12, 1, 12, 30), until, ["America/New_York"], "America/New_York", LEGAL,
                      count=1) == [ny(2026, 12, 1, 13)]


def test_slots_across_a_dst_change_keep_the_local_hour() -> None:
    # 8 March 2026: New York springs forward; 08:00 EDT is 12:00 UTC, where the day before it was 13:00.
    eve = ny(2026, 3, 7, 20, 40)
    slots = next_slots(eve, end_of_tomorrow(eve, "America/New_York"), ["America/New_York"], "America/New_York",
                       LEGAL)
    assert slots == [datetime(2026, 3, 8, 12, 0, tzinfo=UTC), datetime(2026, 3, 8, 12, 30, tzinfo=UTC),
                     datetime(2026, 3, 8, 13, 0, tzinfo=UTC)]
    assert [s.astimezone(NY).strftime("%H:%M") for s in slots] == ["08:00", "08:30", "09:00"]
    # 1 November 2026: back to EST; 08:00 is 13:00 UTC again.
    fall = ny(2026, 10, 31, 20, 40)
    assert next_slots(fall, end_of_tomorrow(fall, "America/New_York"), ["America/New_York"], "America/New_York",
                      LEGAL)[0] == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    assert end_of_tomorrow(eve, "America/New_York") == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # EDT midnight


def test_slots_keep_every_zones_window_and_the_sites_hours() -> None:
    now = ny(2026, 12, 1, 6)
    until = end_of_tomorrow(now, "America/New_York")
    # a number in New York and Los Angeles: only when it is past 08:00 in both (11:00 in New York)
    both = next_slots(now, until, ["America/New_York", "America/Los_Angeles"], "America/New_York", LEGAL)
    assert both[0] == ny(2026, 12, 1, 11)
    # the site's hours (09:00-17:00 in London) on top of the callee's legal window: New York 08:00-12:00
    site = (*LEGAL, CallingWindow(start=datetime(2026, 1, 1, 9).time(), end=datetime(2026, 1, 1, 17).time(),
                                  zone="Europe/London"))
    slots = next_slots(now, until, ["America/New_York"], "America/New_York", site, count=9)
    assert slots[0] == ny(2026, 12, 1, 8) and slots[-1] == ny(2026, 12, 2, 8)
    assert all(s.astimezone(NY).hour < 12 for s in slots)
    # said in a zone offset by half an hour: on its own clock's :00 and :30
    india = next_slots(now, until, ["Asia/Kolkata"], "Asia/Kolkata", LEGAL)
    assert all(s.astimezone(ZoneInfo("Asia/Kolkata")).minute in (0, 30) for s in india)
    assert india[0] == datetime(2026, 12, 1, 11, 30, tzinfo=UTC)  # 17:00 in Kolkata (11:00 UTC is 16:30)


def test_open_intervals_of_an_hours_schedule_follow_overrides_holidays_and_midnight() -> None:
    from ivr.flows.hours import Schedule, TimeRange, open_intervals, parse_range

    def day(*ranges: str) -> tuple[TimeRange, ...]:
        return tuple(parse_range(r) for r in ranges)

    sched = Schedule("agents", NY, weekly={d: day("08:00-18:00") for d in range(5)} | {5: day("20:00-02:00")},
                     holidays={datetime(2026, 12, 25).date(): "Christmas Day"},
                     overrides={datetime(2026, 12, 24).date(): day("08:00-12:00")})
    ivs = open_intervals(sched, ny(2026, 12, 24, 9), days=3)
    assert ivs == [(ny(2026, 12, 24, 8), ny(2026, 12, 24, 12)),  # the short day, not 18:00
                   # Christmas Day (a Friday) is a holiday; Saturday's late shift runs into Sunday
                   (ny(2026, 12, 26, 20), ny(2026, 12, 27, 2))]
    # the slots a caller hears keep them: Christmas Eve 11:00 leaves only 11:30 (12:00 is closing time)
    now = ny(2026, 12, 24, 11)
    until = end_of_tomorrow(now, "America/New_York")
    assert next_slots(now, until, ["America/New_York"], "America/New_York", LEGAL, margin=timedelta(minutes=10),
                      hours=open_intervals(sched, now, days=3)) == [ny(2026, 12, 24, 11, 30)]
    assert len(next_slots(now, until, ["America/New_York"], "America/New_York", LEGAL,
                          margin=timedelta(minutes=10))) == 3  # without the schedule: 11:30, 12:00, 12:30


# -- the dialogue through the engine ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def flowset(tmp_path_factory: pytest.TempPathFactory, prompt_cache: Path) -> FlowSet:
    d = tmp_path_factory.mktemp("schedflows")
    (d / "sched.yaml").write_text(SCHED_FLOW, encoding="utf-8")
    (d / "short.yaml").write_text(HOURS_FLOW, encoding="utf-8")
    config = Config(site_id="t", state_dir=d / "var", prompt_cache_dir=prompt_cache)
    return asyncio.run(load_flowset([d], config))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.sqlite"


def test_caller_chooses_a_slot_and_it_is_not_dialled_before_then(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        # 1: accept the offer, 1: the caller ID is right, 2: choose a time, 2: the second slot
        r = await site.call(["1", "1", "2", "2"], entry="sched")
        assert r.outcome.kind == "callback"
        assert "  ♪ To be called back as soon as possible, press 1. To choose a time, press 2." in r.lines
        menu = after(r.lines, "  ♪ Press", 10)
        assert menu == ["  ♪ 1", "  ♪ for", "  ♪ today", "  ♪ at", "  ♪ 12", "  ♪ thirty", "  ♪ p.m.",
                        "  ♪ (pause)", "  ♪ Press", "  ♪ 2"]
        assert "  ♪ tomorrow" not in r.lines
        booked = after(r.lines, "  ♪ Thank you. Your callback is booked for", 6)
        assert booked == ["  ♪ today", "  ♪ at", "  ♪ 1", "  ♪ o'clock", "  ♪ p.m.", "  ♪ Goodbye."]
        [req] = await site.requests()
        slot = ny(2026, 12, 1, 13)
        assert req.scheduled_at == slot.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == req.next_attempt_at
        assert req.consent_pressed == "1 1 2 2" and "Press 2 for today at 1 o'clock p.m." in req.consent_heard
        assert req.quoted_low is None and req.quoted_high is None  # the promise is the slot, not the wait
        sched = r.first("callback.schedule").data
        assert sched["choice"] == "slot" and sched["zone"] == "America/New_York" and len(sched["offered"]) == 3
        types = r.types()
        assert types.index("callback.requested") < types.index("callback.confirmed")
        # The dialer leaves it alone until 13:00 New York time, then dials it.
        now = [ny(2026, 12, 1, 12, 59)]
        port = RecordingPort(DialResult("answered", True))
        dialer = Dialer(site.store, POLICY, port, DialerSettings(clock="trust"), now=lambda: now[0])
        assert await dialer.tick() == 0 and port.dialled == []
        now[0] = slot
        assert await dialer.tick() == 1
        await _settle(dialer)
        assert port.dialled[0][0] == req.id and (await site.store.get(req.id)).state == "done"

    scenario(flowset, db, {"support": 420}, body)


def test_late_caller_hears_tomorrow_in_the_morning_when_expiry_reaches_it(flowset: FlowSet, db: Path) -> None:
    policy = replace(POLICY, retry=RetryRules(expiry=24 * 3600.0))

    async def body(site: Site) -> None:
        r = await site.call(["1", "1", "2", "3"], entry="sched")
        assert r.outcome.kind == "callback"
        said = " ".join(line.removeprefix("  ♪ ") for line in r.lines if line.startswith("  ♪ "))
        assert ("Press 1 for today at 8 thirty p.m. (pause) Press 2 for tomorrow at 8 o'clock a.m. (pause)"
                " Press 3 for tomorrow at 8 thirty a.m. Thank you. Your callback is booked for tomorrow at 8"
                " thirty a.m. Goodbye.") in said
        [req] = await site.requests()
        assert req.scheduled_at is not None and req.scheduled_at.startswith("2026-12-02T13:30")

    scenario(flowset, db, {"support": 420}, body, policy=policy, clock=SteppingClock(ny(2026, 12, 1, 20)))


def test_no_slot_before_expiry_means_no_question_and_asap_keeps_the_quote(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        # 20:30: dialled about 20:38; 21:00 closes, and tomorrow is past the 8 h expiry: nothing to choose
        r = await site.call(["1", "1"], entry="sched")
        assert r.outcome.kind == "callback" and not any("choose a time" in line for line in r.lines)
        assert r.first("callback.schedule").data["reason"] == "no open slot"
        assert r.lines[-2].startswith("  ♪ Thank you. Your callback is confirmed.")
        [req] = await site.requests()
        assert req.scheduled_at is None and req.quoted_high is not None

    scenario(flowset, db, {"support": 420}, body, clock=SteppingClock(ny(2026, 12, 1, 20, 30)))


def test_as_soon_as_possible_and_silence_at_the_slot_menu(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        asap = await site.call(["1", "1", "1"], entry="sched")
        assert asap.outcome.kind == "callback" and asap.first("callback.schedule").data["reason"] == "pressed 1"
        silent = await site.call(["1", "1", "2", "silence"], caller="+12125550199", entry="sched")  # then says nothing
        data = silent.first("callback.schedule").data
        assert data["choice"] == "asap" and data["reason"] == "no key"
        assert silent.lines[-2].startswith("  ♪ Thank you. Your callback is confirmed.")
        reqs = await site.requests()
        assert [r.scheduled_at for r in reqs] == [None, None] and all(r.quoted_high for r in reqs)

    scenario(flowset, db, {"support": 420}, body)


def test_short_day_offers_only_slots_before_closing(flowset: FlowSet, db: Path) -> None:
    """Christmas Eve closes at noon and Christmas Day is a holiday: at 11:00 the caller hears one slot, 11:30,
    not the calling window's 12:00 and 12:30 (the offer once ignored the flow's hours)."""
    async def body(site: Site) -> None:
        r = await site.call(["1", "1", "2", "1"], entry="short")
        assert r.outcome.kind == "callback"
        said = " ".join(line.removeprefix("  ♪ ") for line in r.lines if line.startswith("  ♪ "))
        assert "Press 1 for today at 11 thirty a.m. Thank you. Your callback is booked for today at 11" in said
        assert "Press 2" not in said.split("To choose a time, press 2.")[-1] and "tomorrow" not in said
        assert r.first("queue.offer").data["hours"] == "agents"
        [req] = await site.requests()
        assert req.scheduled_at is not None and req.scheduled_at.startswith("2026-12-24T16:30")

    scenario(flowset, db, {"support": 420}, body, clock=SteppingClock(ny(2026, 12, 24, 11)))


def test_the_dialer_keeps_the_queues_hours_on_every_attempt(flowset: FlowSet, db: Path) -> None:
    """The offer and the slots keep the agents' hours (``callback: {hours: agents}``); so does the dialer: the
    request names the schedule, and no attempt starts while it is closed (Christmas Eve after noon, or the
    emergency switch on), though the caller's calling window is open."""
    async def body(site: Site) -> None:
        r = await site.call(["1", "1", "1"], entry="short")  # as soon as possible
        assert r.outcome.kind == "callback"
        [req] = await site.requests()
        assert req.hours == "agents" and r.first("callback.requested").data["hours"] == "agents"
        now = [ny(2026, 12, 24, 12, 5)]  # closed since noon; the calling window is open until 21:00
        port = RecordingPort(DialResult("answered", True))
        dialer = Dialer(site.store, POLICY, port, DialerSettings(clock="trust"), now=lambda: now[0],
                        hours_open=ScheduleHours(lambda: site.flowset.schedules, site.log))
        assert await dialer.tick() == 0 and dialer.state.last_waiting == {req.id: "hours-closed"}
        now[0] = ny(2026, 12, 24, 11, 30)  # open: but the emergency switch closes it too
        await site.log.set_switch("agents", True, "storm")
        assert await dialer.tick() == 0 and port.dialled == []
        await site.log.set_switch("agents", False, "over")
        assert await dialer.tick() == 1
        await _settle(dialer)
        assert port.dialled[0][0] == req.id

    scenario(flowset, db, {"support": 420}, body, clock=SteppingClock(ny(2026, 12, 24, 11)))


async def test_a_schedule_the_flows_no_longer_have_holds_no_callback_back(caplog: pytest.LogCaptureFixture) -> None:
    hours = ScheduleHours(lambda: {}, None)
    assert await hours("gone", ny(2026, 12, 25, 3)) and await hours("gone", ny(2026, 12, 25, 4))
    assert [r.getMessage() for r in caplog.records].count(
        "callbacks: hours schedule 'gone' is not in the flows; its callbacks keep the calling windows only") == 1


def test_no_offer_when_the_agents_close_before_the_callback_could_be_dialled(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1", "1"], entry="short")
        offer = r.first("queue.offer").data
        assert offer["offered"] is False and offer["reason"] in ("closes-before-dial", "window-closed")
        assert r.outcome.kind != "callback" and not await site.requests()
        # the same minute on an ordinary day (18:00 closing) is offered
        plain = await site.call(["1", "1"], entry="sched", caller="+12125550188")
        assert plain.first("queue.offer").data["offered"] is True

    scenario(flowset, db, {"support": 420}, body, clock=SteppingClock(ny(2026, 12, 24, 11, 45)))


def test_check_accepts_schedule_and_refuses_other_values(env: Env) -> None:
    (env.flows / "sched.yaml").write_text(SCHED_FLOW.replace("default: true\n", "numbers: ['777']\n"),
                                          encoding="utf-8")
    assert env.ivr("check", "--no-render").code == 0
    (env.flows / "sched.yaml").write_text(
        SCHED_FLOW.replace("default: true\n", "numbers: ['777']\n").replace("schedule: true", "schedule: sometimes"),
        encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1 and "schedule" in r.err + r.out
    (env.flows / "sched.yaml").write_text(
        SCHED_FLOW.replace("default: true\n", "numbers: ['777']\n").replace("schedule: true",
                                                                          "offer: false, schedule: true"),
        encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1 and "schedule: true needs a callback offer" in r.err + r.out
