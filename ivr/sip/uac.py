"""Outbound calls, the UAC side of an INVITE (RFC 3261 sections 8.1, 9.1, 12.1.2, 13.2, 22), sans-I/O.

`OutboundCalls` runs every outbound INVITE of a user agent over its `TransactionLayer`: digest on
401/407 (once per challenge, `ivr.sip.digest`), provisional responses tracked, CANCEL on ring timeout
(after a provisional, section 9.1), the ACK for a 2xx built and sent by us (section 13.2.2.4; the
transaction layer ACKs 3xx-6xx itself), 2xx retransmissions re-ACKed, a second 2xx of a forked INVITE
ACKed and ended with BYE. An answered call becomes a dialog (`dialog_from_2xx`) that the user agent
runs like an inbound leg (BYE, INFO, re-INVITE).

Every call ends in one `OutboundResult`, whose `OutboundOutcome` comes from the SIP status and the
Q.850 cause of a `Reason` header (RFC 3326), the cause winning when it is one we know.

Failover (RFC 3263 section 4.3): a spec may name further addresses of the same proxy (`alternates`, in
the order of its SRV/A records). An INVITE that got no response at all (Timer B) or a 503 before any
provisional response is sent again, identical but for a new Via branch (a new transaction, same Call-ID,
From tag and CSeq), to the next address; once any 1xx came the call stays where it is (the callee may
have rung). Only when every address failed does the last failure become the outcome. The result names
the address that answered and those that failed, so the caller can stay with the one that works.

A Call-ID chosen by the caller (`OutboundCallSpec.call_id`, committed before the INVITE goes out) also fixes
the From tag and every Via branch (`derived_tag`, `derived_branch`: functions of the Call-ID, the CSeq and the
address index), so a restarted process can CANCEL an INVITE a crash left ringing from the recorded Call-ID
alone (`orphan_cancel`). A 2xx that matches nothing of ours (`orphan_ack_and_bye`, e.g. the answer to an INVITE
of the process before a restart) is ACKed and ended with BYE, as RFC 3261 section 13.2.2.4 has a UAC do with
a dialog it does not want.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from ivr.sip.dialog import Dialog
from ivr.sip.digest import DigestAuth
from ivr.sip.lexical import SipParseError
from ivr.sip.message import Headers, SipRequest, SipResponse
from ivr.sip.session_timer import Negotiated, SessionTimerConfig, negotiate_uac, request_headers, retry_after_422
from ivr.sip.transaction import Address, TimerConfig, TransactionLayer
from ivr.sip.uri import SipUri, parse_name_addr, parse_uri

__all__ = [
    "OutboundCallSpec",
    "OutboundCalls",
    "OutboundListener",
    "OutboundOutcome",
    "OutboundResult",
    "Q850Reason",
    "TargetFailure",
    "build_ack_for_2xx",
    "build_cancel",
    "classify",
    "derived_branch",
    "derived_tag",
    "dialog_from_2xx",
    "next_hop",
    "orphan_ack_and_bye",
    "orphan_ack_for_error",
    "orphan_cancel",
    "parse_q850",
]

log = logging.getLogger(__name__)
#: What the log says instead of a number when ``log_numbers`` is off (privacy: the log cannot be erased)
PRIVATE = "(private)"


class OutboundOutcome(Enum):
    """How an outbound call ended up, in the callback dialer's words."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    #: The number does not exist or is malformed: do not retry.
    INVALID_NUMBER = "invalid_number"
    #: The trunk or network failed (5xx, no response): retry, it is not the callee's fault.
    TRUNK_FAILURE = "trunk_failure"
    FAILED = "failed"
    #: We gave up ourselves (the app cancelled, shutdown).
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        """Whether another attempt later makes sense (busy, no answer, trunk failure)."""
        return self in (OutboundOutcome.BUSY, OutboundOutcome.NO_ANSWER, OutboundOutcome.TRUNK_FAILURE)


@dataclass(frozen=True)
class Q850Reason:
    """A `Reason: Q.850;cause=17;text="User busy"` value (RFC 3326)."""

    cause: int
    text: str | None = None


