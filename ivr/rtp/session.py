"""The asyncio RTP media engine: UDP sockets from a port range and ONE shared 20 ms tick for all calls.

The adapter only moves bytes, runs the tick off a kernel timer and resolves futures; everything else is the
sans-I/O :class:`ivr.rtp.media.MediaStream`. No thread per call, no timer per call: one callback
on an absolute schedule walks the sessions (see :class:`ivr.rtp.media.TickClock`), every 5 ms, each
time a fixed quarter of them (:data:`PHASES`), so every session still ticks exactly every 20 ms.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ivr.errors import IvrError
from ivr.metrics.buckets import LATENESS_BOUNDS, Buckets
from ivr.proto import rtcp
from ivr.proto.dtmf import DtmfBank
from ivr.proto.g711 import alaw_decode, ulaw_decode
from ivr.proto.sdes import SrtpKeys
from ivr.rtp.media import (
    FRAME_SECONDS,
    AudioReceived,
    DtmfReceived,
    MediaStream,
    Prompt,
    PromptSent,
    SourceRelatched,
    TickClock,
)
from ivr.rtp.srtp import SrtpContext
from ivr.rtp.timerfd import PeriodicTimer, open_periodic

__all__ = ["MediaEngine", "MediaError", "PortPairs", "PortsExhaustedError", "RtpSession", "SessionClosedError"]

log = logging.getLogger(__name__)

MAX_BURST = 3
"""Ticks a late loop may catch up in one go (60 ms); older ones are skipped, not sent in a burst."""
PHASES = 4
"""The 20 ms tick is run in this many phases, 5 ms apart, each walking its own share of the sessions: a
session is always in the same phase, so it still sends exactly every 20 ms, but each wake-up sends a quarter
of the packets, and a loop that is preempted or held up in the middle of one delays fewer calls by less
(bench/README.md, load: the send interval p99 at 200 calls)."""
EARLY_START_MIN = 0.002
"""A prompt begun this close before its session's next tick waits for it (:meth:`RtpSession._start_now`)."""
_LATENESS_WINDOW = 12000
"""Phase tick lateness samples kept for the percentiles (one minute at 4 phases)."""


class MediaError(IvrError):
    """Base of the media engine's errors."""


class PortsExhaustedError(MediaError):
    """Every even port of the RTP range is in use (or taken by another program)."""

    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        super().__init__(f"no free RTP port pair on {host} in {port_min}-{port_max}")
        self.host = host
        self.port_min = port_min
        self.port_max = port_max


