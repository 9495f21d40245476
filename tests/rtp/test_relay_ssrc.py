"""A PBX transfer seen from the media engine: the sender's SSRC, sequence number and timestamp base all
change mid-stream, through a UDP relay that loses, reorders, duplicates and delays packets (jitter),
with late packets of the old source arriving after the first ones of the new source.

DTMF sent by RFC 4733 before and after the switch must each be reported exactly once, and the audio
given to ``on_audio`` must stay in order, without duplicates, with the audio after the switch heard.
Every wait is bounded; nothing here asserts timing.
"""

from __future__ import annotations

import asyncio
import random
from typing import cast

from ivr.proto import g711
from ivr.proto.dtmf import telephone_event_frames
from ivr.rtp.media import PCM_SILENCE, MediaStream
from ivr.rtp.packet import RtpSender
from ivr.rtp.session import MediaEngine
from tests.rtp.udp_peer import Peer, wait_until

TE_PT = 101


class JitterRelay(asyncio.DatagramProtocol):
    """Forwards datagram k after ``delay[k]`` seconds (so later ones may overtake it), except those
    in ``drop``; those in ``dup`` go twice, the copy a little later."""

    def __init__(self, target: tuple[str, int], delay: list[float], drop: set[int], dup: set[int]) -> None:
        self.target, self.delay, self.drop, self.dup = target, delay, drop, dup
        self.index = 0
        self.forwarded = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[1] == self.target[1]:
            return  # the session's own media towards the peer: not needed here
        k = self.index
        self.index += 1
        if k in self.drop:
            return
        loop = asyncio.get_running_loop()
        wait = self.delay[k] if k < len(self.delay) else 0.0
        self.pending.append(loop.call_later(wait, self._forward, data))
        if k in self.dup:
            self.pending.append(loop.call_later(wait + 0.013, self._forward, data))

    def _forward(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, self.target)
            self.forwarded += 1

    def close(self) -> None:
        for handle in self.pending:
            handle.cancel()
        if self.transport is not None:
            self.transport.close()


def code_of(frame: bytes) -> int:
    """Frames are one µ-law byte repeated: encoding the first decoded sample gives the byte back."""
    return g711.ulaw_encode(frame[:2])[0]


def labelled(codes: list[int]) -> list[bytes]:
    return [bytes([c]) * 160 for c in codes]


def talk(sender: RtpSender, codes: list[int]) -> list[bytes]:
    return [sender.send(frame, 160).serialize() for frame in labelled(codes)]


def key_press(sender: RtpSender, digit: str, duration: int = 960) -> list[bytes]:
    """One RFC 4733 key press (marker, updates, three E packets), then the clock skips over it."""
    event_ts = sender.timestamp
    out = [
        sender.send_at(ev.payload, event_ts, marker=ev.marker, payload_type=TE_PT).serialize()
        for ev in telephone_event_frames(digit, duration, end_repeats=3)
    ]
    sender.skip(duration + 160)
    return out


