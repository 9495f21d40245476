"""The automatic callback dialer: takes due callback requests in order of arrival and calls the customers back.

Shape (docs/callbacks.md, "The dialer"):
- Pure decisions, no I/O: ``clock_verdict`` (is the system clock known good?), ``plan_batch`` (which due
  requests to dial now: arrival order, pacing by free agents or a configured concurrency), ``settle`` (what
  an attempt's result means for the request).
- ``Dialer``: the asyncio scheduler. One pass (``tick``) every ``poll_seconds`` on the monotonic clock; it
  dials nothing until the clock is known synchronised (a box without a real-time clock boots in 1970, and a
  wrong clock dials at 3 a.m.). Each attempt is committed by ``CallbackStore.begin_attempt`` (attempt id,
  the SIP Call-ID or the AMI channel, the request id as CALLBACK_ID) **before** the INVITE or Originate is
  sent; after a crash, ``reconcile`` decides attempts found in flight.
- ``DialPort``: how a call goes out. The two ports are adapters (``ivr.adapters.callback_dial``):
  ``SipDialPort`` places the call with the appliance's own SIP stack (X-Callback-ID header) and runs the
  callback flow on the answered leg ("press 1 to be connected", then a transfer to the queue by the site's
  transfer mode); ``AmiDialPort`` sends an AMI Originate through the PBX (docs/asterisk, section 5) with
  CALLBACK_ID as a channel variable. Their pure helpers (``queue_position``, ``channel_matches``) stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from ivr.callbacks import policy as policy_mod
from ivr.callbacks.desk import QueueWaits
from ivr.callbacks.ewt import EwtEstimate
from ivr.callbacks.policy import CallbackPolicy
from ivr.flows.hours import HoursState, Schedule, decide
from ivr.store.callbacks import (
    NOT_SENT,
    Attempt,
    AttemptCounts,
    AttemptRefused,
    CallbackRequest,
    CallbackStore,
    IllegalTransition,
    stored_time,
)
from ivr.store.eventlog import EventLog

log = logging.getLogger("ivr.callbacks.dialer")

# -- the clock ---------------------------------------------------------------------------------------------

#: adjtimex(2): ``TIME_ERROR`` return value and the ``STA_UNSYNC`` status bit (include/uapi/linux/timex.h).
TIME_ERROR = 5
STA_UNSYNC = 0x0040


@dataclass(frozen=True)
class ClockStatus:
    synced: bool
    source: str  # adjtimex, timedatectl, trust, none
    detail: str = ""


def clock_verdict(adjtimex: tuple[int, int] | None, timedatectl: str | None) -> ClockStatus:
    """Pure: the kernel's NTP state (adjtimex return value and status word) wins; else ``timedatectl show
    -p NTPSynchronized`` output; neither: unknown, which counts as not synchronised."""
    if adjtimex is not None:
        state, status = adjtimex
        if state == TIME_ERROR or status & STA_UNSYNC:
            return ClockStatus(False, "adjtimex", f"kernel clock not synchronised (state {state}, status {status:#x})")
        return ClockStatus(True, "adjtimex", f"kernel clock synchronised (state {state})")
    if timedatectl is not None:
        value = timedatectl.strip().partition("=")[2].strip().lower()
        return ClockStatus(value == "yes", "timedatectl", f"NTPSynchronized={value or '?'}")
    return ClockStatus(False, "none", "no way to ask whether the clock is synchronised")


class _Timex(ctypes.Structure):
    # struct timex (include/uapi/linux/timex.h): modes, offset, freq, maxerror, esterror, status, ... ; the
    # tail is padding we never read (the kernel writes at most sizeof(struct timex) = 208 bytes on 64-bit).
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_char * 256)]


def read_adjtimex() -> tuple[int, int] | None:
    """(return value, status) of a read-only adjtimex(2) call, or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = int(libc.adjtimex(ctypes.byref(tx)))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state, int(tx.status)


def read_timedatectl() -> str | None:
    try:
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 and "=" in out.stdout else None


def probe_clock(mode: str) -> ClockStatus:
    """``trust``: the admin says the clock is right (a real-time clock, tests). ``ntp``: ask the kernel."""
    if mode == "trust":
        return ClockStatus(True, "trust", "callbacks.clock: trust")
    adj = read_adjtimex()
    return clock_verdict(adj, None if adj is not None else read_timedatectl())


