"""The asyncio media engine over real UDP sockets on loopback: sending, DTMF, latching, hold, loss, garbage.

Every wait is bounded; nothing here asserts timing (figures are in bench/rtp_clock.py).
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import struct
from typing import cast

import pytest

from ivr.proto import g711
from ivr.proto.dtmf import telephone_event_frames
from ivr.rtp.media import PCM_SILENCE
from ivr.rtp.packet import RtpPacket, RtpSender, parse_rtp
from ivr.rtp.session import MediaEngine, PortsExhaustedError, RtpSession, SessionClosedError
from tests.rtp.udp_peer import Peer, free_port_range, open_peer, wait_until

ULAW_SILENCE = b"\xff" * 160
TE_PT = 101


def prompt(first_code: int, count: int) -> list[bytes]:
    """Frames that say which frame they are: frame k is byte ``first_code + k`` repeated."""
    return [bytes([first_code + k]) * 160 for k in range(count)]


def dtmf_ulaw(digit_freqs: tuple[float, float], ms: int, level: float = 7000.0) -> bytes:
    low, high = digit_freqs
    n = 8 * ms
    pcm = struct.pack(
        f"<{n}h",
        *(
            round(level * math.sin(2 * math.pi * low * k / 8000) + level * math.sin(2 * math.pi * high * k / 8000))
            for k in range(n)
        ),
    )
    return g711.ulaw_encode(pcm)


def frames_of(data: bytes) -> list[bytes]:
    return [data[i : i + 160] for i in range(0, len(data), 160)]


def audio_packets(sender: RtpSender, payloads: list[bytes]) -> list[bytes]:
    return [sender.send(p, 160).serialize() for p in payloads]


def seq_continuous(packets: list[RtpPacket]) -> bool:
    pairs = zip(packets, packets[1:], strict=False)
    return all((b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in pairs)


async def session_to(engine: MediaEngine, peer: Peer, *, te: int | None = None) -> RtpSession:
    session = await engine.open_session(call_id="test")
    session.configure(remote=peer.addr, payload_type=0, telephone_event_pt=te)
    return session


# -- sending --------------------------------------------------------------------------------------


async def test_two_prompts_continuous_stream(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer)
    assert session.law == "ulaw" and session.local_port % 2 == 0
    await wait_until(lambda: len(peer.received) >= 3, what="comfort silence before any prompt")
    p1, p2 = prompt(0x10, 10), prompt(0x40, 7)
    await session.play(p1)
    n_after_p1 = len(peer.received)
    await wait_until(lambda: len(peer.received) >= n_after_p1 + 3, what="silence between prompts")
    await session.play(p2)
    n_after_p2 = len(peer.received)
    await wait_until(lambda: len(peer.received) >= n_after_p2 + 5, what="RTP keeps flowing after play()")
    await session.close()
    n_closed = len(peer.received)
    await asyncio.sleep(0.1)
    assert len(peer.received) == n_closed, "nothing is sent after close()"

    packets = peer.packets()
    assert all(p.payload_type == 0 and p.ssrc == packets[0].ssrc for p in packets)
    assert seq_continuous(packets)
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in zip(packets, packets[1:], strict=False))
    payloads = [p.payload for p in packets]
    i1 = payloads.index(p1[0])
    i2 = payloads.index(p2[0])
    assert payloads[i1 : i1 + 10] == p1
    assert payloads[i2 : i2 + 7] == p2
    assert i2 > i1 + 10
    assert set(payloads[:i1]) == set(payloads[i1 + 10 : i2]) == set(payloads[i2 + 7 :]) == {ULAW_SILENCE}
    assert [k for k, p in enumerate(packets) if p.marker] == [i1, i2]
    assert session.stats["sent"] == n_closed


async def test_a_prompt_after_silence_goes_out_between_ticks_and_the_stream_stays_whole(
        engine: MediaEngine, peer: Peer) -> None:
    """Prompts begun a few ms after a tick (as after a key) leave at once and the session's tick moves after
    them; the stream the caller gets stays one stream: sequence numbers without a gap, a marker on each
    prompt's first packet only, every timestamp step one frame but where a silence frame paid the lead back."""
    session = await session_to(engine, peer)
    await wait_until(lambda: len(peer.received) >= 3, what="comfort silence before any prompt")
    played = []
    for k in range(20):  # bounded: a busy loop may land some prompts near a tick, where they wait for it
        seen = len(peer.received)
        # a tick just sent silence (right after a prompt's last frame the next one follows at the tick)
        await wait_until(lambda seen=seen: len(peer.received) > seen and peer.received[-1][1][12:] == ULAW_SILENCE,
                         what="a silence packet")
        await asyncio.sleep(0.006)
        frames = prompt(0x10 + 4 * k, 3)
        played.append(frames)
        await session.play(frames)
        if session.stats["early_starts"] >= 3:
            break
    n = len(peer.received)
    await wait_until(lambda: len(peer.received) >= n + 3, what="silence after the last prompt")
    await session.close()
    assert session.stats["early_starts"] >= 3
    packets = peer.packets()
    assert seq_continuous(packets)
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(packets, packets[1:], strict=False)]
    assert set(steps) <= {160, 320}, steps  # 320: a silence frame skipped on, when the stream lagged
    payloads = [p.payload for p in packets]
    starts = [payloads.index(frames[0]) for frames in played]
    assert [k for k, p in enumerate(packets) if p.marker and p.payload != ULAW_SILENCE] == starts
    for frames, i in zip(played, starts, strict=True):
        assert payloads[i:i + 3] == frames  # each prompt whole and in order
    assert abs(session._stream.lead) < 0.0226  # within a frame and the phase grid's half step


