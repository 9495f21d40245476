"""The callback offer in the queue node and the ``callback_cancel`` node, through the real engine, the
simulator's call and a real SQLite callback store (one event log holds the call's events and the store's, so
their commit order can be checked); and ``ivr simulate --wait`` / ``ivr check`` from the command line.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ivr.adapters.simulator import NarratingRecorder, SimulatedCall, StatedWaits
from ivr.callbacks.desk import Desk
from ivr.callbacks.policy import CallbackPolicy, CapRules, NumberRules
from ivr.config import Config
from ivr.engine.context import Outcome
from ivr.engine.runner import run_call
from ivr.flows.model import FlowSet
from ivr.flowset import load_flowset
from ivr.store.callbacks import CallbackRequest, CallbackStore
from ivr.store.eventlog import CallRecorder, Event, EventLog, read_events
from tests.conftest import Env, SteppingClock

CB_FLOW = """
flow: cb
default: true
languages: [en, es]
voices: {en: en-us, es: es}
timezone: America/New_York
start: q
prompts:
  hold: {say: {en: "Please hold.", es: "Espere, por favor."}}
nodes:
  q:
    queue:
      name: support
      prompt: hold
      callback: {min_wait_seconds: 120}
"""

STRICT_FLOW = """
flow: strict
numbers: ["300"]
languages: [en, es]
voices: {en: en-us, es: es}
timezone: America/New_York
start: q
nodes:
  q:
    queue:
      name: support
      callback: {min_wait_seconds: 120, allow_other_number: false}
"""

CANCEL_FLOW = """
flow: cancel
numbers: ["200"]
languages: [en, es]
voices: {en: en-us, es: es}
timezone: America/New_York
start: c
nodes:
  c:
    callback_cancel: {queue: support}
    next: done
    failure: nothing
  done:
    hangup: true
  nothing:
    hangup: true