# -- settings and pure decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialerSettings:
    mode: Literal["agent-first", "customer-first"] = "agent-first"
    """agent-first: dial only when an agent is free; customer-first: also when the queue's head is about to be
    served (its wait is within ``lead_seconds``), so the customer waits a moment at the front instead."""
    max_concurrent: int = 2
    """Callback attempts at once, all queues together; also the pace when free agents are unknown."""
    lead_seconds: float = 30.0
    poll_seconds: float = 2.0
    """How often due requests are looked for (monotonic clock)."""
    clock: Literal["ntp", "trust"] = "ntp"
    flow: str = "callback"
    """The flow run on an answered SIP callback leg (flows/callback.yaml)."""


def pacing_slots(active_in_queue: int, free_agents: int | None, estimate: EwtEstimate | None,
                 settings: DialerSettings) -> int:
    """How many more callbacks of one queue may be dialled now. Free agents known: no more attempts at once
    than free agents (customer-first: at least one when the head of the queue is about to be served). Free
    agents unknown: the configured concurrency (the caller applies it across queues)."""
    if free_agents is None:
        return settings.max_concurrent - active_in_queue
    allowed = free_agents
    if (settings.mode == "customer-first" and allowed < 1 and estimate is not None and estimate.seconds is not None
            and estimate.seconds <= settings.lead_seconds):
        allowed = 1
    return allowed - active_in_queue


def plan_batch(due: Sequence[CallbackRequest], active_by_queue: Mapping[str, int], waits: QueueWaits | None,
               settings: DialerSettings, held: frozenset[str] = frozenset()) -> tuple[list[CallbackRequest],
                                                                                     dict[str, str]]:
    """Which of ``due`` (already in arrival order, windows open) to dial now, and why each other one waits
    (``pacing`` / ``held``: a retry interval still running on the monotonic clock / ``in-flight``)."""
    total = sum(active_by_queue.values())
    counts = dict(active_by_queue)
    chosen: list[CallbackRequest] = []
    waiting: dict[str, str] = {}
    slots: dict[str, int] = {}
    for req in due:
        if req.id in held:
            waiting[req.id] = "held"
            continue
        if total >= settings.max_concurrent:
            waiting[req.id] = "pacing"
            continue
        if req.queue not in slots:
            free = waits.free_agents(req.queue) if waits is not None else None
            est = waits.estimate(req.queue) if waits is not None and settings.mode == "customer-first" else None
            slots[req.queue] = pacing_slots(counts.get(req.queue, 0), free, est, settings)
        if slots[req.queue] <= 0:
            waiting[req.id] = "pacing"
            continue
        slots[req.queue] -= 1
        counts[req.queue] = counts.get(req.queue, 0) + 1
        total += 1
        chosen.append(req)
    return chosen, waiting


@dataclass(frozen=True)
class DialResult:
    """How one attempt went. ``outcome``: answered, busy, no-answer, invalid, failed, interrupted, or
    ``in-doubt``: the call may still be up at the PBX and nothing proves where the customer is (a PBX link
    outage): the attempt stays in flight and ``Dialer`` reconciles it on later passes, never redialling it
    while it may be up."""

    outcome: str
    confirmed: bool = False
    """Positive evidence that the customer reached the queue or an agent: the PBX reported their channel
    joining the queue (AMI QueueCallerJoin, or the channel found in app_queue), or our own transfer of the leg
    succeeded (REFER's final NOTIFY 2xx, Redirect accepted, the agent's bridge up). Never inferred from a
    missing "declined" signal."""
    detail: str = ""
    answered_at: datetime | None = None
    agent_at: datetime | None = None
    """When the customer was handed to the queue or agent."""
    action_id: str = ""
    leg_call_id: str = ""
    """The call record of the customer's leg (SIP: the flow ran there)."""
    sent: bool = True
    """False: nothing reached the PBX or the customer (the link was down): retried at once, not counted."""


@dataclass(frozen=True)
class Settlement:
    attempt_outcome: str  # what the attempt row records (store.ATTEMPT_OUTCOMES)
    done: bool  # the callback reached an agent: the request is done
    retry_reason: str | None  # the outcome ``policy.next_attempt`` judges (None when done)


