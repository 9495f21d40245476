"""The callback dialer's two ways out (``ivr.callbacks.dialer.DialPort``): one adapter per outside world.

- ``SipDialPort`` places the call with the appliance's own SIP stack (X-Callback-ID header, the Call-ID the
  dialer committed before dialling) and runs the callback flow on the answered leg ("press 1 to be
  connected", then a transfer to the queue by the site's transfer mode).
- ``AmiDialPort`` sends an AMI Originate through the PBX (docs/asterisk, section 5) with CALLBACK_ID as a
  channel variable, and tells ``Dialer.reconcile`` which attempts still have a channel.

The scheduler and its pure decisions stay in ``ivr.callbacks.dialer``; the daemon builds a port from the
config (``sip_dial_settings``, ``AmiDialSettings``) and hands it to the ``Dialer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ivr.callbacks.dialer import DialIds, DialResult, PbxView, ami_channel, channel_matches, queue_position
from ivr.sip.resolve import parse_host
from ivr.store.callbacks import Attempt, CallbackRequest, stored_time
from ivr.store.eventlog import EventLog

__all__ = ["AmiDialPort", "AmiDialSettings", "SipDialPort", "SipDialSettings", "sip_dial_settings"]

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# -- the SIP way out ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SipDialSettings:
    proxy: str
    """Where the INVITE goes (the PBX or trunk): "host[:port]"; a name without port is looked up by SRV, and
    the call fails over between its addresses (RFC 3263, docs/sip.md)."""
    domain: str | None = None
    """Host of the Request-URI ``sip:<number>@domain``; default the proxy's host."""
    from_uri: str = "sip:ivr@127.0.0.1"
    from_display: str | None = None
    asserted_identity: str | None = None
    credentials: tuple[str, str] | None = None
    ring_timeout: float = 30.0
    queue_caller_id: str = "customer"
    """What the PBX presents into the queue (``X-IVR-Queue-CallerID``), as ``AmiDialSettings.queue_caller_id``."""


StartCall = Callable[..., "asyncio.Task[Any]"]