_CAUSE_RE = re.compile(r";\s*cause\s*=\s*([0-9]+)", re.IGNORECASE)
_TEXT_RE = re.compile(r';\s*text\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def parse_q850(headers: Headers) -> Q850Reason | None:
    """The first Q.850 Reason value, if any (a SIP-protocol Reason is ignored here)."""
    for value in headers.values("Reason"):
        protocol = value.split(";", 1)[0].strip()
        if protocol.upper() != "Q.850":
            continue
        m = _CAUSE_RE.search(value)
        if m is None:
            continue
        t = _TEXT_RE.search(value)
        return Q850Reason(int(m.group(1)), t.group(1) if t else None)
    return None


#: ITU-T Q.850 cause values that settle the outcome whatever the SIP status (RFC 3398 section 8.2.6.1
#: maps them the other way): unallocated / no route / number changed / invalid format -> invalid number;
#: user busy; no user responding / no answer / subscriber absent; circuit, network and congestion faults.
Q850_OUTCOMES: dict[int, OutboundOutcome] = {
    1: OutboundOutcome.INVALID_NUMBER, 2: OutboundOutcome.INVALID_NUMBER, 3: OutboundOutcome.INVALID_NUMBER,
    22: OutboundOutcome.INVALID_NUMBER, 28: OutboundOutcome.INVALID_NUMBER,
    17: OutboundOutcome.BUSY,
    18: OutboundOutcome.NO_ANSWER, 19: OutboundOutcome.NO_ANSWER, 20: OutboundOutcome.NO_ANSWER,
    27: OutboundOutcome.TRUNK_FAILURE, 34: OutboundOutcome.TRUNK_FAILURE, 38: OutboundOutcome.TRUNK_FAILURE,
    41: OutboundOutcome.TRUNK_FAILURE, 42: OutboundOutcome.TRUNK_FAILURE, 44: OutboundOutcome.TRUNK_FAILURE,
    47: OutboundOutcome.TRUNK_FAILURE,
}


def classify(status: int, q850: Q850Reason | None = None) -> OutboundOutcome:
    """The outcome table: 404/410/484/604 invalid number, 486/600 busy, 408/480 no answer, 5xx trunk
    failure, 2xx answered, the rest (403, 603...) failed; a known Q.850 cause overrides the status."""
    if 200 <= status < 300:
        return OutboundOutcome.ANSWERED
    if q850 is not None and q850.cause in Q850_OUTCOMES:
        return Q850_OUTCOMES[q850.cause]
    if status in (404, 410, 484, 604):
        return OutboundOutcome.INVALID_NUMBER
    if status in (486, 600):
        return OutboundOutcome.BUSY
    if status in (408, 480):
        return OutboundOutcome.NO_ANSWER
    if 500 <= status < 600:
        return OutboundOutcome.TRUNK_FAILURE
    return OutboundOutcome.FAILED


@dataclass(frozen=True)
class TargetFailure:
    """One address of the proxy that did not take the INVITE (RFC 3263 section 4.3)."""

    address: Address
    #: "timeout" (Timer B, nothing came back), "unreachable" (the socket's ICMP error) or "503".
    reason: str
    #: A 503's Retry-After, as a time (the clock `now` is given in): do not use the address before then.
    hold_until: float | None = None


#: A Retry-After longer than this is taken as this (a typo must not park a trunk server for days).
MAX_RETRY_AFTER = 3600.0


def retry_after(response: SipResponse) -> float | None:
    """Retry-After delta-seconds (RFC 3261 section 20.33; a comment or parameters after it ignored)."""
    value = (response.headers.get("Retry-After") or "").split(";", 1)[0].split("(", 1)[0].strip()
    return min(float(value), MAX_RETRY_AFTER) if value.isdigit() else None


@dataclass(frozen=True)
class OutboundResult:
    """The end of an outbound INVITE: answered, or why not."""

    outcome: OutboundOutcome
    #: The final SIP status (None when none came: ring timeout without 487, no response at all).
    status: int | None
    #: Reason phrase, or what happened ("ring timeout", "183 without final response", "no response").
    reason: str
    q850_cause: int | None = None
    q850_text: str | None = None
    #: Provisional statuses seen, in order (100 excluded).
    provisional: tuple[int, ...] = ()
    call_id: str = ""
    #: The SDP answer of the 2xx (ANSWERED only).
    remote_sdp: bytes | None = None
    #: The session timer the 2xx set (RFC 4028 section 7.2); None: the session does not expire.
    session_timer: Negotiated | None = None
    #: The proxy address the final response came from; None when the last one tried answered nothing.
    target: Address | None = None
    #: The addresses that timed out or answered 503 before any 1xx, in the order tried (RFC 3263
    #: failover); the last one tried is among them when it failed too.
    failed_targets: tuple[TargetFailure, ...] = ()

    @property
    def answered(self) -> bool:
        return self.outcome == OutboundOutcome.ANSWERED


@dataclass(frozen=True)
class OutboundCallSpec:
    """What to dial and how."""

    #: Request-URI and To, e.g. "sip:+15555550100@trunk.example.com".
    target_uri: str
    #: Our identity in From (per trunk: a caller ID the callee can call back).
    from_uri: str
    sdp_offer: bytes
    #: Next hop (outbound proxy / trunk) as an IP address and port.
    proxy: Address
    from_display: str | None = None
    #: P-Asserted-Identity URI (RFC 3325), for trunks that take the caller ID from it.
    asserted_identity: str | None = None
    #: Digest user name and password, answered once per 401/407 challenge.
    credentials: tuple[str, str] | None = None
    #: Seconds from the INVITE until we CANCEL an unanswered call.
    ring_timeout: float = 30.0
    #: The Call-ID to use, chosen by the caller so it can be recorded before the INVITE is sent (the
    #: callback dialer commits it first); None: a random one.
    call_id: str | None = None
    #: Extra headers for the INVITE, e.g. ("X-Callback-ID", id).
    extra_headers: tuple[tuple[str, str], ...] = ()
    #: Further addresses of the same proxy, tried in turn when `proxy` times out or answers 503 before
    #: any provisional response (RFC 3263 section 4.3). While the call runs, `proxy` is the one in use.
    alternates: tuple[Address, ...] = ()


class OutboundListener(Protocol):
    """What `OutboundCalls` tells its user agent."""

    def outbound_progress(self, leg_id: str, response: SipResponse) -> None: ...

    def outbound_answered(self, leg_id: str, invite: SipRequest, dialog: Dialog, result: OutboundResult,
                          now: float) -> None: ...

    def outbound_failed(self, leg_id: str, result: OutboundResult) -> None: ...


class _State(Enum):
    CALLING = "calling"
    PROCEEDING = "proceeding"
    CANCELLING = "cancelling"
    ANSWERED = "answered"
    DONE = "done"


@dataclass
class _Call:
    leg_id: str
    spec: OutboundCallSpec
    invite: SipRequest
    tx: str
    ring_deadline: float
    auth: DigestAuth | None
    state: _State = _State.CALLING
    got_provisional: bool = False
    provisional: list[int] = field(default_factory=list)
    cancel_reason: str | None = None
    cancel_sent: bool = False
    cancel_deadline: float | None = None
    answered_tag: str | None = None
    #: The ACK sent for each To tag that answered (re-sent on a 2xx retransmission), with its destination.
    acks: dict[str, tuple[SipRequest, Address]] = field(default_factory=dict)
    forget_at: float | None = None
    #: A 422 was answered once already (RFC 4028 section 7.4: retry with its Min-SE, once).
    retried_422: bool = False
    #: Some 1xx came, from any address: no failover from here on (the callee may have rung).
    any_provisional: bool = False
    #: The address in use (`spec.proxy`) answered something.
    responded: bool = False
    failures: list[TargetFailure] = field(default_factory=list)
    #: The INVITEs sent to addresses given up on, by Via branch: a late 2xx of theirs gets ACK and BYE.
    earlier: dict[str, SipRequest] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ pure builders


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def derived_tag(call_id: str) -> str:
    """The From tag of an INVITE whose Call-ID was chosen (and recorded) by the caller."""
    return _digest(call_id, "tag")[:12]


def derived_branch(call_id: str, cseq: int, index: int = 0) -> str:
    """The Via branch of that INVITE with CSeq ``cseq`` sent to the proxy's ``index``-th address tried (the
    INVITE again after a 401/407 or 422 has CSeq + 1; failover keeps the CSeq, one more address)."""
    return "z9hG4bK" + _digest(call_id, cseq, index)[:16]


def with_branch(via: str, branch: str) -> str:
    """``via`` with its branch parameter replaced."""
    return re.sub(r"branch=[^;,\s]+", f"branch={branch}", via, count=1)


def from_header(spec: OutboundCallSpec, tag: str) -> str:
    display = ""
    if spec.from_display is not None:
        display = '"' + spec.from_display.replace("\\", "\\\\").replace('"', '\\"') + '" '
    return f"{display}<{spec.from_uri}>;tag={tag}"


def build_invite(
    spec: OutboundCallSpec, *, via: str, contact: str, user_agent: str, call_id: str, from_tag: str, cseq: int,
    allow: str,
) -> SipRequest:
    """An initial INVITE (RFC 3261 section 8.1.1) with our offer, P-Asserted-Identity when asked."""
    headers = Headers()
    headers.add("Via", via)
    headers.add("Max-Forwards", "70")
    headers.add("From", from_header(spec, from_tag))
    headers.add("To", f"<{spec.target_uri}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} INVITE")
    headers.add("Contact", contact)
    if spec.asserted_identity is not None:
        headers.add("P-Asserted-Identity", f"<{spec.asserted_identity}>")
    for name, value in spec.extra_headers:
        headers.add(name, value)
    headers.add("Allow", allow)
    headers.add("User-Agent", user_agent)
    if spec.sdp_offer:
        headers.add("Content-Type", "application/sdp")
    return SipRequest("INVITE", spec.target_uri, headers, spec.sdp_offer)


def build_cancel(invite: SipRequest) -> SipRequest:
    """RFC 3261 section 9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via (branch) as
    the INVITE, and its Route headers."""
    headers = Headers()
    headers.add("Via", invite.headers.values("Via")[0])
    headers.add("Max-Forwards", "70")
    for value in invite.headers.get_all("Route"):
        headers.add("Route", value)
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
    return SipRequest("CANCEL", invite.uri, headers)


def orphan_cancel(spec: OutboundCallSpec, call_id: str, via: str, cseq: int, index: int = 0) -> SipRequest:
    """The CANCEL of an INVITE sent by a process that is gone (section 9.1), rebuilt from what it was built
    from: the spec (Request-URI, To, From), the recorded Call-ID, and the derived tag and branch."""
    headers = Headers()
    headers.add("Via", with_branch(via, derived_branch(call_id, cseq, index)))
    headers.add("Max-Forwards", "70")
    headers.add("From", from_header(spec, derived_tag(call_id)))
    headers.add("To", f"<{spec.target_uri}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} CANCEL")
    return SipRequest("CANCEL", spec.target_uri, headers)


def orphan_ack_and_bye(response: SipResponse, via_ack: str, via_bye: str) -> tuple[SipRequest, SipRequest, Dialog]:
    """ACK and BYE for a 2xx to an INVITE we know nothing of (section 13.2.2.4), from the response alone: our
    From (tag), its To tag, its Contact as the remote target, its Record-Route reversed as the route set."""
    contacts = response.contacts
    if not contacts:
        raise SipParseError("2xx without Contact")
    seq = response.cseq.seq
    dialog = Dialog(
        call_id=response.call_id, local_tag=response.from_addr.tag or "", remote_tag=response.to_addr.tag,
        local_header=response.headers.get("From") or "", remote_header=response.headers.get("To") or "",
        remote_target=str(contacts[0].uri), route_set=list(reversed(response.headers.values("Record-Route"))),
        local_seq=seq,
    )
    return dialog.make_request("ACK", via_ack, cseq=seq), dialog.make_request("BYE", via_bye), dialog


def orphan_ack_for_error(response: SipResponse) -> SipRequest:
    """The ACK for a 300-699 to an INVITE whose transaction is gone (the 487 after an orphan CANCEL): the
    response's Via (the INVITE's branch), From, To, Call-ID; the To URI as Request-URI (ours are equal)."""
    headers = Headers()
    headers.add("Via", response.headers.values("Via")[0])
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, response.headers.get(name) or "")
    headers.add("CSeq", f"{response.cseq.seq} ACK")
    return SipRequest("ACK", str(response.to_addr.uri), headers)


