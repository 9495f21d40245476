"""The SIP user agent, UAS side (RFC 3261 sections 8.2, 9.2, 12, 13.3, 14.2, 15), sans-I/O.

Shaped like aioquic: feed datagrams with `receive_datagram(data, source, now)`, send what
`datagrams_to_send()` returns, arm one timer at `get_timer()` and call `handle_timer(now)` when it
fires, and read `next_event()` until it is None. The app answers with the commands `ring`, `answer`,
`reject`, `hangup`, `answer_reinvite` and `reject_reinvite`, each taking `now`.

Every `IncomingCall` is followed by exactly one `CallEnded` for the same leg, whoever ends it.

The UAC side rides on the same transaction layer and socket: `start_call` sends an outbound INVITE
(`ivr.sip.uac`), answered by exactly one `OutboundCompleted`; when that says answered, the leg runs
like an inbound one from then on (BYE, INFO, re-INVITE, `hangup`) and ends with one `CallEnded`.
`add_registration` keeps an account registered (`ivr.sip.register`); `RegistrationChanged` reports
each change of its status.

Transactions (retransmissions, 100 Trying, the 2xx retransmission until ACK) are the job of
`ivr.sip.transaction`; this module owns the dialogs and the call state. Its parts: the events in
`ua_events`, the settings and the per-leg record in `ua_state`, and three mixins of `UserAgent` —
session-timer wiring (`ua_timers`), REFER (`ua_transfer`) and the client side (`ua_client`).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from ivr.sip.admission import Admission, RefusalLog
from ivr.sip.content import (
    DTMF_CONTENT_TYPES,
    EVENT_DIGITS,
    asserted_user,
    dtmf_digit,
    reoffer,
    sdp_body,
    user_of,
)
from ivr.sip.dialog import Dialog
from ivr.sip.lexical import SipParseError
from ivr.sip.message import SipRequest, SipResponse, check_message, make_response, parse_message
from ivr.sip.registrations import Accounts
from ivr.sip.sdp import SdpParseError, SessionDescription, parse_sdp
from ivr.sip.session_timer import SessionTimer, TooSmall, negotiate_uas
from ivr.sip.transaction import (
    TRANSPORT_ERROR,
    AckReceived,
    AckTimeout,
    Address,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    new_branch,
)
from ivr.sip.transport import Transports
from ivr.sip.ua_client import ClientSide
from ivr.sip.ua_events import (
    CallConfirmed,
    CallEnded,
    DtmfReceived,
    IncomingCall,
    MediaAnswered,
    MediaChanged,
    OrphanCancelAnswered,
    RegistrationChanged,
    UaEvent,
)
from ivr.sip.ua_state import (
    ALLOWED_METHODS,
    SUPPORTED_OPTIONS,
    Leg,
    LegState,
    LegStateError,
    UaStats,
    UserAgentConfig,
)
from ivr.sip.ua_timers import SessionTimers
from ivr.sip.ua_transfer import Transfers
from ivr.sip.uac import PRIVATE, OutboundCalls, next_hop
from ivr.sip.uri import SipUri, parse_name_addr, parse_uri

__all__ = [
    "UserAgent",
    "UserAgentConfig",  # defined in ivr.sip.ua_state (the mixins need it too); the UA's settings belong here
]

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------- the agent


class UserAgent(SessionTimers, Transfers, ClientSide):
    """UAS core over a `TransactionLayer`: dialogs, call state, and the app's commands. Session timers, REFER
    and the client side (outbound calls, orphans, registrations) are the mixins' (ivr/sip/ua_*.py)."""

    def __init__(self, config: UserAgentConfig, local_address: Address) -> None:
        self.config = config
        self.local_address = local_address
        self.stats = UaStats()
        port = config.external_port or local_address[1]
        self._layer = TransactionLayer(config.timers, transports=Transports({"UDP": port}, config.transport_rules))
        self._networks = [ipaddress.ip_network(p, strict=False) for p in config.allowed_peers]
        self._legs: dict[str, Leg] = {}
        self._dialogs: dict[tuple[str, str, str | None], Leg] = {}
        self._tx_leg: dict[str, Leg] = {}
        self._admission = Admission(config, self.stats)
        self._refusals = RefusalLog(config.refused_log_interval, log)
        self._events: deque[UaEvent] = deque()
        self._counter = 0
        self._outbound = OutboundCalls(
            self._layer, self, via=self._via, contact=self._contact, user_agent=config.user_agent,
            allow=", ".join(ALLOWED_METHODS), timers=config.timers, session_timer=config.session_timer,
            log_numbers=config.log_numbers,
        )
        #: The registered accounts (ivr/sip/registrations.py): REGISTERs, failover, keep-alives.
        self._accounts = Accounts(self._layer)
        #: Registrars and outbound proxies we chose to talk to: their requests are served too.
        self._trusted_peers: set[str] = set()
        #: Orphan 2xx already ended, by (Call-ID, From tag, To tag): a retransmission gets the same ACK again
        #: and no second BYE; with the time it may be forgotten.
        self._orphans: dict[tuple[str, str, str], tuple[SipRequest, Address, float]] = {}
        #: Our CANCELs of orphan INVITEs (`cancel_orphan`) awaiting their final response.
        self._orphan_cancels: set[str] = set()

    # -- aioquic-style surface

    @property
    def advertised(self) -> tuple[str, int]:
        """Host and port put in Contact and Via."""
        return (
            self.config.external_address or self.local_address[0],
            self.config.external_port or self.local_address[1],
        )

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self._layer.datagrams_to_send() + self._accounts.take_raw()

    def next_event(self) -> UaEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [leg.answer_deadline for leg in self._legs.values() if leg.answer_deadline is not None]
        deadlines += [leg.refer_deadline for leg in self._legs.values() if leg.refer_deadline is not None]
        deadlines += [t for leg in self._legs.values() if leg.state in (LegState.ANSWERED, LegState.CONFIRMED)
                      and (t := leg.timer.get_timer()) is not None]  # the states handle_timer runs it in
        others = [self._layer.get_timer(), self._outbound.get_timer()]
        others.append(self._accounts.get_timer())
        deadlines += [t for t in others if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self._layer.handle_timer(now)
        self._outbound.handle_timer(now)
        self._accounts.handle_timer(now)
        for leg in list(self._legs.values()):
            if leg.answer_deadline is not None and leg.answer_deadline <= now and leg.state == LegState.INCOMING:
                log.info("sip unanswered call_id=%s leg=%s", leg.dialog.call_id, leg.leg_id)
                self._final_to_invite(leg, 480, now)
                self._finish(leg, "not answered", now)
            if leg.refer_deadline is not None and leg.refer_deadline <= now and leg.refer_active:
                what = "no final NOTIFY" if leg.refer_accepted else "no answer to REFER"
                log.info("sip refer timed out call_id=%s leg=%s (%s)", leg.dialog.call_id, leg.leg_id, what)
                self._refer_done(leg, False, 408, what)
            if leg.state in (LegState.ANSWERED, LegState.CONFIRMED):
                self._session_timer_fired(leg, leg.timer.handle_timer(now), now)
        self._drain(now)

    @property
    def transports(self) -> Transports:
        """Which transport reaches each address; the endpoint adds its TCP/TLS ports and connections."""
        return self._layer.transports

    def transport_error(self, destination: Address, now: float, *, definitive: bool = False) -> None:
        """The socket reported ``destination`` unreachable (ICMP), or its connection failed or broke
        (``definitive``): what waits on it fails over now."""
        if definitive:
            self._layer.transports.forget(destination)
        ended = self._layer.transport_error(destination, now, definitive=definitive)
        if ended:
            log.info("sip peer unreachable %s:%s: %d transaction(s) ended", destination[0], destination[1],
                     len(ended))
        self._drain(now)

    def receive_datagram(self, data: bytes, source: Address, now: float, transport: str = "UDP") -> None:
        """One UDP datagram, or one message framed off a TCP/TLS connection (``transport``), from `source`;
        malformed traffic is counted and logged, never raised."""
        if not data.strip(b"\r\n\t "):
            return  # RFC 5626 section 4.4.1 CRLF keep-alive
        if transport != "UDP":
            self._layer.transports.learn(source, transport)  # even a refusal goes back on the connection
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._refusals.note("parse errors", source[0], now, logging.INFO, "sip parse error source=%s:%s reason=%r",
                                source[0], source[1], exc.reason)
            return
        if isinstance(msg, SipRequest):
            if not self._peer_allowed(source[0]):
                self.stats.forbidden += 1
                self._refusals.note("forbidden (not in allowed_peers)", source[0], now, logging.INFO,
                                    "sip forbidden source=%s:%s method=%s", source[0], source[1], msg.method)
                if msg.method != "ACK":
                    self._reply_stateless(msg, 403, None, source)
                return
            problem = check_message(msg)
            if problem is not None:
                self.stats.bad_requests += 1
                log.info("sip bad request source=%s:%s status=%d reason=%r", source[0], source[1],
                         problem.status, problem.reason)
                if msg.method != "ACK":
                    self._reply_stateless(msg, problem.status, problem.reason, source)
                return
        elif check_message(msg) is not None:
            self.stats.parse_errors += 1
            log.info("sip bad response dropped source=%s:%s", source[0], source[1])
            return
        self._layer.receive(msg, source, now, transport)
        self._drain(now)

    # -- commands

    def ring(self, leg_id: str, now: float) -> None:
        """180 Ringing (RFC 3261 section 13.3.1.1)."""
        leg = self._leg(leg_id, "ring", LegState.INCOMING)
        self._respond(leg.invite_tx, leg.invite, 180, now, leg=leg,
                      headers=[("Contact", self._contact(leg.source[0]))])

    def answer(self, leg_id: str, sdp: bytes, now: float) -> None:
        """200 OK with Contact and `sdp`: our answer, or our offer when the INVITE had none (the
        answer then comes with the ACK, RFC 3261 section 13.3.1.4 and RFC 3264 section 4)."""
        leg = self._leg(leg_id, "answer", LegState.INCOMING)
        self._send_2xx(leg, leg.invite_tx, leg.invite, sdp, now)
        leg.state = LegState.ANSWERED
        leg.answer_deadline = None
        leg.answer_in_ack = leg.late_offer

    def reject(self, leg_id: str, status: int, now: float, *, retry_after: int | None = None) -> None:
        """A final error response to a pending INVITE (488 for no common codec, 486, 603...);
        ``retry_after`` adds Retry-After (a 503 while draining or out of RTP ports, RFC 3261 21.5.4)."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status, not {status}")
        leg = self._leg(leg_id, "reject", LegState.INCOMING)
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        self._respond(leg.invite_tx, leg.invite, status, now, leg=leg, headers=headers)
        self._finish(leg, f"rejected {status}", now)

    def hangup(self, leg_id: str, now: float) -> None:
        """End the call: BYE once confirmed (`CallEnded` when it is answered or times out), 480 while
        pending; before the ACK the BYE waits for it (RFC 3261 section 15). No-op on an ended leg."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.state in (LegState.TERMINATING, LegState.ENDED):
            return
        if leg.state == LegState.INCOMING:
            self._final_to_invite(leg, 480, now)
            self._finish(leg, "hangup", now)
        elif leg.state == LegState.ANSWERED:
            leg.hangup_pending = True
        else:
            self._send_bye(leg, "hangup", now)

    def dialog_record(self, leg_id: str) -> dict[str, Any] | None:
        """What it takes to end a confirmed leg's dialog from another process (``end_dialog``), as plain
        data to commit before the call goes on: a crash then leaves nobody in dead air."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.dialog is None:
            return None
        d = leg.dialog
        hop = next_hop(d, leg.source)
        return {"call_id": d.call_id, "local": d.local_header, "remote": d.remote_header,
                "target": d.remote_target, "route": list(d.route_set), "seq": d.local_seq,
                "hop": [hop[0], hop[1]]}

    def end_dialog(self, record: Mapping[str, Any], now: float) -> None:
        """BYE in a dialog a crashed process left up (``dialog_record``): its CSeq well above any the dead
        process can have used (in-dialog CSeq need only grow, RFC 3261 section 12.2.1.1)."""
        local_header = str(record["local"])
        dialog = Dialog(call_id=str(record["call_id"]), local_tag="", remote_tag=None, local_header=local_header,
                        remote_header=str(record["remote"]), remote_target=str(record["target"]),
                        route_set=[str(r) for r in record.get("route", [])], local_seq=int(record["seq"]) + 1000)
        hop = (str(record["hop"][0]), int(record["hop"][1]))
        self._trusted_peers.add(hop[0])
        bye = dialog.make_request("BYE", self._via())
        bye.headers.add("User-Agent", self.config.user_agent)
        self._layer.send_request(bye, hop, now)
        log.info("sip dialog left by a restart call_id=%s: BYE to %s:%d", dialog.call_id, hop[0], hop[1])

    def answer_reinvite(self, leg_id: str, sdp: bytes, now: float) -> None:
        """200 OK with our answer to the offer of a pending re-INVITE (`MediaChanged`)."""
        leg = self._leg(leg_id, "answer_reinvite", LegState.CONFIRMED)
        if leg.reinvite_tx is None or leg.reinvite is None:
            raise LegStateError(leg_id, "no re-INVITE pending", "answer_reinvite")
        tx, request = leg.reinvite_tx, leg.reinvite
        leg.reinvite_tx = leg.reinvite = None
        self._send_2xx(leg, tx, request, sdp, now)
        leg.answer_in_ack = False

    def reject_reinvite(self, leg_id: str, status: int, now: float) -> None:
        """Refuse a re-INVITE (488...): the session and dialog go on unchanged (RFC 3261 section 14.2)."""
        leg = self._leg(leg_id, "reject_reinvite", LegState.CONFIRMED)
        if leg.reinvite_tx is None or leg.reinvite is None:
            raise LegStateError(leg_id, "no re-INVITE pending", "reject_reinvite")
        tx, request = leg.reinvite_tx, leg.reinvite
        leg.reinvite_tx = leg.reinvite = None
        self._respond(tx, request, status, now, leg=leg)


    def send_dtmf_info(self, leg_id: str, digit: str, now: float, *, duration_ms: int = 160) -> None:
        """A digit as SIP INFO application/dtmf-relay (the Cisco/Asterisk form, RFC 6086 legacy usage);
        the bridge relays keys this way. The response is not awaited."""
        leg = self._leg(leg_id, "send_dtmf_info", LegState.CONFIRMED)
        if len(digit) != 1 or digit.upper() not in EVENT_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        request = leg.dialog.make_request("INFO", self._via())
        request.headers.add("User-Agent", self.config.user_agent)
        request.headers.add("Content-Type", "application/dtmf-relay")
        request.body = f"Signal={digit.upper()}\r\nDuration={duration_ms}\r\n".encode()
        self._layer.send_request(request, self._next_hop(leg), now)
        self._drain(now)

    def shutdown(self, now: float) -> None:
        """Stop every call: 503 to pending INVITEs, BYE to the rest, CANCEL to our unanswered INVITEs;
        withdraw every registration (Expires: 0)."""
        for leg_id in self._outbound.pending():
            self._outbound.cancel(leg_id, now, "shutdown")
        self.unregister_all(now)
        for leg in list(self._legs.values()):
            if leg.state == LegState.INCOMING:
                self._final_to_invite(leg, 503, now)
                self._finish(leg, "shutdown", now)
            elif leg.state in (LegState.ANSWERED, LegState.CONFIRMED):
                self._send_bye(leg, "shutdown", now)
        self._drain(now)


    def leg_state(self, leg_id: str) -> LegState:
        leg = self._legs.get(leg_id)
        return leg.state if leg is not None else LegState.ENDED

    # -- transaction events

    def _drain(self, now: float) -> None:
        while (event := self._layer.next_event()) is not None:
            if isinstance(event, RequestReceived):
                try:
                    self._on_request(event.transaction_id, event.request, event.source, now)
                except SipParseError as exc:
                    # A header check_message does not look at (P-Asserted-Identity...) is broken.
                    self.stats.bad_requests += 1
                    self._respond(event.transaction_id, event.request, 400, now, reason=f"Bad Request ({exc.reason})")
            elif isinstance(event, AckReceived):
                self._on_ack(event.request, now)
            elif isinstance(event, ResponseReceived):
                if self._accounts.on_response(event.transaction_id, event.response, now):  # REGISTER, keep-alive
                    pass
                elif event.transaction_id in self._orphan_cancels:
                    if event.response.status >= 200:
                        self._orphan_cancels.discard(event.transaction_id)
                        self._events.append(OrphanCancelAnswered(event.transaction_id, event.response.status))
                elif self._outbound.owns(event.transaction_id):
                    self._outbound.on_response(event.transaction_id, event.response, now)
                else:
                    self._on_response(event.transaction_id, event.response, now)
            elif isinstance(event, TransactionTimeout):
                why = "unreachable" if event.timer == TRANSPORT_ERROR else "timeout"
                if self._accounts.on_timeout(event.transaction_id, now, why):  # REGISTER, keep-alive
                    pass
                elif event.transaction_id in self._orphan_cancels:
                    self._orphan_cancels.discard(event.transaction_id)
                    self._events.append(OrphanCancelAnswered(event.transaction_id, 408))
                elif self._outbound.owns(event.transaction_id):
                    self._outbound.on_timeout(event.transaction_id, now, why)
                leg = self._tx_leg.get(event.transaction_id)
                if leg is not None and leg.refer_tx == event.transaction_id:
                    self._refer_done(leg, False, 408, "REFER timed out")
                if leg is not None and leg.bye_tx == event.transaction_id:
                    self._finish(leg, leg.bye_reason or "hangup", now)
                if leg is not None and leg.timer.tx == event.transaction_id and not leg.timer.answered:
                    self._on_refresh_result(leg, leg.timer.on_timeout(), now)
            elif isinstance(event, AckTimeout):
                self._on_ack_timeout(event, now)
            elif isinstance(event, TransactionTerminated):
                self._tx_leg.pop(event.transaction_id, None)
                self._accounts.on_terminated(event.transaction_id)
                self._outbound.on_terminated(event.transaction_id)
            elif isinstance(event, StrayResponse) and not self._outbound.on_stray(event.response, now):
                self._on_orphan(event.response, event.source, now)
        for aor, status in self._accounts.flush(now):
            self._events.append(RegistrationChanged(aor, status))


    def _on_request(self, tx: str, request: SipRequest, source: Address, now: float) -> None:
        method = request.method
        if method == "CANCEL":
            self._on_cancel(tx, request, now)
            return
        unsupported = self._unsupported(request)
        if unsupported:
            # RFC 3261 section 8.2.2.3: 420 listing the option tags we do not support.
            self._respond(tx, request, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if request.to_addr.tag is not None:
            self._on_in_dialog(tx, request, now)
        elif method == "INVITE":
            self._on_invite(tx, request, source, now)
        elif method == "OPTIONS":
            self._respond(tx, request, 200, now, headers=self._capabilities())
        elif method in ("BYE", "INFO", "PRACK", "UPDATE"):
            self._respond(tx, request, 481, now)  # these only exist inside a dialog
        else:
            # NOTIFY/SUBSCRIBE/REFER/MESSAGE/unknown out of dialog (REFER arrives with part 2).
            self._respond(tx, request, 501, now, headers=[("Allow", ", ".join(ALLOWED_METHODS))])

    def _on_invite(self, tx: str, invite: SipRequest, source: Address, now: float) -> None:
        live = [leg.source[0] for leg in self._legs.values() if leg.state != LegState.ENDED and not leg.outbound]
        refused = self._admission.refuse(source[0], now, live)
        if refused is not None:
            self._refusals.note(refused, source[0], now, logging.WARNING, "sip %s source=%s:%s: 503", refused,
                                source[0], source[1])
            self._respond(tx, invite, 503, now, headers=[("Retry-After", str(self.config.retry_after))])
            return
        call_id = invite.call_id
        from_tag = invite.from_addr.tag
        for other in self._legs.values():
            if other.dialog.call_id == call_id and other.dialog.remote_tag == from_tag:
                # RFC 3261 section 8.2.2.2: the same request by another path is a merged request (482);
                # a new INVITE without To tag while our leg lives is refused with 491.
                status = 482 if other.invite.cseq.seq == invite.cseq.seq else 491
                self._respond(tx, invite, status, now)
                return
        if self._interval_too_small(tx, invite, now, None):
            return
        offer: SessionDescription | None = None
        if invite.body:
            offer_or_status = self._parse_offer(invite)
            if isinstance(offer_or_status, tuple):
                status, reason, headers = offer_or_status
                self._respond(tx, invite, status, now, reason=reason, headers=headers)
                return
            offer = offer_or_status
        try:
            dialog = Dialog.from_invite(invite, secrets.token_hex(6))
        except SipParseError as exc:
            self._respond(tx, invite, 400, now, reason=f"Bad Request ({exc.reason})")
            return
        self._counter += 1
        leg = Leg(
            leg_id=f"leg{self._counter}",
            source=source,
            invite_tx=tx,
            invite=invite,
            dialog=dialog,
            late_offer=offer is None,
            timer=SessionTimer(self.config.session_timer),
            answer_deadline=now + self.config.answer_timeout,
        )
        self._legs[leg.leg_id] = leg
        self._dialogs[leg.key] = leg
        self._tx_leg[tx] = leg
        caller = asserted_user(invite) or user_of(invite.from_addr.uri) or ""
        dialed = user_of(invite.request_uri) or user_of(invite.to_addr.uri) or ""
        log.info("sip incoming call_id=%s leg=%s caller=%s dialed=%s source=%s:%s late_offer=%s",
                 call_id, leg.leg_id, caller if self.config.log_numbers else PRIVATE, dialed, source[0], source[1],
                 offer is None)
        extra = tuple((name, value) for name, value in invite.headers if name.lower().startswith("x-"))
        server = self._layer.transaction(tx)
        transport = server.transport.lower() if server is not None else "udp"
        self._events.append(IncomingCall(call_id, leg.leg_id, caller, dialed, source, offer, extra, transport))

    def _on_cancel(self, tx: str, cancel: SipRequest, now: float) -> None:
        """RFC 3261 section 9.2: 200 to the CANCEL; 487 to the INVITE if it had no final response yet."""
        invite_tx = self._layer.find_invite_for_cancel(cancel)
        if invite_tx is None:
            self._respond(tx, cancel, 481, now)
            return
        leg = self._tx_leg.get(invite_tx)
        self._respond(tx, cancel, 200, now, leg=leg)
        if leg is None:
            return
        if leg.state == LegState.INCOMING and invite_tx == leg.invite_tx:
            log.info("sip cancelled call_id=%s leg=%s", leg.dialog.call_id, leg.leg_id)
            self._final_to_invite(leg, 487, now)
            self._finish(leg, "cancelled", now)
        elif invite_tx == leg.reinvite_tx and leg.reinvite is not None:
            self._respond(invite_tx, leg.reinvite, 487, now, leg=leg)
            leg.reinvite_tx = leg.reinvite = None

    def _on_in_dialog(self, tx: str, request: SipRequest, now: float) -> None:
        method = request.method
        leg = self._dialogs.get((request.call_id, request.to_addr.tag or "", request.from_addr.tag))
        if leg is None:
            self._respond(tx, request, 481, now)  # RFC 3261 section 12.2.2
            return
        if not leg.dialog.accept_remote_cseq(request):
            self._respond(tx, request, 500, now, leg=leg, reason="Out Of Order CSeq")  # section 12.2.2
            return
        if method == "BYE":
            self._on_bye(tx, leg, request, now)
        elif method == "INVITE":
            self._on_reinvite(tx, leg, request, now)
        elif method == "INFO":
            self._on_info(tx, leg, request, now)
        elif method == "OPTIONS":
            self._respond(tx, request, 200, now, leg=leg, headers=self._capabilities())
        elif method == "NOTIFY":
            self._on_notify(tx, leg, request, now)
        elif method == "UPDATE":
            self._on_update(tx, leg, request, now)
        else:
            # PRACK, REFER (part 2), SUBSCRIBE, MESSAGE and unknown methods.
            self._respond(tx, request, 501, now, leg=leg, headers=[("Allow", ", ".join(ALLOWED_METHODS))])


    def _on_bye(self, tx: str, leg: Leg, bye: SipRequest, now: float) -> None:
        self._respond(tx, bye, 200, now, leg=leg)
        if leg.state == LegState.INCOMING:
            # RFC 3261 section 15.1.2: BYE on an early dialog, then 487 to the INVITE.
            self._final_to_invite(leg, 487, now)
        log.info("sip bye from peer call_id=%s leg=%s", leg.dialog.call_id, leg.leg_id)
        self._finish(leg, leg.bye_reason or ("callee hung up" if leg.outbound else "caller hung up"), now)

    def _on_reinvite(self, tx: str, leg: Leg, invite: SipRequest, now: float) -> None:
        if leg.state == LegState.TERMINATING:
            self._respond(tx, invite, 481, now, leg=leg)
            return
        if leg.state != LegState.CONFIRMED:
            # Offer/answer of the initial INVITE still open (no ACK yet): RFC 3261 section 14.2.
            self._respond(tx, invite, 491, now, leg=leg)
            return
        if leg.reinvite_tx is not None:
            # RFC 3261 section 14.2: a second INVITE before our final to the first gets 500 + Retry-After.
            retry = str(secrets.randbelow(11))
            self._respond(tx, invite, 500, now, leg=leg, headers=[("Retry-After", retry)])
            return
        if self._refresh_pending(leg, invite.method):
            self._respond(tx, invite, 491, now, leg=leg)  # glare with our refresh: section 14.2
            return
        if self._interval_too_small(tx, invite, now, leg):
            return
        offer: SessionDescription | None = None
        if invite.body:
            offer_or_status = self._parse_offer(invite)
            if isinstance(offer_or_status, tuple):
                status, reason, headers = offer_or_status
                self._respond(tx, invite, status, now, leg=leg, reason=reason, headers=headers)
                return
            offer = offer_or_status
        contacts = invite.contacts
        if len(contacts) == 1:
            leg.dialog.remote_target = str(contacts[0].uri)  # target refresh, RFC 3261 section 12.2.2
        self._tx_leg[tx] = leg
        if offer is None:
            # Section 14.2 with RFC 3264 section 5: no offer in the re-INVITE, so our 2xx carries one
            # (our current description, sendrecv so a resume can work) and the answer comes in the ACK.
            self._send_2xx(leg, tx, invite, reoffer(leg.local_sdp or b""), now)
            leg.answer_in_ack = True
            return
        leg.reinvite_tx, leg.reinvite = tx, invite
        self._events.append(MediaChanged(leg.leg_id, offer))


    def _on_info(self, tx: str, leg: Leg, info: SipRequest, now: float) -> None:
        """Legacy INFO DTMF (RFC 6086 section 2): we advertise no Info Packages, so an INFO naming one
        gets 469 (section 4.2.2); an empty body is a keep-alive probe (200); a body type we cannot read
        gets 415 with Accept (RFC 3261 section 8.2.3), which tells the sender what would work instead
        of silently accepting digits we then drop."""
        if info.headers.get("Info-Package") is not None:
            self._respond(tx, info, 469, now, leg=leg, reason="Bad Info Package")
            return
        content_type = info.content_type
        if not info.body.strip():
            self._respond(tx, info, 200, now, leg=leg)
            return
        if content_type not in DTMF_CONTENT_TYPES:
            self._respond(tx, info, 415, now, leg=leg, headers=[("Accept", ", ".join(DTMF_CONTENT_TYPES))])
            return
        digit = dtmf_digit(info.body, content_type)
        self._respond(tx, info, 200, now, leg=leg)
        if digit is None:
            log.info("sip unreadable dtmf INFO call_id=%s body=%r", leg.dialog.call_id, info.body[:40])
            return
        if leg.end_reason is not None:
            return  # CallEnded is out already (no ACK, our BYE pending): nothing may follow it
        self._events.append(DtmfReceived(leg.leg_id, digit, "info"))

    def _on_ack(self, ack: SipRequest, now: float) -> None:
        try:
            leg = self._dialogs.get((ack.call_id, ack.to_addr.tag or "", ack.from_addr.tag))
            seq = ack.cseq.seq
        except SipParseError:
            return
        if leg is None or leg.ack_cseq != seq:
            return  # a retransmitted ACK, or one for a call already gone
        leg.ack_cseq = None
        if leg.answer_in_ack:
            leg.answer_in_ack = False
            answer = sdp_body(ack)
            if answer is None:
                if leg.state == LegState.ANSWERED:
                    # Late offer without an answer: there is no media session, end it (section 13.3.1.4).
                    leg.state = LegState.CONFIRMED
                    self._send_bye(leg, "bad SDP in ACK", now)
                    self._report_end(leg, "bad SDP in ACK")
                    return
                log.info("sip re-INVITE ACK without SDP answer call_id=%s", leg.dialog.call_id)
            else:
                self._events.append(MediaAnswered(leg.leg_id, answer, ack.body))
        if leg.state == LegState.ANSWERED:
            leg.state = LegState.CONFIRMED
            self._events.append(CallConfirmed(leg.leg_id))
            if leg.hangup_pending:
                self._send_bye(leg, "hangup", now)

    def _on_ack_timeout(self, timeout: AckTimeout, now: float) -> None:
        """RFC 3261 section 13.3.1.4: no ACK for our 2xx within 64*T1, end the session with BYE.

        Only the dialog of that 2xx (its tags): another leg with the same Call-ID and CSeq (another
        From tag) has its own 2xx, ACK and timeout."""
        leg = self._dialogs.get((timeout.call_id, timeout.to_tag or "", timeout.from_tag))
        if leg is None or leg.ack_cseq != timeout.cseq or leg.state not in (
            LegState.ANSWERED, LegState.CONFIRMED
        ):
            return
        log.info("sip no ACK call_id=%s leg=%s", timeout.call_id, leg.leg_id)
        leg.ack_cseq = None
        leg.state = LegState.CONFIRMED
        self._send_bye(leg, "no ACK", now)
        self._report_end(leg, "no ACK")

    def _on_response(self, tx: str, response: SipResponse, now: float) -> None:
        leg = self._tx_leg.get(tx)
        if leg is not None and leg.refer_tx == tx:
            self._on_refer_response(leg, response)
            return
        if leg is not None and leg.timer.tx == tx:
            self._on_refresh_result(leg, leg.timer.on_response(response, now), now, response)
            return
        if leg is None or leg.bye_tx != tx or response.status < 200:
            return
        # 200, 481 (the peer forgot the dialog) or any other final: the call is over (section 15.1.1).
        self._finish(leg, leg.bye_reason or "hangup", now)

    # -- helpers

    def _leg(self, leg_id: str, command: str, state: LegState) -> Leg:
        leg = self._legs.get(leg_id)
        if leg is None:
            raise LegStateError(leg_id, LegState.ENDED.value, command)
        if leg.state != state:
            raise LegStateError(leg_id, leg.state.value, command)
        return leg

    def _report_end(self, leg: Leg, reason: str) -> None:
        """Emit `CallEnded` once per leg."""
        if leg.end_reason is None:
            leg.end_reason = reason
            self._events.append(CallEnded(leg.leg_id, reason))

    def _finish(self, leg: Leg, reason: str, now: float) -> None:
        """The leg is over: report it and forget its dialog (later requests get 481)."""
        if leg.reinvite_tx is not None and leg.reinvite is not None:
            self._respond(leg.reinvite_tx, leg.reinvite, 487, now, leg=leg)
            leg.reinvite_tx = leg.reinvite = None
        self._refer_done(leg, False, 0, f"call ended ({reason})")
        self._report_end(leg, reason)
        leg.state = LegState.ENDED
        leg.answer_deadline = None
        leg.timer.stop()
        self._legs.pop(leg.leg_id, None)
        self._dialogs.pop(leg.key, None)

    def _final_to_invite(self, leg: Leg, status: int, now: float) -> None:
        self._respond(leg.invite_tx, leg.invite, status, now, leg=leg)

    def _send_2xx(self, leg: Leg, tx: str, invite: SipRequest, sdp: bytes, now: float) -> None:
        """2xx to an INVITE: Contact (section 13.3.1.4), Record-Route copied by make_response (12.1.1),
        Allow/Supported (13.3.1.4), the SDP; the transaction layer retransmits it until the ACK."""
        headers = [("Contact", self._contact(leg.source[0])), ("Allow", ", ".join(ALLOWED_METHODS))]
        negotiated = negotiate_uas(invite.headers, self.config.session_timer)  # a TooSmall got its 422
        if not isinstance(negotiated, TooSmall):
            headers += negotiated.response_headers()
            leg.timer.start(negotiated, now)  # RFC 4028 section 9: our 2xx (re)starts the session timer
        if sdp:
            headers.append(("Content-Type", "application/sdp"))
        self._respond(tx, invite, 200, now, leg=leg, headers=headers, body=sdp)
        leg.local_sdp = sdp or leg.local_sdp
        if invite.method == "INVITE":
            leg.ack_cseq = invite.cseq.seq  # an UPDATE's 2xx gets no ACK

    def _send_bye(self, leg: Leg, reason: str, now: float) -> None:
        """BYE within the dialog (section 15.1.1): route set as Route, to the first hop."""
        if leg.reinvite_tx is not None and leg.reinvite is not None:
            self._respond(leg.reinvite_tx, leg.reinvite, 487, now, leg=leg)
            leg.reinvite_tx = leg.reinvite = None
        bye = leg.dialog.make_request("BYE", self._via())
        bye.headers.add("User-Agent", self.config.user_agent)
        destination = self._next_hop(leg)
        tx = self._layer.send_request(bye, destination, now)
        self._tx_leg[tx] = leg
        leg.bye_tx = tx
        leg.state = LegState.TERMINATING
        leg.timer.stop()
        leg.hangup_pending = False
        leg.bye_reason = leg.bye_reason or reason
        log.info("sip bye call_id=%s leg=%s reason=%s to=%s:%s", leg.dialog.call_id, leg.leg_id, reason,
                 destination[0], destination[1])

    def _next_hop(self, leg: Leg) -> Address:
        """First Route (loose routing, RFC 3261 section 12.2.1.1) or the remote target; a host name we
        would have to resolve falls back to where the INVITE came from."""
        try:
            if leg.dialog.route_set:
                uri = parse_name_addr(leg.dialog.route_set[0]).uri
            else:
                uri = parse_uri(leg.dialog.remote_target)
        except SipParseError:
            return leg.source
        if isinstance(uri, SipUri):
            host, port = uri.host_port
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return leg.source
            return host, port or 5060
        return leg.source

    def _respond(
        self,
        tx: str,
        request: SipRequest,
        status: int,
        now: float,
        *,
        leg: Leg | None = None,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        """A response through the server transaction; the To tag is the leg's (one tag per dialog,
        section 12.1.1) or a fresh one outside dialogs (section 8.2.6.2)."""
        to_tag = leg.dialog.local_tag if leg is not None else secrets.token_hex(6)
        all_headers = [("Server", self.config.user_agent), *headers]
        if status == 488 and not any(name.lower() == "warning" for name, _ in all_headers):
            # RFC 3261 section 21.4.26: say why the session description was refused (20.43: 305)
            host = self.advertised[0]
            agent = f"[{host}]" if ":" in host else host
            all_headers.append(("Warning", f'305 {agent} "Incompatible media format"'))
        response = make_response(request, status, reason, to_tag=to_tag, headers=all_headers, body=body)
        try:
            self._layer.send_response(tx, response, now)
        except (KeyError, ValueError) as exc:
            log.warning("sip response %d not sent (transaction %s: %s)", status, tx, exc)

    def _reply_stateless(self, request: SipRequest, status: int, reason: str | None, destination: Address) -> None:
        """An answer without a transaction (403, or the 4xx/5xx of check_message) to the sender itself."""
        try:
            response = make_response(
                request, status, reason, to_tag=secrets.token_hex(6),
                headers=[("Server", self.config.user_agent)],
            )
        except SipParseError:
            return
        self._layer.send_stateless(response, destination)

    def _capabilities(self) -> list[tuple[str, str]]:
        """Allow/Accept/Supported for OPTIONS (RFC 3261 section 11.2)."""
        return [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Accept", "application/sdp"),
            ("Accept-Language", "en"),
            ("Supported", ", ".join(sorted(SUPPORTED_OPTIONS))),
        ]

    def _unsupported(self, request: SipRequest) -> list[str]:
        if request.method == "ACK":
            return []
        wanted = [v.strip() for v in request.headers.values("Require") if v.strip()]
        return [tag for tag in wanted if tag.lower() not in SUPPORTED_OPTIONS]

    def _parse_offer(self, request: SipRequest) -> SessionDescription | tuple[int, str | None, list[tuple[str, str]]]:
        """The SDP offer of an INVITE, or the error to answer with (RFC 3261 section 8.2.3)."""
        encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
        if request.content_type != "application/sdp" or encoding != "identity":
            return 415, None, [("Accept", "application/sdp"), ("Accept-Encoding", "identity")]
        try:
            return parse_sdp(request.body)
        except SdpParseError as exc:
            return 400, f"Bad SDP ({exc.reason})", []

    def _contact(self, peer: str | None = None) -> str:
        """Our Contact; towards a registrar that told us our public address (NAT), that address."""
        host, port = self.public_address_for(peer) or self.advertised
        if ":" in host:
            host = f"[{host}]"
        return f"<sip:{self.config.contact_user}@{host}:{port}>"

    def _via(self) -> str:
        host, port = self.advertised
        if ":" in host:
            host = f"[{host}]"
        return f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"

    def _peer_allowed(self, host: str) -> bool:
        if host in self._trusted_peers:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)