class SipDialPort:
    """Calls the customer with the appliance's SIP stack; the answered leg runs the callback flow."""

    name = "sip"

    def __init__(self, settings: SipDialSettings, telephony: Any, start_call: StartCall, events: EventLog, *,
                 flow: str = "callback", rtp_timeout: float = 30.0,
                 now: Callable[[], datetime] = _utc_now) -> None:
        self.settings = settings
        self.telephony = telephony  # ivr.adapters.telephony.Telephony: endpoint, media, config, ami
        self.start_call = start_call
        self.events = events
        self.flow = flow
        self.rtp_timeout = rtp_timeout
        self.now = now

    def ids(self, req: CallbackRequest) -> DialIds:
        host = self.telephony.endpoint.local_address[0]
        return DialIds(sip_call_id=f"cb-{uuid.uuid4().hex}@{host}", channel="sip")

    def unavailable(self) -> str | None:
        return None  # our own SIP stack: a failing proxy is an attempt's outcome, not a pause

    async def pbx_view(self, attempts: Sequence[Attempt]) -> Mapping[str, PbxView]:
        return {}  # our own SIP stack: a call of a process that died is gone

    async def clean_up(self, attempts: Sequence[Attempt], numbers: Mapping[str, str]) -> dict[str, int | None]:
        """After a restart, before anything is redialled: end every SIP leg a crash left in flight, so no
        customer sits in dead air. An answered leg's 2xx retransmissions get ACK and BYE; a ringing one gets
        CANCEL, rebuilt from the attempt's Call-ID (its From tag and Via branches derive from it) and the
        number (``numbers``: attempt id → the request's number, for the Request-URI ``sip:<number>@<domain>``
        as ``dial`` built it). All legs at once, bounded (about 8.5 s); returns attempt id → the INVITE's final
        status seen (200: answered, ended by BYE; 487: cancelled; None: nothing answered, the call is gone)."""
        s = self.settings
        domain = s.domain or parse_host(s.proxy).host
        mine = [a for a in attempts if a.channel == "sip" and a.sip_call_id and a.id in numbers]
        # answered and set up (the dialog was committed with callback.leg): BYE the customer, and the agent
        # the bridge was holding; no waiting for retransmissions that will never come
        ended: dict[str, int | None] = {}
        for att in mine:
            dialogs = await self._dialogs_left(att.id)
            for record in dialogs:
                self.telephony.endpoint.end_dialog(record)
            if dialogs:
                ended[att.id] = 200
                log.info("callback leg ended after a restart attempt=%s dialogs=%d", att.id, len(dialogs))
        mine = [a for a in mine if a.id not in ended]

        async def one(att: Attempt) -> int | None:
            try:
                return await self.telephony.endpoint.end_orphan_invite(
                    f"sip:{numbers[att.id]}@{domain}", from_uri=s.from_uri, from_display=s.from_display,
                    proxy=s.proxy, call_id=att.sip_call_id)
            except (OSError, TimeoutError) as exc:  # the proxy's name does not resolve now
                log.warning("callback leg not cleaned up attempt=%s call_id=%s: %s", att.id, att.sip_call_id, exc)
                return None

        results = await asyncio.gather(*(one(a) for a in mine))
        for att, status in zip(mine, results, strict=True):
            log.info("callback leg cleaned up attempt=%s call_id=%s final=%s", att.id, att.sip_call_id, status)
        return ended | {att.id: status for att, status in zip(mine, results, strict=True)}

    async def _dialogs_left(self, attempt_id: str) -> list[Mapping[str, Any]]:
        """Dialogs the attempt's leg had up, from its own record: the customer's (``callback.leg``) and the
        agent's of a bridge in progress (``transfer.progress`` bridged, with no ``call.ended`` after it)."""
        async with self.events.db.execute(
            "SELECT call_id, json_extract(data, '$.dialog') FROM events WHERE type='callback.leg'"
            " AND json_extract(data, '$.attempt_id')=?", (attempt_id,)) as cur:
            row = await cur.fetchone()
        if row is None or row[1] is None:
            return []
        out: list[Mapping[str, Any]] = [json.loads(row[1])]
        async with self.events.db.execute(
            "SELECT json_extract(data, '$.agent_dialog') FROM events WHERE call_id=? AND type='transfer.progress'"
            " AND json_extract(data, '$.agent_dialog') IS NOT NULL", (row[0],)) as cur:
            out.extend(json.loads(r[0]) for r in await cur.fetchall())
        return out

    async def dial(self, req: CallbackRequest, attempt: Attempt, ids: DialIds) -> DialResult:
        from ivr.adapters.netutil import local_ip_towards
        from ivr.adapters.sip_call import SipCall
        from ivr.adapters.telephony import SUPPORTED
        from ivr.adapters.transfer import TransferContext, Transferer, configure_answered, srtp_offer
        from ivr.sip.sdp import build_offer

        tel = self.telephony
        s = self.settings
        domain = s.domain or parse_host(s.proxy).host
        leg_call_id = str(uuid.uuid4())
        session = await tel.media.open_session(call_id=leg_call_id)
        leg: Any = None
        try:
            address = tel._configured_address()
            if not address:  # the address we reach the proxy's first choice from
                first = await tel.endpoint.proxy_address(s.proxy)
                address = local_ip_towards(first[0], "127.0.0.1")
            mode = tel.config.sip.srtp_for(parse_host(s.proxy).host)  # SRTP offered only where configured
            crypto = srtp_offer(mode)
            offer = build_offer(SUPPORTED, local_address=address, local_port=session.local_port,
                                session_id=str(session.local_port), session_version="1", crypto=crypto,
                                srtp_required=mode == "required")
            leg = await tel.endpoint.call(
                f"sip:{req.number}@{domain}", from_uri=s.from_uri, sdp_offer=offer.to_bytes(), proxy=s.proxy,
                from_display=s.from_display, asserted_identity=s.asserted_identity, credentials=s.credentials,
                ring_timeout=s.ring_timeout, call_id=ids.sip_call_id,
                extra_headers=callback_headers(req, attempt, s.queue_caller_id))
            result = leg.result
            if not leg.answered:
                status = result.status if result is not None else None
                outcome = _SIP_OUTCOMES.get(result.outcome.value, "failed") if result is not None else "failed"
                return DialResult(outcome, detail=f"SIP {status or '-'} {result.reason if result else ''}".strip())
            answered_at = self.now()
            if not configure_answered(session, leg.remote_sdp, crypto, mode == "required"):
                return DialResult("failed", detail="no usable codec (or no SRTP, required) in the answer",
                                  answered_at=answered_at)
            call = SipCall(leg_call_id, leg, session, rtp_timeout=self.rtp_timeout)
            call.transferer = Transferer(TransferContext(tel.config.transfer, tel.endpoint, tel.media, tel.ami,
                                                         tel._configured_address(), tel.config.sip.srtp_for))
            rec = _LegRecorder(self.events, leg_call_id, self.now)
            # committed with the dialog, before the flow: a crash from here on is ended by an in-dialog BYE
            await self.events.append("callback.leg", leg_call_id, request_id=req.id, attempt_id=attempt.id,
                                     sip_call_id=ids.sip_call_id, number=req.number, queue=req.queue,
                                     dialog=leg.dialog_record())
            # the caller's data goes with the leg's transfer to the queue (X-IVR-Var-*, or Setvar by Redirect)
            task = self.start_call(call, rec, entry=self.flow,
                                   variables={"queue": req.queue, "callback_id": req.id, "attempt_id": attempt.id},
                                   carried=ids.agent_data, sensitive=ids.sensitive)
            outcome = await task
            confirmed = outcome.kind in ("transferred", "queued")
            return DialResult("answered", confirmed, detail=f"flow {outcome.kind}: {outcome.detail}".strip(),
                              answered_at=answered_at, agent_at=rec.handed_at if confirmed else None,
                              leg_call_id=leg_call_id)
        finally:
            if leg is not None and leg.answered and not leg.ended.is_set():
                with contextlib.suppress(Exception):
                    await leg.hangup()
            await session.close()


