"""The seam between the flow engine's queue node and virtual hold.

The engine asks a ``CallbackDesk`` for a wait estimate and an offer decision, checks a number, and files a
request (committed before it returns, so "confirmed" is never said before the request is durable). The
daemon builds one ``Desk`` over the callback store, the site's policy and a ``QueueWaits`` source (AMI queue
state where the PBX is Asterisk, else config and the appliance's own records); the simulator builds one over
a scratch store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import phonenumbers

from ivr.callbacks import policy as policy_mod
from ivr.callbacks.ewt import EwtEstimate
from ivr.callbacks.policy import CallbackPolicy, NumberCheck
from ivr.store.callbacks import CallbackRequest, CallbackStore, Consent, IllegalTransition, RequestResult


class QueueWaits(Protocol):
    """Where a queue's estimated wait comes from (ivr/callbacks/queuestate.py)."""

    def estimate(self, queue: str) -> EwtEstimate:
        """The wait a caller joining ``queue`` now would have; ``EwtEstimate.unknown(...)`` when it cannot say."""
        ...

    def free_agents(self, queue: str) -> int | None:
        """Agents free to take a call now, or None when not known (the dialer paces by this)."""
        ...

    def callers_waiting(self, queue: str) -> int | None:
        """Callers waiting in ``queue`` for an agent now, or None when not known."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CallbackOffer:
    """Whether to offer a caller a callback from ``queue`` now, and what to tell them.

    ``reason``: ``ok``, the policy's ``ewt-unknown``, ``below-threshold``, ``window-closed``,
    ``closes-before-dial``, or ``site-cap`` (the site took its hourly share of requests); ``requested``
    when the caller asked for it (``offer: always``) and it can be made."""

    offer: bool
    reason: str
    estimate: EwtEstimate
    threshold: float
    minutes: tuple[int, int] | None = None
    """The wait as whole minutes for the prompt ("about 5 to 8 minutes")."""
    zones: tuple[str, ...] = ()
    """The zones the calling window was judged in (the caller ID's, else the site's)."""
    dial_at: datetime | None = None


@dataclass(frozen=True)
class SlotChoice:
    """Times a caller may choose for their callback, and the zone they are said in (the callee's single
    zone, else the site's)."""

    zone: str
    slots: tuple[datetime, ...]


#: States in which a request waits to be dialled and may still be cancelled (store.TRANSITIONS).
CANCELLABLE = ("requested", "retry")


class Desk:
    """Everything the queue node needs from virtual hold, over one store, policy and wait source.

    Numbers are judged by ``policy.check_number`` in ``region``, then by the caps with the store's counts;
    requests are filed with the caller's consent and committed before ``request`` returns.
    """

    def __init__(self, store: CallbackStore, policy: CallbackPolicy, waits: QueueWaits, *, region: str,
                 now: Callable[[], datetime] = _utc_now) -> None:
        self.store = store
        self.policy = policy
        self.waits = waits
        self.region = region
        self.now = now
        self.rules = replace(policy.numbers, region=region)

    def _zones_of(self, caller: str) -> tuple[str, ...]:
        check = policy_mod.check_number(caller, self.rules, self.policy.site_zone) if caller else None
        return check.zones if check is not None and check.ok else (self.policy.site_zone,)

    async def offer(self, queue: str, caller: str, *, min_wait: float | None = None,
                    requested: bool = False, hours: Sequence[policy_mod.Interval] | None = None) -> CallbackOffer:
        """Offer when the estimated wait is at least ``min_wait`` (the node's; else the site's threshold),
        the calling window in the caller's zones is open when the callback would be dialled, and the site's
        hourly cap is not reached.

        ``requested``: the caller already asked (pressed 1 while waiting in the PBX queue), so the wait is
        no gate and may be unknown; the calling window and the cap still decide.

        ``hours``: the open intervals of the queue's hours schedule (``callback: {hours: …}``): the callback
        must be dialled while agents are there, not only while the callee may be called."""
        estimate = self.waits.estimate(queue)
        threshold = self.policy.offer.threshold if min_wait is None else float(min_wait)
        zones = self._zones_of(caller)
        now = self.now()
        if requested:
            decision = self._requested(estimate, now, zones, hours)
        else:
            decision = policy_mod.decide_offer(estimate, now, zones,
                                               replace(self.policy.offer, threshold=threshold),
                                               self.policy.windows, hours=hours)
        offer = CallbackOffer(decision.offer, decision.reason, estimate, threshold, estimate.minutes_range(),
                              zones, decision.dial_at)
        if offer.offer:
            site_hour = await self.store.count_requests(since=now - timedelta(hours=1))
            if site_hour >= self.policy.caps.per_site_per_hour:
                offer = replace(offer, offer=False, reason="site-cap")
        return offer

    def _requested(self, estimate: EwtEstimate, now: datetime, zones: tuple[str, ...],
                   hours: Sequence[policy_mod.Interval] | None = None) -> policy_mod.OfferDecision:
        """A callback the caller asked for: dialled at the estimate's high end when there is one, else as
        soon as may be; it must fall in the calling window with the site's margin, like any offer."""
        dial_at = now + timedelta(seconds=estimate.high) if estimate.high is not None else now
        margin = timedelta(seconds=self.policy.offer.dial_margin)
        for a, b in policy_mod.open_intervals(now, zones, self.policy.windows, days=1, hours=hours):
            if a <= dial_at and dial_at + margin <= b:
                return policy_mod.OfferDecision(True, "requested", dial_at)
            if a <= dial_at < b:
                return policy_mod.OfferDecision(False, "closes-before-dial", dial_at)
        return policy_mod.OfferDecision(False, "window-closed", dial_at)

    async def check_number(self, raw: str) -> NumberCheck:
        """The policy's verdict on a caller ID or keyed number, then the caps: ``number-cap`` (this number
        asked too often today) or ``site-cap`` (the site's hourly share is taken)."""
        check = policy_mod.check_number(raw, self.rules, self.policy.site_zone)
        if not check.ok:
            return check
        now = self.now()
        for_number = await self.store.count_requests(since=now - timedelta(hours=24), number=check.e164)
        for_site = await self.store.count_requests(since=now - timedelta(hours=1))
        cap = policy_mod.check_caps(for_number, for_site, self.policy.caps)
        if cap is not None:
            return NumberCheck(False, check.e164, cap, check.zones)
        return check

    def slots(self, zones: tuple[str, ...], earliest: datetime, arrival: datetime, count: int = 3,
              hours: Sequence[policy_mod.Interval] | None = None) -> SlotChoice:
        """The next open slots after ``earliest`` (the soonest the callback could be dialled anyway), today or
        tomorrow in the zone they are said in, leaving ``dial_margin`` before the windows close and before the
        request would expire (``arrival + retry.expiry``), so a chosen slot can always be dialled; inside the
        queue's ``hours`` when given."""
        say = zones[0] if len(zones) == 1 else self.policy.site_zone
        margin = timedelta(seconds=self.policy.offer.dial_margin)
        until = min(policy_mod.end_of_tomorrow(self.now(), say) - timedelta(seconds=1),
                    arrival + timedelta(seconds=self.policy.retry.expiry) - margin)
        found = policy_mod.next_slots(earliest, until, zones, say, self.policy.windows, margin=margin, count=count,
                                      hours=hours)
        return SlotChoice(say, tuple(found))

    def queue_fact(self, queue: str, fact: str) -> int | None:
        """Live state for a flow's conditions (``queue.NAME.wait`` …): whole seconds of the wait a caller
        joining now would have, agents free, callers waiting; None when the source cannot say."""
        if fact == "wait":
            est = self.waits.estimate(queue)
            return None if est.seconds is None else round(est.seconds)
        if fact == "agents_available":
            return self.waits.free_agents(queue)
        if fact == "callers_waiting":
            return self.waits.callers_waiting(queue)
        raise ValueError(f"unknown queue fact {fact!r}")

    def readback(self, e164: str) -> list[str]:
        """The number in digit groups as a caller here would write it ("201", "555", "0123")."""
        return policy_mod.readback_groups(e164, self.region)

    async def request(self, *, queue: str, number: str, zones: tuple[str, ...], arrival_at: datetime,
                      consent: Consent, call_id: str | None = None, quoted: tuple[float, float] | None = None,
                      scheduled_at: datetime | None = None, data: Sequence[tuple[str, str]] = (),
                      sensitive: Collection[str] = (), hours: str | None = None) -> RequestResult:
        """File (or update) the request, with the caller's ``data`` for the agent and the ``hours`` schedule
        its attempts must fall in; it is on disk when this returns."""
        return await self.store.request(queue=queue, number=number, zones=zones, arrival_at=arrival_at,
                                        consent=consent, now=self.now(), call_id=call_id, quoted=quoted,
                                        scheduled_at=scheduled_at, data=data, sensitive=sensitive, hours=hours)

    def normalise(self, raw: str) -> str:
        """E.164 for a caller ID or keyed number as far as libphonenumber can parse it, else ""."""
        digits = "".join(ch for ch in raw if ch.isdigit() or ch == "+")
        if not digits:
            return ""
        try:
            num = phonenumbers.parse(digits, self.region)
        except phonenumbers.NumberParseException:
            return ""
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)

    async def pending(self, number: str, queue: str | None = None) -> list[CallbackRequest]:
        """This site's active requests for ``number`` (any form; normalised), optionally for one queue."""
        e164 = self.normalise(number)
        if not e164:
            return []
        return [r for r in await self.store.active()
                if r.site == self.store.site and r.number == e164 and (queue is None or r.queue == queue)]

    async def cancel(self, request_id: str, reason: str) -> bool:
        """Cancel a request still waiting to be dialled; False when it is being dialled or has ended (then it
        is left to the dialer: a callback in progress is never pulled from under the agent)."""
        try:
            await self.store.cancel(request_id, self.now(), reason)
        except IllegalTransition:
            return False
        return True