async def test_a_one_frame_prompt_started_between_ticks_returns(engine: MediaEngine, peer: Peer) -> None:
    """Its only frame leaves at once: play() must still hear that it was sent (a beep after a key)."""
    session = await session_to(engine, peer)
    await wait_until(lambda: len(peer.received) >= 2, what="comfort silence")
    for k in range(10):
        seen = len(peer.received)
        await wait_until(lambda seen=seen: len(peer.received) > seen, what="a silence packet")
        await asyncio.sleep(0.006)
        await asyncio.wait_for(session.play(prompt(0x60 + k, 1)), timeout=2.0)
    assert session.stats["early_starts"] >= 1
    await session.close()


async def test_cancel_play_stops_at_once(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer)
    frames = prompt(0x10, 60)
    task = asyncio.create_task(session.play(frames))
    await wait_until(lambda: any(data[12:] == frames[5] for _, data, _ in peer.received), what="prompt under way")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    n = len(peer.received)
    await wait_until(lambda: len(peer.received) >= n + 5, what="silence after cancel")
    await session.close()
    payloads = [p.payload for p in peer.packets()]
    start = payloads.index(frames[0])
    sent = 0
    while start + sent < len(payloads) and payloads[start + sent] != ULAW_SILENCE:
        sent += 1
    assert 5 < sent < len(frames)
    assert payloads[start : start + sent] == frames[:sent]
    assert set(payloads[start + sent :]) == {ULAW_SILENCE}
    assert seq_continuous(peer.packets())


async def test_play_after_close_and_close_while_playing(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer)
    task = asyncio.create_task(session.play(prompt(0x10, 100)))
    await wait_until(lambda: len(peer.received) >= 2, what="media")
    await session.close()
    with pytest.raises(SessionClosedError):
        await task
    with pytest.raises(SessionClosedError):
        await session.play(prompt(0x10, 1))
    with pytest.raises(ValueError):
        s2 = await engine.open_session()
        await s2.play([b"\x00" * 80])


async def test_alaw_and_ptime_40(engine: MediaEngine, peer: Peer) -> None:
    session = await engine.open_session()
    session.configure(remote=peer.addr, payload_type=8, telephone_event_pt=None, ptime_ms=40)
    assert session.law == "alaw"
    await session.play([bytes([0x21]) * 160, bytes([0x22]) * 160, bytes([0x23]) * 160])
    n = len(peer.received)
    await wait_until(lambda: len(peer.received) >= n + 2, what="silence after the prompt")
    await session.close()
    packets = peer.packets()
    assert all(p.payload_type == 8 and len(p.payload) == 320 for p in packets)
    assert seq_continuous(packets)
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 320 for a, b in zip(packets, packets[1:], strict=False))
    joined = b"".join(p.payload for p in packets)
    assert bytes([0x21]) * 160 + bytes([0x22]) * 160 + bytes([0x23]) * 160 in joined
    assert set(joined.replace(bytes([0x21, 0x22, 0x23]), b"")) <= {0x21, 0x22, 0x23, 0xD5}
    assert sum(p.marker for p in packets) == 1