def callback_headers(req: CallbackRequest, attempt: Attempt,
                     queue_caller_id_setting: str) -> tuple[tuple[str, str], ...]:
    """The callback INVITE's X- headers: which request and attempt (reconciliation, the dialplan's
    CALLBACK_ID), and what the PBX keeps on the channel into the queue (docs/asterisk: the customer's number
    as caller ID, the original arrival, the IVR call that asked for the callback: IVR_CALL_ID, so the queue_log
    rows of the callback join to it), the same values the AMI Originate sets as channel variables."""
    headers = [("X-Callback-ID", req.id), ("X-Callback-Attempt", attempt.id), ("X-Callback-Number", req.number),
               ("X-IVR-Queue-CallerID", queue_caller_id(queue_caller_id_setting, req.number))]
    if req.call_id:  # a request filed outside a call (an operator's) names no IVR call
        headers.append(("X-IVR-Call-ID", req.call_id))
    arrival = stored_time(req.arrival_at)
    if arrival is not None:
        headers.append(("X-Callback-Arrival", str(int(arrival.timestamp()))))
    return tuple(headers)


#: uac.OutboundOutcome values → attempt outcomes (uac.classify holds the SIP status / Q.850 table)
_SIP_OUTCOMES = {"busy": "busy", "no_answer": "no-answer", "invalid_number": "invalid", "trunk_failure": "failed",
                 "failed": "failed", "cancelled": "interrupted"}


class _LegRecorder:
    """The customer leg's call record, noting when the flow handed the customer to a queue or agent."""

    def __init__(self, events: EventLog, call_id: str, now: Callable[[], datetime]) -> None:
        from ivr.store.eventlog import CallRecorder

        self.inner = CallRecorder(events, call_id)
        self.now = now
        self.handed_at: datetime | None = None

    async def begin(self, call: Any, flow: Any, version: str) -> None:
        await self.inner.begin(call, flow, version)

    async def event(self, type: str, **data: Any) -> None:
        if type == "node.entered" and data.get("kind") in ("transfer", "queue") and self.handed_at is None:
            self.handed_at = self.now()
        await self.inner.event(type, **data)

    async def end(self, outcome: Any, path: list[str], variables: dict[str, object]) -> None:
        await self.inner.end(outcome, path, variables)


