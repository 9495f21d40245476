"""The sans-I/O media core of one RTP session, and the shared 20 ms tick clock.

Nothing here touches a socket or reads a clock: datagrams and "now" are passed in, and what a
tick produces is returned (the datagram to send) or queued in :attr:`MediaStream.events` (DTMF,
decoded audio, finished prompts). :mod:`ivr.rtp.session` is the asyncio adapter around it.

Send side: one packet per tick (per ``ptime``), comfort silence between prompts so RTP never
stops, sequence number +1 per packet and timestamp +160 per 20 ms frame (RFC 3550 section 5.1),
the marker on the first packet of each prompt (RFC 3551 section 4.1: first packet of a talkspurt).
Receive side: symmetric RTP latching, RFC 5761 RTCP demux, the jitter buffer, RFC 4733
telephone-events, or the in-band Goertzel detector when telephone-event was not negotiated.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ivr.proto import g711
from ivr.proto.dtmf import (
    DtmfBank,
    DtmfDetector,
    DtmfEvent,
    DtmfEventKind,
    TelephoneEventError,
    TelephoneEventReceiver,
)
from ivr.rtp.jitter import Gap, JitterBuffer
from ivr.rtp.packet import RtpPacket, RtpParseError, parse_rtp

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "AudioReceived",
    "DtmfReceived",
    "MediaEvent",
    "MediaStream",
    "Prompt",
    "PromptSent",
    "TickClock",
]

FRAME_SECONDS = 0.020
FRAME_SAMPLES = 160
"""8 kHz x 20 ms: one G.711 frame, one tick."""
FRAME_BYTES = FRAME_SAMPLES
"""G.711 is one byte per sample."""
PCM_SILENCE = bytes(2 * FRAME_SAMPLES)
"""One 20 ms frame of 16-bit linear silence, what on_audio gets for gaps and DTMF."""

_HEADER = struct.Struct("!BBHII")
_V2 = 0x80
"""First header octet: version 2, no padding, no extension, no CSRC (RFC 3550 section 5.1)."""
_LAWS = {0: "ulaw", 8: "alaw"}
"""RFC 3551 section 6 table 4: static payload types PCMU = 0, PCMA = 8."""
_SILENCE = {"ulaw": bytes([g711.ULAW_SILENCE]) * FRAME_BYTES, "alaw": bytes([g711.ALAW_SILENCE]) * FRAME_BYTES}
_DECODE = {"ulaw": g711.ulaw_decode, "alaw": g711.alaw_decode}
_RELATCH_AFTER = 1.0
"""Seconds of quiet from the latched port after which another port of the peer may take over (a NAT
rebinding). Until then packets from any other port are dropped (``rejected_source``): neither their audio
nor their RFC 4733 digits reach the call."""
_INBAND_DELAY = 4
"""Frames held back from on_audio while the in-band detector listens: it reports a key-down at most
two frames after the tone starts (measured), so 4 frames (80 ms) keep every tone frame from ASR."""
_STALE_SOURCE_WINDOW = 0.5
"""Seconds after an SSRC change (a PBX transfer) during which late packets of the SSRC it replaced are
stragglers to drop, not a switch back; later, the old SSRC coming back is a new change again."""
_DTMF_GUARD = FRAME_SAMPLES
"""Audio overlapping an RFC 4733 event widened by this many samples each side is blanked (a phone
may send the tone in its audio too): with aligned frames, one frame before and one after."""


def _positive(delta: int) -> bool:
    """Whether an RTP timestamp difference is > 0, modulo 2**32 (RFC 3550 section 5.1 wrap)."""
    d = delta & 0xFFFFFFFF
    return 0 < d < 0x80000000


class TickClock:
    """Absolute tick schedule: tick n is due at ``start + n * period``, so lateness never accumulates.

    A late caller gets every tick that is due, but at most ``max_burst`` of them: older ones are
    skipped (their time is lost, counted in ``skipped``) instead of being sent in a burst.
    """

    def __init__(self, start: float, period: float = FRAME_SECONDS, max_burst: int = 3) -> None:
        if period <= 0 or max_burst < 1:
            raise ValueError("need period > 0 and max_burst >= 1")
        self.start = start
        self.period = period
        self.max_burst = max_burst
        self.next_index = 0
        """Index of the next tick to run."""
        self.skipped = 0
        """Ticks dropped because the caller was too late to run them without bursting."""

    @property
    def deadline(self) -> float:
        """When the next tick is due."""
        return self.start + self.next_index * self.period

    def advance(self, now: float) -> tuple[list[float], float]:
        """The nominal times of the ticks to run now (oldest first), and how late the first due one is."""
        lateness = now - self.deadline
        last_due = math.floor((now - self.start) / self.period + 1e-9)
        behind = max(last_due - self.next_index + 1, 1)  # at least one: call_at may fire a hair early
        if behind > self.max_burst:
            self.skipped += behind - self.max_burst
            self.next_index += behind - self.max_burst
            behind = self.max_burst
        times = [self.start + (self.next_index + k) * self.period for k in range(behind)]
        self.next_index += behind
        return times, max(lateness, 0.0)


@dataclass(eq=False, slots=True)
class Prompt:
    """One play() request: frames go out one per tick; ``done`` once the last one was sent."""

    frames: Sequence[bytes]
    index: int = 0
    done: bool = False
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    kind: str
    """``"start"`` (a key went down: barge in) or ``"end"`` (the digit to count, once)."""
    digit: str
    source: str
    """``"rfc4733"`` or ``"inband"``."""


@dataclass(frozen=True, slots=True)
class AudioReceived:
    pcm: bytes
    """20 ms of 16-bit little-endian PCM in playout order; silence for gaps and while DTMF sounds."""


@dataclass(frozen=True, slots=True)
class PromptSent:
    prompt: Prompt


@dataclass(frozen=True, slots=True)
class SourceRelatched:
    """The latched source went quiet and another port of the peer's address took over (a NAT rebinding)."""

    old_port: int
    new_port: int


