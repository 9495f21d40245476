"""The callback offer of a queue node (virtual hold, issue 7), and what a queue transfer does to a pending one.

The order is the promise: the request and the caller's consent (when, which number, what they heard, which
keys) are committed by the desk before the caller hears "confirmed". A caller who declines, says nothing,
or gives no usable number goes on to the queue as if no offer had been made. Every decision is an event.
Spoken pieces (minutes, digits, pauses) are pre-rendered built-ins (ivr/flows/callback_prompts.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from ivr.callbacks.desk import CANCELLABLE
from ivr.callbacks.policy import NumberCheck
from ivr.engine import turns
from ivr.engine.conditions import interpolate
from ivr.engine.context import CallbackDesk, CallContext, Outcome
from ivr.flows.hours import open_intervals
from ivr.flows.model import (
    REFUSAL_PROMPTS,
    SPOKEN_MINUTES,
    CallbackPrompts,
    Node,
    Pos,
    PromptItem,
    PromptRef,
    Prompts,
    QueueWithCallback,
    SchedulePrompts,
)
from ivr.flows.prompts import DIGIT_NAMES
from ivr.store.callbacks import Consent

HERE = Pos("", 0, 0)
ENTRY_ATTEMPTS = 3
"""Numbers a caller may key (refused, silent or not confirmed) before staying in the queue."""
ENTRY_MAX_DIGITS = 20  # E.164 allows 15 digits; an international prefix (011, 00) comes on top
ENTRY_INTER_DIGIT = 5.0
"""Seconds between keys of a phone number: callers copy it from somewhere, so longer than a menu's."""
SILENT_REFUSALS = ("invalid", "emergency", "short-code")
"""A caller ID refused for these is withheld or junk: straight to number entry without a refusal prompt."""
REACHED_QUEUE = "reached the queue another way"
ARRIVAL_SKEW = timedelta(minutes=5)
"""A PBX clock this far ahead of ours still counts (the arrival is then taken as now)."""
ARRIVAL_MAX_AGE = timedelta(days=1)
"""An older arrival is not a place in line but a bad header."""
PBX_QUEUE_KEY = "queue:1"
"""The consent record's key for a request made in the PBX queue (its ``[ivr-queue-exit]`` extension 1)."""


@dataclass
class Dialog:
    """What the caller heard and pressed during the offer: their consent, as text."""

    heard: list[str] = field(default_factory=list)
    pressed: list[str] = field(default_factory=list)


def wait_prompts(cp: CallbackPrompts, minutes: tuple[int, int] | None) -> Prompts:
    """ "Your wait is about 5 to 8 minutes." from pre-rendered numbers; past an hour, ``wait_long``."""
    if minutes is None:
        return ()
    lo, hi = minutes
    if hi > SPOKEN_MINUTES:
        return cp.wait_long
    return (*cp.wait_about, PromptRef(f"number_{lo}", HERE), *cp.wait_to, PromptRef(f"number_{hi}", HERE),
            *cp.wait_minutes)


def number_prompts(groups: list[str]) -> Prompts:
    """A number read back digit by digit, with a pause between its groups ("201, 555, 0123")."""
    items: list[PromptRef] = []
    for i, group in enumerate(groups):
        if i:
            items.append(PromptRef("pause", HERE))
        items += [PromptRef(DIGIT_NAMES[c], HERE) for c in group if c in DIGIT_NAMES]
    return tuple(items)


def heard_text(ctx: CallContext, prompts: Prompts) -> str:
    """The words of prompts as the caller hears them (the consent record's "heard")."""
    out = ""
    for audio in turns.resolve(ctx, prompts):
        if audio.name == "pause":
            out += ","
        else:
            out += (" " if out else "") + audio.text
    return out