# -- the AMI way out ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmiDialSettings:
    """The ``callbacks:`` config's AMI fields (its defaults are the config's: ``ami_channel`` ...)."""

    channel: str
    """Originate Channel; ``{number}`` is the E.164 number, ``{digits}`` the same without "+"."""
    context: str
    exten: str
    caller_id: str | None
    ring_timeout: float
    confirm_seconds: float
    """After the answer, how long to wait for evidence: the customer's channel joining the queue
    (QueueCallerJoin) or the dialplan's IvrCallbackDeclined (nobody pressed 1)."""
    queue_caller_id: str = "customer"
    """What the dialplan presents as caller ID into the queue (``IVR_QUEUE_CALLERID``): ``customer`` (the
    customer's number, so the agent and queue_log see who is called back), ``""`` (leave the channel's), or a
    literal number."""
    link_wait: float = 30.0
    """After the AMI link drops mid-attempt: how long to wait for it before leaving the attempt in doubt."""


#: OriginateOutcome values → attempt outcomes
_AMI_OUTCOMES = {"busy": "busy", "no_answer": "no-answer", "congestion": "failed", "failed": "failed"}
#: How often an attempt whose evidence was cut by an outage asks the PBX again (bounded by the attempt's limit).
_RECHECK = 1.0


def queue_caller_id(setting: str, number: str) -> str:
    return number if setting == "customer" else setting


#: The AstDB family the sample dialplan marks an attempt in as its customer enters the queue (key: the
#: attempt id, CALLBACK_ATTEMPT); read with DBGet (write permission "reporting" suffices, main/db.c).
ASTDB_FAMILY = "ivr_callback"


