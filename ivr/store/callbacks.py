"""The durable callback queue: requests and attempts in the event-log database, each change committed with
its ``callback.*`` event through ``EventLog.transaction`` (one group commit holds both).

Guarantees (issue 7, ANCHORS.md "never loses a request and never dials one twice"):
- a request is on disk when ``request()`` returns, so the caller may then hear "confirmed";
- one active request per (site, queue, number): a second one updates the first and keeps the earlier arrival;
- an attempt row is committed by ``begin_attempt()`` before anything is dialled; a partial unique index
  forbids two attempts in flight for one request, and ``begin_attempt`` refuses before ``next_attempt_at``;
- after a crash, ``in_flight()`` lists attempts without an outcome; the dialer (``Dialer.reconcile``) decides
  them on evidence (``leg_handover``, what the PBX says), and every end of a request carries its
  ``callback.kept`` in the same transaction (``transition(kept=...)``).
Times are aware ``datetime``s stored as UTC text (``utc_now_text``), which sorts in time order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite
import uuid6

from ivr.errors import IvrError
from ivr.store.eventlog import EventLog, parse_utc_text, utc_now_text
from ivr.store.privacy import ERASED, SEALED, mask, unseal

log = logging.getLogger("ivr.store.callbacks")

ACTIVE = ("requested", "dialing", "connected", "no-answer", "busy", "invalid", "failed", "retry")
TERMINAL = ("done", "expired", "cancelled")
ATTEMPT_OUTCOMES = ("connected", "no-answer", "busy", "invalid", "failed", "interrupted")

AGENT_DATA = "agent_data."
"""What a sealed value of a request's data is bound to (with its name): it opens only as that field."""

#: state -> states it may move to
TRANSITIONS: dict[str, frozenset[str]] = {
    "requested": frozenset({"dialing", "cancelled", "expired"}),
    "dialing": frozenset({"connected", "no-answer", "busy", "invalid", "failed"}),
    "connected": frozenset({"done", "retry", "expired"}),  # retry: answered but nobody pressed 1
    "no-answer": frozenset({"retry", "expired"}),
    "busy": frozenset({"retry", "expired"}),
    "failed": frozenset({"retry", "expired"}),
    "invalid": frozenset({"expired"}),
    "retry": frozenset({"dialing", "cancelled", "expired"}),
    "done": frozenset(),
    "expired": frozenset(),
    "cancelled": frozenset(),
}


class IllegalTransition(IvrError):
    def __init__(self, request_id: str, state: str, to: str) -> None:
        super().__init__(f"callback {request_id}: {state} -> {to} is not allowed")
        self.request_id = request_id
        self.state = state
        self.to = to


class CallbackNotFound(IvrError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"no callback {request_id}")
        self.request_id = request_id


class AttemptRefused(IvrError):
    """``begin_attempt`` would dial too early, twice at once, or a callback that is not waiting."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"callback {request_id}: attempt refused: {reason}")
        self.request_id = request_id
        self.reason = reason


@dataclass(frozen=True)
class Consent:
    """What the caller agreed to: when, which number, what they heard and what they pressed."""

    at: datetime
    number: str
    heard: str = ""
    pressed: str = ""


@dataclass(frozen=True)
class CallbackRequest:
    id: str
    site: str
    queue: str
    number: str
    zones: tuple[str, ...]
    arrival_at: str
    requested_at: str
    updated_at: str
    state: str
    call_id: str | None
    consent_at: str
    consent_number: str
    consent_heard: str
    consent_pressed: str
    quoted_low: float | None
    quoted_high: float | None
    scheduled_at: str | None
    attempts: int
    next_attempt_at: str | None
    reason: str
    agent_data: tuple[tuple[str, str, bool], ...] = ()
    """The caller's data for the agent as stored: (name, value, sensitive); a sensitive value is sealed
    (``privacy:`` on) or masked, and opened for the dial by ``CallbackStore.agent_data``."""
    hours: str | None = None
    """The hours schedule the queue's agents keep (``callback: {hours: NAME}``): attempts start only while it
    is open (``Dialer``); None: the calling windows alone decide."""


@dataclass(frozen=True)
class Attempt:
    id: str
    request_id: str
    n: int
    started_at: str
    channel: str
    action_id: str
    sip_call_id: str
    outcome: str | None
    ended_at: str | None
    detail: str


#: Detail prefix of an interrupted attempt that never left the box (the PBX link was down): counted nowhere.
NOT_SENT = "not sent: "


@dataclass(frozen=True)
class AttemptCounts:
    charged: int
    """Attempts that tried the customer's phone (any outcome but ``interrupted``): counted against max_attempts."""
    interrupted: int
    """Attempts the box or its PBX link cut (crash, outage), not those never sent: bounded on their own."""

    @classmethod
    def of(cls, attempts: Iterable[Attempt]) -> AttemptCounts:
        ended = [a for a in attempts if a.outcome is not None]
        return cls(sum(1 for a in ended if a.outcome != "interrupted"),
                   sum(1 for a in ended if a.outcome == "interrupted" and not a.detail.startswith(NOT_SENT)))