# -- DTMF -------------------------------------------------------------------------------------------


async def test_rfc4733_digit_once_and_tone_audio_blanked(engine: MediaEngine, peer: Peer) -> None:
    """A phone sending telephone-events and the tone in its audio too: one digit, no tone to ASR."""
    session = await session_to(engine, peer, te=TE_PT)
    dtmf: list[tuple[str, str, str]] = []
    audio: list[bytes] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    session.on_audio = audio.append
    sender = RtpSender(ssrc=0x1234, payload_type=0, sequence_number=65530, timestamp=0xFFFFF000)
    tone = frames_of(dtmf_ulaw((770.0, 1336.0), 100))  # "5"
    datagrams = audio_packets(sender, [ULAW_SILENCE] * 10)
    event_ts = sender.timestamp
    events = telephone_event_frames("5", 800, end_repeats=3)
    assert sum(1 for e in events if e.payload[1] & 0x80) == 3
    for k, ev in enumerate(events):
        datagrams.append(sender.send_at(ev.payload, event_ts, marker=ev.marker, payload_type=TE_PT).serialize())
        datagrams.append(sender.send(tone[k] if k < len(tone) else ULAW_SILENCE, 160).serialize())
    datagrams += audio_packets(sender, [ULAW_SILENCE] * 15)
    await peer.send_paced(datagrams, ("127.0.0.1", session.local_port), interval=0.01)
    await wait_until(lambda: len(dtmf) >= 2, what="DTMF events")
    await asyncio.sleep(0.3)  # retransmitted ends, and playout of the tail
    assert dtmf == [("start", "5", "rfc4733"), ("end", "5", "rfc4733")]
    assert session.stats["dtmf_events"] == 1
    assert len(audio) >= 20
    assert all(frame == PCM_SILENCE for frame in audio), "tone audio reached on_audio"
    await session.close()


def _inband_datagrams(digit_freqs: tuple[float, float]) -> list[bytes]:
    sender = RtpSender(ssrc=0x77, payload_type=0, sequence_number=100, timestamp=5000)
    tone = frames_of(dtmf_ulaw(digit_freqs, 100))
    return audio_packets(sender, [ULAW_SILENCE] * 8 + tone + [ULAW_SILENCE] * 20)


async def test_inband_digit_without_telephone_event(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer, te=None)
    dtmf: list[tuple[str, str, str]] = []
    audio: list[bytes] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    session.on_audio = audio.append
    await peer.send_paced(_inband_datagrams((852.0, 1209.0)), ("127.0.0.1", session.local_port))  # "7"
    await wait_until(lambda: len(dtmf) >= 2 and len(audio) >= 25, what="in-band digit")
    assert dtmf == [("start", "7", "inband"), ("end", "7", "inband")]
    assert all(frame == PCM_SILENCE for frame in audio), "DTMF tone reached on_audio"
    await session.close()


async def test_inband_detector_off_with_telephone_event(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer, te=TE_PT)
    dtmf: list[tuple[str, str, str]] = []
    audio: list[bytes] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    session.on_audio = audio.append
    await peer.send_paced(_inband_datagrams((852.0, 1209.0)), ("127.0.0.1", session.local_port))
    await wait_until(lambda: len(audio) >= 25, what="audio played out")
    assert dtmf == []
    assert any(frame != PCM_SILENCE for frame in audio)  # the tone is just audio here
    await session.close()


# -- addresses ----------------------------------------------------------------------------------