async def _ask(ctx: CallContext, dialog: Dialog, prompts: Prompts, timeout: float) -> str | None:
    """Play and wait for one key; None for silence (or speech: the offer takes keys only)."""
    dialog.heard.append(heard_text(ctx, prompts))
    got = await turns.ask(ctx, prompts, timeout=timeout, barge_in=True, grammar=None)
    if got is None or got.kind != "dtmf":
        return None
    dialog.pressed.append(got.value)
    return got.value


async def _say(ctx: CallContext, dialog: Dialog, prompts: Prompts) -> None:
    dialog.heard.append(heard_text(ctx, prompts))
    await turns.play(ctx, prompts, barge_in=False)


def parse_arrival(text: str, now: datetime) -> tuple[datetime, str | None]:
    """When the caller joined the line, from a PBX header: epoch seconds (Asterisk's ``${EPOCH}``) or ISO
    8601 (no offset: UTC). Returns (arrival, None), or (now, why) when it is missing, does not parse, lies
    in the future or is older than a callback can live: a place in line is never invented."""
    text = text.strip()
    if not text:
        return now, "missing"
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            at = datetime.fromtimestamp(float(text), UTC)
        else:
            at = datetime.fromisoformat(text)
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return now, f"not epoch seconds or ISO 8601: {text!r}"
    if at > now + ARRIVAL_SKEW:
        return now, f"in the future: {at.isoformat()}"
    if at < now - ARRIVAL_MAX_AGE:
        return now, f"older than {ARRIVAL_MAX_AGE}: {at.isoformat()}"
    return min(at, now), None


async def arrival_of(ctx: CallContext, node: Node, q: QueueWithCallback) -> datetime:
    """The arrival a callback from this node keeps: the node's ``arrival`` (the PBX queue's entry time)
    when given and sound, else now; which one, and why, is an event."""
    now = ctx.now()
    if q.arrival is None:
        return now
    given = str(interpolate(q.arrival, ctx.variables))
    at, why = parse_arrival(given, now)
    await ctx.event("queue.arrival", node=node.name, queue=q.name, given=given, arrival=at.isoformat(),
                    kept=why is None, reason=why)
    if why is not None:
        ctx.log.warning("arrival %r not used (%s): the callback keeps the time of this call", given, why)
    return at


