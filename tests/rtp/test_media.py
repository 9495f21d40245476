"""The sans-I/O core: the absolute tick clock, and the stream's send/receive state without sockets."""

from __future__ import annotations

import math
import struct

import pytest

from ivr.proto import g711
from ivr.proto.dtmf import DtmfBank
from ivr.rtp.media import PCM_SILENCE, AudioReceived, DtmfReceived, MediaStream, PromptSent, TickClock
from ivr.rtp.packet import RtpSender, parse_rtp


def test_tick_clock_never_drifts() -> None:
    clock = TickClock(100.0)
    for n in range(1000):
        assert clock.deadline == pytest.approx(100.0 + n * 0.02)
        times, lateness = clock.advance(clock.deadline + 0.004)  # every tick 4 ms late: no accumulation
        assert times == [pytest.approx(100.0 + n * 0.02)]
        assert lateness == pytest.approx(0.004)
    assert clock.skipped == 0


def test_tick_clock_catches_up_without_bursting() -> None:
    clock = TickClock(0.0, max_burst=3)
    assert clock.advance(0.0)[0] == [0.0]
    times, lateness = clock.advance(0.045)  # ticks 1 and 2 due
    assert times == pytest.approx([0.02, 0.04])
    assert lateness == pytest.approx(0.025)
    times, lateness = clock.advance(0.2)  # ticks 3..10 due: only the newest 3 run
    assert times == pytest.approx([0.16, 0.18, 0.2])
    assert clock.skipped == 5
    assert clock.deadline == pytest.approx(0.22)
    times, _ = clock.advance(0.2199999)  # a hair early: still one tick, never zero
    assert times == pytest.approx([0.22])


def test_stream_silence_prompt_marker_and_hold() -> None:
    stream = MediaStream(ssrc=7, sequence_number=0xFFFE, timestamp=0xFFFFFF00)
    assert stream.tick(0.0) is None  # not configured: nothing to send
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None)
    first = parse_rtp(stream.tick(0.02) or b"")
    assert first.payload == b"\xff" * 160 and not first.marker  # markers start prompts, not the stream
    prompt = stream.play([b"\x01" * 160, b"\x02" * 160])
    a, b = (parse_rtp(stream.tick(t) or b"") for t in (0.04, 0.06))
    assert (a.marker, b.marker) == (True, False)
    assert (a.payload[0], b.payload[0]) == (1, 2)
    assert prompt.done and any(isinstance(e, PromptSent) and e.prompt is prompt for e in stream.events)
    assert [first.sequence_number, a.sequence_number, b.sequence_number] == [0xFFFE, 0xFFFF, 0]
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None, send=False)
    assert stream.tick(0.08) is None
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None)
    c = parse_rtp(stream.tick(0.10) or b"")
    assert c.marker and c.sequence_number == 1
    assert (c.timestamp - b.timestamp) & 0xFFFFFFFF == 320  # the media clock ran on through the hold


def test_stream_rejects_bad_negotiation() -> None:
    stream = MediaStream(ssrc=1, sequence_number=0, timestamp=0)
    with pytest.raises(ValueError):
        stream.configure(remote=("127.0.0.1", 4000), payload_type=18, telephone_event_pt=None)
    with pytest.raises(ValueError):
        stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=0)


def test_stream_relatches_after_quiet_latched_port() -> None:
    stream = MediaStream(ssrc=1, sequence_number=0, timestamp=0)
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None)
    sender = RtpSender(ssrc=2, payload_type=0)
    stream.datagram_received(sender.send(b"\xff" * 160, 160).serialize(), ("127.0.0.1", 5000), 1.0)
    assert stream.remote == ("127.0.0.1", 5000)
    stream.datagram_received(sender.send(b"\xff" * 160, 160).serialize(), ("127.0.0.1", 6000), 1.5)
    assert stream.remote == ("127.0.0.1", 5000)  # the latched port is alive: no flapping, and not heard
    stream.datagram_received(sender.send(b"\xff" * 160, 160).serialize(), ("127.0.0.1", 6000), 3.0)
    assert stream.remote == ("127.0.0.1", 6000)  # NAT rebinding: the old port went quiet
    stream.datagram_received(sender.send(b"\xff" * 160, 160).serialize(), ("::ffff:127.0.0.1", 6000), 3.1)
    assert stream.received == 3 and stream.rejected_source == 1 and stream.relatched == 1