async def test_symmetric_latching_and_foreign_source(engine: MediaEngine) -> None:
    signalled, nat, stranger = await open_peer(), await open_peer(), await open_peer("127.0.0.2")
    try:
        session = await session_to(engine, signalled)
        await wait_until(lambda: len(signalled.received) >= 2, what="sending to the signalled port")
        sender = RtpSender(ssrc=9, payload_type=0)
        nat.send(sender.send(ULAW_SILENCE, 160).serialize(), ("127.0.0.1", session.local_port))
        await wait_until(lambda: len(nat.received) >= 3, what="latched to the NAT port")
        assert session.last_received is not None
        n_signalled = len(signalled.received)
        for _ in range(5):
            stranger.send(sender.send(ULAW_SILENCE, 160).serialize(), ("127.0.0.1", session.local_port))
        await wait_until(lambda: session.stats["rejected_source"] == 5, what="stranger rejected")
        n_nat = len(nat.received)
        await wait_until(lambda: len(nat.received) >= n_nat + 3, what="still sending to the NAT port")
        assert stranger.received == []
        assert len(signalled.received) <= n_signalled + 1  # at most one tick in flight at the switch
        assert session.stats["received"] == 1
        assert seq_continuous(signalled.packets() + nat.packets())
        await session.close()
    finally:
        for p in (signalled, nat, stranger):
            p.close()


async def test_media_move_hold_and_resume(engine: MediaEngine) -> None:
    a, b = await open_peer(), await open_peer()
    try:
        session = await session_to(engine, a)
        await wait_until(lambda: len(a.received) >= 3, what="media to A")
        session.configure(remote=b.addr, payload_type=0, telephone_event_pt=None)  # re-INVITE: media moves
        n_a = len(a.received)
        await wait_until(lambda: len(b.received) >= 3, what="media to B")
        assert len(a.received) == n_a
        assert seq_continuous(a.packets() + b.packets()), "no gap in seq across the move"

        session.configure(remote=b.addr, payload_type=0, telephone_event_pt=None, send=False)  # hold
        n_b = len(b.received)
        await asyncio.sleep(0.1)
        assert len(b.received) == n_b
        session.configure(remote=b.addr, payload_type=0, telephone_event_pt=None)  # resume
        await wait_until(lambda: len(b.received) >= n_b + 3, what="media after resume")
        resumed = b.packets()[n_b:]
        assert resumed[0].marker
        assert (resumed[0].sequence_number - b.packets()[n_b - 1].sequence_number) & 0xFFFF == 1

        session.configure(remote=("0.0.0.0", b.addr[1]), payload_type=0, telephone_event_pt=None)  # old-style hold
        await asyncio.sleep(0.04)
        n_b = len(b.received)
        await asyncio.sleep(0.1)
        assert len(b.received) == n_b
        session.configure(remote=b.addr, payload_type=0, telephone_event_pt=None)
        await wait_until(lambda: len(b.received) >= n_b + 2, what="media after 0.0.0.0 hold")
        await session.close()
    finally:
        a.close()
        b.close()


# -- an imperfect network -------------------------------------------------------------------------


class LossyRelay(asyncio.DatagramProtocol):
    """Forwards the peer's packets to the session: drops, duplicates and swaps some by index."""

    def __init__(self, target: tuple[str, int], drop: set[int], dup: set[int], swap: set[int]) -> None:
        self.target, self.drop, self.dup, self.swap = target, drop, dup, swap
        self.index = 0
        self.held: bytes | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[1] == self.target[1]:
            return  # the session's own media towards the peer: not needed here
        assert self.transport is not None
        k = self.index
        self.index += 1
        if k in self.drop:
            return
        if k in self.swap:
            self.held = data  # sent after the next one
            return
        self.transport.sendto(data, self.target)
        if k in self.dup:
            self.transport.sendto(data, self.target)
        if self.held is not None:
            self.transport.sendto(self.held, self.target)
            self.held = None