class AmiDialPort:
    """Callbacks through the PBX: Originate with CALLBACK_ID (docs/asterisk/README.md, section 5).

    An attempt is done only on positive evidence from Asterisk that the customer reached the queue: a
    ``QueueCallerJoin`` of the originated channel into the request's queue, or (after an outage or a missed
    event) the channel found running app_queue in ``CoreShowChannels``. A missing ``IvrCallbackDeclined`` proves
    nothing. When the link drops after the Originate went out, the attempt follows the channel once the link
    is back; if nothing can be proven it is ``interrupted`` (gone) or ``in-doubt`` (maybe still up)."""

    name = "ami"

    def __init__(self, settings: AmiDialSettings, ami: Any, *, now: Callable[[], datetime] = _utc_now,
                 queues: Any = None) -> None:
        self.settings = settings
        self.ami = ami  # ivr.adapters.ami.AmiAdapter
        self.now = now
        self.queues = queues  # ivr.pbx.queues.QueueState (the QueueMonitor's): who waits since when

    def ids(self, req: CallbackRequest) -> DialIds:
        return DialIds(channel=ami_channel(self.settings.channel, req.number))

    def unavailable(self) -> str | None:
        return None if self.ami.connected else "AMI link to the PBX is down"

    async def pbx_view(self, attempts: Sequence[Attempt]) -> Mapping[str, PbxView]:
        """``queued`` when a channel of the attempt's dial string runs app_queue (waiting, or talking to an
        agent it was connected to), or when none is left but the dialplan marked the attempt in AstDB as it
        entered the queue (``DB(ivr_callback/<attempt>)``, docs/asterisk: the customer was served and hung up
        while the box was down); ``up`` when one is there otherwise (ringing, at "press 1"), else ``gone``.
        A channel naming another callback in CALLBACK_ID (Getvar; an empty answer does not contradict) is not
        this attempt's. Raises when the PBX cannot be asked."""
        channels = await self.ami.core_show_channels()
        view: dict[str, PbxView] = {}
        for att in attempts:
            view[att.id] = "gone"
            for ch in channels:
                if not channel_matches(att.channel, ch.channel):
                    continue
                try:
                    owner = await self.ami.getvar("CALLBACK_ID", ch.channel)
                except Exception:  # the channel hung up between the two actions
                    continue
                if owner not in (None, att.request_id):
                    continue
                if ch.application.lower() == "queue":
                    view[att.id] = "queued"
                    break
                view[att.id] = "up"
            if view[att.id] == "gone" and await self.ami.dbget(ASTDB_FAMILY, att.id) is not None:
                # the customer joined the queue and the call has ended since (while we were down or cut
                # off): the dialplan's mark outlives the channel, so they are not called again
                view[att.id] = "queued"
        return view

    async def dial(self, req: CallbackRequest, attempt: Attempt, ids: DialIds) -> DialResult:
        from ivr.adapters.ami import OriginateOutcome
        from ivr.adapters.ami_link import AmiConnectionLost, AmiError, AmiTimeout
        from ivr.adapters.transfer import data_variables

        s = self.settings
        variables = {"CALLBACK_ID": req.id, "CALLBACK_ATTEMPT": attempt.id, "IVR_QUEUE": req.queue,
                     "CALLBACK_NUMBER": req.number, "IVR_QUEUE_CALLERID": queue_caller_id(s.queue_caller_id,
                                                                                        req.number),
                     "IVR_CALL_ID": req.call_id or ""}
        snap = self.queues.snapshot(req.queue) if self.queues is not None else None
        arrival = stored_time(req.arrival_at)
        if arrival is not None:
            variables["CALLBACK_ARRIVAL"] = str(int(arrival.timestamp()))
        # the caller's data (the queue node's data:), as a transfer by Redirect sets it: the agent's screen
        variables.update(data_variables(ids.agent_data))
        if snap is not None and arrival is not None:
            # the place in line the original arrival earned, not a priority over everyone (docs/asterisk §5)
            variables["IVR_QUEUE_POSITION"] = str(queue_position([c.joined_at for c in snap.callers],
                                                                 arrival.timestamp()))
        # subscribed before the Originate: the join may come before its OriginateResponse is read
        watch = self.ami.events({"UserEvent", "QueueCallerJoin", "Hangup"}, maxsize=200)
        generation = self.ami.link_generation
        try:
            try:
                res = await self.ami.originate(
                    ids.channel, context=s.context, exten=s.exten, caller_id=s.caller_id, ring_timeout=s.ring_timeout,
                    variables=variables)
            except AmiTimeout as exc:
                if exc.reason == "AMI not connected":
                    return DialResult("interrupted", detail="AMI link down; Originate not sent", sent=False)
                return await self._follow(req, attempt, None, f"no OriginateResponse ({exc})")
            except AmiConnectionLost:
                return await self._follow(req, attempt, None, "AMI link lost before OriginateResponse")
            except AmiError as exc:
                return DialResult("failed", detail=f"Originate refused: {exc}")
            if res.outcome is not OriginateOutcome.ANSWERED:
                return DialResult(_AMI_OUTCOMES.get(res.outcome.value, "failed"),
                                  detail=f"OriginateResponse reason {res.reason}", action_id=res.action_id)
            answered = self.now()
            return await self._evidence(req, attempt, ids, watch, answered, res.action_id, res.channel, generation)
        finally:
            watch.close()

    async def _evidence(self, req: CallbackRequest, attempt: Attempt, ids: DialIds, watch: Any,
                        answered: datetime, action_id: str, channel: str, generation: int) -> DialResult:
        """After the answer: wait (``confirm_seconds``) for the customer's channel to join the queue, for the
        dialplan's IvrCallbackDeclined, or for the channel to hang up."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.confirm_seconds
        ours = {channel, ids.channel}
        while loop.time() < deadline:  # bounded by confirm_seconds
            if not self.ami.connected or self.ami.link_generation != generation:  # events were missed
                return await self._follow(req, attempt, answered, "AMI link lost while the customer was at"
                                          " \"press 1\"", action_id)
            try:
                async with asyncio.timeout(min(_RECHECK, max(0.0, deadline - loop.time()))):
                    ev = await watch.get()
            except TimeoutError:
                continue
            if ev is None:
                continue
            name, ev_channel = ev.name, ev.get("Channel") or ""
            mine = any(channel_matches(c, ev_channel) or ev_channel == c for c in ours if c)
            if name == "QueueCallerJoin" and mine and (ev.get("Queue") or "") == req.queue:
                return DialResult("answered", True, detail=f"answered; joined queue {req.queue} at position"
                                  f" {ev.get('Position') or '?'}", answered_at=answered, agent_at=self.now(),
                                  action_id=action_id)
            if name == "UserEvent" and ev.get("UserEvent") == "IvrCallbackDeclined" and \
                    ev.get("CallbackID") == req.id:
                return DialResult("answered", False, detail="answered; nobody pressed 1", answered_at=answered,
                                  action_id=action_id)
            if name == "Hangup" and ev_channel == channel and channel != ids.channel:
                return DialResult("answered", False, detail="answered; hung up before joining the queue",
                                  answered_at=answered, action_id=action_id)
        # no event within the time: ask Asterisk where the channel is (an event may have been dropped)
        return await self._follow(req, attempt, answered, f"no queue join within {s.confirm_seconds:g} s",
                                  action_id, once=True)

    async def _follow(self, req: CallbackRequest, attempt: Attempt, answered: datetime | None, why: str,
                      action_id: str = "", *, once: bool = False) -> DialResult:
        """Evidence cut off (the link dropped, or no event came): wait for the link (``link_wait``), then ask
        the PBX where the attempt's channel is, until it is in the queue (done), gone (interrupted: nothing
        proves the customer got there) or the attempt's own limit passes (in doubt: left in flight for the
        dialer's reconcile, never redialled while it may be up). ``once``: ask a single time."""
        s = self.settings
        loop = asyncio.get_running_loop()
        limit = loop.time() + s.link_wait + (0.0 if once else s.ring_timeout + s.confirm_seconds)
        while loop.time() < limit:  # bounded by link_wait + ring_timeout + confirm_seconds
            if self.ami.connected:
                try:
                    seen = (await self.pbx_view([attempt])).get(attempt.id, "gone")
                except Exception:  # the link dropped again while asking
                    seen = None
                if seen == "queued":
                    return DialResult("answered", True, detail=f"{why}; found in queue {req.queue}",
                                      answered_at=answered or self.now(), agent_at=self.now(), action_id=action_id)
                if seen == "gone":
                    if answered is not None and once:
                        return DialResult("answered", False, detail=f"{why}; the call is gone",
                                          answered_at=answered, action_id=action_id)
                    return DialResult("interrupted", detail=f"{why}; the call is gone and nothing proves the"
                                      " customer reached the queue", action_id=action_id)
                if seen == "up" and once:
                    once = False  # still at "press 1" or ringing: keep following it within the limit
            await asyncio.sleep(_RECHECK)
        return DialResult("in-doubt", detail=f"{why}; the PBX could not say where the call is", action_id=action_id)


# -- from config ------------------------------------------------------------------------------------------------


def sip_dial_settings(cb: Any, accounts: Sequence[Any], local_host: str) -> SipDialSettings:
    """Proxy, From and credentials: from the named ``sip.accounts`` entry where there is one."""
    account = next((a for a in accounts if a.aor == cb.sip_account), None) if cb.sip_account else None
    from_uri = cb.from_uri or (account.aor if account is not None else f"sip:ivr@{local_host}")
    creds = (account.username, account.password) if account is not None else None
    return SipDialSettings(proxy=str(cb.sip_proxy), domain=cb.sip_domain, from_uri=from_uri,
                           from_display=cb.display, asserted_identity=cb.asserted_identity, credentials=creds,
                           ring_timeout=cb.ring_timeout, queue_caller_id=cb.queue_caller_id)
