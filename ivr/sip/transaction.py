"""SIP transactions (RFC 3261 section 17) and UAS 2xx retransmission (section 13.3.1.4), sans-I/O.

Shaped like aioquic: the caller feeds messages with `receive(msg, source, now)`, passes the clock in,
arms one timer from `get_timer()` and calls `handle_timer(now)` when it fires, sends whatever
`datagrams_to_send()` returns, and reads `next_event()` until it is None.

INVITE transactions follow RFC 6026 (the Accepted state, timers L and M) so that INVITE and 2xx
retransmissions are absorbed instead of reaching the TU as new requests.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from ivr.sip.lexical import SipParseError
from ivr.sip.message import (
    BRANCH_MAGIC_COOKIE,
    Headers,
    SipRequest,
    SipResponse,
    Via,
    make_response,
    parse_message,
)
from ivr.sip.transport import STREAMS, Transports, fit

__all__ = [
    "TRANSPORT_ERROR",
    "AckReceived",
    "AckTimeout",
    "Address",
    "RequestReceived",
    "ResponseReceived",
    "StrayResponse",
    "TimerConfig",
    "TransactionEvent",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimeout",
    "make_ack_for_error",
    "new_branch",
    "response_destination",
]

Address = tuple[str, int]


@dataclass(frozen=True)
class TimerConfig:
    """RFC 3261 section 17.1.1.1 / table 4 timer values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: Timer D: "at least 32 seconds" for unreliable transports (section 17.1.1.2).
    timer_d: float = 32.0