def dialog_from_2xx(invite: SipRequest, response: SipResponse) -> Dialog:
    """The UAC's dialog state (RFC 3261 section 12.1.2): route set is the Record-Route reversed, remote
    target the 2xx's Contact, local CSeq the INVITE's."""
    contacts = response.contacts
    if not contacts:
        raise SipParseError("2xx without Contact")
    return Dialog(
        call_id=invite.call_id,
        local_tag=invite.from_addr.tag or "",
        remote_tag=response.to_addr.tag,
        local_header=invite.headers.get("From") or "",
        remote_header=response.headers.get("To") or "",
        remote_target=str(contacts[0].uri),
        route_set=list(reversed(response.headers.values("Record-Route"))),
        local_seq=invite.cseq.seq,
        remote_seq=None,
    )


def build_ack_for_2xx(invite: SipRequest, dialog: Dialog, via: str) -> SipRequest:
    """RFC 3261 section 13.2.2.4: the ACK is built by the UA core like an in-dialog request, but with
    the INVITE's CSeq number, and the INVITE's credentials (section 22.1)."""
    ack = dialog.make_request("ACK", via, cseq=invite.cseq.seq)
    for name in ("Authorization", "Proxy-Authorization"):
        for value in invite.headers.get_all(name):
            ack.headers.add(name, value)
    return ack