def settle(result: DialResult) -> Settlement:
    """An answered customer with evidence of the queue or an agent is done; answered without it is
    not-confirmed (a machine, a busy person, a hang-up at "press 1": retry later); invalid is never retried
    (next_attempt expires it); the rest retry (``interrupted``: the box's failure, not charged to the
    customer, ``policy.after_interruption``)."""
    if result.outcome == "answered":
        return Settlement("connected", result.confirmed, None if result.confirmed else "not-confirmed")
    if result.outcome in ("busy", "no-answer", "invalid", "failed", "interrupted"):
        return Settlement(result.outcome, False, result.outcome)
    return Settlement("failed", False, "failed")


def promise_record(req: CallbackRequest, first_dial: datetime | None, result: DialResult | None,
                   now: datetime) -> dict[str, Any]:
    """The honest numbers of one finished callback: the wait quoted to the caller against the time from the
    original arrival to the first dial and to the agent; kept when the agent came within the quoted range."""
    arrival = stored_time(req.arrival_at) or now
    agent_at = result.agent_at if result is not None else None
    to_agent = (agent_at - arrival).total_seconds() if agent_at else None
    to_dial = (first_dial - arrival).total_seconds() if first_dial else None
    quoted = (req.quoted_low, req.quoted_high) if req.quoted_high is not None else None
    kept: bool | None = None
    if quoted is not None:
        kept = to_agent is not None and to_agent <= float(req.quoted_high or 0)
    error = None
    if to_agent is not None and req.quoted_low is not None and req.quoted_high is not None:
        error = round(to_agent - (req.quoted_low + req.quoted_high) / 2, 1)
    return {"request_id": req.id, "queue": req.queue, "quoted_low": req.quoted_low, "quoted_high": req.quoted_high,
            "arrival_at": req.arrival_at, "time_to_dial": None if to_dial is None else round(to_dial, 1),
            "time_to_agent": None if to_agent is None else round(to_agent, 1), "kept": kept,
            "ewt_error": error, "attempts": req.attempts}


class ScheduleHours:
    """``Dialer.hours_open`` from the flows: a request's ``hours`` (its queue node's ``callback: {hours:
    NAME}``) is open as the flows' schedule of that name says now (reloads included), closed while its emergency
    switch is on. A schedule the flows no longer have holds no callback back (logged once)."""

    def __init__(self, schedules: Callable[[], Mapping[str, Schedule]], switches: Any) -> None:
        self.schedules = schedules
        self.switches = switches  # EventLog: emergency_closed(name)
        self.unknown: set[str] = set()

    async def __call__(self, name: str, at: datetime) -> bool:
        schedule = self.schedules().get(name)
        if schedule is None:
            if name not in self.unknown:
                self.unknown.add(name)
                log.warning("callbacks: hours schedule %r is not in the flows; its callbacks keep the calling"
                            " windows only", name)
            return True
        closed = await self.switches.emergency_closed(name)
        return decide(schedule, at, emergency_closed=closed).state is HoursState.OPEN


# -- dialling ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialIds:
    """Chosen before the attempt is committed, so the record names the call before it exists."""

    sip_call_id: str = ""
    channel: str = ""
    agent_data: tuple[tuple[str, str], ...] = ()
    """The caller's data for the agent, opened from the request (``CallbackStore.agent_data``) just before
    the dial: AMI channel variables ``__IVR_VAR_<NAME>``, or the SIP leg's transfer headers."""
    sensitive: frozenset[str] = frozenset()
    """Names in ``agent_data`` whose values are sensitive: never logged or recorded."""


#: What the PBX says of an attempt found in flight: its channel is in the queue (or with an agent from it),
#: still up elsewhere (ringing, at "press 1"), or gone.
PbxView = Literal["queued", "up", "gone"]