def test_only_the_latched_source_is_heard_and_its_digits_only() -> None:
    """RTP from another port of the peer's address while the latched one is alive is dropped, audio and RFC 4733
    digits alike (issue 15 defect 4): a second stream cannot displace the caller or press keys for them."""
    stream = MediaStream(ssrc=1, sequence_number=0, timestamp=0)
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=101)
    caller, intruder = RtpSender(ssrc=2, payload_type=0), RtpSender(ssrc=3, payload_type=101)
    stream.datagram_received(caller.send(b"\xff" * 160, 160).serialize(), ("127.0.0.1", 5000), 1.0)
    # a '5' (event 5, end bit, volume 10, duration 800) from port 6000 while 5000 is alive
    for t in (1.02, 1.04, 1.06):
        stream.datagram_received(intruder.send(bytes([5, 0x80 | 10, 3, 32]), 0).serialize(), ("127.0.0.1", 6000), t)
        stream.datagram_received(caller.send(b"\xff" * 160, 160).serialize(), ("127.0.0.1", 5000), t)
    assert not [e for e in stream.events if type(e).__name__ == "DtmfReceived"]
    assert stream.rejected_source == 3 and stream.remote == ("127.0.0.1", 5000) and stream.relatched == 0


def _inband_call(digit_freqs: tuple[float, float], lead: int) -> list[bytes]:
    """µ-law datagrams: ``lead`` frames of silence, a 100 ms key, then 400 ms of a quiet 400 Hz hum."""
    sender = RtpSender(ssrc=0x77, payload_type=0, sequence_number=100, timestamp=5000)
    low, high = digit_freqs
    key = [round(7000 * (math.sin(2 * math.pi * low * k / 8000) + math.sin(2 * math.pi * high * k / 8000)))
           for k in range(800)]
    hum = [round(300 * math.sin(2 * math.pi * 400 * k / 8000)) for k in range(3200)]
    pcm = struct.pack(f"<{160 * lead}h", *([0] * 160 * lead)) + struct.pack("<4000h", *(key + hum))
    ulaw = g711.ulaw_encode(pcm)
    return [sender.send(ulaw[i : i + 160], 160).serialize() for i in range(0, len(ulaw), 160)]


def test_streams_sharing_a_dtmf_bank_hear_what_each_hears_alone() -> None:
    """The engine's path: every stream's tick queues its frame, one bank run analyses them all, then each
    stream finishes the tick; DTMF events and the delayed (blanked) audio are the same as a stream alone."""
    digits = {"1": (697.0, 1209.0), "5": (770.0, 1336.0), "9": (852.0, 1477.0), "#": (941.0, 1477.0)}
    calls = [(d, lead) for lead in (0, 3, 7) for d in digits]
    bank = DtmfBank()

    def stream(shared: bool) -> MediaStream:
        s = MediaStream(ssrc=1, sequence_number=0, timestamp=0, dtmf_bank=bank if shared else None)
        s.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None)
        return s

    together = [stream(True) for _ in calls]
    alone = [stream(False) for _ in calls]
    packets = [_inband_call(digits[d], lead) for d, lead in calls]
    assert bank.open_detectors == len(calls)
    analysed = 0
    for tick in range(max(len(p) for p in packets) + 10):
        now = 1.0 + 0.02 * tick
        for s, a, p in zip(together, alone, packets, strict=True):
            if tick < len(p):
                s.datagram_received(p[tick], ("127.0.0.1", 4000), now - 0.01)
                a.datagram_received(p[tick], ("127.0.0.1", 4000), now - 0.01)
            s.tick(now)
            a.tick(now)
        waiting = [s for s in together if s.inband_waiting]
        assert bank.run() == len(waiting)  # one analysis for all the streams that played a frame
        for s in waiting:
            s.finish_inband()
            assert not s.inband_waiting
        analysed += len(waiting)
    for (digit, _), s, a in zip(calls, together, alone, strict=True):
        heard = [e for e in s.events if isinstance(e, DtmfReceived)]
        assert [(e.kind, e.digit, e.source) for e in heard] == [("start", digit, "inband"), ("end", digit, "inband")]
        assert list(s.events) == list(a.events)
        assert any(isinstance(e, AudioReceived) and e.pcm != PCM_SILENCE for e in s.events)  # the hum passes
    assert analysed >= len(calls) * 30
    for s in together:
        s.close()
    assert bank.open_detectors == 0