async def test_loss_reorder_duplicates_keep_order_and_dtmf(engine: MediaEngine, peer: Peer) -> None:
    session = await engine.open_session()
    loop = asyncio.get_running_loop()
    relay_transport, relay = await loop.create_datagram_endpoint(
        lambda: LossyRelay(("127.0.0.1", session.local_port), drop=set(), dup=set(), swap=set()),
        local_addr=("127.0.0.1", 0),
    )
    relay_addr = relay_transport.get_extra_info("sockname")[:2]
    session.configure(remote=relay_addr, payload_type=0, telephone_event_pt=TE_PT)
    dtmf: list[tuple[str, str, str]] = []
    audio: list[bytes] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    session.on_audio = audio.append

    sender = RtpSender(ssrc=0xABC, payload_type=0, sequence_number=0xFFF0, timestamp=123)
    codes = list(range(0x20, 0x20 + 30)) + list(range(0x50, 0x50 + 25))
    datagrams = audio_packets(sender, [bytes([c]) * 160 for c in codes[:30]])
    event_ts = sender.timestamp
    events = telephone_event_frames("5", 960, end_repeats=3)
    for ev in events:
        datagrams.append(sender.send_at(ev.payload, event_ts, marker=ev.marker, payload_type=TE_PT).serialize())
    sender.skip(960 + 160)
    datagrams += audio_packets(sender, [bytes([c]) * 160 for c in codes[30:]])
    first_end = 30 + next(i for i, ev in enumerate(events) if ev.payload[1] & 0x80)
    guard = {codes[29]}  # the aligned frame before the event is blanked with it (one frame of guard)
    relay.drop = {7, 19, first_end, 45}
    relay.dup = {3, 12, 31, 50}
    relay.swap = {15, 33, 40}
    dropped_codes = {codes[k if k < 30 else k - len(events)] for k in relay.drop if k != first_end}

    await peer.send_paced(datagrams, relay_addr)
    await wait_until(lambda: len(dtmf) >= 2, what="DTMF through the relay")
    await asyncio.sleep(0.3)  # playout of the tail
    relay_transport.close()

    assert dtmf == [("start", "5", "rfc4733"), ("end", "5", "rfc4733")]
    heard = [g711.ulaw_encode(frame[:2])[0] for frame in audio if frame != PCM_SILENCE]
    assert heard == sorted(heard), "audio out of order"
    assert len(heard) == len(set(heard)), "duplicate audio frames"
    assert set(heard) <= set(codes)
    assert not set(heard) & dropped_codes
    assert not set(heard) & guard
    missing = set(codes) - set(heard) - dropped_codes - guard
    stats = session.stats
    assert len(missing) <= stats["discarded"] + stats["late"], missing
    assert stats["duplicates"] >= 4
    await session.close()


async def test_garbage_is_counted_and_survived(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer, te=TE_PT)
    dtmf: list[tuple[str, str, str]] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    dest = ("127.0.0.1", session.local_port)
    rng = random.Random(4733)
    # (no empty datagram: asyncio's sendto in 3.11 silently sends nothing for b"")
    garbage = [b"\x80", bytes(11), bytes([0x40]) + bytes(15)]  # short, short, version 1
    garbage += [bytes([0x8F]) + bytes(15)]  # 15 CSRCs announced, none there
    garbage += [RtpPacket(TE_PT, 1, 1, 1, b"\x05").serialize()]  # telephone-event payload too short
    garbage += [bytes([0x80 | 0x20, 0]) + bytes(10) + b"\x00"]  # padding count of zero
    while len(garbage) < 60:
        blob = rng.randbytes(rng.randrange(1, 300))
        if len(blob) >= 2 and 192 <= blob[1] <= 223:
            continue  # would be taken for RTCP: counted apart
        if len(blob) >= 12 and blob[0] >> 6 == 2:
            continue  # could parse as valid RTP
        garbage.append(blob)
    for blob in garbage:
        peer.send(blob, dest)
    peer.send(bytes.fromhex("80c80006") + bytes(24), dest)  # an RTCP SR on the RTP port (RFC 5761)
    await wait_until(lambda: session.stats["garbage"] + session.stats["rtcp"] >= len(garbage) + 1, what="counted")
    assert session.stats["garbage"] == len(garbage)
    assert session.stats["rtcp"] == 1
    assert session.stats["received"] == 0
    # still alive: a real digit afterwards works, and we keep sending
    sender = RtpSender(ssrc=5, payload_type=TE_PT)
    datagrams = [
        sender.send_at(ev.payload, 8000, marker=ev.marker, payload_type=TE_PT).serialize()
        for ev in telephone_event_frames("#", 480)
    ]
    await peer.send_paced(datagrams, dest, interval=0.005)
    await wait_until(lambda: len(dtmf) >= 2, what="digit after garbage")
    assert dtmf == [("start", "#", "rfc4733"), ("end", "#", "rfc4733")]
    n = len(peer.received)
    await wait_until(lambda: len(peer.received) >= n + 2, what="media after garbage")
    await session.close()