class TransactionState(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# ------------------------------------------------------------------------------------------ events


class TransactionEvent:
    """Base class of what the transaction layer reports to the TU."""


@dataclass
class RequestReceived(TransactionEvent):
    """A new request (not ACK) with its new server transaction; answer with `send_response`."""

    transaction_id: str
    request: SipRequest
    source: Address


@dataclass
class AckReceived(TransactionEvent):
    """An ACK outside any transaction: the ACK for a 2xx (section 17.2.3 leaves it to the TU).

    `stopped_retransmission` is True when it ended the retransmission of our 2xx.
    """

    request: SipRequest
    source: Address
    stopped_retransmission: bool


@dataclass
class ResponseReceived(TransactionEvent):
    transaction_id: str
    response: SipResponse


#: ``TransactionTimeout.timer`` of a client transaction the transport gave up on (``transport_error``)
TRANSPORT_ERROR = "transport"
#: ICMP errors for one client transaction before it ends: its request and a retransmission (a peer restarting
#: answers the second), not every datagram of a flaky path
UNREACHABLE_AFTER = 2


@dataclass
class TransactionTimeout(TransactionEvent):
    """Timer B or F (client: treat as 408, section 8.1.3.1), ``TRANSPORT_ERROR`` (the peer is unreachable:
    section 17.1.4, told at once) or H (server: no ACK for our final)."""

    transaction_id: str
    timer: str


@dataclass
class AckTimeout(TransactionEvent):
    """No ACK for our 2xx to INVITE within 64*T1: the TU should send BYE (section 13.3.1.4).

    `from_tag` and `to_tag` are those of the 2xx: they name the dialog, since two dialogs may share a
    Call-ID and CSeq (different From tags) and only the one whose 2xx went unacknowledged must end.
    """

    call_id: str
    cseq: int
    from_tag: str | None = field(default=None, compare=False)
    to_tag: str | None = field(default=None, compare=False)


@dataclass
class TransactionTerminated(TransactionEvent):
    transaction_id: str


@dataclass
class StrayResponse(TransactionEvent):
    """A response that matched no client transaction (section 18.1.2: discard, or a 2xx the UAC core
    must re-ACK)."""

    response: SipResponse
    source: Address


# ----------------------------------------------------------------------------------------- helpers


def new_branch() -> str:
    """A fresh Via branch with the RFC 3261 magic cookie (section 8.1.1.7)."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(8)


def response_destination(via: Via, default_port: int = 5060) -> Address:
    """Where a response goes (RFC 3261 section 18.2.2, RFC 3581 section 4): received and rport win."""
    host = via.received or via.host.strip("[]")
    if via.received is not None and via.rport is not None:
        return host, via.rport
    if via.rport is not None:
        return host, via.rport
    return host, via.port or default_port


def stamp_via(request: SipRequest, source: Address) -> None:
    """Add received (section 18.2.1) and fill rport (RFC 3581 section 4) on the top Via of a request."""
    via = request.via
    changed = False
    if via.host.strip("[]").lower() != source[0].lower():
        via.params["received"] = source[0]
        changed = True
    if via.has_rport and via.params.get("rport") is None:
        via.params["received"] = source[0]
        via.params["rport"] = str(source[1])
        changed = True
    if changed:
        request.set_top_via(via)


def make_ack_for_error(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK an INVITE client transaction sends for a 300-699 response (section 17.1.1.3)."""
    headers = Headers()
    headers.add("Via", request.headers.values("Via")[0])
    for value in request.headers.get_all("Route"):
        headers.add("Route", value)
    for name in ("From", "Call-ID"):
        for value in request.headers.get_all(name):
            headers.add(name, value)
    to_value = response.headers.get("To") or request.headers.get("To") or ""
    headers.add("To", to_value)  # the To of the response, with its tag
    headers.add("CSeq", f"{request.cseq.seq} ACK")
    headers.add("Max-Forwards", "70")
    return SipRequest(method="ACK", uri=request.uri, headers=headers)


def _server_key(request: SipRequest) -> tuple[str, ...]:
    """Section 17.2.3: branch + sent-by + method, ACK matching INVITE; RFC 2543 fallback otherwise."""
    via = request.via
    method = "INVITE" if request.method == "ACK" else request.method
    host, port = via.sent_by
    if via.has_magic_cookie:
        return ("3261", via.branch or "", host, str(port or ""), method)
    # RFC 2543 matching (section 17.2.3): Request-URI, To tag, From tag, Call-ID, CSeq, top Via.
    # The To tag is left out: the ACK carries the tag of our response, the INVITE does not.
    return (
        "2543", request.uri, request.from_addr.tag or "", request.call_id, str(request.cseq.seq),
        method, str(via),
    )


def _client_key(branch: str, method: str) -> tuple[str, str]:
    """Section 17.1.3: the branch of the top Via and the CSeq method (CANCEL has its own)."""
    return branch, "INVITE" if method == "ACK" else method


# ------------------------------------------------------------------------------------ transactions


class _Transaction:
    def __init__(self, layer: TransactionLayer, tid: str, request: SipRequest, peer: Address, transport: str):
        self.layer = layer
        self.id = tid
        self.request = request
        self.peer = peer
        #: UDP, TCP or TLS: over a stream nothing is retransmitted and timers D, I, J, K are zero (section 17).
        self.transport = transport
        self.state = TransactionState.TRYING
        self.timers: dict[str, float] = {}

    @property
    def reliable(self) -> bool:
        return self.transport in STREAMS

    @property
    def config(self) -> TimerConfig:
        return self.layer.config

    def _send(self, data: bytes) -> None:
        self.layer._datagrams.append((data, self.peer))

    def _terminate(self) -> None:
        self.state = TransactionState.TERMINATED
        self.timers.clear()
        self.layer._terminated(self)

    def fire(self, name: str, now: float) -> None:
        raise NotImplementedError


class ClientTransaction(_Transaction):
    """Sections 17.1.1 (INVITE) and 17.1.2 (non-INVITE) client transactions."""

    def __init__(self, layer: TransactionLayer, tid: str, request: SipRequest, peer: Address, transport: str):
        super().__init__(layer, tid, request, peer, transport)
        self.is_invite = request.method == "INVITE"
        #: Sent over TCP only because it is too big for a datagram (section 18.1.1): the request as it was
        #: for UDP, sent after all if the connection is refused.
        self.as_datagram: bytes | None = None
        self.bounced = 0
        """ICMP errors from its destination so far (``TransactionLayer.transport_error``)."""
        self._data = request.to_bytes()
        self._ack: bytes | None = None
        self._interval = self.config.t1

    def start(self, now: float) -> None:
        t1 = self.config.t1
        self._send(self._data)
        if self.is_invite:
            self.state = TransactionState.CALLING
            if not self.reliable:
                self.timers["A"] = now + t1  # section 17.1.1.2
            self.timers["B"] = now + 64 * t1
        else:
            self.state = TransactionState.TRYING
            if not self.reliable:
                self.timers["E"] = now + t1  # section 17.1.2.2
            self.timers["F"] = now + 64 * t1

    def over_udp(self, now: float) -> None:
        """The peer refused the TCP connection this request took for its size: over UDP after all, timers
        from now on (section 18.1.1)."""
        if self.as_datagram is None:
            return
        self.request = parse_message(self.as_datagram)  # type: ignore[assignment]  # our own request
        self._data, self.as_datagram = self.as_datagram, None
        self.transport = "UDP"
        self._interval = self.config.t1
        self._send(self._data)
        self.timers["A" if self.is_invite else "E"] = now + self._interval

    def receive_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        state = self.state
        if self.is_invite:
            if state in (TransactionState.CALLING, TransactionState.PROCEEDING):
                if status < 200:
                    self.state = TransactionState.PROCEEDING
                    self.timers.pop("A", None)
                    self.timers.pop("B", None)
                elif status < 300:
                    # RFC 6026 section 7.2: Accepted, Timer M; the TU sends the ACK for a 2xx.
                    self.state = TransactionState.ACCEPTED
                    self.timers = {"M": now + 64 * self.config.t1}
                else:
                    ack = make_ack_for_error(self.request, response)
                    self._ack = ack.to_bytes()
                    self._send(self._ack)
                    self.state = TransactionState.COMPLETED
                    self.timers = {"D": now + (0.0 if self.reliable else self.config.timer_d)}
                self.layer._events.append(ResponseReceived(self.id, response))
            elif state == TransactionState.ACCEPTED and 200 <= status < 300:
                self.layer._events.append(ResponseReceived(self.id, response))  # TU re-sends its ACK
            elif state == TransactionState.COMPLETED and status >= 300 and self._ack is not None:
                self._send(self._ack)  # section 17.1.1.2: retransmitted final, ACK again, not to the TU
            return
        if state in (TransactionState.TRYING, TransactionState.PROCEEDING):
            if status < 200:
                self.state = TransactionState.PROCEEDING
            else:
                self.state = TransactionState.COMPLETED
                self.timers = {"K": now + (0.0 if self.reliable else self.config.t4)}
            self.layer._events.append(ResponseReceived(self.id, response))
        # Completed: retransmitted finals are absorbed (section 17.1.2.2).

    def fire(self, name: str, now: float) -> None:
        cfg = self.config
        if name == "A":
            self._send(self._data)
            self._interval *= 2  # section 17.1.1.2: doubles, no cap
            self.timers["A"] = now + self._interval
        elif name == "E":
            self._send(self._data)
            if self.state == TransactionState.PROCEEDING:
                self._interval = cfg.t2
            else:
                self._interval = min(2 * self._interval, cfg.t2)  # section 17.1.2.2
            self.timers["E"] = now + self._interval
        elif name in ("B", "F"):
            self.layer._events.append(TransactionTimeout(self.id, name))
            self._terminate()
        elif name in ("D", "K", "M"):
            self._terminate()


class ServerTransaction(_Transaction):
    """Sections 17.2.1 (INVITE) and 17.2.2 (non-INVITE) server transactions."""

    def __init__(self, layer: TransactionLayer, tid: str, request: SipRequest, peer: Address, transport: str):
        super().__init__(layer, tid, request, peer, transport)
        self.is_invite = request.method == "INVITE"
        self.state = TransactionState.PROCEEDING if self.is_invite else TransactionState.TRYING
        self.last_response: SipResponse | None = None
        self._last_data: bytes | None = None
        self._interval = self.config.t1

    def receive_request(self, request: SipRequest, now: float) -> None:
        if request.method == "ACK":
            if self.is_invite and self.state == TransactionState.COMPLETED:
                # Section 17.2.1: ACK for our 3xx-6xx, Confirmed, Timer I.
                self.state = TransactionState.CONFIRMED
                self.timers = {"I": now + (0.0 if self.reliable else self.config.t4)}
            return  # ACKs in other states are absorbed
        # A retransmission of the request: re-send the last response, if any (17.2.1, 17.2.2).
        if self.state == TransactionState.ACCEPTED:
            return  # RFC 6026 section 7.1: the TU core retransmits the 2xx
        if self._last_data is not None and self.state in (
            TransactionState.PROCEEDING,
            TransactionState.COMPLETED,
        ):
            self._send(self._last_data)

    def send_response(self, response: SipResponse, now: float) -> None:
        if self.state in (TransactionState.TERMINATED, TransactionState.CONFIRMED, TransactionState.ACCEPTED):
            raise ValueError(f"transaction {self.id} is {self.state.value}")
        if self.state == TransactionState.COMPLETED:
            raise ValueError(f"transaction {self.id} already sent a final response")
        if self.reliable:
            fit(response, self.transport, self.layer.transports.ports)
        self.last_response = response
        self._last_data = response.to_bytes()
        self._send(self._last_data)
        status = response.status
        cfg = self.config
        if status < 200:
            self.state = TransactionState.PROCEEDING
        elif self.is_invite and status < 300:
            # RFC 6026 section 7.1: Accepted absorbs INVITE retransmissions until Timer L.
            self.state = TransactionState.ACCEPTED
            self.timers = {"L": now + 64 * cfg.t1}
            self.layer._start_2xx_retransmission(self, response, now)
        elif self.is_invite:
            self.state = TransactionState.COMPLETED
            if not self.reliable:
                self.timers["G"] = now + cfg.t1
            self.timers["H"] = now + 64 * cfg.t1
        else:
            self.state = TransactionState.COMPLETED
            self.timers = {"J": now + (0.0 if self.reliable else 64 * cfg.t1)}

    def fire(self, name: str, now: float) -> None:
        if name == "G" and self._last_data is not None:
            self._send(self._last_data)
            self._interval = min(2 * self._interval, self.config.t2)  # section 17.2.1
            self.timers["G"] = now + self._interval
        elif name == "H":
            self.layer._events.append(TransactionTimeout(self.id, "H"))
            self._terminate()
        elif name in ("I", "J", "L"):
            self._terminate()


class _Retransmit2xx:
    """UAS core retransmission of a 2xx to INVITE until the ACK arrives (section 13.3.1.4)."""

    def __init__(
        self, data: bytes, peer: Address, call_id: str, cseq: int, tags: tuple[str | None, str | None],
        now: float, cfg: TimerConfig, *, resend: bool = True,
    ):
        #: False over a stream: the 2xx is not sent again, only the ACK is waited for (its 64*T1 timeout).
        self.resend = resend
        self.data = data
        self.peer = peer
        self.call_id = call_id
        self.cseq = cseq
        #: From and To tags of the 2xx: only an ACK of that dialog stops it (section 12.2.2 matching).
        self.tags = tags
        self.interval = cfg.t1
        self.cfg = cfg
        self.next_at = now + cfg.t1
        self.give_up_at = now + 64 * cfg.t1


# --------------------------------------------------------------------------------------- the layer


class TransactionLayer:
    """Routes messages to transactions, runs their timers and queues their datagrams and events."""

    def __init__(
        self,
        config: TimerConfig | None = None,
        *,
        reliable: bool = False,
        auto_100_trying: bool = True,
        transports: Transports | None = None,
    ) -> None:
        self.config = config or TimerConfig()
        #: Which transport reaches each address (ivr.sip.transport); ``reliable`` makes every one TCP (tests).
        self.transports = transports or Transports()
        self.reliable = reliable
        #: Section 17.2.1: send 100 Trying at once for a new INVITE.
        self.auto_100_trying = auto_100_trying
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        self._by_id: dict[str, ClientTransaction | ServerTransaction] = {}
        #: Keyed by Call-ID, CSeq and the 2xx's From and To tags: the dialog and the INVITE within it.
        #: Call-ID and CSeq alone are not unique (two INVITEs with other From tags are two dialogs),
        #: and a second 2xx overwriting the first would leave that call without retransmission or
        #: ACK timeout, answered for ever.
        self._retransmit_2xx: dict[tuple[str, int, str | None, str | None], _Retransmit2xx] = {}
        self._datagrams: list[tuple[bytes, Address]] = []
        self._events: deque[TransactionEvent] = deque()
        self._counter = 0

    # -- aioquic-style surface

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._datagrams = self._datagrams, []
        return out

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [t for tx in self._by_id.values() for t in tx.timers.values()]
        for r in self._retransmit_2xx.values():
            deadlines.append(min(r.next_at, r.give_up_at))
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now`, each once, earliest first."""
        due: list[tuple[float, str, ClientTransaction | ServerTransaction]] = [
            (deadline, name, tx)
            for tx in list(self._by_id.values())
            for name, deadline in tx.timers.items()
            if deadline <= now
        ]
        for deadline, name, tx in sorted(due, key=lambda item: item[0]):
            if tx.timers.get(name) == deadline:
                del tx.timers[name]
                tx.fire(name, now)
        for key, r in list(self._retransmit_2xx.items()):
            if r.give_up_at <= now:
                del self._retransmit_2xx[key]
                self._events.append(AckTimeout(r.call_id, r.cseq, *r.tags))
            elif r.next_at <= now:
                if r.resend:
                    self._datagrams.append((r.data, r.peer))
                r.interval = min(2 * r.interval, r.cfg.t2)
                r.next_at = now + r.interval

    # -- sending

    def send_request(self, request: SipRequest, destination: Address, now: float) -> str:
        """Start a client transaction; the request's top Via must carry a z9hG4bK branch."""
        if request.method == "ACK":
            raise ValueError("ACK is sent without a transaction")
        via = request.via
        if not via.has_magic_cookie or via.branch is None:
            raise ValueError("request needs a top Via with a z9hG4bK branch (use new_branch())")
        key = _client_key(via.branch, request.method)
        if key in self._clients:
            raise ValueError("a client transaction with this branch and method exists")
        self.transports.learn_target(request, destination)
        transport = self._transport(destination)
        as_datagram = None
        if transport == "UDP":
            data = request.to_bytes()
            switched = self.transports.oversized(destination, len(data))
            if switched is not None:
                transport, as_datagram = switched, data
        fit(request, transport, self.transports.ports)
        tx = ClientTransaction(self, self._new_id("c"), request, destination, transport)
        tx.as_datagram = as_datagram
        self._clients[key] = tx
        self._by_id[tx.id] = tx
        tx.start(now)
        return tx.id

    def send_response(self, transaction_id: str, response: SipResponse, now: float) -> None:
        """Send a response through the server transaction `transaction_id` (section 17.2)."""
        tx = self._by_id.get(transaction_id)
        if not isinstance(tx, ServerTransaction):
            raise KeyError(transaction_id)
        tx.send_response(response, now)

    def send_stateless(self, message: SipRequest | SipResponse, destination: Address) -> None:
        """Send outside any transaction: the ACK for a 2xx, or a response to an unparsable request."""
        if isinstance(message, SipRequest):
            self.transports.learn_target(message, destination)
        fit(message, self._transport(destination), self.transports.ports)
        self._datagrams.append((message.to_bytes(), destination))

    def _transport(self, destination: Address) -> str:
        return "TCP" if self.reliable else self.transports.of(destination)

    def transport_error(self, destination: Address, now: float = 0.0, *, definitive: bool = False) -> list[str]:
        """The transport says ``destination`` cannot be reached (over UDP: the ICMP port or host unreachable the
        socket reported). RFC 3261 sections 8.1.3.1 and 17.1.4: each client transaction to it that has heard
        nothing yet ends now, reported as a timeout by the timer ``transport``, so the TU fails over at once
        (RFC 3263 section 4.3) instead of after 64*T1 — once the request and a retransmission have both
        bounced (T1, 0.5 s: a peer that was just starting is given that long). One that had a provisional is
        left alone: the peer was alive then, and an ICMP error may belong to an older datagram. ``definitive``
        (a connection refused, reset or failing TLS): every client transaction on it ends at once, but one sent
        over TCP only for its size goes over UDP instead (section 18.1.1); server transactions answer over a new
        connection to their Via (section 18.2.2). Returns the transactions ended."""
        ended = []
        for tx in list(self._by_id.values()):
            if tx.peer != destination:
                continue
            if isinstance(tx, ServerTransaction):
                if definitive and tx.reliable:
                    # Section 18.2.2: the connection the request came on is gone; its responses go over a new
                    # one to the received address and the sent-by port (the port a client's connection came
                    # from takes none).
                    via = tx.request.via
                    port = via.port or (5061 if tx.transport == "TLS" else 5060)
                    tx.peer = (via.received or via.host.strip("[]"), port)
                    self.transports.learn(tx.peer, tx.transport)
                continue
            if tx.as_datagram is not None and tx.state in (TransactionState.CALLING, TransactionState.TRYING):
                self.transports.learn(destination, "UDP")  # section 18.1.1: "SHOULD retry the request, using UDP"
                tx.over_udp(now)
                continue
            if definitive and tx.state not in (TransactionState.TERMINATED, TransactionState.COMPLETED):
                # A stream that broke or never connected: nothing more can come (section 17.1.4); a
                # transaction that had its provisional ends too, its final response has no way back.
                self._events.append(TransactionTimeout(tx.id, TRANSPORT_ERROR))
                tx._terminate()
                ended.append(tx.id)
                continue
            if tx.state in (TransactionState.CALLING, TransactionState.TRYING):
                tx.bounced += 1
                if tx.bounced >= UNREACHABLE_AFTER:
                    self._events.append(TransactionTimeout(tx.id, TRANSPORT_ERROR))
                    tx._terminate()
                    ended.append(tx.id)
        return ended

    def abandon(self, transaction_id: str) -> bool:
        """Forget a client transaction now, without a timeout event: an INVITE we CANCELled whose peer
        gave no final response within 64*T1 (RFC 3261 section 9.1 lets the UAC consider it gone). Timer B
        stops at the first provisional (section 17.1.1.2), so it would otherwise stay in Proceeding for
        ever. A late response to it becomes a StrayResponse. False when there is no such transaction."""
        tx = self._by_id.get(transaction_id)
        if not isinstance(tx, ClientTransaction):
            return False
        tx._terminate()
        return True

    # -- receiving

    def receive(self, message: SipRequest | SipResponse, source: Address, now: float, transport: str = "UDP") -> None:
        """Route one parsed message (section 17.1.3 / 17.2.3) that came over ``transport``. Messages whose Via,
        CSeq or Call-ID cannot be parsed are dropped: `check_message` should have answered them already."""
        try:
            if isinstance(message, SipResponse):
                self._receive_response(message, source, now)
            else:
                self.transports.learn_request(message, source, transport)
                self._receive_request(message, source, now, transport)
        except SipParseError:
            return

    def _receive_response(self, response: SipResponse, source: Address, now: float) -> None:
        via = response.via
        method = response.cseq.method
        tx = self._clients.get(_client_key(via.branch or "", method)) if via.branch else None
        if tx is None:
            self._events.append(StrayResponse(response, source))
            return
        tx.receive_response(response, now)

    def _receive_request(self, request: SipRequest, source: Address, now: float, transport: str) -> None:
        stamp_via(request, source)
        key = _server_key(request)
        tx = self._servers.get(key)
        if tx is not None and not (request.method == "ACK" and tx.state == TransactionState.ACCEPTED):
            tx.receive_request(request, now)
            return
        # An ACK reusing the branch of an INVITE we accepted is still the ACK for our 2xx: it goes to
        # the TU (RFC 6026 section 7.1) instead of being absorbed, or the 2xx would never stop.
        if request.method == "ACK":
            # Same Call-ID and CSeq but other tags is not the ACK of our 2xx: stopping the 2xx (and
            # its ACK timeout) on it would leave the call waiting for an ACK that can no longer come.
            ack_key = (request.call_id, request.cseq.seq, request.from_addr.tag, request.to_addr.tag)
            r = self._retransmit_2xx.pop(ack_key, None)
            self._events.append(AckReceived(request, source, stopped_retransmission=r is not None))
            return
        # Section 18.2.2: over a stream the response goes back on the connection the request came on.
        peer = source if transport in STREAMS else response_destination(request.via)
        tx = ServerTransaction(self, self._new_id("s"), request, peer, "TCP" if self.reliable else transport)
        self._servers[key] = tx
        self._by_id[tx.id] = tx
        self._events.append(RequestReceived(tx.id, request, source))
        if tx.is_invite and self.auto_100_trying:
            tx.send_response(make_response(request, 100), now)

    # -- lookups for the TU

    def transaction(self, transaction_id: str) -> ClientTransaction | ServerTransaction | None:
        return self._by_id.get(transaction_id)

    def find_invite_for_cancel(self, cancel: SipRequest) -> str | None:
        """The INVITE server transaction a CANCEL targets (section 9.2): same key but the method."""
        try:
            key = _server_key(cancel)
        except SipParseError:
            return None
        key = (*key[:-1], "INVITE") if key[0] == "3261" else (*key[:5], "INVITE", key[6])
        tx = self._servers.get(key)
        return tx.id if tx is not None else None

    # -- internals

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def _start_2xx_retransmission(self, tx: ServerTransaction, response: SipResponse, now: float) -> None:
        call_id, cseq = tx.request.call_id, tx.request.cseq.seq
        tags = (response.from_addr.tag, response.to_addr.tag)
        self._retransmit_2xx[(call_id, cseq, *tags)] = _Retransmit2xx(
            response.to_bytes(), tx.peer, call_id, cseq, tags, now, self.config, resend=not tx.reliable
        )

    def _terminated(self, tx: _Transaction) -> None:
        self._by_id.pop(tx.id, None)
        if isinstance(tx, ClientTransaction):
            self._clients = {k: v for k, v in self._clients.items() if v is not tx}
        else:
            self._servers = {k: v for k, v in self._servers.items() if v is not tx}
        self._events.append(TransactionTerminated(tx.id))