async def test_ssrc_switch_through_a_jittery_relay(engine: MediaEngine, peer: Peer) -> None:
    session = await engine.open_session(call_id="transfer")
    loop = asyncio.get_running_loop()

    # Before the transfer: the caller's phone, sequence numbers about to wrap.
    before = RtpSender(ssrc=0x1111_1111, payload_type=0, sequence_number=0xFFF0, timestamp=0x9000_0000)
    codes_a = list(range(0x10, 0x10 + 25)) + list(range(0x30, 0x30 + 20))
    datagrams = talk(before, codes_a[:25])
    datagrams += key_press(before, "4")
    datagrams += talk(before, codes_a[25:])
    switch = len(datagrams)
    # After the transfer: another source behind the PBX. New SSRC, sequence and timestamp bases
    # (the timestamps lower than the old ones, so "older" by RFC 3550 arithmetic), marker set.
    after = RtpSender(ssrc=0x2222_2222, payload_type=0, sequence_number=1234, timestamp=0x1000_0000)
    after.start_talkspurt()
    codes_b = list(range(0x50, 0x50 + 20)) + list(range(0x80, 0x80 + 30))  # not 0x7F: that is silence
    datagrams += talk(after, codes_b[:20])
    second_key = len(datagrams)
    datagrams += key_press(after, "7")
    datagrams += talk(after, codes_b[20:])
    audio_index = [k for k in range(len(datagrams)) if datagrams[k][1] & 0x7F == 0]
    code_at = dict(zip(audio_index, codes_a + codes_b, strict=True))

    rng = random.Random(4733)
    delay = [rng.uniform(0.0, 0.03) for _ in datagrams]  # jitter: up to 1.5 frames, so some overtake
    for k in range(switch - 3, switch):
        delay[k] = 0.07  # the old source's last packets arrive after the new source's first ones
    first_end = second_key + next(i for i, d in enumerate(datagrams[second_key:]) if d[13] & 0x80)
    drop = {5, 17, 40, switch + 8, first_end, len(datagrams) - 12}  # incl. the first E packet of "7"
    dup = {3, 12, 27, switch + 1, switch + 15, second_key + 2, len(datagrams) - 5}

    relay_transport, relay = await loop.create_datagram_endpoint(
        lambda: JitterRelay(("127.0.0.1", session.local_port), delay, drop, dup),
        local_addr=("127.0.0.1", 0),
    )
    relay_addr = relay_transport.get_extra_info("sockname")[:2]
    session.configure(remote=relay_addr, payload_type=0, telephone_event_pt=TE_PT)
    dtmf: list[tuple[str, str, str]] = []
    audio: list[bytes] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    session.on_audio = audio.append

    try:
        await peer.send_paced(datagrams, relay_addr)
        await wait_until(lambda: len(dtmf) >= 4, timeout=5.0, what="both digits through the relay")
        await wait_until(lambda: relay.forwarded >= len(datagrams) - len(drop), what="relay drained")
        tail = len(audio)
        await wait_until(lambda: len(audio) >= tail + 20, what="playout of the tail")  # 400 ms more
    finally:
        relay.close()

    assert dtmf == [
        ("start", "4", "rfc4733"), ("end", "4", "rfc4733"),
        ("start", "7", "rfc4733"), ("end", "7", "rfc4733"),
    ]
    assert session.stats["dtmf_events"] == 2

    heard = [code_of(frame) for frame in audio if frame != PCM_SILENCE]
    dropped = {code_at[k] for k in drop if k in code_at}
    assert len(heard) == len(set(heard)), "an audio frame was played twice"
    assert heard == sorted(heard), f"audio out of order: {heard}"
    assert set(heard) <= set(codes_a + codes_b)
    assert not set(heard) & dropped
    # Frames blanked next to a key press (one frame of guard each side) or dropped by the buffer to
    # shrink its delay are missing too, but only a few; the audio after the switch must be there.
    stats = session.stats
    missing_b = set(codes_b) - set(heard) - dropped
    assert len(missing_b) <= 2 + stats["discarded"] + stats["late"], sorted(missing_b)
    assert set(codes_b[25:]) - dropped <= set(heard), "the audio after the second key press is missing"
    # The old source's stragglers that came after the new source's first packets are dropped (and
    # counted), not played after the new audio.
    assert stats["stale_source"] >= 1
    missing_a = set(codes_a) - set(heard) - dropped
    assert len(missing_a) <= 2 + stats["discarded"] + stats["late"] + stats["stale_source"], sorted(missing_a)
    assert stats["duplicates"] >= 1
    await session.close()


def test_old_source_coming_back_later_is_followed() -> None:
    """Stragglers of the replaced SSRC are dropped only just after the change: the same SSRC coming
    back later (a transfer back, media anchored again) is a change like any other."""
    stream = MediaStream(ssrc=1, sequence_number=0, timestamp=0)
    stream.configure(remote=("127.0.0.1", 40000), payload_type=0, telephone_event_pt=TE_PT)
    a = RtpSender(ssrc=0xAAAA, payload_type=0, sequence_number=10, timestamp=1000)
    b = RtpSender(ssrc=0xBBBB, payload_type=0, sequence_number=5000, timestamp=777_000)
    frame = bytes([0x20]) * 160
    source = ("127.0.0.1", 40000)
    for k in range(5):
        stream.datagram_received(a.send(frame, 160).serialize(), source, 0.02 * k)
    stream.datagram_received(b.send(frame, 160).serialize(), source, 0.10)
    stream.datagram_received(a.send(frame, 160).serialize(), source, 0.12)  # a straggler of A
    assert (stream.received, stream.stale_source) == (6, 1)
    stream.datagram_received(b.send(frame, 160).serialize(), source, 0.14)
    stream.datagram_received(a.send(frame, 160).serialize(), source, 2.0)  # A is back for real
    stream.datagram_received(a.send(frame, 160).serialize(), source, 2.02)
    stream.datagram_received(b.send(frame, 160).serialize(), source, 2.04)  # now B's straggler
    assert (stream.received, stream.stale_source) == (9, 2)
