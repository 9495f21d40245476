"""RFC 4733 telephone-event payloads, the receiver state machine, the sender, and de-duplication."""

from __future__ import annotations

import pytest

from ivr.proto.dtmf import (
    DtmfDeduplicator,
    DtmfEvent,
    DtmfEventKind,
    TelephoneEvent,
    TelephoneEventError,
    TelephoneEventFrame,
    TelephoneEventReceiver,
    telephone_event_frames,
)
from ivr.rtp.packet import RtpSender, parse_rtp

START, END = DtmfEventKind.START, DtmfEventKind.END


def payload(event: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return TelephoneEvent(event=event, end=end, volume=volume, duration=duration).build()


# --- payload format (RFC 4733 section 2.3) ---


def test_parse_wire_bytes() -> None:
    ev = TelephoneEvent.parse(bytes.fromhex("0b8a0320"))  # '#', E=1, volume 10, 800 samples
    assert ev == TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert ev.digit == "#"
    assert TelephoneEvent.parse(bytes.fromhex("05 4a 00a0")).reserved  # R bit is carried, ignored


def test_build_wire_bytes() -> None:
    assert TelephoneEvent(event=1, volume=7, duration=160).build() == bytes.fromhex("010700a0")
    assert TelephoneEvent(event=15, end=True, volume=63, duration=0xFFFF).build() == bytes.fromhex("0fbfffff")


@pytest.mark.parametrize(("code", "digit"), list(enumerate("0123456789*#ABCD")) + [(16, None), (255, None)])
def test_digit_mapping(code: int, digit: str | None) -> None:
    assert TelephoneEvent(event=code).digit == digit
    if digit is not None:
        assert TelephoneEvent.for_digit(digit.lower()).event == code


def test_parse_errors() -> None:
    with pytest.raises(TelephoneEventError, match="too short"):
        TelephoneEvent.parse(b"\x01\x02\x03")
    with pytest.raises(ValueError):
        TelephoneEvent(event=1, volume=64).build()
    with pytest.raises(ValueError):
        TelephoneEvent.for_digit("E")


# --- receiver ---


def feed(rx: TelephoneEventReceiver, packets: list[tuple[bytes, int, float]]) -> list[DtmfEvent]:
    out: list[DtmfEvent] = []
    for data, ts, now in packets:
        out += rx.receive(data, ts, now)
    return out


def key_press(event: int, ts: int, t0: float, updates: int = 3, end_copies: int = 3) -> list[tuple[bytes, int, float]]:
    packets = [(payload(event, 160 * (i + 1)), ts, t0 + 0.02 * i) for i in range(updates)]
    dur = 160 * (updates + 1)
    packets += [(payload(event, dur, end=True), ts, t0 + 0.02 * (updates + i)) for i in range(end_copies)]
    return packets


def test_start_then_one_end_despite_three_end_packets() -> None:
    rx = TelephoneEventReceiver()
    events = feed(rx, key_press(5, ts=1000, t0=0.0))
    assert events == [DtmfEvent(START, "5", 1000), DtmfEvent(END, "5", 1000, 640)]
    assert rx.get_timer() is None


def test_start_is_reported_on_the_first_packet() -> None:
    rx = TelephoneEventReceiver()
    assert rx.receive(payload(9, 160), 50, 0.0, marker=True) == [DtmfEvent(START, "9", 50)]
    assert rx.receive(payload(9, 320), 50, 0.02) == []


def test_same_digit_twice_counts_twice() -> None:
    rx = TelephoneEventReceiver()
    events = feed(rx, key_press(1, 1000, 0.0) + key_press(1, 2600, 0.2))
    assert [(e.kind, e.digit, e.timestamp) for e in events] == [
        (START, "1", 1000),
        (END, "1", 1000),
        (START, "1", 2600),
        (END, "1", 2600),
    ]


def test_lost_end_packets_new_event_ends_previous() -> None:
    rx = TelephoneEventReceiver()
    first = key_press(2, 1000, 0.0, end_copies=0)
    events = feed(rx, first + key_press(3, 2000, 0.1))
    assert [(e.kind, e.digit) for e in events] == [(START, "2"), (END, "2"), (START, "3"), (END, "3")]
    assert events[1].duration == 480  # the last duration heard


def test_lost_end_packets_timeout() -> None:
    rx = TelephoneEventReceiver(end_timeout=0.25)
    assert [e.kind for e in feed(rx, key_press(7, 1000, 10.0, end_copies=0))] == [START]
    timer = rx.get_timer()
    assert timer == pytest.approx(10.04 + 0.25)
    assert rx.handle_timer(10.2) == []
    assert rx.handle_timer(timer) == [DtmfEvent(END, "7", 1000, 480)]
    assert rx.get_timer() is None
    # a straggling end packet of that event is not a new key press
    assert rx.receive(payload(7, 640, end=True), 1000, 10.4) == []


def test_only_end_packets_arrive() -> None:
    rx = TelephoneEventReceiver()
    events = feed(rx, key_press(0, 5000, 0.0, updates=0))
    assert events == [DtmfEvent(START, "0", 5000), DtmfEvent(END, "0", 5000, 160)]


def test_unknown_events_ignored_without_breaking_later_digits() -> None:
    rx = TelephoneEventReceiver()
    packets = key_press(4, 1000, 0.0)
    for code in (16, 32, 100, 255):  # flash-hook, fax tones, whatever: not DTMF
        packets += key_press(code, 1000 + code * 100, 1.0 + code / 100)
    packets += key_press(8, 100000, 5.0)
    events = feed(rx, packets)
    assert [(e.kind, e.digit) for e in events] == [(START, "4"), (END, "4"), (START, "8"), (END, "8")]


def test_unknown_event_ends_pending_digit() -> None:
    rx = TelephoneEventReceiver()
    events = feed(rx, key_press(6, 1000, 0.0, end_copies=0) + key_press(20, 1800, 0.1))
    assert [(e.kind, e.digit) for e in events] == [(START, "6"), (END, "6")]


def test_late_packet_of_older_event_ignored() -> None:
    rx = TelephoneEventReceiver()
    events = feed(rx, key_press(1, 1000, 0.0, end_copies=0)[:1] + key_press(2, 3000, 0.1)[:1])
    events += rx.receive(payload(1, 480), 1000, 0.12)  # reordered update of the old event
    assert [(e.kind, e.digit) for e in events] == [(START, "1"), (END, "1"), (START, "2")]


def test_timestamp_wrap() -> None:
    rx = TelephoneEventReceiver()
    events = feed(rx, key_press(1, 0xFFFFFF00, 0.0) + key_press(2, 0x00000100, 0.2))
    assert [(e.kind, e.digit) for e in events] == [(START, "1"), (END, "1"), (START, "2"), (END, "2")]
    assert rx.receive(payload(1, 640, end=True), 0xFFFFFF00, 0.3) == []


def test_long_event_segments_are_one_key_press() -> None:
    rx = TelephoneEventReceiver()
    events = rx.receive(payload(5, 0xFFFF), 1000, 0.0, marker=True)
    events += rx.receive(payload(5, 800), 1000 + 0xFFFF, 8.3)  # RFC 4733 section 2.5.1.3
    events += rx.receive(payload(5, 1600, end=True), 1000 + 0xFFFF, 8.4)
    assert [(e.kind, e.digit) for e in events] == [(START, "5"), (END, "5")]


def test_malformed_payload_raises_typed_error() -> None:
    rx = TelephoneEventReceiver()
    with pytest.raises(TelephoneEventError):
        rx.receive(b"\x01", 1000, 0.0)
    assert feed(rx, key_press(9, 2000, 0.1))[-1] == DtmfEvent(END, "9", 2000, 640)


# --- sender ---


def test_frames_for_a_key_press() -> None:
    frames = telephone_event_frames("#", 800, volume=10, interval=160)
    assert [f.offset for f in frames] == [160, 320, 480, 640, 800, 960, 1120]
    assert [f.marker for f in frames] == [True] + [False] * 6
    parsed = [TelephoneEvent.parse(f.payload) for f in frames]
    assert [p.duration for p in parsed] == [160, 320, 480, 640, 800, 800, 800]
    assert [p.end for p in parsed] == [False] * 4 + [True] * 3
    assert {p.event for p in parsed} == {11}


def test_short_key_press_is_end_packets_only() -> None:
    frames = telephone_event_frames("1", 100)
    assert frames[0] == TelephoneEventFrame(bytes.fromhex("018a0064"), True, 100)
    assert len(frames) == 3


def test_sender_to_receiver_through_rtp() -> None:
    tx = RtpSender(ssrc=0x1234, payload_type=0, sequence_number=100, timestamp=8000)
    rx = TelephoneEventReceiver()
    events: list[DtmfEvent] = []
    for digit in "19#":
        start = tx.timestamp
        for frame in telephone_event_frames(digit, 640):
            wire = tx.send_at(frame.payload, start, marker=frame.marker, payload_type=101).serialize()
            packet = parse_rtp(wire)
            events += rx.receive(packet.payload, packet.timestamp, (start + frame.offset) / 8000)
        tx.skip(640 + 160)
    assert [e.digit for e in events if e.kind is END] == ["1", "9", "#"]
    assert len(events) == 6


def test_frames_validate_duration() -> None:
    with pytest.raises(ValueError):
        telephone_event_frames("1", 0)
    with pytest.raises(ValueError):
        telephone_event_frames("1", 70000)


# --- de-duplication across paths ---


def test_same_digit_from_two_paths_counts_once() -> None:
    dedup = DtmfDeduplicator(window=0.5)
    assert dedup.accept("5", "rfc4733", 10.00)
    assert not dedup.accept("5", "inband", 10.05)


def test_three_paths_one_press() -> None:
    dedup = DtmfDeduplicator(window=0.5)
    assert dedup.accept("5", "rfc4733", 1.0)
    assert not dedup.accept("5", "inband", 1.02)
    assert not dedup.accept("5", "sip-info", 1.1)
    assert dedup.accept("5", "rfc4733", 1.3)  # the next press


def test_repeats_on_one_path_always_count() -> None:
    dedup = DtmfDeduplicator(window=0.5)
    assert dedup.accept("1", "rfc4733", 0.0)
    assert dedup.accept("1", "rfc4733", 0.15)
    assert dedup.accept("1", "rfc4733", 0.30)


def test_fast_double_press_on_two_paths() -> None:
    dedup = DtmfDeduplicator(window=0.5)
    seen = [
        dedup.accept("1", "inband", 0.00),
        dedup.accept("1", "rfc4733", 0.02),
        dedup.accept("1", "inband", 0.20),
        dedup.accept("1", "rfc4733", 0.22),
    ]
    assert seen == [True, False, True, False]


def test_different_digits_and_expired_window() -> None:
    dedup = DtmfDeduplicator(window=0.5)
    assert dedup.accept("1", "inband", 0.0)
    assert dedup.accept("2", "rfc4733", 0.1)
    assert dedup.accept("1", "rfc4733", 0.7)  # too late to be the same press
