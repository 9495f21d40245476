"""The asyncio adapter of the SIP user agent: one UDP socket, one timer, no thread per call.

It only moves bytes between the socket and `UserAgent`, arms `loop.call_at(ua.get_timer())` after
every input, and turns UA events into `InboundLeg` / `OutboundLeg` state (futures, `ended`,
callbacks). Outbound calls (`call`) and registrations (`register`, `registrations`) share the socket.
Both find their server by RFC 3263 (`ivr.sip.dns`) and fail over between its addresses; the address
that worked is kept per configured name (`ivr.sip.resolve.Failover`) until it fails or its records expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ivr.errors import CallerHungUp
from ivr.sip.connections import StreamConnections, TlsSettings, client_context, server_context
from ivr.sip.dns import DnsResolver
from ivr.sip.lexical import SipParseError
from ivr.sip.register import RegistrationConfig, RegistrationStatus
from ivr.sip.registrations import credentials_for, uri_host
from ivr.sip.resolve import Failover, parse_host
from ivr.sip.sdp import SessionDescription
from ivr.sip.transaction import Address
from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import (
    CallConfirmed,
    CallEnded,
    DtmfReceived,
    IncomingCall,
    MediaAnswered,
    MediaChanged,
    OrphanCancelAnswered,
    OrphanInviteEnded,
    OutboundCompleted,
    OutboundProgress,
    ReferCompleted,
    RegistrationChanged,
    UaEvent,
)
from ivr.sip.ua_state import LegState, LegStateError
from ivr.sip.uac import OutboundCallSpec, OutboundOutcome, OutboundResult
from ivr.sip.uri import SipUri, parse_uri

__all__ = ["InboundLeg", "OutboundLeg", "SipEndpoint"]

log = logging.getLogger(__name__)

#: Bound on one DNS look-up of a registrar or proxy name.
RESOLVE_TIMEOUT = 5.0


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _user_part(uri: str) -> str:
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        return ""
    if isinstance(parsed, SipUri):
        return parsed.user or ""
    return parsed.opaque.split(";", 1)[0] if parsed.scheme.lower() == "tel" else ""


class InboundLeg:
    """One incoming call as the call adapter sees it; the UA stays hidden behind it."""

    def __init__(self, endpoint: SipEndpoint, event: IncomingCall) -> None:
        self._endpoint = endpoint
        self.leg_id = event.leg_id
        self.call_id = event.call_id
        self.caller = event.caller
        self.dialed = event.dialed
        self.source = event.source
        self.offer: SessionDescription | None = event.offer
        #: The INVITE's X- headers (X-IVR-Caller-Channel...), in order.
        self.extra_headers: tuple[tuple[str, str], ...] = event.extra_headers
        self.transport = event.transport
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        #: Digits from SIP INFO (RFC 2833 digits come through RTP, not here).
        self.on_dtmf: Callable[[str], None] | None = None
        #: A re-INVITE's offer -> our answer SDP (same local RTP port). None, or raising: 488.
        self.on_media_changed: Callable[[SessionDescription], bytes] | None = None
        #: The answer in the ACK to a re-INVITE without SDP (we offered our current description).
        self.on_media_answered: Callable[[SessionDescription], None] | None = None
        self._confirmed = asyncio.Event()
        self._late_answer: asyncio.Future[bytes] | None = None
        self._refer: asyncio.Future[ReferCompleted] | None = None

    def header(self, name: str) -> str | None:
        """The first X- header of the INVITE called `name` (case-insensitive)."""
        return next((v for n, v in self.extra_headers if n.lower() == name.lower()), None)

    async def refer(self, refer_to: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> ReferCompleted:
        """Blind transfer by REFER (RFC 3515) and wait for its outcome: 202 then a final sipfrag NOTIFY,
        or the refusal. Bounded by the UA's refer_timeout; a caller gone meanwhile gives ok=False,
        status 0. CallerHungUp if the call already ended. ``extra_headers`` go on the REFER itself."""
        self._check_alive()
        future: asyncio.Future[ReferCompleted] = asyncio.get_running_loop().create_future()
        self._refer = future
        self._endpoint._command(lambda ua, now: ua.refer(self.leg_id, refer_to, now, extra_headers=extra_headers))
        config = self._endpoint.config
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            async with asyncio.timeout(config.refer_timeout + 64 * config.timers.t1 + 1.0):
                waiters: set[asyncio.Future[Any]] = {future, ended}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        finally:
            ended.cancel()
            self._refer = None
        if future.done() and not future.cancelled():
            return future.result()
        future.cancel()
        return ReferCompleted(self.leg_id, False, 0, f"call ended ({self.end_reason or 'timeout'})")

    async def send_dtmf(self, digit: str) -> None:
        """A digit to the peer as SIP INFO (application/dtmf-relay)."""
        self._check_alive()
        self._endpoint._command(lambda ua, now: ua.send_dtmf_info(self.leg_id, digit, now))

    async def ring(self) -> None:
        """180 Ringing; CallerHungUp if the caller already left."""
        self._check_alive()
        self._endpoint._command(lambda ua, now: ua.ring(self.leg_id, now))

    async def answer(self, sdp: bytes) -> bytes | None:
        """200 OK with `sdp`. For a late-offer INVITE `sdp` is our offer and the peer's answer (from the
        ACK) is returned; otherwise None at once. CallerHungUp if the caller left first."""
        self._check_alive()
        late = self.offer is None
        if late:
            self._late_answer = asyncio.get_running_loop().create_future()
        self._endpoint._command(lambda ua, now: ua.answer(self.leg_id, sdp, now))
        if not late or self._late_answer is None:
            return None
        # Bounded: the UA ends the leg when no ACK comes within 64*T1.
        ended = asyncio.ensure_future(self.ended.wait())
        waiters: set[asyncio.Future[Any]] = {self._late_answer, ended}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if self._late_answer.done() and not self._late_answer.cancelled():
            return self._late_answer.result()
        self._late_answer.cancel()
        raise CallerHungUp()

    async def reject(self, status: int, *, retry_after: int | None = None) -> None:
        """A final 3xx-6xx to the INVITE (with Retry-After if given); nothing if the call already ended."""
        if self.ended.is_set():
            return
        self._endpoint._command(lambda ua, now: ua.reject(self.leg_id, status, now, retry_after=retry_after))

    async def hangup(self) -> None:
        """BYE (or 480 before the answer) and wait, bounded by the BYE transaction's own timeout."""
        if self.ended.is_set():
            return
        self._endpoint._command(lambda ua, now: ua.hangup(self.leg_id, now))
        timers = self._endpoint.config.timers
        # The ACK wait (64*T1) then the BYE's Timer F (64*T1) bound this; the margin is for scheduling.
        async with asyncio.timeout(128 * timers.t1 + 1.0):
            await self.ended.wait()

    async def wait_confirmed(self) -> None:
        """Until the ACK for our 2xx arrives; CallerHungUp if the call ends first (no ACK: 64*T1)."""
        if self._confirmed.is_set():
            return
        self._check_alive()
        confirmed = asyncio.ensure_future(self._confirmed.wait())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({confirmed, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            confirmed.cancel()
            ended.cancel()
        if not self._confirmed.is_set():
            raise CallerHungUp()

    def _check_alive(self) -> None:
        if self.ended.is_set():
            raise CallerHungUp()

    # -- from the endpoint

    def _handle(self, event: UaEvent) -> None:
        if isinstance(event, CallConfirmed):
            self._confirmed.set()
        elif isinstance(event, MediaAnswered):
            if self._late_answer is not None and not self._late_answer.done():
                self._late_answer.set_result(event.body)
            elif self.on_media_answered is not None:
                self.on_media_answered(event.sdp)
        elif isinstance(event, MediaChanged):
            self._media_changed(event.offer)
        elif isinstance(event, DtmfReceived):
            if self.on_dtmf is not None:
                self.on_dtmf(event.digit)
        elif isinstance(event, ReferCompleted):
            if self._refer is not None and not self._refer.done():
                self._refer.set_result(event)
        elif isinstance(event, CallEnded):
            self.end_reason = event.reason
            self.ended.set()

    def _media_changed(self, offer: SessionDescription) -> None:
        answer: bytes | None = None
        if self.on_media_changed is not None:
            try:
                answer = self.on_media_changed(offer)
            except Exception:
                log.exception("sip on_media_changed failed call_id=%s", self.call_id)
        if answer:
            self._endpoint._command(lambda ua, now: ua.answer_reinvite(self.leg_id, answer, now))
        else:
            self._endpoint._command(lambda ua, now: ua.reject_reinvite(self.leg_id, 488, now))


class OutboundLeg:
    """One call we placed (`SipEndpoint.call`). Unanswered, it only carries its `result` (and `ended`
    is set); answered, it offers what `InboundLeg` offers, so the same call adapter runs a flow on it.

    `caller` is the party at the other end (the number we dialled) and `dialed` our own number (the
    From user), so that a flow sees the person it talks to as the caller, as on an inbound call.
    """

    def __init__(self, endpoint: SipEndpoint, leg_id: str, spec: OutboundCallSpec) -> None:
        self._endpoint = endpoint
        self.leg_id = leg_id
        self.target = spec.target_uri
        self.caller = _user_part(spec.target_uri)
        self.dialed = _user_part(spec.from_uri)
        self.source: Address = spec.proxy
        self.call_id = ""
        #: Provisional statuses seen (180, 183...), in order.
        self.progress: list[int] = []
        #: Early media SDP from a 183, if any (no media is played from it yet).
        self.early_sdp: bytes | None = None
        self.result: OutboundResult | None = None
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        #: Digits from SIP INFO (RFC 2833 digits come through RTP, not here).
        self.on_dtmf: Callable[[str], None] | None = None
        #: A re-INVITE's offer -> our answer SDP (same local RTP port). None, or raising: 488.
        self.on_media_changed: Callable[[SessionDescription], bytes] | None = None
        #: The answer in the ACK to a re-INVITE without SDP (we offered our current description).
        self.on_media_answered: Callable[[SessionDescription], None] | None = None
        self._completed: asyncio.Future[OutboundResult] = asyncio.get_running_loop().create_future()

    @property
    def answered(self) -> bool:
        return self.result is not None and self.result.answered

    @property
    def remote_sdp(self) -> bytes | None:
        """The callee's SDP answer from the 2xx."""
        return self.result.remote_sdp if self.result is not None else None

    async def send_dtmf(self, digit: str) -> None:
        """A digit to the callee as SIP INFO (application/dtmf-relay); CallerHungUp once it ended."""
        if self.ended.is_set() or not self.answered:
            raise CallerHungUp()
        self._endpoint._command(lambda ua, now: ua.send_dtmf_info(self.leg_id, digit, now))

    async def hangup(self) -> None:
        """BYE and wait, bounded by the BYE transaction's own timeout; nothing if the call ended."""
        if self.ended.is_set():
            return
        self._endpoint._command(lambda ua, now: ua.hangup(self.leg_id, now))
        async with asyncio.timeout(64 * self._endpoint.config.timers.t1 + 1.0):
            await self.ended.wait()

    def dialog_record(self) -> dict[str, Any] | None:
        """The answered leg's dialog as plain data (`SipEndpoint.end_dialog` after a crash), None otherwise."""
        ua = self._endpoint._ua
        return ua.dialog_record(self.leg_id) if ua is not None and self.answered else None

    # -- from the endpoint

    def _complete(self, result: OutboundResult) -> None:
        self.result = result
        self.call_id = result.call_id
        if result.target is not None:
            self.source = result.target  # the proxy address that took the call (RFC 3263 failover)
        if not result.answered:
            self.end_reason = result.outcome.value
            self.ended.set()
        if not self._completed.done():
            self._completed.set_result(result)

    def _handle(self, event: UaEvent) -> None:
        if isinstance(event, OutboundProgress):
            self.progress.append(event.status)
            if event.sdp is not None:
                self.early_sdp = event.sdp
        elif isinstance(event, OutboundCompleted):
            self._complete(event.result)
        elif isinstance(event, MediaAnswered):
            if self.on_media_answered is not None:
                self.on_media_answered(event.sdp)
        elif isinstance(event, MediaChanged):
            answer: bytes | None = None
            if self.on_media_changed is not None:
                try:
                    answer = self.on_media_changed(event.offer)
                except Exception:
                    log.exception("sip on_media_changed failed call_id=%s", self.call_id)
            if answer:
                self._endpoint._command(lambda ua, now: ua.answer_reinvite(self.leg_id, answer, now))
            else:
                self._endpoint._command(lambda ua, now: ua.reject_reinvite(self.leg_id, 488, now))
        elif isinstance(event, DtmfReceived):
            if self.on_dtmf is not None:
                self.on_dtmf(event.digit)
        elif isinstance(event, CallEnded):
            self.end_reason = event.reason
            self.ended.set()


#: Linux ip(7)/ipv6(7): queue ICMP errors with the destination they concern (not in Python's socket module)
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE_NOWAIT = getattr(socket, "MSG_ERRQUEUE", 0x2000) | socket.MSG_DONTWAIT


def _error_queue(transport: asyncio.BaseTransport) -> socket.socket | None:
    """A second handle on the SIP socket with ``IP_RECVERR`` on, to read which destination an ICMP error
    concerns. The loop's own socket object cannot do ``recvmsg`` under uvloop, so a dup of its descriptor
    (one socket, two handles). None where the option does not exist (not Linux): timers alone then."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "MSG_ERRQUEUE"):
        return None
    sockname = transport.get_extra_info("sockname")
    v6 = isinstance(sockname, tuple) and ":" in str(sockname[0])
    dup: socket.socket | None = None
    try:
        dup = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM, fileno=os.dup(sock.fileno()))
        dup.setsockopt(*((socket.IPPROTO_IPV6, _IPV6_RECVERR) if v6 else (socket.IPPROTO_IP, _IP_RECVERR)), 1)
    except OSError as exc:
        if dup is not None:
            dup.close()
        log.info("sip: no ICMP error queue (%s): a dead peer is noticed by the timers", exc)
        return None
    return dup


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.endpoint._datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        """An ICMP error the socket reported (``IP_RECVERR``): its error queue names each destination."""
        self.endpoint._socket_errors(exc)


class SipEndpoint:
    """A UAS on one UDP socket; `on_call(leg)` runs for every new call (start the call's task there)."""

    def __init__(
        self,
        config: UserAgentConfig,
        host: str,
        port: int,
        on_call: Callable[[InboundLeg], None],
        *,
        resolver: DnsResolver | None = None,
        tcp: bool = False,
        tls: TlsSettings | None = None,
        tls_port: int = 5061,
        tls_host: str | None = None,
    ) -> None:
        self.config = config
        #: Where each transport listens, "host:port" by "udp", "tcp", "tls" (``ivr status``).
        self.listening: dict[str, str] = {}
        self.tls_host = tls_host
        #: SIP over TCP on the UDP port too; over TLS on ``tls_port`` (``sip.tcp``, ``sip.tls``).
        self.tcp = tcp
        self.tls = tls
        self.tls_port = tls_port
        self._streams: StreamConnections | None = None
        self.host = host
        self.port = port
        self.on_call = on_call
        #: Registrar and proxy names to addresses (RFC 3263: SRV, then A/AAAA).
        self.resolver = resolver or DnsResolver(timeout=RESOLVE_TIMEOUT)
        self._re_resolving: set[asyncio.Task[None]] = set()
        #: Outbound proxies by configured name: their addresses, and which one is in use (sticky).
        self._proxies: dict[str, Failover] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._errors: socket.socket | None = None  # the SIP socket's ICMP error queue (``_error_queue``)
        self._ua: UserAgent | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_deadline: float | None = None
        self._legs: dict[str, InboundLeg | OutboundLeg] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._registrations_settled = asyncio.Event()
        #: Called with each registration status change (the daemon may log or export it).
        self.on_registration: Callable[[RegistrationStatus], None] | None = None
        #: Every account handed to `register` (resolved or not yet): the credentials outbound calls answer
        #: a 401/407 with (`credentials_for`).
        self._accounts: dict[str, RegistrationConfig] = {}
        #: Orphan INVITEs (sent before a restart) whose final response came and was ACKed (and BYEd), by
        #: Call-ID, and who waits for one (`end_orphan_invite`); CANCELs of orphans awaiting their answer.
        self._orphans_ended: dict[str, int] = {}
        self._orphan_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._orphan_cancels: dict[str, asyncio.Future[int]] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self._errors = _error_queue(transport)
        sockname = transport.get_extra_info("sockname")
        self._ua = UserAgent(self.config, (str(sockname[0]), int(sockname[1])))
        log.info("sip listening on %s:%s", sockname[0], sockname[1])
        self.listening["udp"] = _host_port(str(sockname[0]), int(sockname[1]))
        if self.tcp or self.tls is not None:
            await self._listen_streams(int(sockname[1]))

    async def _listen_streams(self, udp_port: int) -> None:
        """TCP beside UDP on the same port, TLS on its own (RFC 3261 section 18: 5060 and 5061)."""
        ua = self.user_agent
        tls = self.tls
        streams = StreamConnections(self._stream_message, self._stream_failed,
                                    tls_server=server_context(tls) if tls is not None else None,
                                    tls_client=client_context(tls) if tls is not None else None)
        self._streams = streams
        if self.tcp:
            await streams.listen("TCP", self.host, udp_port)
            ua.transports.ports["TCP"] = ua.transports.ports["UDP"]
            self.listening["tcp"] = _host_port(self.host, udp_port)
        if tls is not None:
            port = await streams.listen("TLS", self.tls_host or self.host, self.tls_port)
            ua.transports.ports["TLS"] = port
            self.listening["tls"] = _host_port(self.tls_host or self.host, port)

    @property
    def local_address(self) -> tuple[str, int]:
        if self._ua is None:
            raise RuntimeError("SipEndpoint not started")
        return self._ua.local_address

    @property
    def user_agent(self) -> UserAgent:
        """The sans-I/O core, for its counters (`stats`) and tests."""
        if self._ua is None:
            raise RuntimeError("SipEndpoint not started")
        return self._ua

    # -- outbound calls

    async def call(
        self,
        target_uri: str,
        *,
        from_uri: str,
        sdp_offer: bytes,
        proxy: str | tuple[str, int],
        from_display: str | None = None,
        asserted_identity: str | None = None,
        credentials: tuple[str, str] | None = None,
        ring_timeout: float = 30.0,
        call_id: str | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> OutboundLeg:
        """Place a call through `proxy` and wait for its outcome (`leg.result`); never raises for a
        SIP failure. Answered, the leg is confirmed (our ACK sent) and runs until `ended`.

        `proxy` is "host[:port]" (a name without port: SRV `_sip._udp` first, RFC 3263 section 4.2) or
        (host, port). Every address it resolves to may take the call: one that times out or answers 503
        before any 1xx hands the same INVITE to the next (section 4.3); the one that answers is used
        first by the next calls. OSError/TimeoutError when the name does not resolve.

        `credentials` None: the registered account at the target's or proxy's host answers a 401/407
        (`credentials_for`), so every outbound leg authenticates alike.

        Bounded: 64*T1 per silent address, the ring timeout, then at most 64*T1 for the CANCEL to
        settle. Cancelling the awaiting task sends CANCEL (or BYE, if the answer crossed it) before
        re-raising.
        """
        ua = self.user_agent
        failover = await self._proxy(proxy)
        first, *alternates = failover.order(self._now())
        if credentials is None:
            credentials = self.credentials_for(target_uri, proxy, (first, *alternates))
        spec = OutboundCallSpec(
            target_uri=target_uri, from_uri=from_uri, sdp_offer=sdp_offer, proxy=first,
            from_display=from_display, asserted_identity=asserted_identity, credentials=credentials,
            ring_timeout=ring_timeout, call_id=call_id, extra_headers=extra_headers, alternates=tuple(alternates),
        )
        leg_id = ua.start_call(spec, self._now())
        leg = OutboundLeg(self, leg_id, spec)
        self._legs[leg_id] = leg
        self._pump()
        t1 = self.config.timers.t1
        try:
            async with asyncio.timeout(ring_timeout + (len(alternates) + 2) * 64 * t1 + 5.0):
                await asyncio.shield(leg._completed)
        except BaseException:
            if not leg._completed.done() and self._ua is not None:
                self._ua.cancel_call(leg_id, self._now())
                self._pump()
            raise
        result = leg._completed.result()
        failed = {f.address for f in result.failed_targets}
        for failure in result.failed_targets:
            failover.failed_at(failure.address, failure.hold_until)
        if result.target is not None and result.target not in failed:
            failover.succeeded_at(result.target)  # sticky: the next call starts there
        return leg

    def credentials_for(self, target_uri: str, proxy: str | tuple[str, int],
                        addresses: tuple[Address, ...] = ()) -> tuple[str, str] | None:
        """The `sip.accounts` credentials for a call to `target_uri` through `proxy` (any of its `addresses`):
        the account registered at that host (ivr.sip.registrations.credentials_for), or None."""
        if isinstance(proxy, tuple):
            proxy_host = proxy[0]
        else:
            try:
                proxy_host = parse_host(proxy).host
            except ValueError:
                proxy_host = ""
        hosts = [proxy_host, uri_host(target_uri) or "", *(host for host, _ in addresses)]
        resolved: dict[str, list[Address]] = {}
        if self._ua is not None:
            for aor in self._accounts:
                failover = self._ua.registrar_of(aor)
                if failover is not None:
                    resolved[aor] = list(failover.targets)
        return credentials_for(list(self._accounts.values()), hosts, resolved)

    async def end_orphan_invite(self, target_uri: str, *, from_uri: str, proxy: str | tuple[str, int],
                                call_id: str, from_display: str | None = None, max_cseq: int = 3,
                                answer_wait: float | None = None, cancel_wait: float = 4.0) -> int | None:
        """End an INVITE a crashed process sent with `call_id` (as `call` built it: same target, From and
        proxy, a Call-ID it chose, so the tag and branches follow from it). Answered, the callee retransmits
        its 2xx (at least every T2 = 4 s) and the UA ACKs and BYEs it: that is waited for first
        (`answer_wait`, default T2 + 0.5 s). Still nothing: it is ringing (or gone), so CANCEL, trying CSeq 1
        .. `max_cseq` (the INVITE again after a 401/407 or 422) until one is found (200, then its 487 is
        ACKed), within `cancel_wait`. Returns the INVITE's final status seen (2xx ended by BYE, 487...) or None
        (nothing answered: the callee is gone). Bounded by `answer_wait + cancel_wait`."""
        ua = self.user_agent
        loop = asyncio.get_running_loop()
        if call_id in self._orphans_ended:
            return self._orphans_ended[call_id]
        failover = await self._proxy(proxy)
        first = failover.order(self._now())[0]
        ua.trust_peer(first[0])  # the callee's orphan 2xx comes back through it
        ended: asyncio.Future[int] = loop.create_future()
        self._orphan_waiters.setdefault(call_id, []).append(ended)
        try:
            wait = self.config.timers.t2 + 0.5 if answer_wait is None else answer_wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), wait)
            if ended.done():
                return ended.result()
            spec = OutboundCallSpec(target_uri=target_uri, from_uri=from_uri, sdp_offer=b"", proxy=first,
                                    from_display=from_display, call_id=call_id)
            deadline = loop.time() + cancel_wait
            for cseq in range(1, max_cseq + 1):
                answered: asyncio.Future[int] = loop.create_future()
                tx = ua.cancel_orphan(spec, call_id, cseq, self._now())
                self._orphan_cancels[tx] = answered
                self._pump()
                try:
                    await asyncio.wait({answered, ended}, timeout=max(0.0, deadline - loop.time()),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._orphan_cancels.pop(tx, None)
                if ended.done() or (answered.done() and answered.result() == 200) or loop.time() >= deadline:
                    break  # found (its final follows) or out of time; a 481 tries the next CSeq
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), max(0.0, deadline - loop.time()))
            return ended.result() if ended.done() else None
        finally:
            waiters = self._orphan_waiters.get(call_id, [])
            if ended in waiters:
                waiters.remove(ended)
            if not waiters:
                self._orphan_waiters.pop(call_id, None)

    def end_dialog(self, record: Mapping[str, Any]) -> None:
        """BYE in a dialog a crashed process left up (`OutboundLeg.dialog_record`, committed while it lived)."""
        self._command(lambda ua, now: ua.end_dialog(record, now))

    async def proxy_address(self, proxy: str | tuple[str, int]) -> Address:
        """The address a call through `proxy` would try first (to pick our own address towards it)."""
        return (await self._proxy(proxy)).order(self._now())[0]

    async def _resolve(self, name: str) -> Failover:
        """RFC 3263 for a configured name over the transport its ``sip.transport_peers`` rule names (SRV
        ``_sips._tcp`` for TLS...); its addresses then take that transport, and TLS checks the name."""
        transport = self.user_agent.transports.for_name(name)
        failover = await self.resolver.resolve(name, self._family(), self._now(), (transport or "udp").lower())
        if transport is not None and transport != "UDP":
            self.user_agent.transports.name_resolved(transport, failover.targets)
            if self._streams is not None:
                host = parse_host(name).host
                for target in failover.targets:
                    self._streams.server_names[target] = host
        return failover

    async def _proxy(self, proxy: str | tuple[str, int]) -> Failover:
        """The proxy's addresses, looked up again once their records expired (a failed new look-up
        keeps the old answer for 30 s rather than no call)."""
        if isinstance(proxy, tuple):
            host, port = proxy
            proxy = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an explicit port: no SRV
        now = self._now()
        if parse_host(proxy).literal:  # one address, nothing to remember (a bridge to each caller's host)
            return await self._resolve(proxy)
        known = self._proxies.get(proxy)
        if known is not None and not known.refresh_due(now):
            return known
        try:
            fresh = await self._resolve(proxy)
        except (OSError, TimeoutError) as exc:
            if known is None:
                raise
            log.warning("sip dns %s failed: %s; keeping %s", proxy, exc, known.targets)
            known.expires_at = now + 30.0
            return known
        if known is None:
            self._proxies[proxy] = fresh
            return fresh
        known.update(fresh.targets, fresh.expires_at)
        return known

    # -- registrations

    async def register(self, config: RegistrationConfig) -> None:
        """Start keeping `config.aor` registered. A registrar name is resolved by RFC 3263 (SRV
        `_sip._udp`, else A/AAAA) into every address to fail over to, and looked up again when its TTL
        runs out. Raises OSError/TimeoutError when the name does not resolve."""
        ua = self.user_agent
        self._accounts[config.aor] = config  # its credentials serve outbound calls even before it resolves
        failover = await self._resolve(config.registrar)
        ua.add_registration(config, failover, self._now())
        self._pump()
        if failover.expires_at is not None:
            task = asyncio.create_task(self._keep_resolved(config), name=f"resolve-{config.aor}")
            self._re_resolving.add(task)
            task.add_done_callback(self._re_resolving.discard)

    async def _keep_resolved(self, config: RegistrationConfig) -> None:
        """Look the registrar up again each time its records expire (runs until `stop`)."""
        while self._ua is not None:
            failover = self._ua.registrar_of(config.aor)
            if failover is None or failover.expires_at is None:
                return
            await asyncio.sleep(max(1.0, failover.expires_at - self._now()))
            try:
                fresh = await self._resolve(config.registrar)
            except (OSError, TimeoutError) as exc:
                log.warning("sip dns %s failed: %s; keeping %s", config.registrar, exc, failover.targets)
                failover.expires_at = self._now() + 30.0  # the old answer stays in use meanwhile
                continue
            self.user_agent.update_registrar(config.aor, fresh.targets, fresh.expires_at)
            self._pump()

    def public_address_for(self, peer_host: str | None) -> Address | None:
        """Our address as a registrar at `peer_host` saw it (NAT), for the SDP of calls with that peer."""
        return self._ua.public_address_for(peer_host) if self._ua is not None else None

    def registrations(self) -> list[RegistrationStatus]:
        """Every account's status, for `ivr status`."""
        return self.user_agent.registrations() if self._ua is not None else []

    def registration_lines(self) -> list[str]:
        """`ivr status` lines: "sip:2000@pbx: registered, expires in 243 s"."""
        if self._ua is None:
            return []
        now = self._now()
        return [f"{s.aor}: {s.describe(now)}" for s in self._ua.registrations()]

    async def unregister_all(self, timeout: float = 2.0) -> None:
        """Withdraw every registration (Expires: 0) and wait for the registrars, at most `timeout` s."""
        if self._ua is None:
            return
        self._command(lambda ua, now: ua.unregister_all(now))
        await self._wait_registrations(timeout)

    async def _wait_registrations(self, timeout: float) -> None:
        if self._ua is None or self._ua.registrations_settled:
            return
        self._registrations_settled.clear()  # set again by _pump once no REGISTER is in flight
        try:
            async with asyncio.timeout(timeout):
                await self._registrations_settled.wait()
        except TimeoutError:
            log.warning("sip registrations not withdrawn within %.1fs", timeout)

    def _family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.local_address[0] else socket.AF_INET

    async def stop(self, grace: float = 2.0) -> None:
        """503 to pending calls, BYE to the others, CANCEL to our unanswered calls, Expires: 0 to every
        registrar; wait up to `grace` seconds for all that, then close."""
        if self._ua is None or self._transport is None:
            return
        for task in list(self._re_resolving):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._command(lambda ua, now: ua.shutdown(now))
        pending: list[Coroutine[Any, Any, object]] = [
            leg.ended.wait() for leg in self._legs.values() if not leg.ended.is_set()
        ]
        if not self._ua.registrations_settled:
            pending.append(self._wait_registrations(grace))
        if pending:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*pending)
            except TimeoutError:
                log.warning("sip stop: %d calls did not end within %.1fs", len(pending), grace)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()
        self._transport = None
        if self._streams is not None:
            streams, self._streams = self._streams, None
            await streams.close()
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        for leg in self._legs.values():
            if isinstance(leg, OutboundLeg) and leg.result is None:
                leg._complete(OutboundResult(OutboundOutcome.CANCELLED, None, "shutdown"))
            if not leg.ended.is_set():
                leg.end_reason = leg.end_reason or "shutdown"
                leg.ended.set()
        self._legs.clear()

    # -- plumbing

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _datagram(self, data: bytes, source: Address) -> None:
        if self._ua is None:
            return
        try:
            self._ua.receive_datagram(data, source, self._now())
        except Exception:
            # A bug in the core must not take the socket down with it; the datagram is lost.
            log.exception("sip datagram handling failed source=%s:%s", source[0], source[1])
        self._pump()

    def _stream_message(self, data: bytes, source: Address, transport: str) -> None:
        if self._ua is None:
            return
        try:
            self._ua.receive_datagram(data, source, self._now(), transport)
        except Exception:
            log.exception("sip %s message handling failed source=%s:%s", transport.lower(), source[0], source[1])
        self._pump()

    def _stream_failed(self, address: Address) -> None:
        """A connection failed, broke or was closed: what waits on it ends (RFC 3261 section 17.1.4)."""
        if self._ua is None:
            return
        try:
            self._ua.transport_error(address, self._now(), definitive=True)
        except Exception:
            log.exception("sip transport error handling failed destination=%s:%s", *address)
        self._pump()

    def _socket_errors(self, exc: Exception) -> None:
        """Each destination the kernel says is unreachable (ICMP port/host unreachable, the original datagram's
        address read from the socket's error queue): its transactions fail over now, not after 32 s (RFC 3261
        section 17.1.4). Without the queue (not Linux) the transaction timers deal with the silence."""
        unreachable: set[Address] = set()
        if self._errors is not None:
            for _ in range(256):  # bounded: a flood of ICMP errors is drained a batch per wake-up
                try:
                    _data, _anc, _flags, address = self._errors.recvmsg(1, 256, _MSG_ERRQUEUE_NOWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as err:
                    log.debug("sip socket error queue: %s", err)
                    break
                if isinstance(address, tuple) and len(address) >= 2:
                    unreachable.add((str(address[0]), int(address[1])))
        if not unreachable:
            log.debug("sip socket error %s", exc)
        if self._ua is None:
            return
        for destination in sorted(unreachable):
            try:
                self._ua.transport_error(destination, self._now())
            except Exception:
                log.exception("sip transport error handling failed destination=%s:%s", *destination)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        if self._ua is None:
            return
        try:
            self._ua.handle_timer(self._now())
        except Exception:
            log.exception("sip timer handling failed")
        self._pump()

    def _command(self, command: Callable[[UserAgent, float], None]) -> None:
        """Run an app command on the UA, then flush; a leg gone meanwhile is the caller's hang-up."""
        if self._ua is None:
            raise CallerHungUp()
        try:
            command(self._ua, self._now())
        except LegStateError as exc:
            if exc.state == LegState.ENDED.value:
                raise CallerHungUp() from exc
            raise
        finally:
            self._pump()

    def _pump(self) -> None:
        ua, transport = self._ua, self._transport
        if ua is None:
            return
        # Events may trigger commands (a re-INVITE answered at once), which queue more datagrams.
        for _ in range(1000):
            event = ua.next_event()
            if event is None:
                break
            self._dispatch(event)
        if transport is not None:
            streams, transports = self._streams, ua.transports
            for data, address in ua.datagrams_to_send():
                over = transports.of(address) if streams is not None else "UDP"
                if over == "UDP":
                    transport.sendto(data, address)
                else:
                    streams.send(data, address, over)  # type: ignore[union-attr]
        if ua.registrations_settled:
            self._registrations_settled.set()
        self._arm_timer(ua)

    def _arm_timer(self, ua: UserAgent) -> None:
        """One loop timer for the user agent's next deadline. The deadline is kept here, not read back from
        the handle: uvloop's ``call_at`` for a time already past returns a plain ``Handle`` without ``when()``."""
        deadline = ua.get_timer()
        if self._timer is not None:
            if deadline is not None and self._timer_deadline == deadline:
                return
            self._timer.cancel()
            self._timer = None
            self._timer_deadline = None
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_deadline = deadline

    def _dispatch(self, event: UaEvent) -> None:
        if isinstance(event, OrphanInviteEnded):
            if len(self._orphans_ended) >= 1000:
                self._orphans_ended.pop(next(iter(self._orphans_ended)))  # bounded: oldest first
            self._orphans_ended[event.call_id] = event.status
            for waiter in self._orphan_waiters.get(event.call_id, []):
                if not waiter.done():
                    waiter.set_result(event.status)
            return
        if isinstance(event, OrphanCancelAnswered):
            future = self._orphan_cancels.get(event.transaction_id)
            if future is not None and not future.done():
                future.set_result(event.status)
            return
        if isinstance(event, RegistrationChanged):
            log.info("sip registration aor=%s state=%s reason=%s", event.aor, event.status.state.value,
                     event.status.reason)
            if self.on_registration is not None:
                try:
                    self.on_registration(event.status)
                except Exception:
                    log.exception("sip on_registration failed aor=%s", event.aor)
            return
        if isinstance(event, IncomingCall):
            leg = InboundLeg(self, event)
            self._legs[event.leg_id] = leg
            try:
                self.on_call(leg)
            except Exception:
                log.exception("sip on_call failed call_id=%s", event.call_id)
                if self._ua is not None and self._ua.leg_state(event.leg_id) == LegState.INCOMING:
                    self._ua.reject(event.leg_id, 500, self._now())
            return
        leg_id = getattr(event, "leg_id", None)
        target = self._legs.get(leg_id) if isinstance(leg_id, str) else None
        if target is None:
            return
        try:
            target._handle(event)
        except Exception:
            log.exception("sip leg callback failed call_id=%s", target.call_id)
        if isinstance(event, CallEnded) or (isinstance(event, OutboundCompleted) and not event.result.answered):
            self._legs.pop(event.leg_id, None)