def test_shared_bank_stream_ticked_twice_or_renegotiated_before_the_run() -> None:
    """A stream ticked again before the bank ran analyses its earlier frame alone (its events stay with that
    frame), and a re-INVITE that brings telephone-event finishes the waiting frame and leaves the bank."""
    bank = DtmfBank()
    together = MediaStream(ssrc=1, sequence_number=0, timestamp=0, dtmf_bank=bank)
    alone = MediaStream(ssrc=1, sequence_number=0, timestamp=0)
    for s in (together, alone):
        s.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None)
    packets = _inband_call((852.0, 1336.0), 2)  # "8"
    for tick, packet in enumerate(packets):
        now = 1.0 + 0.02 * tick
        for s in (together, alone):
            s.datagram_received(packet, ("127.0.0.1", 4000), now - 0.01)
            s.tick(now)
        if tick % 3 == 2:  # the bank runs only every third tick: two ticks in between go without it
            bank.run()
            together.finish_inband()
    together.finish_inband()
    assert [(e.kind, e.digit) for e in together.events if isinstance(e, DtmfReceived)] == [("start", "8"), ("end", "8")]
    assert list(together.events) == list(alone.events)
    together.datagram_received(packets[-1], ("127.0.0.1", 4000), 9.0)
    together.tick(9.01)
    assert together.inband_waiting
    together.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=101)
    assert not together.inband_waiting and bank.open_detectors == 0


def test_a_prompt_after_silence_leaves_between_ticks_and_silence_pays_the_lead_back() -> None:
    """A key's answer need not wait for the next 20 ms tick: the prompt's first packet goes at once, its
    timestamp contiguous, and the stream then leads the clock; a later silence tick is left out (timestamp
    held) to pay a frame of lead back, or skipped on (timestamp jumps, new talkspurt) when it lags."""
    stream = MediaStream(ssrc=7, sequence_number=0, timestamp=1000)
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None)
    s0 = parse_rtp(stream.tick(0.0) or b"")
    stream.play([b"\x01" * 160, b"\x02" * 160])
    first = parse_rtp(stream.start_now(0.005) or b"")
    assert first.marker and first.payload[0] == 1 and first.timestamp == s0.timestamp + 160
    assert stream.lead == pytest.approx(0.015)
    assert stream.start_now(0.006) is None  # a prompt is already playing: the tick goes on with it
    second = parse_rtp(stream.tick(0.025) or b"")
    assert (second.payload[0], second.marker, second.timestamp) == (2, False, first.timestamp + 160)
    stream.play([b"\x03" * 160])  # right after the last frame of another: no second packet in this 20 ms
    assert stream.start_now(0.008) is None
    third = parse_rtp(stream.tick(0.045) or b"")
    assert third.marker and third.timestamp == second.timestamp + 160 and stream.lead == pytest.approx(0.015)
    assert parse_rtp(stream.tick(0.065) or b"").payload == b"\xff" * 160  # silence: lead under a frame, kept
    stream.play([b"\x04" * 160])
    fourth = parse_rtp(stream.start_now(0.012) or b"")
    assert fourth.marker and fourth.timestamp == third.timestamp + 320 and stream.lead == pytest.approx(0.023)
    # the first silence tick is left out (a frame of lead paid back), the next one is contiguous
    assert stream.tick(0.085) is None
    after = parse_rtp(stream.tick(0.105) or b"")
    assert after.payload == b"\xff" * 160 and after.timestamp == fourth.timestamp + 160
    assert after.sequence_number == fourth.sequence_number + 1 and stream.lead == pytest.approx(0.003)
    # lagging a frame behind (the ticks moved later): a silence timestamp is skipped, a new talkspurt
    stream.lead -= 0.030
    jumped = parse_rtp(stream.tick(0.125) or b"")
    assert jumped.marker and jumped.timestamp == after.timestamp + 320 and stream.lead == pytest.approx(-0.007)
    assert stream.stats["early_starts"] == 2


def test_no_early_start_on_hold_with_a_longer_ptime_or_before_an_answer() -> None:
    stream = MediaStream(ssrc=7, sequence_number=0, timestamp=0)
    stream.play([b"\x01" * 160])
    assert stream.start_now(0.005) is None  # nowhere to send yet
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None, ptime_ms=40)
    assert stream.start_now(0.005) is None  # two frames a packet: the tick packs them
    stream.configure(remote=("127.0.0.1", 4000), payload_type=0, telephone_event_pt=None, send=False)
    assert stream.start_now(0.005) is None and stream.lead == 0.0