def next_hop(dialog: Dialog, fallback: Address) -> Address:
    """Where an in-dialog request goes: the first Route (loose routing) or the remote target, when it
    names an IP address; otherwise `fallback` (the proxy we sent the INVITE to: we do not resolve names)."""
    try:
        uri = parse_name_addr(dialog.route_set[0]).uri if dialog.route_set else parse_uri(dialog.remote_target)
    except SipParseError:
        return fallback
    if not isinstance(uri, SipUri):
        return fallback
    host, port = uri.host_port
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return fallback
    return host, port or 5060


# -------------------------------------------------------------------------------------- the engine


class OutboundCalls:
    """Every outbound INVITE of one user agent; see the module docstring."""

    def __init__(
        self,
        layer: TransactionLayer,
        listener: OutboundListener,
        *,
        via: Callable[[], str],
        contact: Callable[[str | None], str],
        user_agent: str,
        allow: str,
        timers: TimerConfig,
        session_timer: SessionTimerConfig | None = None,
        log_numbers: bool = True,
    ) -> None:
        self._log_numbers = log_numbers  # UserAgentConfig.log_numbers: the callee's URI in the log or not
        self._layer = layer
        self._listener = listener
        self._via = via
        self._contact = contact
        self._user_agent = user_agent
        self._allow = allow
        self._timers = timers
        self._session_timer = session_timer or SessionTimerConfig()
        self._calls: dict[str, _Call] = {}
        self._by_tx: dict[str, _Call] = {}

    # -- commands

    def invite(self, spec: OutboundCallSpec, leg_id: str, now: float) -> str:
        """Send the INVITE; returns its Call-ID. The result arrives through the listener."""
        self._purge(now)
        contact = self._contact(spec.proxy[0])  # the public address when we registered there behind NAT
        host = contact.rsplit("@", 1)[-1].split(":", 1)[0].strip("[]<>")
        call_id = spec.call_id or f"{secrets.token_hex(10)}@{host}"
        via = self._via()
        from_tag = secrets.token_hex(6)
        if spec.call_id is not None:  # recorded before sending: tag and branch follow from it (orphan_cancel)
            via, from_tag = with_branch(via, derived_branch(call_id, 1)), derived_tag(call_id)
        invite = build_invite(spec, via=via, contact=contact, user_agent=self._user_agent,
                              call_id=call_id, from_tag=from_tag, cseq=1, allow=self._allow)
        for name, value in request_headers(self._session_timer.session_expires, self._session_timer.min_se):
            invite.headers.add(name, value)  # RFC 4028 section 7.1: the UAS picks the refresher
        auth = DigestAuth(*spec.credentials) if spec.credentials is not None else None
        if auth is not None:
            auth.begin()
        tx = self._layer.send_request(invite, spec.proxy, now)
        call = _Call(leg_id, spec, invite, tx, now + spec.ring_timeout, auth)
        self._calls[leg_id] = call
        self._by_tx[tx] = call
        log.info("sip outbound invite call_id=%s leg=%s to=%s via=%s:%d", call_id, leg_id,
                 spec.target_uri if self._log_numbers else PRIVATE, spec.proxy[0], spec.proxy[1])
        return call_id

    def cancel(self, leg_id: str, now: float, reason: str = "cancelled") -> None:
        """Give up on a call not answered yet (CANCEL once a provisional came, section 9.1)."""
        call = self._calls.get(leg_id)
        if call is not None and call.state in (_State.CALLING, _State.PROCEEDING):
            self._start_cancel(call, reason, now)

    def spec(self, leg_id: str) -> OutboundCallSpec | None:
        call = self._calls.get(leg_id)
        return call.spec if call is not None else None

    def pending(self) -> list[str]:
        """Legs still waiting for their outcome."""
        return [c.leg_id for c in self._calls.values() if c.state not in (_State.ANSWERED, _State.DONE)]

    # -- aioquic-style timers

    def get_timer(self) -> float | None:
        deadlines: list[float] = []
        for call in self._calls.values():
            if call.state == _State.PROCEEDING:
                deadlines.append(call.ring_deadline)
            elif call.state == _State.CANCELLING and call.cancel_deadline is not None:
                deadlines.append(call.cancel_deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for call in list(self._calls.values()):
            # Before any 1xx the ring timeout waits: Timer B (64*T1) bounds a silent proxy, and its expiry
            # is the proxy's failure (failover), not the callee's no-answer.
            if call.state == _State.PROCEEDING and call.ring_deadline <= now:
                log.info("sip outbound ring timeout call_id=%s leg=%s", call.invite.call_id, call.leg_id)
                self._start_cancel(call, "ring timeout", now)
            elif (call.state == _State.CANCELLING and call.cancel_deadline is not None
                  and call.cancel_deadline <= now):
                # Section 9.1: no final response 64*T1 after the CANCEL, the transaction is as good as gone.
                self._layer.abandon(call.tx)  # a late 2xx still gets ACK and BYE (as a stray, on_stray)
                self._finish(call, self._cancel_result(call, None), now)
        self._purge(now)

    # -- from the transaction layer

    def owns(self, tx: str) -> bool:
        return tx in self._by_tx

    def on_response(self, tx: str, response: SipResponse, now: float) -> None:
        call = self._by_tx.get(tx)
        if call is None:
            return
        try:
            if response.cseq.method == "CANCEL":
                return  # 200 (or 481) to our CANCEL: the INVITE's own final response settles the call
            status = response.status
            if status < 200:
                self._provisional(call, response, now)
            elif status < 300:
                self._success(call, response, now)
            elif call.state not in (_State.ANSWERED, _State.DONE):
                self._failure(call, response, now)
        except SipParseError as exc:
            log.info("sip outbound bad response call_id=%s reason=%s", call.invite.call_id, exc.reason)

    def on_timeout(self, tx: str, now: float, why: str = "timeout") -> None:
        call = self._by_tx.get(tx)
        if call is None or call.state in (_State.ANSWERED, _State.DONE) or tx != call.tx:
            return
        if call.state == _State.CANCELLING:
            self._finish(call, self._cancel_result(call, None), now)
            return
        # Timer B, or the proxy unreachable: not even a 100 Trying; the trunk is down, not the callee.
        if self._failover(call, TargetFailure(call.spec.proxy, why), now):
            return
        self._finish(call, self._result(call, OutboundOutcome.TRUNK_FAILURE, 408,
                                        "no response" if why == "timeout" else why), now)

    def on_stray(self, response: SipResponse, now: float) -> bool:
        """A 2xx to INVITE after its transaction ended (Timer M): re-send our ACK (section 13.2.2.4)."""
        if not 200 <= response.status < 300:
            return False
        try:
            if response.cseq.method != "INVITE":
                return False
            call_id, seq = response.call_id, response.cseq.seq
        except SipParseError:
            return False
        for call in self._calls.values():
            if call.invite.call_id == call_id and call.invite.cseq.seq == seq:
                self._success(call, response, now)
                return True
        return False

    def on_terminated(self, tx: str) -> None:
        """The call itself stays until `forget_at`: a stray 2xx retransmission may still need our ACK."""
        self._by_tx.pop(tx, None)

    # -- internals

    def _provisional(self, call: _Call, response: SipResponse, now: float) -> None:
        if call.state in (_State.ANSWERED, _State.DONE):
            return
        call.got_provisional = call.any_provisional = call.responded = True
        if response.status > 100:
            call.provisional.append(response.status)
            self._listener.outbound_progress(call.leg_id, response)
        if call.state == _State.CALLING:
            call.state = _State.PROCEEDING
            if call.ring_deadline <= now:  # the ring timeout passed while the proxy was silent
                self._start_cancel(call, "ring timeout", now)
        if call.state == _State.CANCELLING and not call.cancel_sent:
            self._send_cancel(call, now)

    def _success(self, call: _Call, response: SipResponse, now: float) -> None:
        tag = response.to_addr.tag or ""
        known = call.acks.get(tag)
        if known is not None:
            ack, destination = known
            self._layer.send_stateless(ack, destination)  # a 2xx retransmission: our ACK was lost
            return
        # A 2xx from an address we failed over from (it was slow, not dead): ACKed and ended with BYE.
        earlier = call.earlier.get(response.via.branch or "")
        invite = earlier or (call.invite if response.cseq.seq == call.invite.cseq.seq else None)
        if invite is None:
            return
        dialog = dialog_from_2xx(invite, response)
        destination = next_hop(dialog, call.spec.proxy)
        ack = build_ack_for_2xx(invite, dialog, self._via())
        call.acks[tag] = (ack, destination)
        self._layer.send_stateless(ack, destination)
        # Keep the ACK while the callee may still retransmit its 2xx (64*T1 from its first send, section
        # 13.3.1.4), with a margin: its retransmissions outlive our Timer M when they arrive late.
        call.forget_at = now + 128 * self._timers.t1
        if call.state in (_State.CALLING, _State.PROCEEDING) and earlier is None:
            call.responded = True
            call.state = _State.ANSWERED
            call.answered_tag = tag
            try:
                timer = negotiate_uac(response.headers)
            except SipParseError:
                timer = None  # an unreadable Session-Expires: no timer rather than no call
            result = self._result(call, OutboundOutcome.ANSWERED, response.status, response.reason,
                                  response=response, remote_sdp=response.body or None, session_timer=timer)
            log.info("sip outbound answered call_id=%s leg=%s", invite.call_id, call.leg_id)
            self._listener.outbound_answered(call.leg_id, invite, dialog, result, now)
            return
        # Answered after our CANCEL, or a second 2xx of a forked INVITE: ACK it, then end it with BYE.
        log.info("sip outbound extra 2xx call_id=%s tag=%s: BYE", invite.call_id, tag)
        bye = dialog.make_request("BYE", self._via())
        bye.headers.add("User-Agent", self._user_agent)
        self._layer.send_request(bye, destination, now)
        if call.state == _State.CANCELLING:
            self._finish(call, self._cancel_result(call, None), now)

    def _failure(self, call: _Call, response: SipResponse, now: float) -> None:
        status = response.status
        if status == 503 and call.state != _State.CANCELLING:
            delay = retry_after(response)
            busy = TargetFailure(call.spec.proxy, "503", now + delay if delay is not None else None)
            if self._failover(call, busy, now):
                return
        call.responded = True
        if status in (401, 407) and call.auth is not None and call.state != _State.CANCELLING:
            failure = call.auth.on_challenge(response)
            if failure is None:
                self._send_again(call, now)
                return
            result = self._result(call, OutboundOutcome.FAILED, status, f"{response.reason} ({failure.reason})",
                                  response=response)
            self._finish(call, result, now)
            return
        if status == 422 and not call.retried_422 and call.state != _State.CANCELLING:
            cfg = self._session_timer  # one retry only, so the INVITE asked for the configured values
            asking = retry_after_422(response.headers, cfg.session_expires, cfg.min_se)
            if asking is not None:
                call.retried_422 = True
                self._send_again(call, now, request_headers(*asking))
                return
        if call.state == _State.CANCELLING and (status == 487 or call.cancel_reason == "cancelled"):
            self._finish(call, self._cancel_result(call, response), now)
            return
        q850 = parse_q850(response.headers)
        result = self._result(call, classify(status, q850), status, response.reason, response=response)
        self._finish(call, result, now)

    def _send_again(self, call: _Call, now: float, changes: list[tuple[str, str]] | None = None) -> None:
        """The INVITE again, with credentials (after 401/407, section 22.2) or `changes` (the session
        timer headers after a 422): same Call-ID and From tag, CSeq + 1, new branch."""
        invite = call.invite
        headers = invite.headers.copy()
        headers.set("Via", self._branch_via(call, invite.cseq.seq + 1, len(call.failures)))
        headers.set("CSeq", f"{invite.cseq.seq + 1} INVITE")
        for name, value in changes or ():
            headers.set(name, value)
        request = SipRequest("INVITE", invite.uri, headers, invite.body)
        if call.auth is not None and call.auth.has_challenge:
            call.auth.authorize(request)
        call.invite = request
        call.tx = self._layer.send_request(request, call.spec.proxy, now)
        self._by_tx[call.tx] = call
        call.state = _State.CALLING
        call.got_provisional = False

    def _failover(self, call: _Call, failure: TargetFailure, now: float) -> bool:
        """RFC 3263 section 4.3: the same INVITE, new branch, to the next address; False (the failure
        noted all the same) when no address is left; False and not noted once a 1xx came (a 503 from
        further on is not this server's failure)."""
        if call.any_provisional:
            return False
        call.failures.append(failure)
        if not call.spec.alternates:
            return False
        following, *rest = call.spec.alternates
        log.warning("sip outbound %s:%d failed (%s) call_id=%s leg=%s: trying %s:%d", failure.address[0],
                    failure.address[1], failure.reason, call.invite.call_id, call.leg_id, following[0], following[1])
        call.earlier[call.invite.via.branch or ""] = call.invite
        headers = call.invite.headers.copy()
        headers.set("Via", self._branch_via(call, call.invite.cseq.seq, len(call.failures)))
        request = SipRequest("INVITE", call.invite.uri, headers, call.invite.body)
        if call.auth is not None:
            call.auth.begin()  # the next server's challenge is a new one, not a second to the same request
            if call.auth.has_challenge:
                call.auth.authorize(request)
        call.spec = replace(call.spec, proxy=following, alternates=tuple(rest))
        call.invite = request
        call.tx = self._layer.send_request(request, following, now)
        self._by_tx[call.tx] = call
        call.state = _State.CALLING
        call.got_provisional = call.responded = False
        call.ring_deadline = now + call.spec.ring_timeout
        return True

    def _branch_via(self, call: _Call, cseq: int, index: int) -> str:
        """A Via for the INVITE again: a fresh branch, derived from the Call-ID when the caller chose it."""
        via = self._via()
        return with_branch(via, derived_branch(call.invite.call_id, cseq, index)) if call.spec.call_id else via

    def _start_cancel(self, call: _Call, reason: str, now: float) -> None:
        call.cancel_reason = reason
        call.state = _State.CANCELLING
        call.cancel_deadline = now + 64 * self._timers.t1
        if call.got_provisional:
            self._send_cancel(call, now)
        # else section 9.1: the CANCEL waits for a provisional response (or Timer B ends the INVITE).

    def _send_cancel(self, call: _Call, now: float) -> None:
        cancel = build_cancel(call.invite)
        cancel.headers.add("User-Agent", self._user_agent)
        tx = self._layer.send_request(cancel, call.spec.proxy, now)
        self._by_tx[tx] = call
        call.cancel_sent = True
        call.cancel_deadline = now + 64 * self._timers.t1

    def _cancel_result(self, call: _Call, response: SipResponse | None) -> OutboundResult:
        status = response.status if response is not None else None
        reason_phrase = response.reason if response is not None else ""
        if call.cancel_reason != "ring timeout":
            return self._result(call, OutboundOutcome.CANCELLED, status, call.cancel_reason or "cancelled",
                                response=response)
        ringing = any(s in (180, 181, 182) for s in call.provisional)
        if not ringing and 183 in call.provisional:
            return self._result(call, OutboundOutcome.FAILED, status, "183 without final response",
                                response=response)
        return self._result(call, OutboundOutcome.NO_ANSWER, status, f"ring timeout {reason_phrase}".strip(),
                            response=response)

    def _result(
        self, call: _Call, outcome: OutboundOutcome, status: int | None, reason: str, *,
        response: SipResponse | None = None, remote_sdp: bytes | None = None, session_timer: Negotiated | None = None,
    ) -> OutboundResult:
        q850 = parse_q850(response.headers) if response is not None else None
        return OutboundResult(
            outcome=outcome, status=status, reason=reason, q850_cause=q850.cause if q850 else None,
            q850_text=q850.text if q850 else None, provisional=tuple(call.provisional),
            call_id=call.invite.call_id, remote_sdp=remote_sdp, session_timer=session_timer,
            target=call.spec.proxy if call.responded else None, failed_targets=tuple(call.failures),
        )

    def _finish(self, call: _Call, result: OutboundResult, now: float) -> None:
        if call.state in (_State.ANSWERED, _State.DONE):
            return
        call.state = _State.DONE
        log.info("sip outbound done call_id=%s leg=%s outcome=%s status=%s reason=%r q850=%s",
                 call.invite.call_id, call.leg_id, result.outcome.value, result.status, result.reason,
                 result.q850_cause)
        if call.forget_at is None:
            call.forget_at = now + 64 * self._timers.t1
        self._listener.outbound_failed(call.leg_id, result)

    def _purge(self, now: float) -> None:
        for leg_id, call in list(self._calls.items()):
            if call.state in (_State.ANSWERED, _State.DONE) and call.forget_at is not None and call.forget_at <= now:
                del self._calls[leg_id]
                for tx in [t for t, c in self._by_tx.items() if c is call]:
                    del self._by_tx[tx]