async def offer_callback(ctx: CallContext, node: Node, q: QueueWithCallback, arrival: datetime,
                         data: tuple[tuple[str, str], ...] = (), sensitive: frozenset[str] = frozenset()) -> bool:
    """Offer a callback and take it; True when a request was filed and confirmed (the call then ends with
    outcome ``callback``), False when the caller should go on to the queue. ``data``: what the queue would
    have handed the agent (``sensitive``: the names never stored in clear), filed with the request so the
    agent gets it on the callback."""
    desk = ctx.callbacks
    dialog = Dialog()
    if not q.offer_callback or desk is None:
        reason = "offer disabled" if not q.offer_callback else "no callback desk"
        ctx.log.info("no callback offer queue=%s reason=%s", q.name, reason)
        await ctx.event("queue.offer", node=node.name, queue=q.name, offered=False, reason=reason,
                        **_asked(q))
        await _unavailable(ctx, dialog, q)
        return False
    try:
        hours = await _agents_hours(ctx, q)
        offer = await desk.offer(q.name, ctx.call.caller, min_wait=q.min_wait_seconds, requested=q.offer_always,
                                 hours=hours)
    except Exception as exc:  # virtual hold failing must never keep a caller from the queue
        ctx.log.exception("callback offer failed queue=%s", q.name)
        await ctx.event("queue.offer", node=node.name, queue=q.name, offered=False,
                        reason=f"desk error: {type(exc).__name__}: {exc}", **_asked(q))
        await _unavailable(ctx, dialog, q)
        return False
    est = offer.estimate
    await ctx.event("queue.offer", node=node.name, queue=q.name, offered=offer.offer, reason=offer.reason,
                    estimate=est.seconds, low=est.low, high=est.high, method=est.method,
                    estimate_unknown=est.reason or None, basis=est.basis, threshold=offer.threshold,
                    minutes=list(offer.minutes) if offer.minutes else None, zones=list(offer.zones),
                    dial_at=offer.dial_at.isoformat() if offer.dial_at else None, **_asked(q),
                    **({"hours": q.hours} if q.hours else {}))
    ctx.log.info("callback offer queue=%s offered=%s reason=%s estimate=%s", q.name, offer.offer, offer.reason,
                 est.seconds)
    if not offer.offer:
        await _unavailable(ctx, dialog, q)
        return False
    cp = q.callback_prompts
    assert cp is not None, "the loader builds prompts for every queue that offers"
    if q.offer_always:  # asked for in the PBX queue (its key 1): no second "press 1", on to the number
        dialog.pressed.append(PBX_QUEUE_KEY)
        await ctx.event("callback.offer.accepted", node=node.name, queue=q.name, requested=True)
    else:
        key = await _ask(ctx, dialog, wait_prompts(cp, offer.minutes) + cp.offer, q.timeout)
        if key != "1":
            await ctx.event("callback.offer.declined", node=node.name, queue=q.name, key=key,
                            reason="no key" if key is None else "other key")
            return False
        await ctx.event("callback.offer.accepted", node=node.name, queue=q.name)
    number = await _choose_number(ctx, node, q, cp, desk, dialog)
    if number is None:
        return False
    slot: tuple[datetime, str] | None = None
    if q.schedule_prompts is not None:
        slot = await _choose_time(ctx, node, q, q.schedule_prompts, desk, dialog, number.zones,
                                  offer.dial_at or ctx.now(), arrival, hours)
    consent = Consent(at=ctx.now(), number=number.e164, heard=" | ".join(dialog.heard),
                      pressed=" ".join(dialog.pressed))
    # A chosen time is the promise; the wait estimate is not (the report counts only quoted waits).
    quoted = (est.low, est.high) if est.low is not None and est.high is not None and slot is None else None
    try:
        result = await desk.request(queue=q.name, number=number.e164, zones=number.zones, arrival_at=arrival,
                                    consent=consent, call_id=ctx.call.call_id, quoted=quoted,
                                    scheduled_at=slot[0] if slot else None, data=data, sensitive=sensitive,
                                    hours=q.hours)
    except Exception as exc:  # not stored: never say "confirmed"; the caller keeps the queue instead
        ctx.log.exception("callback request not stored queue=%s", q.name)
        await ctx.event("callback.request_failed", node=node.name, queue=q.name, number=number.e164,
                        error=f"{type(exc).__name__}: {exc}")
        await turns.play(ctx, cp.no_number, barge_in=False)
        return False
    # Committed: only now may the caller hear that it is confirmed.
    await ctx.event("callback.confirmed", node=node.name, queue=q.name, request_id=result.id,
                    created=result.created, number=number.e164,
                    scheduled_at=slot[0].isoformat() if slot else None)
    ctx.variables["callback_id"] = result.id
    ctx.outcome = Outcome("callback", f"{q.name} {result.id}")
    if slot is not None and q.schedule_prompts is not None:
        sp = q.schedule_prompts
        await turns.play(ctx, sp.scheduled + slot_prompts(sp, slot[0], ctx.now(), slot[1]) + sp.scheduled_end,
                         barge_in=False)
    else:
        await turns.play(ctx, cp.confirmed, barge_in=False)
    return True


def slot_prompts(sp: SchedulePrompts, slot: datetime, now: datetime, zone: str) -> Prompts:
    """ "tomorrow at 9 thirty a.m." on ``zone``'s clock, from pre-rendered pieces (hours: ``number_1`` …
    ``number_12``)."""
    tz = ZoneInfo(zone)
    local = slot.astimezone(tz)
    day = sp.slot_today if local.date() == now.astimezone(tz).date() else sp.slot_tomorrow
    return (*day, *sp.slot_at, PromptRef(f"number_{local.hour % 12 or 12}", HERE),
            *(sp.slot_oclock if local.minute == 0 else sp.slot_thirty),
            *(sp.slot_am if local.hour < 12 else sp.slot_pm))