#: Builds a request's ``callback.kept`` record from the request as it stands after its final move.
KeptRecord = Callable[["CallbackRequest"], Mapping[str, Any]]


@dataclass(frozen=True)
class RequestResult:
    id: str
    created: bool  # False: an active request for the number and queue existed and was updated


_REQ_COLS = ("id, site, queue, number, callee_tz, arrival_at, requested_at, updated_at, state, call_id, consent_at,"
             " consent_number, consent_heard, consent_pressed, quoted_low, quoted_high, scheduled_at, attempts,"
             " next_attempt_at, reason, agent_data, hours")
_ATT_COLS = "id, request_id, n, started_at, channel, action_id, sip_call_id, outcome, ended_at, detail"


def _req(row: Any) -> CallbackRequest:
    r = list(row)
    r[4] = tuple(json.loads(r[4]))
    r[20] = tuple((str(n), str(v), bool(s)) for n, v, s in json.loads(r[20]))
    return CallbackRequest(*r)


def stored_time(ts: str | None) -> datetime | None:
    """A request's or attempt's time column (None when unset) as an aware datetime."""
    return parse_utc_text(ts) if ts else None


def _ts(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("callback times must be timezone-aware")
    return utc_now_text(t)


Db = aiosqlite.Connection


class CallbackStore:
    """Callback requests and attempts; writes go through the event log's single writer."""

    def __init__(self, log_: EventLog) -> None:
        self.log = log_
        self.site = log_.site

    # -- helpers run inside a transaction --
    async def _event(self, db: Db, type: str, call_id: str | None, **data: Any) -> int:
        return await EventLog.insert(db, self.log._row(type, call_id, data))  # same package: the row format

    async def _get(self, db: Db, request_id: str) -> CallbackRequest:
        async with db.execute(f"SELECT {_REQ_COLS} FROM callback_requests WHERE id=?", (request_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise CallbackNotFound(request_id)
        return _req(row)

    async def _move(self, db: Db, req: CallbackRequest, to: str, now: datetime, reason: str,
                    next_attempt_at: datetime | None = None, **extra: Any) -> None:
        if to not in TRANSITIONS[req.state]:
            raise IllegalTransition(req.id, req.state, to)
        nxt = _ts(next_attempt_at) if next_attempt_at is not None else None
        if to in TERMINAL:
            nxt = None
        elif next_attempt_at is None:
            nxt = req.next_attempt_at
        await db.execute("UPDATE callback_requests SET state=?, updated_at=?, reason=?, next_attempt_at=? WHERE id=?",
                         (to, _ts(now), reason, nxt, req.id))
        await self._event(db, "callback.state", req.call_id, request_id=req.id, queue=req.queue,
                          number=req.number, **{"from": req.state}, to=to, reason=reason, at=_ts(now),
                          next_attempt_at=nxt, **extra)

    # -- requests --
    async def request(self, *, queue: str, number: str, zones: tuple[str, ...], arrival_at: datetime,
                      consent: Consent, now: datetime, call_id: str | None = None,
                      quoted: tuple[float, float] | None = None, scheduled_at: datetime | None = None,
                      data: Sequence[tuple[str, str]] = (), sensitive: Collection[str] = (),
                      hours: str | None = None) -> RequestResult:
        """Take (or update) a request; committed when it returns. A second request for the same number and
        queue while one is active updates it: the earlier arrival is kept, the new consent, slot and ``data``
        win. ``data``: the caller's values for the agent (the queue node's ``data:``); those named in
        ``sensitive`` are never stored in clear (``_stored_data``). ``hours``: the schedule its attempts must
        fall in (the queue node's ``callback: {hours: NAME}``)."""
        site = self.site
        stored = json.dumps([list(d) for d in self._stored_data(call_id, data, sensitive)])
        names = [n for n, _ in data]

        async def op(db: Db) -> RequestResult:
            async with db.execute(
                f"SELECT {_REQ_COLS} FROM callback_requests WHERE site=? AND queue=? AND number=?"
                " AND state NOT IN ('done','expired','cancelled')", (site, queue, number)) as cur:
                row = await cur.fetchone()
            ql, qh = quoted if quoted else (None, None)
            sched = _ts(scheduled_at) if scheduled_at else None
            consent_data = {"at": _ts(consent.at), "number": consent.number, "heard": consent.heard,
                            "pressed": consent.pressed}
            if row is not None:
                old = _req(row)
                arrival = min(old.arrival_at, _ts(arrival_at))
                nxt = old.next_attempt_at
                if sched is not None and old.state in ("requested", "retry"):
                    nxt = max(sched, nxt or sched)
                await db.execute(
                    "UPDATE callback_requests SET arrival_at=?, updated_at=?, consent_at=?, consent_number=?,"
                    " consent_heard=?, consent_pressed=?, quoted_low=coalesce(?, quoted_low),"
                    " quoted_high=coalesce(?, quoted_high), scheduled_at=coalesce(?, scheduled_at),"
                    " next_attempt_at=?, callee_tz=?, agent_data=?, hours=? WHERE id=?",
                    (arrival, _ts(now), consent_data["at"], consent.number, consent.heard, consent.pressed, ql, qh,
                     sched, nxt, json.dumps(list(zones)), stored, hours, old.id))
                await self._event(db, "callback.updated", call_id, request_id=old.id, queue=queue, number=number,
                                  arrival_at=arrival, consent=consent_data, scheduled_at=sched, state=old.state,
                                  at=_ts(now), data=names, **({"hours": hours} if hours else {}))
                return RequestResult(old.id, False)
            rid = str(uuid6.uuid7())
            await db.execute(
                f"INSERT INTO callback_requests ({_REQ_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rid, site, queue, number, json.dumps(list(zones)), _ts(arrival_at), _ts(now), _ts(now), "requested",
                 call_id, consent_data["at"], consent.number, consent.heard, consent.pressed, ql, qh, sched, 0,
                 sched or _ts(now), "", stored, hours))
            await self._event(db, "callback.requested", call_id, request_id=rid, queue=queue, number=number,
                              zones=list(zones), arrival_at=_ts(arrival_at), consent=consent_data,
                              quoted_low=ql, quoted_high=qh, scheduled_at=sched, at=_ts(now), data=names,
                              **({"hours": hours} if hours else {}))
            return RequestResult(rid, True)

        result: RequestResult = await self.log.transaction(op)
        log.info("callback request id=%s queue=%s created=%s", result.id, queue, result.created)
        return result

    def _stored_data(self, call_id: str | None, data: Sequence[tuple[str, str]],
                     sensitive: Collection[str]) -> list[tuple[str, str, bool]]:
        """The caller's data as the row keeps it. A sensitive value is sealed with its call's key when
        ``privacy:`` is on (erased with the call, ivr/store/erasure.py); without it, there is no key to
        erase, so it is masked as in the call's record and events, and does not reach the agent."""
        hidden = set(sensitive)
        sealer = self.log.sealer
        out = []
        for name, value in data:
            if name not in hidden:
                out.append((name, value, False))
            elif sealer is not None:
                out.append((name, sealer.seal_value(call_id, AGENT_DATA + name, value), True))
            else:
                out.append((name, mask(value), True))
        return out

    async def agent_data(self, req: CallbackRequest) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
        """The request's data for the agent, sealed values opened with the keys on disk, and the names of the
        sensitive ones. Left out: a masked value (stored without ``privacy:``) and one whose key was erased or
        does not open it."""
        out: list[tuple[str, str]] = []
        hidden: set[str] = set()
        keys: dict[str, bytes | None] = {}
        for name, value, is_sensitive in req.agent_data:
            if not is_sensitive:
                out.append((name, value))
                continue
            if not value.startswith(SEALED):
                continue  # masked: no clear value was ever kept
            key_id = value[len(SEALED):].rpartition(":")[0]
            if key_id not in keys:
                async with self.log.db.execute("SELECT key FROM privacy_keys WHERE id=?", (key_id,)) as cur:
                    row = await cur.fetchone()
                keys[key_id] = bytes(row[0]) if row is not None and row[0] is not None else None
            opened = unseal(value, AGENT_DATA + name, keys)
            if isinstance(opened, str) and opened != ERASED:  # its key gone, or not the key it was sealed with
                out.append((name, opened))
                hidden.add(name)
        return tuple(out), frozenset(hidden)

    async def get(self, request_id: str) -> CallbackRequest:
        return await self._get(self.log.db, request_id)

    async def active(self) -> list[CallbackRequest]:
        async with self.log.db.execute(
            f"SELECT {_REQ_COLS} FROM callback_requests WHERE state NOT IN ('done','expired','cancelled')"
            " ORDER BY arrival_at, id") as cur:
            return [_req(r) for r in await cur.fetchall()]

    async def count_requests(self, *, since: datetime, number: str | None = None) -> int:
        """Requests taken (new or repeated) since ``since``, for one number or the whole site: for the caps."""
        sql = ("SELECT count(*) FROM events WHERE type IN ('callback.requested','callback.updated')"
               " AND site=? AND json_extract(data, '$.at')>=?")
        args: tuple[Any, ...] = (self.site, _ts(since))
        if number is not None:
            sql += " AND json_extract(data, '$.number')=?"
            args += (number,)
        async with self.log.db.execute(sql, args) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def due(self, now: datetime, limit: int,
                  is_open: Callable[[CallbackRequest, datetime], bool] | None = None) -> list[CallbackRequest]:
        """Up to ``limit`` requests waiting to be dialled (requested or retry) whose next attempt is due, in
        order of original arrival, skipping those whose calling window ``is_open`` says is closed."""
        out: list[CallbackRequest] = []
        async with self.log.db.execute(
            f"SELECT {_REQ_COLS} FROM callback_requests WHERE state IN ('requested','retry')"
            " AND next_attempt_at<=? AND site=? ORDER BY arrival_at, id", (_ts(now), self.site)) as cur:
            rows = await cur.fetchall()
        for row in rows:
            if len(out) >= limit:
                break
            req = _req(row)
            if is_open is None or is_open(req, now):
                out.append(req)
        return out

    # -- state changes --
    async def transition(self, request_id: str, to: str, now: datetime, reason: str = "",
                         next_attempt_at: datetime | None = None, kept: KeptRecord | None = None) -> None:
        """Move a request to ``to`` (IllegalTransition if the state machine forbids it). ``kept`` builds the
        ``callback.kept`` record from the moved request, written in the same transaction: a request never ends
        (done or expired) without the honest numbers of its promise."""

        async def op(db: Db) -> None:
            await self._move(db, await self._get(db, request_id), to, now, reason, next_attempt_at)
            if kept is not None:
                moved = await self._get(db, request_id)
                await self._event(db, "callback.kept", moved.call_id, **kept(moved))

        await self.log.transaction(op)

    async def reschedule(self, request_id: str, at: datetime, now: datetime, reason: str = "") -> None:
        """Move the next attempt of a waiting (requested/retry) request, e.g. an operator's "retry now";
        IllegalTransition for any other state. The dialer still paces and keeps the calling windows."""

        async def op(db: Db) -> None:
            req = await self._get(db, request_id)
            if req.state not in ("requested", "retry"):
                raise IllegalTransition(req.id, req.state, "retry")
            await db.execute("UPDATE callback_requests SET next_attempt_at=?, updated_at=?, reason=? WHERE id=?",
                             (_ts(at), _ts(now), reason or req.reason, req.id))
            await self._event(db, "callback.rescheduled", req.call_id, request_id=req.id, queue=req.queue,
                              number=req.number, state=req.state, next_attempt_at=_ts(at), reason=reason,
                              at=_ts(now))

        await self.log.transaction(op)

    async def cancel(self, request_id: str, now: datetime, reason: str = "cancelled") -> None:
        await self.transition(request_id, "cancelled", now, reason)

    async def schedule_retry(self, request_id: str, at: datetime, now: datetime, reason: str = "") -> None:
        await self.transition(request_id, "retry", now, reason, next_attempt_at=at)

    async def expire(self, request_id: str, now: datetime, reason: str = "", kept: KeptRecord | None = None) -> None:
        await self.transition(request_id, "expired", now, reason, kept=kept)

    async def complete(self, request_id: str, now: datetime, reason: str = "connected to an agent",
                       kept: KeptRecord | None = None) -> None:
        await self.transition(request_id, "done", now, reason, kept=kept)

    # -- attempts --
    async def begin_attempt(self, request_id: str, now: datetime, *, channel: str = "", action_id: str = "",
                            sip_call_id: str = "") -> Attempt:
        """Record an attempt and move the request to ``dialing``; returns after the commit, and only then may
        the dialer send the Originate/INVITE (carrying the request id as CALLBACK_ID)."""

        async def op(db: Db) -> Attempt:
            req = await self._get(db, request_id)
            if req.state not in ("requested", "retry"):
                raise AttemptRefused(request_id, f"state {req.state}")
            if req.next_attempt_at is not None and req.next_attempt_at > _ts(now):
                raise AttemptRefused(request_id, f"not due before {req.next_attempt_at}")
            att = Attempt(str(uuid6.uuid7()), request_id, req.attempts + 1, _ts(now), channel, action_id,
                          sip_call_id, None, None, "")
            await db.execute(f"INSERT INTO callback_attempts ({_ATT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (att.id, att.request_id, att.n, att.started_at, channel, action_id, sip_call_id,
                              None, None, ""))
            await db.execute("UPDATE callback_requests SET attempts=? WHERE id=?", (att.n, request_id))
            await self._event(db, "callback.attempt.started", req.call_id, request_id=request_id, attempt_id=att.id,
                              n=att.n, channel=channel, action_id=action_id, sip_call_id=sip_call_id,
                              at=att.started_at)
            await self._move(db, req, "dialing", now, f"attempt {att.n}", attempt_id=att.id)
            return att

        attempt: Attempt = await self.log.transaction(op)
        return attempt

    async def finish_attempt(self, attempt_id: str, outcome: str, now: datetime, detail: str = "") -> None:
        """Record an attempt's outcome; the request moves to the same state (``interrupted`` → ``failed``)."""
        if outcome not in ATTEMPT_OUTCOMES:
            raise ValueError(f"unknown attempt outcome {outcome!r}")

        async def op(db: Db) -> None:
            att = await self._attempt(db, attempt_id)
            if att.outcome is not None:
                raise AttemptRefused(att.request_id, f"attempt {attempt_id} already ended: {att.outcome}")
            req = await self._get(db, att.request_id)
            to = "failed" if outcome == "interrupted" else outcome
            if to not in TRANSITIONS[req.state]:
                raise IllegalTransition(req.id, req.state, to)
            await db.execute("UPDATE callback_attempts SET outcome=?, ended_at=?, detail=? WHERE id=?",
                             (outcome, _ts(now), detail, attempt_id))
            await self._event(db, "callback.attempt.ended", req.call_id, request_id=req.id, attempt_id=attempt_id,
                              n=att.n, outcome=outcome, detail=detail, at=_ts(now))
            await self._move(db, req, to, now, detail or outcome, attempt_id=attempt_id)

        await self.log.transaction(op)

    async def _attempt(self, db: Db, attempt_id: str) -> Attempt:
        async with db.execute(f"SELECT {_ATT_COLS} FROM callback_attempts WHERE id=?", (attempt_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise CallbackNotFound(attempt_id)
        return Attempt(*row)

    async def attempts(self, request_id: str) -> list[Attempt]:
        async with self.log.db.execute(f"SELECT {_ATT_COLS} FROM callback_attempts WHERE request_id=? ORDER BY n",
                                       (request_id,)) as cur:
            return [Attempt(*r) for r in await cur.fetchall()]

    async def in_flight(self) -> list[Attempt]:
        """Attempts with no outcome: after a restart, these were cut off mid-dial and need ``reconcile``."""
        async with self.log.db.execute(
            f"SELECT {_ATT_COLS} FROM callback_attempts WHERE outcome IS NULL ORDER BY started_at") as cur:
            return [Attempt(*r) for r in await cur.fetchall()]

    async def attempt_counts(self, request_id: str) -> AttemptCounts:
        """How many attempts the customer was charged (their phone was tried) and how many the box itself cut
        (``interrupted``: a crash, a PBX link outage), which are bounded separately."""
        return AttemptCounts.of(await self.attempts(request_id))

    async def interruptions(self) -> dict[str, int]:
        """Interrupted attempts (not those never sent) per waiting request: the dialer puts the requests a
        crash or an outage cut behind the others, so repeated crashes do not fall on the same customers."""
        async with self.log.db.execute(
            "SELECT a.request_id, count(*) FROM callback_attempts a JOIN callback_requests r ON r.id=a.request_id"
            " WHERE r.state IN ('requested','retry') AND r.site=? AND a.outcome='interrupted'"
            " AND a.detail NOT LIKE ? GROUP BY a.request_id", (self.site, NOT_SENT + "%")) as cur:
            return {str(rid): int(n) for rid, n in await cur.fetchall()}

    async def dials_by_number(self, since: datetime) -> dict[str, int]:
        """Attempts started since ``since`` per number, every request and outcome counted: the per-number
        dial cap (a customer's phone is not rung more often than that, whatever the box went through)."""
        async with self.log.db.execute(
            "SELECT r.number, count(*) FROM callback_attempts a JOIN callback_requests r ON r.id=a.request_id"
            " WHERE r.site=? AND a.started_at>=? GROUP BY r.number", (self.site, _ts(since))) as cur:
            return {str(n): int(c) for n, c in await cur.fetchall()}

    async def leg_handover(self, attempt_id: str) -> str | None:
        """What the event log proves about a SIP attempt's leg (``callback.leg`` names it): the customer was
        handed to the PBX or an agent (``transfer.progress`` or a successful ``transfer``). Returns a short
        description of the proof, or None when there is none."""
        async with self.log.db.execute(
            "SELECT e.type, e.data FROM events l JOIN events e ON e.call_id=l.call_id"
            " WHERE l.type='callback.leg' AND json_extract(l.data, '$.attempt_id')=?"
            " AND (e.type='transfer.progress' OR (e.type='transfer' AND json_extract(e.data, '$.ok')))"
            " ORDER BY e.seq LIMIT 1", (attempt_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        data = json.loads(row[1])
        if row[0] == "transfer.progress":
            return f"{data.get('stage', 'handed over')} to {data.get('destination', '?')}"
        return f"transferred to {data.get('destination', '?')}"