"""

NY_CALLER = "+12125550123"
NOON_NY = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)  # 12:00 in New York, a Tuesday
POLICY = CallbackPolicy(site_zone="America/New_York", numbers=NumberRules(deny_patterns=(r"^\+1646",)))


@pytest.fixture(scope="module")
def flowset(tmp_path_factory: pytest.TempPathFactory, prompt_cache: Path) -> FlowSet:
    d = tmp_path_factory.mktemp("cbflows")
    for name, text in (("cb", CB_FLOW), ("strict", STRICT_FLOW), ("cancel", CANCEL_FLOW)):
        (d / f"{name}.yaml").write_text(text, encoding="utf-8")
    config = Config(site_id="t", state_dir=d / "var", prompt_cache_dir=prompt_cache)
    return asyncio.run(load_flowset([d], config))


@dataclass
class Run:
    outcome: Outcome
    lines: list[str]
    events: list[Event]  # this call's, in commit order

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def first(self, type: str) -> Event:
        return next(e for e in self.events if e.type == type)


class Site:
    """One appliance: an event log holding the calls and the callback store, a desk over stated waits."""

    def __init__(self, log: EventLog, db: Path, flowset: FlowSet, waits: dict[str, float], *,
                 policy: CallbackPolicy = POLICY, clock: Callable[[], datetime] | None = None) -> None:
        self.log, self.db, self.flowset = log, db, flowset
        self.clock = clock or SteppingClock(NOON_NY)
        self.store = CallbackStore(log)
        self.desk = Desk(self.store, policy, StatedWaits(waits), region="US", now=self.clock)
        self.n = 0

    async def call(self, script: Sequence[str], *, caller: str = NY_CALLER, entry: str = "cb",
                   desk: bool = True) -> Run:
        self.n += 1
        lines: list[str] = []
        call = SimulatedCall(f"call-{self.n}", caller, "", script, emit=lines.append)
        rec = NarratingRecorder(CallRecorder(self.log, call.call_id), lines.append)  # as `ivr simulate` tells it
        outcome = await run_call(call, self.flowset, rec, now=self.clock,
                                 entry=entry, callbacks=self.desk if desk else None)
        return Run(outcome, lines, await read_events(self.db, call.call_id))

    async def requests(self) -> list[CallbackRequest]:
        async with self.log.db.execute("SELECT id FROM callback_requests ORDER BY requested_at") as cur:
            ids = [r[0] for r in await cur.fetchall()]
        return [await self.store.get(i) for i in ids]


def scenario(flowset: FlowSet, db: Path, waits: dict[str, float], body: Callable[[Site], Any],
             **kw: Any) -> None:
    async def go() -> None:
        async with await EventLog.open(db, "t") as log:
            await body(Site(log, db, flowset, waits, **kw))

    asyncio.run(go())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.sqlite"


def after(lines: list[str], marker: str, n: int) -> list[str]:
    i = lines.index(marker)
    return lines[i + 1 : i + 1 + n]


# -- the offer ------------------------------------------------------------------------------------------


def test_offer_accepted_with_caller_id_is_committed_before_confirmed(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1", "1"])
        assert r.outcome.kind == "callback"
        # "about 5 to 9 minutes": 420 s stated, -/+ 20 % = 336-504 s
        assert after(r.lines, "  ♪ Your wait is about", 4) == ["  ♪ 5", "  ♪ to", "  ♪ 9", "  ♪ minutes."]
        assert after(r.lines, "  ♪ We will call you at", 12) == [
            "  ♪ 2", "  ♪ 1", "  ♪ 2", "  ♪ (pause)", "  ♪ 5", "  ♪ 5", "  ♪ 5", "  ♪ (pause)",
            "  ♪ 0", "  ♪ 1", "  ♪ 2", "  ♪ 3"]
        assert r.lines[-2].startswith("  ♪ Thank you. Your callback is confirmed.")
        offer = r.first("queue.offer").data
        assert offer["offered"] is True and offer["reason"] == "ok" and offer["estimate"] == 420
        assert offer["minutes"] == [5, 9] and offer["zones"] == ["America/New_York"]
        [req] = await site.requests()
        assert (req.queue, req.number, req.state) == ("support", NY_CALLER, "requested")
        assert req.consent_number == NY_CALLER and req.consent_pressed == "1 1"
        assert "Your wait is about 5 to 9 minutes." in req.consent_heard
        assert "We will call you at 2 1 2, 5 5 5, 0 1 2 3 If that is right, press 1." in req.consent_heard
        assert (req.quoted_low, req.quoted_high) == (336, 504)
        # Place in line: arrival is when the caller reached the queue node, before consent and commit.
        assert req.arrival_at < req.consent_at < req.requested_at
        # The request (with its consent) is committed before "confirmed" is played.
        types = r.types()
        requested = types.index("callback.requested")
        confirmed_prompt = next(i for i, e in enumerate(r.events)
                                if e.type == "prompt.played" and "callback_confirmed" in e.data["prompts"])
        assert types.index("callback.number.confirmed") < requested < confirmed_prompt
        assert r.events[requested].data["consent"]["number"] == NY_CALLER
        assert "transfer" not in types

    scenario(flowset, db, {"support": 420}, body)


@pytest.mark.parametrize(("waits", "reason"), [
    ({}, "ewt-unknown"),
    ({"sales": 900}, "ewt-unknown"),
    ({"support": 60}, "below-threshold"),
])
def test_no_offer_without_a_long_known_wait(flowset: FlowSet, db: Path, waits: dict[str, float],
                                            reason: str) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1"])
        assert r.outcome == Outcome("queued", "support")
        offer = r.first("queue.offer").data
        assert offer["offered"] is False and offer["reason"] == reason
        assert not any("Your wait" in line for line in r.lines)
        assert "  ♪ Please hold." in r.lines
        assert await site.requests() == []

    scenario(flowset, db, waits, body)


@pytest.mark.parametrize(("local", "caller", "reason"), [
    ("20:45", NY_CALLER, "closes-before-dial"),  # dialled about 20:53, window shuts at 21:00
    ("22:30", NY_CALLER, "window-closed"),
    ("07:00", NY_CALLER, "window-closed"),
    ("23:00", "+14155552671", "ok"),  # 20:00 in Los Angeles, the caller's zone
])
def test_offer_only_inside_the_callers_calling_window(flowset: FlowSet, db: Path, local: str, caller: str,
                                                      reason: str) -> None:
    from zoneinfo import ZoneInfo

    h, m = (int(x) for x in local.split(":"))
    start = datetime(2026, 12, 1, h, m, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)

    async def body(site: Site) -> None:
        r = await site.call(["hangup"], caller=caller)
        offer = r.first("queue.offer").data
        assert offer["reason"] == reason and offer["offered"] is (reason == "ok")

    scenario(flowset, db, {"support": 420}, body, clock=SteppingClock(start))


def test_without_a_desk_the_queue_transfers_and_says_why(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        r = await site.call([], desk=False)
        assert r.outcome == Outcome("queued", "support")
        offer = r.first("queue.offer").data
        assert offer == {"node": "q", "queue": "support", "offered": False, "reason": "no callback desk",
                         "flow": "cb", "flow_version": offer["flow_version"]}

    scenario(flowset, db, {"support": 420}, body)


def test_declined_or_silent_goes_to_the_queue(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        for script, key in ((["silence"], None), (["3"], "3")):
            r = await site.call(script)
            assert r.outcome == Outcome("queued", "support")
            assert r.first("callback.offer.declined").data["key"] == key
        assert await site.requests() == []

    scenario(flowset, db, {"support": 420}, body)


def test_a_request_that_cannot_be_stored_is_never_confirmed(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        # A real failure inside the store's transaction (as a full disk would raise), not a stand-in desk.
        await site.log.db.execute("CREATE TRIGGER no_room BEFORE INSERT ON callback_requests "
                                  "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        await site.log.db.commit()
        r = await site.call(["1", "1"])
        assert r.outcome == Outcome("queued", "support")
        assert "disk is full" in r.first("callback.request_failed").data["error"]
        assert not any("confirmed" in line for line in r.lines if line.startswith("  ♪"))
        assert "callback.requested" not in r.types() and "callback.confirmed" not in r.types()
        assert any("could not take a number" in line for line in r.lines)
        assert await site.requests() == []

    scenario(flowset, db, {"support": 420}, body)


# -- the number ------------------------------------------------------------------------------------------


def test_caller_gives_another_number(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1", "2", "2015550123#", "1"])
        assert r.outcome.kind == "callback"
        assert "  ♪ Please enter the number we should call, with the area code, then press pound." in r.lines
        confirmed = r.first("callback.number.confirmed").data
        assert confirmed == {"node": "q", "source": "entered", "number": "+12015550123", "flow": "cb",
                             "flow_version": confirmed["flow_version"]}
        [req] = await site.requests()
        assert req.number == "+12015550123" and req.consent_pressed == "1 2 2015550123# 1"
        assert "We will call you at 2 0 1, 5 5 5, 0 1 2 3" in req.consent_heard

    scenario(flowset, db, {"support": 420}, body)


@pytest.mark.parametrize("caller", ["", "anonymous", "5550123"])
def test_withheld_caller_id_goes_straight_to_entry(flowset: FlowSet, db: Path, caller: str) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1", "2015550123", "1"], caller=caller)
        assert r.outcome.kind == "callback"
        assert r.first("callback.number.refused").data["reason"] == "invalid"
        accepted = r.lines.index("  ✓ callback offer accepted")
        assert r.lines[accepted + 1].endswith("refused (invalid)")  # no refusal prompt, no read-back
        assert r.lines[accepted + 2] == ("  ♪ Please enter the number we should call, with the area code, "
                                         "then press pound.")
        [req] = await site.requests()
        assert req.number == "+12015550123"

    scenario(flowset, db, {"support": 420}, body)


REFUSALS = [
    ("911#", "emergency", "We cannot call emergency numbers or short codes."),
    ("611#", "short-code", "We cannot call emergency numbers or short codes."),
    ("5550123#", "invalid", "That is not a valid phone number."),
    ("9005551234#", "premium-rate", "We cannot call premium-rate or special service numbers."),
    ("011442079460000#", "international", "We can only call numbers in this country."),
    ("6465550123#", "denied", "We cannot call that number."),  # the site's deny list: ^\+1646
]


@pytest.mark.parametrize(("entry", "reason", "said"), REFUSALS, ids=[r[1] for r in REFUSALS])
def test_refused_numbers_get_a_clear_prompt_and_another_try(flowset: FlowSet, db: Path, entry: str,
                                                            reason: str, said: str) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1", entry, "2015550123#", "1"], caller="anonymous")
        refused = [e.data for e in r.events if e.type == "callback.number.refused" and e.data["source"] == "entered"]
        assert [(d["entry"], d["reason"]) for d in refused] == [(entry.rstrip("#"), reason)]
        i = r.lines.index(f"  ✗ number {entry.rstrip('#')} refused ({reason})")
        assert r.lines[i + 1].startswith(f"  ♪ {said}")
        assert r.lines[i + 2].startswith("  ♪ Please enter the number")  # tried again
        assert [q.number for q in await site.requests()] == ["+12015550123"]

    scenario(flowset, db, {"support": 420}, body)


def test_three_bad_entries_leave_the_caller_in_the_queue(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1", "911#", "silence", "2015550123#", "2"], caller="")
        assert r.outcome == Outcome("queued", "support")
        assert "callback.number.none" in r.types()
        assert "  ♪ Sorry, we could not take a number to call you back. Please stay on the line for the next agent." \
            in r.lines
        assert await site.requests() == []

    scenario(flowset, db, {"support": 420}, body)


def test_no_other_number_when_the_flow_forbids_it(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        r = await site.call(["1"], caller="anonymous", entry="strict")
        assert r.outcome == Outcome("queued", "support")
        assert not any("Please enter the number" in line for line in r.lines)
        assert any("could not take a number" in line for line in r.lines)
        r = await site.call(["1", "1"], entry="strict")
        assert r.outcome.kind == "callback"
        assert "  ♪ If that is right, press 1." in r.lines  # no "press 2 for another number"

    scenario(flowset, db, {"support": 420}, body)


# -- caps and duplicates --------------------------------------------------------------------------------------


def test_number_cap_refuses_the_caller_id_but_not_another_number(flowset: FlowSet, db: Path) -> None:
    policy = CallbackPolicy(site_zone="America/New_York", caps=CapRules(per_number_per_day=1))

    async def body(site: Site) -> None:
        assert (await site.call(["1", "1"])).outcome.kind == "callback"
        r = await site.call(["1", "2015550123#", "1"])
        assert r.first("callback.number.refused").data["reason"] == "number-cap"
        assert any("We cannot take another callback request for that number" in line for line in r.lines)
        assert r.outcome.kind == "callback"
        assert sorted(q.number for q in await site.requests()) == ["+12015550123", NY_CALLER]

    scenario(flowset, db, {"support": 420}, body, policy=policy)


def test_site_cap_stops_the_offer(flowset: FlowSet, db: Path) -> None:
    policy = CallbackPolicy(site_zone="America/New_York", caps=CapRules(per_site_per_hour=1))

    async def body(site: Site) -> None:
        assert (await site.call(["1", "1"])).outcome.kind == "callback"
        r = await site.call(["1"], caller="+12015550123")
        assert r.first("queue.offer").data["reason"] == "site-cap"
        assert r.outcome == Outcome("queued", "support")

    scenario(flowset, db, {"support": 420}, body, policy=policy)


def test_second_request_updates_the_first_and_keeps_its_place(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        first = await site.call(["1", "1"])
        [before] = await site.requests()
        second = await site.call(["1", "1"])
        assert first.first("callback.confirmed").data["created"] is True
        assert second.first("callback.confirmed").data["created"] is False
        assert "callback.updated" in second.types() and "callback.cancelled" not in second.types()
        [after_] = await site.requests()
        assert after_.id == before.id and after_.arrival_at == before.arrival_at
        assert after_.consent_at > before.consent_at
        assert any("updated (one per number and queue)" in line for line in second.lines)

    scenario(flowset, db, {"support": 420}, body)


# -- cancelling --------------------------------------------------------------------------------------------


def test_calling_again_and_reaching_the_queue_cancels_the_pending_callback(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        await site.call(["1", "1"])
        [req] = await site.requests()
        r = await site.call(["2"])  # declines this time and waits in the queue
        assert r.outcome == Outcome("queued", "support")
        cancelled = r.first("callback.cancelled").data
        assert cancelled["request_id"] == req.id and cancelled["reason"] == "reached the queue another way"
        assert r.types().index("transfer") < r.types().index("callback.cancelled")
        got = await site.store.get(req.id)
        assert (got.state, got.reason) == ("cancelled", "reached the queue another way")
        # another caller reaching the queue leaves it alone
        await site.call(["1", "1"])
        await site.call(["2"], caller="+12015550123")
        assert [q.state for q in await site.requests()] == ["cancelled", "requested"]

    scenario(flowset, db, {"support": 420}, body)


def test_callback_cancel_node(flowset: FlowSet, db: Path) -> None:
    async def body(site: Site) -> None:
        r = await site.call([], entry="cancel")
        assert r.outcome == Outcome("hangup", "nothing")  # the failure path: nothing pending
        assert "  ♪ There is no callback booked for your number." in r.lines
        await site.call(["1", "1"])
        [req] = await site.requests()
        r = await site.call(["2"], entry="cancel")  # keeps it
        assert r.outcome == Outcome("hangup", "done") and "callback.cancel.kept" in r.types()
        assert (await site.store.get(req.id)).state == "requested"
        r = await site.call(["1"], entry="cancel")
        assert r.outcome == Outcome("hangup", "done")
        assert r.first("callback.cancel.done").data["request_ids"] == [req.id]
        assert "  ♪ Your callback has been cancelled." in r.lines
        got = await site.store.get(req.id)
        assert (got.state, got.reason) == ("cancelled", "cancelled by the caller")

    scenario(flowset, db, {"support": 420}, body)


# -- the command line ----------------------------------------------------------------------------------------

OPEN = "2026-12-01T10:00"


def test_simulate_wait_lets_an_admin_try_the_offer(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", OPEN, "--wait", "support=600", "--caller", NY_CALLER,
                "-i", "2", "-i", "1", "-i", "1", "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["outcome"] == "callback" and result["detail"].startswith("support ")
    t = result["transcript"]
    assert "  ☏ callback offer: made (ok, wait about 8-12 min)" in t
    assert after(t, "  ♪ Your wait is about", 4) == ["  ♪ 8", "  ♪ to", "  ♪ 12", "  ♪ minutes."]
    assert f"  ✓ call back at {NY_CALLER}" in t
    # without --wait the estimate is unknown: no offer, straight to the queue
    r = env.ivr("simulate", "main", "--at", OPEN, "-i", "2", "--json")
    result = r.json()
    assert result["outcome"] == "queued"
    assert "  ☏ callback offer: none (ewt-unknown)" in result["transcript"]


def test_simulate_uses_the_sites_callback_rules(env: Env) -> None:
    with env.config.open("a", encoding="utf-8") as f:
        f.write("callbacks: {zone: America/New_York, numbers: {deny: ['^\\+1212']},"
                " dial: {proxy: '127.0.0.1:5099'}}\n")
    r = env.ivr("simulate", "main", "--at", OPEN, "--wait", "support=600", "--caller", NY_CALLER,
                "-i", "2", "-i", "1", "-i", "hangup", "--json")
    assert r.code == 0, r.err
    t = r.json()["transcript"]
    assert f"  ✗ number {NY_CALLER} refused (denied)" in t
    assert t[t.index(f"  ✗ number {NY_CALLER} refused (denied)") + 1] == "  ♪ We cannot call that number."


def test_simulate_long_wait_in_spanish(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", OPEN, "--wait", "support=4000", "-i", "9", "-i", "2", "-i", "silence",
                "--json")
    result = r.json()
    assert result["outcome"] == "queued"
    t = result["transcript"]
    assert "  ☏ callback offer: made (ok, wait about 53-80 min)" in t
    assert "  ♪ Su tiempo de espera es de una hora o más." in t
    assert "  ✗ callback offer declined (no key)" in t


def test_simulate_cancel_from_the_sample_menu(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", OPEN, "--caller", NY_CALLER, "-i", "3", "-i", "hangup", "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["path"][-2:] == ["cancel_callback", "main_menu"]  # nothing booked in the scratch store
    assert "  ♪ There is no callback booked for your number." in result["transcript"]


def test_simulate_bad_wait_is_refused(env: Env) -> None:
    r = env.ivr("simulate", "main", "--wait", "support")
    assert r.code == 2 and "bad --wait 'support': use QUEUE=SECONDS" in r.err


@pytest.mark.parametrize(("old", "new", "anchor", "message"), [
    ("min_wait_seconds: 120,", "min_wait_seconds: -5,", "callback:",
     "nodes/support/queue/callback/min_wait_seconds: -5 is less than the minimum of 0"),
    ("allow_other_number: true}", "allow_other_number: yes please}", "callback:",
     "nodes/support/queue/callback/allow_other_number: expected boolean, got str 'yes please'"),
    ("allow_other_number: true}", "allow_other_number: true, prompts: {offr: goodbye}}", "callback:",
     "offr"),
    ("allow_other_number: true}", "allow_other_number: true, prompts: {offer: ofer}}", "ofer}",
     "unknown prompt 'ofer'"),
    ("callback_cancel: {queue: support}", "callback_cancel: {queue: support, timeout: 0}", "callback_cancel:",
     "timeout"),
])
def test_check_reports_bad_callback_settings_with_position(env: Env, old: str, new: str, anchor: str,
                                                          message: str) -> None:
    path = env.flows / "main.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    r = env.ivr("check", "--no-render")
    assert r.code == 1, r.out
    line_no = next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if anchor in line)
    where = f"{os.path.relpath(path)}:{line_no}:"
    assert any(line.startswith(where) and message in line for line in r.out.splitlines()), r.out


def test_check_wants_callback_prompts_in_every_language(empty_env: Env) -> None:
    (empty_env.flows / "ko.yaml").write_text(
        "flow: ko\ndefault: true\nlanguages: [ko]\nstart: q\nnodes:\n  q:\n    queue: {name: support}\n",
        encoding="utf-8")
    r = empty_env.ivr("check", "--no-render")
    assert r.code == 1
    assert "built-in prompt 'callback_offer' has no text in ko; define prompts: callback_offer:" in r.out
    # with the offer off nothing extra is needed
    (empty_env.flows / "ko.yaml").write_text(
        "flow: ko\ndefault: true\nlanguages: [ko]\nstart: q\nnodes:\n  q:\n"
        "    queue: {name: support, callback: {offer: false}}\n", encoding="utf-8")
    assert empty_env.ivr("check", "--no-render").code == 0