async def _choose_time(ctx: CallContext, node: Node, q: QueueWithCallback, sp: SchedulePrompts, desk: CallbackDesk,
                       dialog: Dialog, zones: tuple[str, ...], earliest: datetime, arrival: datetime,
                       hours: list[tuple[datetime, datetime]] | None = None) -> tuple[datetime, str] | None:
    """ "As soon as possible press 1, to choose a time press 2", then the next open slots; the chosen slot
    and the zone it was said in, or None for as soon as possible (also on silence or another key: the caller
    has already accepted a callback). No slot open: the question is not asked."""
    choice = desk.slots(zones, earliest, arrival, hours=hours)
    slots = list(choice.slots)[:9]  # one key each
    if not slots:
        await ctx.event("callback.schedule", node=node.name, queue=q.name, choice="asap", reason="no open slot")
        return None
    key = await _ask(ctx, dialog, sp.schedule_choice, q.timeout)
    if key != "2":
        await ctx.event("callback.schedule", node=node.name, queue=q.name, choice="asap",
                        reason="pressed 1" if key == "1" else ("no key" if key is None else "other key"))
        return None
    now = ctx.now()
    menu: list[PromptItem] = []
    for i, slot in enumerate(slots, start=1):
        if i > 1:
            menu.append(PromptRef("pause", HERE))
        menu += [*sp.slot_press, PromptRef(DIGIT_NAMES[str(i)], HERE), *sp.slot_for,
                 *slot_prompts(sp, slot, now, choice.zone)]
    picked = await _ask(ctx, dialog, tuple(menu), q.timeout)
    offered = [s.isoformat() for s in slots]
    if picked is None or not picked.isdigit() or not 1 <= int(picked) <= len(slots):
        await ctx.event("callback.schedule", node=node.name, queue=q.name, choice="asap", offered=offered,
                        reason="no key" if picked is None else "other key", zone=choice.zone)
        return None
    at = slots[int(picked) - 1]
    await ctx.event("callback.schedule", node=node.name, queue=q.name, choice="slot", offered=offered,
                    scheduled_at=at.isoformat(), zone=choice.zone, key=picked)
    return at, choice.zone


async def _agents_hours(ctx: CallContext, q: QueueWithCallback) -> list[tuple[datetime, datetime]] | None:
    """When the queue's agents are there (``callback: {hours: NAME}``), as UTC intervals for today, tomorrow
    and the day after (slots reach to the end of tomorrow); none while the emergency switch says closed."""
    if q.hours is None:
        return None
    if await ctx.switches.emergency_closed(q.hours):
        return []
    return open_intervals(ctx.flows.schedules[q.hours], ctx.now(), days=3)


def _asked(q: QueueWithCallback) -> dict[str, object]:
    """``requested: true`` on the offer's events when the caller asked in the PBX queue (else nothing)."""
    return {"requested": True} if q.offer_always else {}


async def _unavailable(ctx: CallContext, dialog: Dialog, q: QueueWithCallback) -> None:
    """A caller who asked for a callback hears why there is none before going back to the queue; an
    ordinary caller was never offered one, so hears nothing."""
    if q.offer_always and q.callback_prompts is not None:
        await _say(ctx, dialog, q.callback_prompts.unavailable)


async def _refuse(ctx: CallContext, dialog: Dialog, cp: CallbackPrompts, reason: str) -> None:
    await _say(ctx, dialog, getattr(cp, REFUSAL_PROMPTS.get(reason, "refused_denied")))