MediaEvent = DtmfReceived | AudioReceived | PromptSent | SourceRelatched


def _normalize_ip(host: str) -> str:
    """Canonical text of an IP address (IPv4-mapped IPv6 unwrapped); other strings unchanged."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def law_of(payload_type: int, telephone_event_pt: int | None) -> str:
    """The G.711 law of a negotiated payload type; ValueError for one that is not G.711, or for a
    telephone-event type that cannot be told from it."""
    law = _LAWS.get(payload_type)
    if law is None:
        raise ValueError(f"payload type {payload_type} is not G.711 (0 = PCMU, 8 = PCMA)")
    if telephone_event_pt is not None and (not 0 <= telephone_event_pt <= 127 or telephone_event_pt == payload_type):
        # Dynamic (96..127) in practice; anything else that is not the audio type is tolerated.
        raise ValueError(f"telephone-event payload type {telephone_event_pt} is unusable")
    return law


def _is_unspecified(host: str) -> bool:
    """RFC 3264 section 8.4 (and RFC 2543 style hold): c=0.0.0.0 means "do not send to me"."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


@dataclass(slots=True)
class _Held:
    pcm: bytes
    blank: bool


@dataclass(slots=True)
class _Span:
    start: int
    end: int | None


class MediaStream:
    """Send and receive state of one RTP session; feed it datagrams and ticks, read what it queued."""
    # Attributes in the object, not in a dict: the media tick reads them for every call every 20 ms, mostly
    # from a cold cache (bench/README.md, "Less Python per packet").
    __slots__ = (
        "ssrc", "_seq", "_ts", "law", "payload_type", "telephone_event_pt", "_silence", "last_frame", "_decode",
        "frames_per_packet", "sending", "remote", "_signalled", "_peer_ip", "comedia", "_latched", "_latched_port",
        "_latched_seen", "relatched", "_marker_next", "lead", "_talking", "early_starts", "_pending", "_pending_ts",
        "_pending_done", "_prompts", "events", "wants_audio", "closed", "jitter", "_te_receiver", "_dtmf_bank",
        "_detector", "_inband_frame", "_inband_active", "_delay", "_dtmf_spans", "_playing", "last_received", "sent",
        "octets", "received", "rejected_source", "garbage", "rtcp", "other_payload", "dtmf_events", "stale_source",
        "_ssrc", "_previous_ssrc", "_ssrc_changed_at"
    )

    def __init__(
        self, *, ssrc: int, sequence_number: int, timestamp: int, dtmf_bank: DtmfBank | None = None
    ) -> None:
        """``dtmf_bank``: analyse in-band DTMF together with the bank's other streams. Then a tick only
        queues the received frame (:attr:`inband_waiting`); the owner runs the bank once for all its
        streams and calls :meth:`finish_inband` on each. Without one, the tick analyses it at once."""
        self.ssrc = ssrc & 0xFFFFFFFF
        self._seq = sequence_number & 0xFFFF
        self._ts = timestamp & 0xFFFFFFFF
        self.law = "ulaw"
        self.payload_type = 0
        self.telephone_event_pt: int | None = None
        self._silence = _SILENCE["ulaw"]
        self.last_frame: bytes = self._silence
        self._decode = _DECODE["ulaw"]
        self.frames_per_packet = 1
        self.sending = False
        """Whether the negotiated direction lets us send (the caller's ``send`` flag)."""
        self.remote: tuple[str, int] | None = None
        """Where packets go: the signalled address, or the port latched from the peer."""
        self._signalled: tuple[str, int] | None = None
        self._peer_ip: str | None = None
        """Media is accepted only from this address (RTP, any port)."""
        self.comedia = False
        """Take the caller's media from wherever its first packet comes (Asterisk's ``nat=comedia``): for a
        phone behind NAT, whose SDP names a private address, or a softphone that names another interface.
        Until then any address is heard; after it, only that address and port."""
        self._latched = False
        self._latched_port: int | None = None
        self._latched_seen = 0.0
        self.relatched = 0
        """Times another port took over after the latched one went quiet (SourceRelatched events)."""
        self._marker_next = False
        self.lead = 0.0
        self._talking = False
        """The last tick sent a prompt's frame (not silence): a prompt queued now follows at the next tick."""
        """Seconds the packets' timestamps run ahead of (> 0) or behind the clock they leave by, from prompts
        started between ticks (:meth:`start_now`) and the tick moves after them; a silence tick pays a frame of
        it back (left out, or its timestamp skipped), so it stays within a frame."""
        self.early_starts = 0
        self._pending: list[bytes] = []
        self._pending_ts = 0
        self._pending_done: list[Prompt] = []
        self._prompts: deque[Prompt] = deque()
        self.events: deque[MediaEvent] = deque()
        """Outputs for the adapter, oldest first."""
        self.wants_audio = True
        """Whether AudioReceived events are wanted (decoding is skipped when nobody listens)."""
        self.closed = False
        # receive side
        self.jitter = JitterBuffer()
        self._te_receiver = TelephoneEventReceiver()
        self._dtmf_bank = dtmf_bank
        self._detector: DtmfDetector | None = None
        self._inband_frame: bytes | None = None
        """The frame pushed to the shared bank and not yet finished (:meth:`finish_inband`)."""
        self._inband_active = False
        self._delay: deque[_Held] = deque()
        self._dtmf_spans: deque[_Span] = deque(maxlen=4)
        """RFC 4733 events as [start timestamp, end timestamp or None while the key is down]."""
        self._playing = False
        self.last_received: float | None = None
        self.sent = 0
        self.octets = 0
        """Payload octets sent (an RTCP sender report's count)."""
        self.received = 0
        self.rejected_source = 0
        self.garbage = 0
        self.rtcp = 0
        self.other_payload = 0
        self.dtmf_events = 0
        self.stale_source = 0
        self._ssrc: int | None = None
        self._previous_ssrc: int | None = None
        self._ssrc_changed_at = 0.0

    # -- negotiation ---------------------------------------------------------------------------

    def configure(
        self,
        *,
        remote: tuple[str, int] | None,
        payload_type: int,
        telephone_event_pt: int | None,
        ptime_ms: int = 20,
        send: bool = True,
    ) -> None:
        """Apply an SDP offer/answer; may be called again mid-call (hold, resume, media move).

        ``ptime_ms`` multiples of 20 up to 200 pack that many frames per packet; anything else sends 20 ms
        (a=ptime is only a preference, RFC 4566 section 6).
        """
        law = law_of(payload_type, telephone_event_pt)
        self.law, self.payload_type = law, payload_type
        self._silence = _SILENCE[law]
        self._decode = _DECODE[law]
        self.telephone_event_pt = telephone_event_pt
        # In-band detection only without telephone-event (RFC 4733 section 2.6 would otherwise
        # report every key twice, and the tones are not meant to be in the audio then).
        if telephone_event_pt is not None:
            if self._detector is not None:
                self.finish_inband()
                self._detector.close()
            self._detector = None
            self._inband_active = False
        elif self._detector is None:
            bank = self._dtmf_bank
            self._detector = bank.open() if bank is not None else DtmfDetector()
        fpp = ptime_ms // 20 if 20 <= ptime_ms <= 200 and ptime_ms % 20 == 0 else 1  # as sip.sdp.sendable_ptime
        if fpp != self.frames_per_packet:
            self._flush_unsent()
            self.frames_per_packet = fpp
        was_sending = self.sending and self.remote is not None
        if remote is None or remote[1] == 0 or _is_unspecified(remote[0]):
            # Hold (c=0.0.0.0) or a disabled stream: send nothing, keep accepting from the known peer.
            self.sending = False
        else:
            target = (_normalize_ip(remote[0]), remote[1])
            if target != self._signalled:
                # First answer, or a re-INVITE moving the media: send there and latch afresh.
                self._signalled = target
                self._peer_ip = target[0]
                self.remote = target
                self._latched = False
                self._latched_port = None
            self.sending = send
        if self.sending and not was_sending and self.sent:
            self._marker_next = True  # resuming after a pause in sending starts a talkspurt

    # -- sending -------------------------------------------------------------------------------

    def play(self, frames: Sequence[bytes]) -> Prompt:
        """Queue a prompt of ready-encoded 160-byte frames in :attr:`law`."""
        for i, frame in enumerate(frames):
            if len(frame) != FRAME_BYTES:
                raise ValueError(f"frame {i} is {len(frame)} bytes, G.711 20 ms frames are {FRAME_BYTES}")
        prompt = Prompt(frames)
        if not frames:
            prompt.done = True
        else:
            self._prompts.append(prompt)
        return prompt

    def cancel(self, prompt: Prompt) -> None:
        """Stop a prompt at once: its remaining frames are never sent."""
        prompt.cancelled = True
        try:
            self._prompts.remove(prompt)
        except ValueError:
            pass

    def start_now(self, elapsed: float) -> bytes | None:
        """Send a prompt that begins after silence now, ``elapsed`` s after the last tick, instead of at the
        next tick: the caller hears the answer to a key up to 20 ms sooner (the owner then moves the stream's
        tick to 20 ms after now). Its timestamp stays contiguous with the silence before it, as a sender that
        predicts timestamps does (Asterisk's within 80 ms), so the stream now leads the clock by a frame less
        ``elapsed`` (:attr:`lead`). None, nothing sent, unless the prompt just queued is the only one and not
        begun, and the stream sends 20 ms packets."""
        prompts = self._prompts
        if (len(prompts) != 1 or prompts[0].index != 0 or not self.sending or self.remote is None
                or self.frames_per_packet != 1 or self._pending or self._talking):
            return None  # a prompt right after another one goes on at the tick: two packets in one 20 ms
            # would put the stream a frame ahead for every prompt
        self.lead += FRAME_SECONDS - elapsed
        self.early_starts += 1
        return self._send_tick()

    def tick(self, now: float) -> bytes | None:
        """Run one 20 ms tick: returns the datagram to send to :attr:`remote`, if any.

        Also plays one received frame out of the jitter buffer and handles DTMF timers.
        """
        datagram = self._send_tick()
        self._receive_tick(now)
        return datagram

    def _send_tick(self) -> bytes | None:
        marker = False
        if not self._prompts and abs(self.lead) >= FRAME_SECONDS and self.frames_per_packet == 1:
            # Silence pays the lead back: a frame left out (timestamp held) or skipped (timestamp jumps on,
            # a new talkspurt). The caller hears silence either way; the jitter buffer sees ±20 ms once.
            self.last_frame = self._silence
            if self.lead > 0:
                self.lead -= FRAME_SECONDS
                return None
            self.lead += FRAME_SECONDS
            self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
            self._marker_next = True
        self._talking = bool(self._prompts)
        if self._prompts:
            prompt = self._prompts[0]
            frame = prompt.frames[prompt.index]
            marker = prompt.index == 0
            prompt.index += 1
            if prompt.index == len(prompt.frames):
                self._prompts.popleft()
                prompt.done = True
                self._pending_done.append(prompt)
        else:
            frame = self._silence
        self.last_frame = frame  # what the caller hears now: the echo canceller of the voice detector
        ts = self._ts
        self._ts = (ts + FRAME_SAMPLES) & 0xFFFFFFFF  # the media clock runs on during hold too
        if not self.sending or self.remote is None:
            self._marker_next = self.sent > 0  # the first packet after a pause starts a talkspurt
            self._flush_unsent()
            return None
        if self.frames_per_packet == 1:
            payload = frame
        else:
            if not self._pending:
                self._pending_ts = ts
            self._pending.append(frame)
            self._marker_next = self._marker_next or marker
            if len(self._pending) < self.frames_per_packet:
                return None
            payload = b"".join(self._pending)
            ts = self._pending_ts
            self._pending.clear()
        b1 = self.payload_type
        if marker or self._marker_next:
            b1 |= 0x80
            self._marker_next = False
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        self.sent += 1
        self.octets += len(payload)
        if self._pending_done:
            self._finish_prompts()
        return _HEADER.pack(_V2, b1, seq, ts, self.ssrc) + payload

    def _flush_unsent(self) -> None:
        """Frames held for a longer ptime are dropped when sending stops; their prompts still finish."""
        self._pending.clear()
        if self._pending_done:
            self._finish_prompts()

    def _finish_prompts(self) -> None:
        for prompt in self._pending_done:
            self.events.append(PromptSent(prompt))
        self._pending_done.clear()

    def close(self) -> list[Prompt]:
        """Stop; returns the prompts that were still waiting to be sent."""
        self.closed = True
        if self._detector is not None:
            self._detector.close()  # its place in a shared bank goes to the next call
            self._detector = None
            self._inband_frame = None
        unfinished = [*self._prompts]
        self._prompts.clear()
        self._pending_done.clear()
        return unfinished

    # -- receiving -----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """Handle one datagram from ``addr``; malformed ones are counted, never raised."""
        ip = addr[0]
        if ip != self._peer_ip and _normalize_ip(ip) != self._peer_ip:
            if not (self.comedia and not self._latched and self._signalled is not None):
                self.rejected_source += 1
                return
            self._peer_ip = _normalize_ip(ip)  # comedia: the first packet names the peer's address
        if len(data) >= 2 and 192 <= data[1] <= 223:
            self.rtcp += 1  # RFC 5761 section 4: RTCP on the RTP port; accepted and ignored
            return
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            self.garbage += 1
            return
        port = addr[1]
        # One latching rule (docs/sip.md "Media sources"): from the negotiated address, the first packet
        # latches its port, for sending (symmetric RTP, RFC 4961: what NAT'd phones need) and receiving;
        # then only that port is heard, until it has been quiet for _RELATCH_AFTER (a NAT rebinding).
        if not self._latched or self._latched_port is None:
            self._latch(port, now, first=True)
        elif port != self._latched_port:
            if now - self._latched_seen <= _RELATCH_AFTER:
                self.rejected_source += 1
                return
            self._latch(port, now, first=False)
        self._latched_seen = now
        if not self._from_current_source(packet.ssrc, now):
            self.stale_source += 1
            return
        pt = packet.payload_type
        if pt == self.telephone_event_pt:
            if not self._telephone_event(packet, now):
                self.garbage += 1
                return
        elif pt != self.payload_type:
            self.other_payload += 1  # e.g. comfort noise we never offered: its slot plays as a gap
            return
        else:
            self.jitter.push(packet, now)
        self.received += 1
        self.last_received = now

    def _latch(self, port: int, now: float, *, first: bool) -> None:
        if not first:
            self.relatched += 1
            self.events.append(SourceRelatched(self._latched_port or 0, port))
        self._latched = True
        self._latched_port = port
        if self.remote is not None:
            self.remote = (self._peer_ip or self.remote[0], port)

    def _from_current_source(self, ssrc: int, now: float) -> bool:
        """Follow an SSRC change at once (RFC 3550 section 8.2: a new source), but drop what the old
        source still had in flight: fed to the jitter buffer, each straggler would switch its
        numbering back and forth, and the two streams would play interleaved."""
        if self._ssrc is None or ssrc == self._ssrc:
            self._ssrc = ssrc
            return True
        if ssrc == self._previous_ssrc and now - self._ssrc_changed_at < _STALE_SOURCE_WINDOW:
            return False
        self._previous_ssrc, self._ssrc, self._ssrc_changed_at = self._ssrc, ssrc, now
        return True

    def _telephone_event(self, packet: RtpPacket, now: float) -> bool:
        try:
            events = self._te_receiver.receive(packet.payload, packet.timestamp, now, marker=packet.marker)
        except TelephoneEventError:
            return False
        self._rfc4733_events(events)
        # Keep the event's slot in the playout sequence (it plays as silence), stamped at the time
        # it covers so the jitter estimate is not disturbed by the constant event timestamp.
        duration = int.from_bytes(packet.payload[2:4], "big")
        ts = (packet.timestamp + max(duration - FRAME_SAMPLES, 0)) & 0xFFFFFFFF
        self.jitter.push(
            RtpPacket(packet.payload_type, packet.sequence_number, ts, packet.ssrc, b""),
            now,
        )
        return True

    def _rfc4733_events(self, events: list[DtmfEvent]) -> None:
        for ev in events:
            if ev.kind is DtmfEventKind.START:
                self._dtmf_spans.append(_Span(ev.timestamp, None))
            else:
                end = (ev.timestamp + ev.duration) & 0xFFFFFFFF
                for span in self._dtmf_spans:
                    if span.start == ev.timestamp:
                        span.end = end
                        break
                else:
                    self._dtmf_spans.append(_Span(ev.timestamp, end))
                self.dtmf_events += 1
            self.events.append(DtmfReceived(ev.kind.value, ev.digit, "rfc4733"))

    def _in_dtmf_span(self, ts: int) -> bool:
        # The frame covers [ts, ts + 160): blank it if that overlaps [start - guard, end + guard).
        for span in self._dtmf_spans:
            if _positive(ts + FRAME_SAMPLES + _DTMF_GUARD - span.start) and (
                span.end is None or _positive(span.end + _DTMF_GUARD - ts)
            ):
                return True
        return False

    def _receive_tick(self, now: float) -> None:
        timer = self._te_receiver.get_timer()
        if timer is not None and now >= timer:
            self._rfc4733_events(self._te_receiver.handle_timer(now))  # all E packets were lost
        item = self.jitter.pop(now)
        if isinstance(item, Gap):
            if not self._playing:
                return  # nothing received yet: nothing to play
            if not self.wants_audio and self._detector is None:
                return
            pcm = PCM_SILENCE
        else:
            self._playing = True
            if not self.wants_audio and self._detector is None:
                return
            if item.payload_type != self.payload_type or (self._dtmf_spans and self._in_dtmf_span(item.timestamp)):
                pcm = PCM_SILENCE
            else:
                pcm = self._decode(item.payload)
        detector = self._detector
        if detector is None:
            self.events.append(AudioReceived(pcm))
            return
        if self._dtmf_bank is None:
            self._inband(pcm, detector.feed(pcm))
            return
        if self._inband_frame is not None:
            self.finish_inband()  # ticked again before the bank ran: the earlier frame is analysed alone
        detector.push(pcm)
        self._inband_frame = pcm

    @property
    def inband_waiting(self) -> bool:
        """A received frame waits for the shared DTMF bank's run, then :meth:`finish_inband`."""
        return self._inband_frame is not None

    def finish_inband(self) -> None:
        """After the shared bank's run: the waiting frame's DTMF events and its place in the audio delay
        (what the bank did not analyse is analysed now, for this stream alone)."""
        pcm, self._inband_frame = self._inband_frame, None
        if pcm is not None and self._detector is not None:
            self._inband(pcm, self._detector.flush())

    def _inband(self, pcm: bytes, events: list[DtmfEvent]) -> None:
        """In-band detection; audio waits ``_INBAND_DELAY`` frames so tone onsets can be blanked."""
        ended = False
        for ev in events:
            if ev.kind is DtmfEventKind.START:
                self._inband_active = True
                for held in self._delay:
                    held.blank = True
            else:
                self._inband_active = False
                ended = True
                self.dtmf_events += 1
            self.events.append(DtmfReceived(ev.kind.value, ev.digit, "inband"))
        self._delay.append(_Held(pcm, self._inband_active or ended))
        if len(self._delay) > _INBAND_DELAY:
            out = self._delay.popleft()
            if self.wants_audio:
                self.events.append(AudioReceived(PCM_SILENCE if out.blank else out.pcm))

    @property
    def remote_ssrc(self) -> int | None:
        """The SSRC of the stream we take from the caller (latched), for RTCP reception reports."""
        return self._ssrc

    @property
    def rtp_clock(self) -> int:
        """The RTP timestamp of the frame that starts now (a sender report pairs it with the wallclock)."""
        return self._ts

    @property
    def stats(self) -> dict[str, int | float]:
        js = self.jitter.stats
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": max(js.lost, 0),
            "late": js.late,
            "duplicates": js.duplicate,
            "dtmf_events": self.dtmf_events,
            "rejected_source": self.rejected_source,
            "garbage": self.garbage,
            "rtcp": self.rtcp,
            "other_payload": self.other_payload,
            "stale_source": self.stale_source,
            "discarded": js.discarded,
            "jitter_ms": round(self.jitter.jitter * 1000, 2),
            "early_starts": self.early_starts,
        }