class DialPort(Protocol):
    name: str

    def ids(self, req: CallbackRequest) -> DialIds: ...

    def unavailable(self) -> str | None:
        """Why nothing can be dialled now (the PBX link is down), or None: the dialer pauses meanwhile."""
        ...

    async def dial(self, req: CallbackRequest, attempt: Attempt, ids: DialIds) -> DialResult: ...

    async def pbx_view(self, attempts: Sequence[Attempt]) -> Mapping[str, PbxView]:
        """Raises when the PBX cannot be asked now; an attempt left out counts as gone."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Active:
    request: CallbackRequest
    attempt: Attempt
    task: asyncio.Task[None]


@dataclass
class DialerStatus:
    clock: ClockStatus = field(default_factory=lambda: ClockStatus(False, "none", "not checked yet"))
    ticks: int = 0
    dialed: int = 0
    last_waiting: dict[str, str] = field(default_factory=dict)
    paused: str | None = None
    """Why the dialer dials nothing now (the PBX link down), shown in ``ivr status``."""
    in_doubt: int = 0
    """Attempts in flight that no task of this process follows (found after a restart or an outage)."""


class Dialer:
    """The scheduler; see the module docstring. ``now`` is the wall clock (UTC) stored times compare to; the
    loop's own waits and the retry guard run on the monotonic clock.

    The rule for every transition: a request is done only on positive evidence that the customer reached the
    queue or an agent (``DialResult.confirmed``, ``CallbackStore.leg_handover``, the PBX's ``queued``); what
    cannot be proven is ``interrupted`` and retried (not charged to the customer); a call that may still be up
    at the PBX is never dialled again until the PBX says it is gone."""

    def __init__(self, store: CallbackStore, policy: CallbackPolicy, port: DialPort, settings: DialerSettings, *,
                 waits: QueueWaits | None = None, events: EventLog | None = None,
                 now: Callable[[], datetime] = _utc_now,
                 clock_probe: Callable[[str], ClockStatus] = probe_clock,
                 hours_open: Callable[[str, datetime], Awaitable[bool]] | None = None) -> None:
        self.store = store
        self.hours_open = hours_open
        """Whether a named hours schedule (a request's ``hours``: its queue's agents) is open at a time, from
        the flows and the emergency switch; None: not known here, the calling windows alone decide."""
        self.policy = policy
        self.port = port
        self.settings = settings
        self.waits = waits
        self.events = events or store.log
        self.now = now
        self.clock_probe = clock_probe
        self.state = DialerStatus()
        self.active: dict[str, _Active] = {}  # request id -> attempt in progress
        self._held: dict[str, float] = {}  # request id -> monotonic time before which it is not redialled
        self._clock_checked = -1e18
        self._due_count = 0
        self._stopping = False
        self.reconciled = False
        self._cleaning: set[str] = set()  # attempt ids whose legs the port is ending now
        self._cleaned: set[str] = set()
        self._clean_tasks: set[asyncio.Task[None]] = set()
        self._reconcile_lock = asyncio.Lock()

    # -- life cycle
    async def reconcile(self) -> dict[str, str]:
        """Decide attempts in flight that no task of this process follows: after a crash, all of them; later,
        those an outage left in doubt. Each is decided on evidence: the leg's own record (``leg_handover``)
        or the PBX's ``queued`` → connected and done; still up at the PBX → left in flight (asked again next
        pass, never redialled meanwhile); gone → interrupted, retried after ``policy.after_interruption``.
        Legs a crash left ringing or answered are cleaned up by the port first (``clean_up``: CANCEL, or ACK
        and BYE), so no customer sits in dead air. The PBX cannot be asked (AMI down): nothing is decided."""
        async with self._reconcile_lock:  # a pass and a finished clean-up never decide one attempt twice
            return await self._reconcile()

    async def _reconcile(self) -> dict[str, str]:
        orphans = [a for a in await self.store.in_flight() if a.request_id not in self.active]
        if not orphans:
            self.state.in_doubt = 0
            await self._settle_leftovers()
            self.reconciled = True
            return {}
        cleaning = self._start_clean_up(orphans)
        orphans = [a for a in orphans if a.id not in cleaning]
        if not orphans:  # every one still being cleaned up: decided on a later pass, the rest dial meanwhile
            self.state.in_doubt = len(cleaning)
            await self._settle_leftovers()
            self.reconciled = True
            return {}
        try:
            view = await self.port.pbx_view(orphans)
        except Exception as exc:
            # The PBX cannot say now (AMI down): decide nothing, since a call still up must not be dialled again.
            # The requests stay "dialing" (never due); the next pass asks again.
            log.warning("callback reconcile postponed: the PBX cannot be asked (%s); %d attempts wait", exc,
                        len(orphans))
            self.state.in_doubt = len(orphans)
            return {}
        now = self.now()
        decided: dict[str, str] = {}
        for att in orphans:
            proof = await self.store.leg_handover(att.id)
            seen = view.get(att.id, "gone")
            if proof is None and seen == "queued":
                proof = "found in the queue at the PBX"
            if proof is None and seen == "up":
                decided[att.id] = "up"  # ringing or at "press 1": the next pass asks again
                continue
            if proof is not None:
                result = DialResult("answered", True, detail=f"{proof} (reconciled)")
            else:
                result = DialResult("interrupted", detail="found in flight; the call is gone and nothing proves"
                                                          " the customer reached the queue")
            with contextlib.suppress(IllegalTransition, AttemptRefused):
                await self._finish(await self.store.get(att.request_id), att, result, now)
            decided[att.id] = "connected" if proof is not None else "interrupted"
            log.info("callback reconciled request=%s attempt=%s outcome=%s", att.request_id, att.id,
                     decided[att.id])
        final = {k: v for k, v in decided.items() if v != "up"}
        self.state.in_doubt = len(decided) - len(final) + len(cleaning)
        if final:
            await self.events.append("callback.reconciled", None, decided=final, via=self.port.name)
        await self._settle_leftovers()
        self.reconciled = True
        return final

    def _start_clean_up(self, orphans: Sequence[Attempt]) -> set[str]:
        """Start the port's ``clean_up`` (CANCEL a ringing leg, BYE an answered one: it may wait seconds for
        retransmissions) in the background for orphans not cleaned yet; returns the attempt ids still being
        cleaned. Those are decided, and so may be redialled, only once their legs are ended; every other
        request is dialled meanwhile."""
        clean_up = getattr(self.port, "clean_up", None)
        if clean_up is None:
            return set()
        new = [a for a in orphans if a.id not in self._cleaned and a.id not in self._cleaning]
        if new:
            ids = {a.id for a in new}
            self._cleaning |= ids

            async def run() -> None:
                try:
                    numbers = {a.id: (await self.store.get(a.request_id)).number for a in new}
                    await clean_up(new, numbers)
                except Exception as exc:  # never let a cleanup failure keep the dialer from deciding
                    log.warning("callback legs left by the last run not cleaned up: %s", exc)
                finally:
                    self._cleaning -= ids
                    self._cleaned |= ids
                try:  # decide them now: a stop may come before the next pass
                    await self.reconcile()
                except Exception as exc:
                    log.warning("callback reconcile after clean-up failed: %s", exc)

            task = asyncio.create_task(run(), name="callback-clean-up")
            self._clean_tasks.add(task)
            task.add_done_callback(self._clean_tasks.discard)
        return {a.id for a in orphans if a.id in self._cleaning}

    async def _settle_leftovers(self) -> None:
        """A crash between an attempt's outcome and the request's next state (two commits) leaves a request in
        an outcome state with nothing in flight: decide it now as ``_finish`` would have, the retry counted
        from the attempt's end (never inside the interval)."""
        for req in await self.store.active():
            if req.state not in ("connected", "no-answer", "busy", "invalid", "failed") or req.site != self.store.site:
                continue
            if req.id in self.active:
                continue
            atts = await self.store.attempts(req.id)
            last = atts[-1] if atts else None
            if last is None or last.outcome is None:
                continue
            confirmed = req.state == "connected" and last.detail.startswith("confirmed")
            result = DialResult("answered" if req.state == "connected" else last.outcome, confirmed,
                                detail=last.detail, sent=not last.detail.startswith(NOT_SENT))
            ended = stored_time(last.ended_at) or self.now()
            await self._decide(req, result, ended, self.now(), "settled after a restart")
            log.info("callback settled after restart request=%s state=%s", req.id, req.state)

    async def run(self) -> None:
        """Until cancelled: one pass every ``poll_seconds``."""
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                started = loop.time()
                try:
                    await self.tick()
                except Exception:  # a request moved under us (cancelled by the CLI), a busy database: next pass
                    log.exception("callback pass failed")
                await asyncio.sleep(max(0.05, self.settings.poll_seconds - (loop.time() - started)))
        finally:
            self._stopping = True

    async def stop(self, grace: float = 10.0) -> None:
        """Dial nothing new; let attempts in progress finish within ``grace``, then cut them (recorded as
        interrupted: retried after the back-off, not charged)."""
        self._stopping = True
        tasks = [a.task for a in self.active.values()] + list(self._clean_tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)

    # -- one pass
    def _clock_ok(self) -> bool:
        loop = asyncio.get_running_loop()
        every = 60.0 if self.state.clock.synced else 10.0
        if loop.time() - self._clock_checked >= every:
            self._clock_checked = loop.time()
            status = self.clock_probe(self.settings.clock)
            if status != self.state.clock:
                (log.info if status.synced else log.warning)(
                    "callback clock synced=%s source=%s detail=%s%s", status.synced, status.source, status.detail,
                    "" if status.synced else "; nothing is dialled until it is")
            self.state.clock = status
        return self.state.clock.synced

    def _paused(self) -> str | None:
        """The port's reason to dial nothing now; logged once when it changes."""
        why = self.port.unavailable()
        if why is None and not getattr(self.waits, "fresh", True):  # AmiQueueWaits: re-reading QueueStatus
            why = "queue figures stale since the PBX link dropped"
        if why != self.state.paused:
            if why:
                log.warning("callback dialer paused: %s; no attempt is started or charged meanwhile", why)
            else:
                log.info("callback dialer resumed")
        self.state.paused = why
        return why

    async def tick(self) -> int:
        """Reconcile attempts nobody follows, expire what is past its expiry, then dial what is due and paced.
        Returns attempts started."""
        self.state.ticks += 1
        if self._paused():
            return 0
        if not self.reconciled or self.state.in_doubt:
            await self.reconcile()
            if not self.reconciled:
                return 0
        now = self.now()
        if not self._clock_ok():
            return 0
        await self._expire_overdue(now)
        loop = asyncio.get_running_loop()
        self._held = {k: v for k, v in self._held.items() if v > loop.time()}

        def is_open(req: CallbackRequest, at: datetime) -> bool:
            return policy_mod.window_open(at, req.zones, self.policy.windows)

        due = [r for r in await self.store.due(now, 500, is_open) if r.id not in self.active]
        closed = await self._hours_closed(due, now)
        due = [r for r in due if r.id not in closed]
        capped: set[str] = set()
        if due:  # the two look-ups below only when something is due
            # arrival order, but a request a crash or an outage already cut goes behind those it has not:
            # repeated failures of the box spread over the customers instead of ringing the oldest few each time
            cut = await self.store.interruptions()
            due.sort(key=lambda r: cut.get(r.id, 0))  # stable: arrival order within each count
            dials = await self.store.dials_by_number(now - timedelta(days=1))
            capped = {r.id for r in due if dials.get(r.number, 0) >= self.policy.caps.dials_per_number_per_day}
        self._due_count = len(due)
        by_queue: dict[str, int] = {}
        for a in self.active.values():
            by_queue[a.request.queue] = by_queue.get(a.request.queue, 0) + 1
        chosen, waiting = plan_batch([r for r in due if r.id not in capped], by_queue, self.waits, self.settings,
                                     frozenset(self._held))
        waiting.update({rid: "number-cap" for rid in capped})
        waiting.update({rid: "hours-closed" for rid in closed})
        if waiting != self.state.last_waiting and waiting:
            log.info("callback waiting %s", " ".join(f"{k}={v}" for k, v in waiting.items()))
        self.state.last_waiting = waiting
        started = 0
        for req in chosen:
            if self._stopping or self._paused():
                break
            ids = self.port.ids(req)
            try:
                # Committed before anything is sent: a crash from here on finds this attempt in flight.
                att = await self.store.begin_attempt(req.id, now, channel=ids.channel or self.port.name,
                                                     sip_call_id=ids.sip_call_id)
            except Exception as exc:  # refused (cancelled meanwhile, not due): the store said no, nothing sent
                log.info("callback attempt not started request=%s: %s", req.id, exc)
                continue
            log.info("callback dialing request=%s attempt=%s n=%d queue=%s via=%s", req.id, att.id, att.n,
                     req.queue, self.port.name)
            task = asyncio.create_task(self._attempt(req, att, ids), name=f"callback-{req.id}")
            self.active[req.id] = _Active(req, att, task)
            task.add_done_callback(self._forget(req.id))
            self.state.dialed += 1
            started += 1
        return started

    async def _hours_closed(self, due: Sequence[CallbackRequest], now: datetime) -> set[str]:
        """Requests whose queue's hours schedule (``callback: {hours: NAME}``) is closed now: the offer and
        the slots promised a callback while agents are there, so retries wait for it to open too."""
        if self.hours_open is None:
            return set()
        is_open: dict[str, bool] = {}
        out = set()
        for r in due:
            if r.hours is None:
                continue
            if r.hours not in is_open:
                is_open[r.hours] = await self.hours_open(r.hours, now)
            if not is_open[r.hours]:
                out.add(r.id)
        return out

    def _forget(self, request_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self.active.pop(request_id, None)

        return done

    async def _expire_overdue(self, now: datetime) -> None:
        for req in await self.store.active():
            if req.state not in ("requested", "retry") or req.site != self.store.site:
                continue
            arrival = stored_time(req.arrival_at)
            if arrival is not None and now > arrival + timedelta(seconds=self.policy.retry.expiry):
                with contextlib.suppress(IllegalTransition):
                    await self.store.expire(req.id, now, "expiry passed before it could be dialled",
                                            kept=self._kept(None, now))

    async def _with_data(self, req: CallbackRequest, ids: DialIds) -> DialIds:
        """``ids`` with the request's data for the agent; without it when it cannot be read (the customer is
        still called back: the agent asks again)."""
        if not req.agent_data:
            return ids
        try:
            data, hidden = await self.store.agent_data(req)
        except Exception as exc:
            log.warning("callback data not read request=%s: %s: %s", req.id, type(exc).__name__, exc)
            return ids
        return dataclasses.replace(ids, agent_data=data, sensitive=hidden)

    async def _attempt(self, req: CallbackRequest, att: Attempt, ids: DialIds) -> None:
        try:
            result = await self.port.dial(req, att, await self._with_data(req, ids))
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(req, att, DialResult("interrupted", detail="dialer stopped")))
            raise
        except Exception as exc:  # a bug or an adapter failure: the attempt failed, the request retries
            log.warning("callback attempt failed request=%s attempt=%s: %s: %s", req.id, att.id,
                        type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            result = DialResult("interrupted", detail=f"{type(exc).__name__}: {exc}")
        if result.outcome == "in-doubt":
            # The call may still be up at the PBX: leave the attempt in flight; reconcile asks again each pass.
            log.warning("callback attempt in doubt request=%s attempt=%s: %s", req.id, att.id, result.detail)
            self.state.in_doubt += 1
            return
        await self._finish(req, att, result)

    def _kept(self, result: DialResult | None, now: datetime,
              first_dial: datetime | None = None) -> Callable[[CallbackRequest], dict[str, Any]]:
        def record(req: CallbackRequest) -> dict[str, Any]:
            out = promise_record(req, first_dial, result, now)
            if result is not None and result.leg_call_id:
                out["leg_call_id"] = result.leg_call_id
            return out

        return record

    async def _finish(self, req: CallbackRequest, att: Attempt, result: DialResult,
                      now: datetime | None = None) -> None:
        now = now or self.now()
        st = settle(result)
        detail = result.detail + (f" action_id={result.action_id}" if result.action_id else "")
        if result.outcome == "answered":  # read back by _settle_leftovers after a crash right after this commit
            detail = ("confirmed: " if st.done else "not-confirmed: ") + detail
        if not result.sent:
            detail = NOT_SENT + detail
        try:
            await self.store.finish_attempt(att.id, st.attempt_outcome, now, detail.strip())
        except Exception:
            log.exception("callback attempt outcome not recorded attempt=%s", att.id)
            return
        await self._decide(await self.store.get(req.id), result, now, now, "")

    async def _decide(self, req: CallbackRequest, result: DialResult, ended: datetime, now: datetime,
                      note: str) -> None:
        """The request's next state after its attempt ended: done (with ``callback.kept``), a retry (charged to
        the customer or, for an interruption, backed off and not charged), or expired (``callback.kept``,
        kept false: an expiry is a broken promise)."""
        st = settle(result)
        suffix = f" ({note})" if note else ""
        attempts = await self.store.attempts(req.id)
        first = stored_time(attempts[0].started_at) if attempts else None
        if st.done:
            await self.store.complete(req.id, now, "connected to an agent" + suffix,
                                      kept=self._kept(result, now, first))
            log.info("callback done request=%s", req.id)
            return
        assert st.retry_reason is not None
        counts = AttemptCounts.of(attempts)
        arrival = stored_time(req.arrival_at) or now
        if st.retry_reason == "interrupted" and not result.sent:
            d = policy_mod.RetryDecision("retry", now)  # nothing went out: due again once the link is back
        elif st.retry_reason == "interrupted":
            d = policy_mod.after_interruption(counts.interrupted, arrival, ended, req.zones, self.policy.retry,
                                              self.policy.windows)
        else:
            d = policy_mod.next_attempt(st.retry_reason, counts.charged, arrival, ended, req.zones,
                                        self.policy.retry, self.policy.windows)
        if d.state == "retry" and d.at is not None:
            await self.store.schedule_retry(req.id, d.at, now, st.retry_reason + suffix)
            self._held[req.id] = asyncio.get_running_loop().time() + max(0.0, (d.at - now).total_seconds())
            log.info("callback retry request=%s outcome=%s at=%s", req.id, st.attempt_outcome, d.at.isoformat())
        else:
            await self.store.expire(req.id, now, f"{st.retry_reason}: {d.reason}{suffix}",
                                    kept=self._kept(None, now, first))
            log.info("callback expired request=%s outcome=%s reason=%s", req.id, st.attempt_outcome, d.reason)

    def status(self) -> dict[str, Any]:
        c = self.state.clock
        return {"via": self.port.name, "mode": self.settings.mode, "clock_synced": c.synced,
                "clock": f"{c.source}: {c.detail}", "due": self._due_count, "active": len(self.active),
                "dialed": self.state.dialed, "ticks": self.state.ticks, "reconciled": self.reconciled,
                "paused": self.state.paused, "in_doubt": self.state.in_doubt,
                "waiting": dict(self.state.last_waiting)}


# -- Originate helpers (pure; ivr.adapters.callback_dial.AmiDialPort uses them) --------------------------------


def queue_position(joined: Sequence[float], arrival: float) -> int:
    """Where a callback enters the PBX queue: behind the callers who joined before its original arrival,
    ahead of those who came after (1 = head). Pure; epoch seconds."""
    return 1 + sum(1 for t in joined if t <= arrival)


def ami_channel(template: str, number: str) -> str:
    return template.format(number=number, digits=number.lstrip("+"))


def channel_matches(dial_string: str, channel: str) -> bool:
    """Asterisk names a channel after its dial string plus ``-<sequence>`` (and ``;1``/``;2`` for Local)."""
    return channel == dial_string or channel.startswith(dial_string + "-")


# -- from config ----------------------------------------------------------------------------------------------


def build_policy(cb: Any) -> CallbackPolicy:
    """The ``CallbackPolicy`` of an ``ivr.config.CallbacksConfig``."""
    from datetime import time as dtime

    from ivr.callbacks.policy import CallingWindow, CapRules, NumberRules, OfferRules, RetryRules

    def hhmm(text: str) -> dtime:
        h, m = (int(x) for x in text.split(":"))
        return dtime(0, 0) if h == 24 else dtime(h, m)

    windows = tuple(CallingWindow(hhmm(w.start), hhmm(w.end), w.zone, frozenset(w.weekdays)) for w in cb.windows)
    numbers = NumberRules(region=cb.region, allow_international=cb.allow_international,
                          allowed_countries=frozenset(cb.allowed_countries), deny_patterns=tuple(cb.deny),
                          allow_patterns=tuple(cb.allow))
    return CallbackPolicy(site_zone=cb.zone, numbers=numbers,
                          offer=OfferRules(threshold=cb.offer_threshold, dial_margin=cb.dial_margin),
                          caps=CapRules(cb.per_number_per_day, cb.per_site_per_hour, cb.dials_per_number_per_day),
                          retry=RetryRules(tuple(cb.retry_intervals), cb.max_attempts, cb.expiry,
                                           cb.after_interruption, cb.max_interruptions), windows=windows)


def build_settings(cb: Any) -> DialerSettings:
    mode: Literal["agent-first", "customer-first"] = "customer-first" if cb.mode == "customer-first" else "agent-first"
    clock: Literal["ntp", "trust"] = "trust" if cb.clock == "trust" else "ntp"
    return DialerSettings(mode=mode, max_concurrent=cb.max_concurrent, lead_seconds=cb.lead_seconds,
                          poll_seconds=cb.poll_seconds, clock=clock, flow=cb.flow)