async def _choose_number(ctx: CallContext, node: Node, q: QueueWithCallback, cp: CallbackPrompts,
                         desk: CallbackDesk, dialog: Dialog) -> NumberCheck | None:
    """The caller ID confirmed, or a keyed number checked and confirmed; None: stay in the queue."""
    caller = ctx.call.caller
    check = await desk.check_number(caller) if caller else NumberCheck(False, reason="invalid")
    if check.ok:
        await ctx.event("callback.number.checked", node=node.name, source="caller-id", number=check.e164)
        key = await _ask(ctx, dialog, cp.confirm_number + number_prompts(desk.readback(check.e164))
                         + cp.confirm_choice, q.timeout)
        if key == "1":
            await ctx.event("callback.number.confirmed", node=node.name, source="caller-id",
                            number=check.e164)
            return check
        if key != "2" or not q.allow_other_number:
            await ctx.event("callback.offer.declined", node=node.name, queue=q.name, key=key,
                            reason="caller ID not confirmed")
            return None
        await ctx.event("callback.number.other", node=node.name)
    else:
        await ctx.event("callback.number.refused", node=node.name, source="caller-id",
                        number=check.e164 or caller, reason=check.reason)
        if check.reason not in SILENT_REFUSALS:
            await _refuse(ctx, dialog, cp, check.reason)
        if check.reason == "site-cap" or not q.allow_other_number:
            await _say(ctx, dialog, cp.no_number)
            return None
    for attempt in range(1, ENTRY_ATTEMPTS + 1):
        entry = await _read_number(ctx, dialog, cp.enter_number, q.timeout)
        if not entry:
            await ctx.event("callback.number.no_input", node=node.name, count=attempt, max=ENTRY_ATTEMPTS)
            continue
        check = await desk.check_number(entry)
        if not check.ok:
            await ctx.event("callback.number.refused", node=node.name, source="entered", entry=entry,
                            number=check.e164 or None, reason=check.reason, count=attempt,
                            max=ENTRY_ATTEMPTS)
            await _refuse(ctx, dialog, cp, check.reason)
            if check.reason == "site-cap":
                break
            continue
        key = await _ask(ctx, dialog, cp.confirm_number + number_prompts(desk.readback(check.e164))
                         + cp.entered_choice, q.timeout)
        if key == "1":
            await ctx.event("callback.number.confirmed", node=node.name, source="entered", number=check.e164)
            return check
        await ctx.event("callback.number.not_confirmed", node=node.name, number=check.e164, count=attempt,
                        max=ENTRY_ATTEMPTS)
    await ctx.event("callback.number.none", node=node.name, queue=q.name)
    await _say(ctx, dialog, cp.no_number)
    return None


async def _read_number(ctx: CallContext, dialog: Dialog, prompt: Prompts, timeout: float) -> str:
    """Keys up to # (or 20 digits, or a pause); "" when the caller keyed nothing."""
    dialog.heard.append(heard_text(ctx, prompt))
    got = await turns.ask(ctx, prompt, timeout=timeout, barge_in=True, grammar=None)
    entry = ""
    key = got.value if got is not None and got.kind == "dtmf" else None
    while key is not None and key != "#":
        entry += key
        if len(entry) >= ENTRY_MAX_DIGITS:
            break
        key = await turns.more_digits(ctx, ENTRY_INTER_DIGIT)
    if entry or key == "#":
        dialog.pressed.append(entry + ("#" if key == "#" else ""))
    return entry


async def cancel_on_reaching_queue(ctx: CallContext, node: Node, q: QueueWithCallback) -> None:
    """The caller reached the queue in person: a callback still waiting for this number and queue is
    cancelled, so nobody is called back for a question already answered (issue 7 item 4)."""
    desk = ctx.callbacks
    if desk is None or not ctx.call.caller:
        return
    try:
        pending = await desk.pending(ctx.call.caller, q.name)
        for req in pending:
            done = req.state in CANCELLABLE and await desk.cancel(req.id, REACHED_QUEUE)
            await ctx.event("callback.cancelled" if done else "callback.cancel.skipped", node=node.name,
                            queue=q.name, request_id=req.id, state=req.state, reason=REACHED_QUEUE)
    except Exception:  # the caller is already in the queue; a leftover callback is the dialer's to settle
        ctx.log.exception("could not cancel pending callbacks queue=%s", q.name)