async def test_rtcp_port_read_and_ignored(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer)
    peer.send(bytes.fromhex("80c90001") + bytes(4), ("127.0.0.1", session.local_port + 1))  # RTCP RR
    await wait_until(lambda: session.stats["rtcp"] == 1, what="RTCP on port + 1")
    assert session.stats["garbage"] == 0
    await session.close()


async def test_listener_errors_do_not_stop_media(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer)

    def broken(_pcm: bytes) -> None:
        raise RuntimeError("listener bug")

    session.on_audio = broken
    sender = RtpSender(ssrc=1, payload_type=0)
    await peer.send_paced(audio_packets(sender, [ULAW_SILENCE] * 8), ("127.0.0.1", session.local_port))
    n = len(peer.received)
    await session.play(prompt(0x10, 3))
    await wait_until(lambda: len(peer.received) >= n + 5, what="media despite the failing listener")
    await session.close()


# -- ports ------------------------------------------------------------------------------------------


async def test_port_range_exhaustion_and_reuse() -> None:
    base = free_port_range(4)
    engine = MediaEngine("127.0.0.1", base, base + 3)
    await engine.start()
    try:
        s1 = await engine.open_session(call_id="a")
        s2 = await engine.open_session(call_id="b")
        assert {s1.local_port, s2.local_port} == {base, base + 2}
        with pytest.raises(PortsExhaustedError) as exc:
            await engine.open_session(call_id="c")
        assert (exc.value.port_min, exc.value.port_max) == (base, base + 3)
        assert engine.stats["sessions"] == 2
        await s1.close()
        s3 = await engine.open_session(call_id="d")
        assert s3.local_port == s1.local_port
        await s3.close()
        await s3.close()  # idempotent
    finally:
        await engine.stop()
    assert engine.stats["sessions"] == 0


async def test_port_taken_by_another_program_is_skipped() -> None:
    import socket

    base = free_port_range(4)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", base + 1))  # the RTCP port of the first pair
    engine = MediaEngine("127.0.0.1", base, base + 3)
    await engine.start()
    try:
        s = await engine.open_session()
        assert s.local_port == base + 2
        with pytest.raises(PortsExhaustedError):
            await engine.open_session()
    finally:
        await engine.stop()
        squatter.close()


def test_range_without_a_pair_is_refused() -> None:
    with pytest.raises(ValueError):
        MediaEngine("127.0.0.1", 20001, 20002)


async def test_open_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError):
        await MediaEngine("127.0.0.1", 20000, 20009).open_session()


async def test_engine_stats(engine: MediaEngine, peer: Peer) -> None:
    session = await session_to(engine, peer)
    await wait_until(lambda: len(peer.received) >= 5, what="media")
    stats = engine.stats
    assert stats["sessions"] == 1
    assert stats["packets_sent"] >= 5
    assert stats["ticks"] >= 5
    assert 0 <= stats["tick_lateness_p50_ms"] <= stats["tick_lateness_p99_ms"] <= stats["tick_lateness_max_ms"]
    assert parse_rtp(peer.received[0][1]).ssrc == parse_rtp(peer.received[-1][1]).ssrc
    await session.close()


async def test_sessions_spread_over_the_tick_phases_however_fast_they_come(engine: MediaEngine) -> None:
    """Sessions opened (and closed) between two ticks still spread evenly over the phases: the groups are
    rebuilt once at the next phase tick, the balance is counted as they come."""
    sessions = [await engine.open_session(call_id=f"s{k}") for k in range(7)]
    await sessions[3].close()
    sessions = [s for k, s in enumerate(sessions) if k != 3] + [await engine.open_session(call_id="s7")]
    await asyncio.sleep(0.05)  # a few phase ticks
    assert sorted(len(group) for group in engine._active) == [1, 2, 2, 2]
    for session in sessions:
        await session.close()


async def test_a_closed_call_leaves_no_cycle_for_the_gc(engine: MediaEngine, peer: Peer) -> None:
    """A call's media objects are freed when it ends, not by a full gc pass: that pass walks every live call
    and held a media worker's tick ~60 ms at 1,000 calls (bench/README.md "Less Python per packet")."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            session = await session_to(engine, peer, te=101)
            await session.play(prompt(0x10, 3))
            await session.close()
        del session
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if type(o).__module__.startswith("ivr.")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