class SessionClosedError(MediaError):
    """The RTP session was closed (hang-up, shutdown) while a prompt was waiting to be sent."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"RTP session of call {call_id or '?'} is closed")
        self.call_id = call_id


class _CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("extra", {}).update(self.extra or {})
        return msg, kwargs


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession) -> None:
        self.session = session
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.session._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and kin, reported on a later send: the peer is not there yet.
        self.session._errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


def _plain_rtcp(data: bytes) -> bool:
    """A whole, unencrypted compound RTCP packet: SRTCP adds an index and a tag after the lengths."""
    try:
        rtcp.parse_compound(data)
    except rtcp.RtcpError:
        return False
    return True


class _RtcpProtocol(_RtpProtocol):
    """Port + 1: the caller's RTCP (RFC 3550 section 11), and ours goes out from it."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.session._rtcp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class RtpSession:
    """One call's RTP: plays prompts on the shared tick, reports DTMF and decoded audio."""
    # Attributes in the object, not in a dict: the media tick reads them for every call every 20 ms, mostly
    # from a cold cache (bench/README.md, "Less Python per packet").
    __slots__ = (
        "local_port", "call_id", "on_dtmf", "_on_audio", "on_prompt_sent", "_engine", "_loop", "_stream", "_transport",
        "_rtcp_transport", "_protocols", "_waiters", "_errors", "_closed", "_last_tick", "_srtp", "_rtcp_due",
        "_rtcp_from", "_reception", "_sent_at_report", "_rtcp_sent", "_rtcp_garbage", "_rtcp_plain", "_log"
    )

    def __init__(self, engine: MediaEngine, local_port: int, call_id: str) -> None:
        self.local_port = local_port
        self.call_id = call_id
        self.on_dtmf: Callable[[str, str, str], None] | None = None
        """Called with (kind ``"start"|"end"``, digit, source ``"rfc4733"|"inband"``)."""
        self._on_audio: Callable[[bytes], None] | None = None
        self.on_prompt_sent: Callable[[Prompt], None] | None = None
        """Called when the last frame of a prompt begun with :meth:`start_prompt` went out (the media worker's
        hook: ivr.rtp.worker); :meth:`play` waits for its own."""
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._stream = MediaStream(
            ssrc=secrets.randbits(32),  # RFC 3550 section 5.1: random SSRC, sequence number, timestamp
            sequence_number=secrets.randbits(16),
            timestamp=secrets.randbits(32),
            dtmf_bank=engine._dtmf,
        )
        self._stream.wants_audio = False  # until on_audio is set: no decoding for nobody
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._protocols: list[_RtpProtocol] = []
        self._waiters: dict[Prompt, asyncio.Future[None]] = {}
        self._errors = 0
        self._closed = False
        self._last_tick = -1.0
        """The nominal time of this session's last tick (its phase's)."""
        self._srtp: SrtpContext | None = None
        """The call's SRTP when its SDP negotiated it (:meth:`configure`)."""
        self._rtcp_due = time.monotonic() + rtcp.next_interval(engine.rtcp_interval)
        self._rtcp_from: tuple[str, int] | None = None
        """Where the caller's RTCP comes from (symmetric RTCP: ours goes there; else RTP port + 1)."""
        self._reception = rtcp.ReceptionState()
        self._sent_at_report = 0
        self._rtcp_sent = 0
        self._rtcp_garbage = 0
        self._rtcp_plain = 0
        self._log = _CallLog(log, {"call_id": call_id or "-"})

    # -- the API the SIP layer and the call engine use -------------------------------------------

    @property
    def on_audio(self) -> Callable[[bytes], None] | None:
        """Called with 20 ms of 16-bit LE PCM per tick once media flows (silence for gaps and DTMF).

        Without telephone-event the audio runs 80 ms behind the jitter buffer, so that the frames
        before the in-band detector's key-down can still be blanked."""
        return self._on_audio

    @on_audio.setter
    def on_audio(self, listener: Callable[[bytes], None] | None) -> None:
        self._on_audio = listener
        self._stream.wants_audio = listener is not None

    @property
    def srtp_keys(self) -> SrtpKeys | None:
        """The SDES keys in use, None for plain RTP."""
        return self._srtp.keys if self._srtp is not None else None

    @property
    def law(self) -> str:
        """``"ulaw"`` (PT 0) or ``"alaw"`` (PT 8), as negotiated in :meth:`configure`."""
        return self._stream.law

    @property
    def last_played(self) -> bytes:
        """The 20 ms frame sent at the latest tick, as 16-bit PCM: what may come back as echo."""
        frame = self._stream.last_frame
        return alaw_decode(frame) if self.law == "alaw" else ulaw_decode(frame)

    @property
    def last_frame(self) -> bytes:
        """The 160-byte G.711 frame sent at the latest tick (as :attr:`last_played`, not decoded)."""
        return self._stream.last_frame

    @property
    def last_received(self) -> float | None:
        """Loop time of the last accepted RTP packet (for the SIP layer's RTP inactivity timeout)."""
        return self._stream.last_received

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def comedia(self) -> bool:
        """Media from wherever the caller's first packet comes (ivr.rtp.media.MediaStream.comedia)."""
        return self._stream.comedia

    @comedia.setter
    def comedia(self, on: bool) -> None:
        self._stream.comedia = on

    def configure(
        self,
        *,
        remote: tuple[str, int] | None,
        payload_type: int,
        telephone_event_pt: int | None,
        ptime_ms: int = 20,
        send: bool = True,
        srtp: SrtpKeys | None = None,
    ) -> None:
        """Apply the SDP negotiation; call again on re-INVITE (hold, resume, media move). ``srtp``: the SDES
        keys when the answer took SRTP (kept while a re-INVITE keeps them), None for plain RTP."""
        if srtp is None:
            self._srtp = None
        elif self._srtp is None:
            self._srtp = SrtpContext(srtp)
        else:
            self._srtp.update(srtp)
        self._stream.configure(
            remote=remote,
            payload_type=payload_type,
            telephone_event_pt=telephone_event_pt,
            ptime_ms=ptime_ms,
            send=send,
        )
        self._log.debug(
            "rtp configured remote=%s pt=%s te=%s ptime=%s send=%s",
            remote,
            payload_type,
            telephone_event_pt,
            ptime_ms,
            send,
        )

    async def play(self, frames: Sequence[bytes]) -> None:
        """Send ready-encoded 160-byte frames in :attr:`law`, one per tick; return after the last.

        Cancelling stops the prompt at once: the next tick sends comfort silence. Raises
        :class:`SessionClosedError` if the session closes first, ``ValueError`` for a frame that
        is not 160 bytes. Concurrent calls queue (first come, first played). On hold the frames
        still pass one per tick, unsent, so a prompt never outlives its own length.
        """
        await self.start_play(frames)

    def start_play(self, frames: Sequence[bytes]) -> asyncio.Future[None]:
        """:meth:`play` as a future: the prompt starts before this returns (a coroutine would start at its
        task's first step, a loop turn later), the future is done after the last frame, and cancelling it
        stops the prompt."""
        prompt = self.start_prompt(frames)
        waiter: asyncio.Future[None] = self._loop.create_future()
        if prompt.done:  # empty, or a one-frame prompt that left at once
            waiter.set_result(None)
            return waiter
        self._waiters[prompt] = waiter
        waiter.add_done_callback(lambda done: self._play_ended(prompt, done))
        return waiter

    def _play_ended(self, prompt: Prompt, waiter: asyncio.Future[None]) -> None:
        self._waiters.pop(prompt, None)
        if waiter.cancelled():
            self._stream.cancel(prompt)

    def start_prompt(self, frames: Sequence[bytes]) -> Prompt:
        """Queue a prompt without waiting for it (:attr:`on_prompt_sent` tells its end): :meth:`play` for a caller
        that is not a coroutine, the media worker's command loop. A prompt after silence starts at once."""
        if self._closed:
            raise SessionClosedError(self.call_id)
        prompt = self._stream.play(frames)
        if not prompt.done:
            self._start_now()
        return prompt

    def cancel_prompt(self, prompt: Prompt) -> None:
        """Stop a prompt at once (the next tick sends comfort silence)."""
        self._stream.cancel(prompt)

    @property
    def stats(self) -> dict[str, int | float]:
        """Counters: sent, received, lost, late, duplicates, dtmf_events, rejected_source, and more."""
        out = self._stream.stats
        out["send_errors"] = self._errors
        out["srtp"] = self._srtp is not None
        out["srtp_failed"] = self._srtp.failed if self._srtp is not None else 0
        out["srtcp_failed"] = self._srtp.rtcp_failed if self._srtp is not None else 0
        out["rtcp_sent"] = self._rtcp_sent
        out["rtcp_garbage"] = self._rtcp_garbage
        out["rtcp_plain"] = self._rtcp_plain
        return out

    async def close(self) -> None:
        """Stop sending, fail waiting prompts, release the port pair (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._engine._remove(self)
        self._stream.close()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(SessionClosedError(self.call_id))
        for transport in (self._transport, self._rtcp_transport):
            if transport is not None:
                transport.close()
        try:
            async with asyncio.timeout(1.0):
                for protocol in self._protocols:
                    await protocol.lost  # the socket is closed on the loop's next turn: then the port is free
        except TimeoutError:
            self._log.warning("rtp socket close timed out port=%d", self.local_port)
        self._log.debug("rtp closed port=%d stats=%s", self.local_port, self.stats)
        # The session, its protocols and their transports hold each other: let go, so that refcounting frees
        # a call's media objects at once, not a full gc pass over every live call (in a media worker with 1,000
        # calls that pass held the tick ~60 ms: bench/README.md "Less Python per packet").
        self._transport = self._rtcp_transport = None
        self._protocols = []

    # -- engine side ---------------------------------------------------------------------------

    def _attach(
        self,
        transport: asyncio.DatagramTransport,
        rtcp: asyncio.DatagramTransport,
        protocols: list[_RtpProtocol],
    ) -> None:
        self._transport, self._rtcp_transport, self._protocols = transport, rtcp, protocols

    def _start_now(self) -> None:
        """A prompt that begins after silence leaves now, not at this session's next tick, and the session's
        tick moves to 20 ms after it (:meth:`MediaEngine._rephase`): the caller hears the answer to a key up
        to 20 ms sooner (bench/README.md, key → next prompt). Not within 2 ms of the next tick, nor when it
        is overdue (a busy loop): then the tick sends it."""
        elapsed = time.monotonic() - self._last_tick
        if not 0.0 <= elapsed <= FRAME_SECONDS - EARLY_START_MIN or self._transport is None:
            return
        stream = self._stream
        datagram = stream.start_now(elapsed)
        if datagram is None:
            return
        now = self._last_tick + elapsed
        self._send(datagram)
        self._engine._packets_sent += 1
        next_tick = self._engine._rephase(self, now)
        stream.lead -= next_tick - (now + FRAME_SECONDS)  # the tick lands on the phase grid, ±2.5 ms
        self._last_tick = next_tick - FRAME_SECONDS
        if stream.events:
            self._dispatch()

    def _send(self, datagram: bytes) -> None:
        """One RTP packet to the stream's remote (known: the stream only makes packets for one), through SRTP
        when the call negotiated it."""
        assert self._transport is not None and self._stream.remote is not None
        self._transport.sendto(self._srtp.protect(datagram) if self._srtp else datagram, self._stream.remote)

    def _tick(self, now: float) -> int:
        """One 20 ms step; returns the number of packets sent (0 or 1)."""
        if self._closed:
            return 0
        self._last_tick = now
        stream = self._stream
        datagram = stream.tick(now)
        sent = 0
        if datagram is not None and self._transport is not None and stream.remote is not None:
            self._send(datagram)
            sent = 1
        if stream.events:
            self._dispatch()
        if now >= self._rtcp_due:
            self._send_rtcp(now)
        return sent

    def _send_rtcp(self, now: float) -> None:
        """Our report (RFC 3550 section 6.4: SR if we sent since the last one, else RR; our view of the caller's
        stream as its block; SDES CNAME), through SRTCP when the call has SRTP. Also while on hold."""
        self._rtcp_due = now + rtcp.next_interval(self._engine.rtcp_interval)
        stream, transport = self._stream, self._rtcp_transport
        if transport is None or stream.remote is None:
            return
        sender = None
        if stream.sent > self._sent_at_report:
            sender = rtcp.SenderInfo(time.time(), stream.rtp_clock, stream.sent, stream.octets)
            self._sent_at_report = stream.sent
        block = None
        highest = stream.jitter.highest_sequence
        if stream.remote_ssrc is not None and highest is not None:
            block = self._reception.block(stream.remote_ssrc, received=stream.jitter.stats.received,
                                          lost=stream.jitter.stats.lost, highest_sequence=highest,
                                          jitter_seconds=stream.jitter.jitter, clock_rate=8000, now=now)
        packet = rtcp.build_report(stream.ssrc, self._engine.cname, sender=sender, reception=block)
        if self._srtp is not None:
            packet = self._srtp.protect_rtcp(packet)
        destination = self._rtcp_from or (stream.remote[0], stream.remote[1] + 1)
        transport.sendto(packet, destination)
        self._rtcp_sent += 1

    def _rtcp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """The caller's report: authenticated when the call has SRTP (a failure is dropped, logged once),
        parsed for its SR time (our next block's LSR); from the RTP peer's host it also says where ours go."""
        stream = self._stream
        stream.rtcp += 1
        if self._srtp is not None:
            if _plain_rtcp(data):  # RFC 3711 section 3.4: not SRTCP, dropped (baresip's first APP, its last BYE)
                self._rtcp_plain += 1
                return
            plain = self._srtp.unprotect_rtcp(data)
            if plain is None:
                if self._srtp.rtcp_failed == 1:
                    self._log.warning("srtcp packets from %s:%d fail authentication: dropped (%s)", *addr[:2],
                                      self._srtp.rtcp_error)
                return
            data = plain
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError:
            self._rtcp_garbage += 1
            return
        now = time.monotonic()
        for packet in packets:
            if packet.ntp_middle is not None:
                self._reception.sender_report_received(packet.ntp_middle, now)
        if stream.remote is not None and addr[0] == stream.remote[0]:
            self._rtcp_from = (addr[0], addr[1])

    def _finish_inband(self) -> None:
        """After the engine ran the shared DTMF bank: this tick's in-band events and delayed audio."""
        if self._closed:
            return
        stream = self._stream
        stream.finish_inband()
        if stream.events:
            self._dispatch()

    def _datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        stream = self._stream
        if self._srtp is not None:
            plain = self._srtp.unprotect(data)
            if plain is None:
                if self._srtp.failed == 1:
                    self._log.warning("srtp packets from %s:%d fail authentication: dropped, the caller is not heard"
                                      " (its key is not the one its SDP gave, or it sends plain RTP)", *addr[:2])
                return
            data = plain
        stream.datagram_received(data, addr, time.monotonic())
        if stream.events:
            self._dispatch()  # DTMF at once: a key-down is the barge-in signal

    def _dispatch(self) -> None:
        events = self._stream.events
        while events:
            ev = events.popleft()
            try:
                if isinstance(ev, AudioReceived):
                    if self.on_audio is not None:
                        self.on_audio(ev.pcm)
                elif isinstance(ev, DtmfReceived):
                    self._log.debug("dtmf %s source=%s", ev.kind, ev.source)  # no digit: it may be a PIN
                    if self.on_dtmf is not None:
                        self.on_dtmf(ev.kind, ev.digit, ev.source)
                elif isinstance(ev, PromptSent):
                    waiter = self._waiters.get(ev.prompt)
                    if waiter is not None:
                        if not waiter.done():
                            waiter.set_result(None)
                    elif self.on_prompt_sent is not None:
                        self.on_prompt_sent(ev.prompt)
                elif isinstance(ev, SourceRelatched):
                    self._log.info("rtp source moved from port %d to %d (the old one was quiet: NAT rebinding)",
                                   ev.old_port, ev.new_port)
            except Exception:
                # A listener's bug must not stop this call's media, let alone everyone else's.
                self._log.exception("rtp event listener failed")


class PortPairs:
    """The RTP port range as even/odd pairs (RTP on the even port, RTCP on the one above: RFC 3550 section 11),
    handed out round the range so that a just-freed pair is not reused at once (a late packet of the last call
    would land in the next one)."""

    def __init__(self, port_min: int, port_max: int) -> None:
        first = self._first = port_min + (port_min & 1)
        self._ports = list(range(first, port_max, 2))  # port + 1 must stay inside the range too
        if not self._ports:
            raise ValueError(f"RTP port range {port_min}-{port_max} holds no even/odd port pair")
        self._cursor = 0
        self._busy: set[int] = set()
        self._held: set[int] = set()

    def candidates(self) -> Iterator[int]:
        """Free pairs from the cursor on, each once; a pair another program holds is skipped by the caller."""
        n = len(self._ports)
        for k in range(n):
            index = (self._cursor + k) % n
            port = self._ports[index]
            if port not in self._busy and port not in self._held:
                yield port

    def hold(self, port: int) -> None:
        """Being bound (across an await): not offered to anyone else meanwhile."""
        self._held.add(port)

    def release(self, port: int) -> None:
        self._held.discard(port)

    def taken(self, port: int) -> None:
        self._busy.add(port)
        self._cursor = ((port - self._first) // 2 + 1) % len(self._ports)

    def free(self, port: int) -> None:
        self._busy.discard(port)


class MediaEngine:
    """One per daemon: allocates RTP sockets from a port range and runs ONE 20 ms media tick for all
    sessions, in :data:`PHASES` phases (no thread per call, no task-per-call timer drift)."""

    def __init__(self, host: str, port_min: int, port_max: int, *, phases: int = PHASES) -> None:
        if phases < 1:
            raise ValueError("phases must be >= 1")
        self._pairs = PortPairs(port_min, port_max)
        self.host = host
        self.port_min = port_min
        self.port_max = port_max
        self._sessions: dict[int, RtpSession] = {}
        self._phases = phases
        self._phase_of: dict[int, int] = {}
        """Phase of each session, by local port (balanced at open, kept for the session's life)."""
        self._active: list[tuple[RtpSession, ...]] = [() for _ in range(phases)]
        self._active_stale = False
        self._phase_sizes = [0] * phases
        """Sessions per phase (balanced at open)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: TickClock | None = None
        self._timer: asyncio.TimerHandle | None = None
        """The next tick's ``call_at``, where the system has no timerfd."""
        self._timerfd: PeriodicTimer | None = None
        """The tick's kernel timer (ivr.rtp.timerfd: uvloop's ``call_at`` is only as fine as a millisecond)."""
        self._lateness = np.zeros(_LATENESS_WINDOW)
        """The latest phase ticks' lateness, a ring (``_ticks_seen`` says where): :attr:`stats` takes its percentiles
        by partition, not a sort: a media worker reports them every second, and sorting a deque of them held its
        loop ~1.4 ms each time, one phase's packets late by that much (bench/README.md "Less Python per packet")."""
        self._ticks_seen = 0
        self._lateness_max = 0.0
        self.lateness = Buckets(LATENESS_BOUNDS)
        """Every phase tick's lateness since start, for the Prometheus histogram (one bisect per tick)."""
        self._ticks = 0
        self._packets_sent = 0
        self.rtcp_interval = rtcp.INTERVAL
        """Seconds between a call's RTCP reports, before the random factor (tests shorten it)."""
        self.cname = f"edge-ivr-{secrets.token_hex(6)}"
        """Our RTCP CNAME: random per start (RFC 7022), the same for every call's reports."""
        self._dtmf = DtmfBank()
        """The in-band DTMF detectors of every session without telephone-event: one numpy analysis per
        phase tick for all of that phase's sessions, after their packets are sent."""

    async def start(self) -> None:
        """Start the shared tick: phase tick n at t0 + n x 20 ms / phases, whatever earlier ticks cost; on a
        timerfd where there is one. The tick and the sessions keep ``time.monotonic()``, not ``loop.time()``
        (uvloop's is the same clock cut to the millisecond)."""
        if self._running:
            return
        self._loop = loop = asyncio.get_running_loop()
        self._clock = clock = TickClock(time.monotonic(), FRAME_SECONDS / self._phases, MAX_BURST * self._phases)
        self._timerfd = open_periodic(clock.deadline, clock.period)
        if self._timerfd is not None:
            loop.add_reader(self._timerfd.fd, self._on_timerfd)
        else:
            self._timer = loop.call_at(clock.deadline, self._on_tick)

    async def open_session(self, *, call_id: str = "", beside: RtpSession | None = None) -> RtpSession:
        """Bind the next free even port (and port + 1 for RTCP); raises :class:`PortsExhaustedError`. ``beside``
        (the session this one will be bridged with) matters only to the media workers' engine: here every
        session is on the one loop."""
        if self._loop is None or not self._running:
            raise RuntimeError("MediaEngine.start() must run before open_session()")
        for port in self._pairs.candidates():
            self._pairs.hold(port)
            try:
                session = await self._bind(port, call_id)
            finally:
                self._pairs.release(port)
            if session is None:
                continue
            self._pairs.taken(port)
            self._register(session)
            return session
        raise PortsExhaustedError(self.host, self.port_min, self.port_max)

    async def adopt_session(self, rtp_sock: socket.socket, rtcp_sock: socket.socket, *,
                            call_id: str = "") -> RtpSession:
        """A session on a socket pair bound elsewhere (the daemon, for its media worker: ivr.rtp.worker)."""
        assert self._loop is not None
        port = rtp_sock.getsockname()[1]
        session = RtpSession(self, port, call_id)
        rtp_protocol, rtcp_protocol = _RtpProtocol(session), _RtcpProtocol(session)
        rtp, _ = await self._loop.create_datagram_endpoint(lambda: rtp_protocol, sock=rtp_sock)
        rtcp, _ = await self._loop.create_datagram_endpoint(lambda: rtcp_protocol, sock=rtcp_sock)
        session._attach(rtp, rtcp, [rtp_protocol, rtcp_protocol])
        self._register(session)
        return session

    def _register(self, session: RtpSession) -> None:
        port = session.local_port
        self._sessions[port] = session
        sizes = self._phase_sizes
        phase = sizes.index(min(sizes))
        self._phase_of[port] = phase
        sizes[phase] += 1
        self._refresh_active()

    async def _bind(self, port: int, call_id: str) -> RtpSession | None:
        assert self._loop is not None
        session = RtpSession(self, port, call_id)
        rtp_protocol = _RtpProtocol(session)
        rtcp_protocol = _RtcpProtocol(session)
        try:
            rtp, _ = await self._loop.create_datagram_endpoint(lambda: rtp_protocol, local_addr=(self.host, port))
        except OSError:
            return None  # taken by another program: try the next pair
        try:
            rtcp, _ = await self._loop.create_datagram_endpoint(lambda: rtcp_protocol, local_addr=(self.host, port + 1))
        except OSError:
            rtp.close()
            await rtp_protocol.lost
            return None
        session._attach(rtp, rtcp, [rtp_protocol, rtcp_protocol])
        return session

    def _rephase(self, session: RtpSession, now: float) -> float:
        """Move a session that just sent off its tick (a prompt started at once) to the phase whose tick
        comes nearest 20 ms later, so its next packet keeps the 20 ms pace; returns that tick's time."""
        clock = self._clock
        assert clock is not None
        n = max(round((now + FRAME_SECONDS - clock.start) / clock.period), clock.next_index)
        phase = n % self._phases
        old = self._phase_of.get(session.local_port, phase)
        if old != phase:
            self._phase_of[session.local_port] = phase
            self._phase_sizes[old] -= 1
            self._phase_sizes[phase] += 1
            self._refresh_active()
        return clock.start + n * clock.period

    def _remove(self, session: RtpSession) -> None:
        if self._sessions.get(session.local_port) is session:
            del self._sessions[session.local_port]
            self._pairs.free(session.local_port)
            self._phase_sizes[self._phase_of.pop(session.local_port)] -= 1
            self._refresh_active()

    def _refresh_active(self) -> None:
        """The phase groups are rebuilt at the next phase tick, once however many sessions opened, closed or
        moved meanwhile: rebuilding at each (O(calls)) made a burst of prompt starts O(calls²) in one turn."""
        self._active_stale = True

    def _rebuild_active(self) -> None:
        self._active_stale = False
        groups: list[list[RtpSession]] = [[] for _ in range(self._phases)]
        for port, session in self._sessions.items():
            groups[self._phase_of[port]].append(session)
        self._active = [tuple(g) for g in groups]

    async def stop(self) -> None:
        """Close every session and stop the tick."""
        for session in list(self._sessions.values()):
            await session.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timerfd is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._timerfd.fd)
            self._timerfd.close()
            self._timerfd = None

    @property
    def _running(self) -> bool:
        """Started and not stopped: the tick has its timerfd or its next ``call_at``."""
        return self._timerfd is not None or self._timer is not None

    def _on_timerfd(self) -> None:
        assert self._timerfd is not None
        if self._timerfd.read():  # 0: woken for nothing (the kernel timer has not expired since the last read)
            self._on_tick()

    def _on_tick(self) -> None:
        loop, clock = self._loop, self._clock
        assert loop is not None and clock is not None
        times, lateness = clock.advance(time.monotonic())
        self._lateness[self._ticks_seen % _LATENESS_WINDOW] = lateness
        self._ticks_seen += 1
        self.lateness.observe(lateness)
        if lateness > self._lateness_max:
            self._lateness_max = lateness
        sent = 0
        phases, period, start = self._phases, clock.period, clock.start
        for now in times:
            phase = round((now - start) / period) % phases
            if phase == 0:
                self._ticks += 1
            if self._active_stale:
                self._rebuild_active()
            waiting = []
            for session in self._active[phase]:
                try:
                    sent += session._tick(now)
                    if session._stream.inband_waiting:
                        waiting.append(session)
                except Exception:
                    session._log.exception("rtp tick failed")
            if waiting:
                try:
                    self._dtmf.run()
                except Exception:
                    log.exception("in-band DTMF analysis failed")  # each stream retries its frame alone
                for session in waiting:
                    try:
                        session._finish_inband()
                    except Exception:
                        session._log.exception("rtp tick failed")
        self._packets_sent += sent
        if self._timerfd is None:
            self._timer = loop.call_at(clock.deadline, self._on_tick)

    @property
    def stats(self) -> dict[str, int | float]:
        """sessions, 20 ms ticks, phase ticks skipped, phase tick lateness p50/p99/max in ms (recent
        window; max since start), packets sent."""
        window = self._lateness[:min(self._ticks_seen, _LATENESS_WINDOW)]
        p50 = p99 = 0.0
        if len(window):
            ranks = [min(int(q * len(window)), len(window) - 1) for q in (0.50, 0.99)]
            p50, p99 = (round(1000 * float(v), 3) for v in np.partition(window, ranks)[ranks])
        return {
            "sessions": len(self._sessions),
            "ticks": self._ticks,
            "ticks_skipped": self._clock.skipped if self._clock is not None else 0,
            "tick_lateness_p50_ms": p50,
            "tick_lateness_p99_ms": p99,
            "tick_lateness_max_ms": round(1000 * self._lateness_max, 3),
            "packets_sent": self._packets_sent,
        }
