"""RFC 3550 packet parse/serialize, RFC 5761 demux, fuzzing and the sender stamper."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.rtp.packet import (
    RtcpHeader,
    RtpPacket,
    RtpParseError,
    RtpSender,
    is_rtcp,
    parse_datagram,
    parse_rtcp,
    parse_rtp,
)

# A G.711 packet as captured: V=2, M=1, PT=0, seq 0x1234, ts 0x01020304, SSRC 0xDEADBEEF.
SIMPLE = bytes.fromhex("80801234 01020304 deadbeef") + b"\xff" * 160


def test_parse_simple() -> None:
    p = parse_rtp(SIMPLE)
    assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == (
        0,
        True,
        0x1234,
        0x01020304,
        0xDEADBEEF,
    )
    assert p.payload == b"\xff" * 160
    assert p.csrc == () and p.extension_profile is None and p.padding == 0
    assert p.serialize() == SIMPLE


def test_round_trip_with_everything() -> None:
    p = RtpPacket(
        payload_type=101,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=1,
        payload=b"\x01\x80\x00\xa0",
        marker=False,
        csrc=(7, 8, 9),
        extension_profile=0xBEDE,
        extension=b"\x10\xaa\x00\x00",
        padding=4,
    )
    wire = p.serialize()
    assert wire[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(wire) == 12 + 12 + 4 + 4 + 4 + 4
    assert wire[-1] == 4
    assert parse_rtp(wire) == p


def test_serialize_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        RtpPacket(payload_type=128, sequence_number=0, timestamp=0, ssrc=0).serialize()
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))).serialize()
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension=b"abc").serialize()


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "too short"),
        (SIMPLE[:11], "too short"),
        (b"\x40" + SIMPLE[1:], "version 1"),
        (b"\x83" + SIMPLE[1:12] + b"\0" * 8, "CSRC count 3"),
        (b"\x90" + SIMPLE[1:12] + b"\xbe\xde", "extension truncated"),
        (b"\x90" + SIMPLE[1:12] + b"\xbe\xde\x00\x02" + b"\0" * 4, "extension length 2"),
        (b"\xa0" + SIMPLE[1:] + b"\x00", "padding count of zero"),
        (b"\xa0" + SIMPLE[1:12] + b"\x00\x05", "padding count 5"),
        (bytes([0x80, 200]) + SIMPLE[2:], "RTCP"),
    ],
)
def test_parse_errors(wire: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError, match=reason):
        parse_rtp(wire)


def test_padding_may_cover_whole_payload() -> None:
    wire = b"\xa0" + SIMPLE[1:12] + b"\x00\x00\x03"
    assert parse_rtp(wire).payload == b""


# --- RTCP on the RTP port (RFC 5761) ---

SR = struct.pack("!BBHI", 0x80, 200, 6, 0x11223344) + bytes(20)  # sender report, no report blocks
SDES = struct.pack("!BBHI", 0x81, 202, 2, 0x11223344) + b"\x01\x02ab"  # ... CNAME "ab" + end
BYE = struct.pack("!BBHI", 0x81, 203, 1, 0x11223344)


@pytest.mark.parametrize("pt", [200, 201, 202, 203, 204])
def test_rtcp_types_detected(pt: int) -> None:
    wire = struct.pack("!BBHI", 0x80, pt, 1, 5)
    assert is_rtcp(wire)
    result = parse_datagram(wire)
    assert result == [RtcpHeader(packet_type=pt, count=0, ssrc=5, body=b"\0\0\0\x05")]


def test_rtp_with_marker_and_low_payload_types_is_not_rtcp() -> None:
    for pt in (0, 8, 18, 96, 101, 127):
        for marker in (0, 0x80):
            wire = bytes([0x80, marker | pt]) + SIMPLE[2:]
            assert is_rtcp(wire) == (192 <= (marker | pt) <= 223)
    assert isinstance(parse_datagram(SIMPLE), RtpPacket)


def test_compound_rtcp() -> None:
    packets = parse_rtcp(SR + SDES + BYE)
    assert [p.packet_type for p in packets] == [200, 202, 203]
    assert packets[1].count == 1 and packets[0].ssrc == 0x11223344


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (SR[:3], "too short"),
        (SR + b"\x80", "trailing"),
        (b"\x40" + SR[1:], "version"),
        (SR[:2] + b"\x00\x09" + SR[4:], "length 9"),
        (b"\xa0" + SR[1:] + SDES, "padding only allowed in the last"),
        (SR + b"\xa1" + SDES[1:-1] + b"\x00", "padding count 0"),
        (SR + bytes([0x80, 100, 0, 0]), "packet type 100"),
    ],
)
def test_rtcp_errors(wire: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError, match=reason):
        parse_rtcp(wire)


# --- fuzz: nothing but RtpParseError, ever ---


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    base = RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(st.integers(0, 0xFFFFFFFF)),
        ssrc=draw(st.integers(0, 0xFFFFFFFF)),
        payload=draw(st.binary(max_size=40)),
        marker=draw(st.booleans()),
        csrc=tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))),
        extension_profile=draw(st.none() | st.integers(0, 0xFFFF)),
        extension=draw(st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])),
        padding=draw(st.integers(0, 20)),
    )
    if base.extension_profile is None:
        base.extension = b""
    wire = bytearray(base.serialize())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "cc", "extlen", "pad", "truncate", "append", "bits"]))
        if kind == "flip" and wire:
            i = draw(st.integers(0, len(wire) - 1))
            wire[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cc" and wire:
            wire[0] = (wire[0] & 0xF0) | draw(st.integers(0, 15))
        elif kind == "extlen" and wire and len(wire) >= 12 + 4 * (wire[0] & 0x0F) + 4:
            at = 12 + 4 * (wire[0] & 0x0F) + 2
            wire[at : at + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif kind == "pad" and wire:
            wire[-1] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del wire[draw(st.integers(0, len(wire))) :]
        elif kind == "append":
            wire += draw(st.binary(max_size=8))
        elif kind == "bits" and wire:
            wire[0] |= draw(st.sampled_from([0x10, 0x20, 0x30]))
    return bytes(wire)


@settings(max_examples=3000, deadline=None)
@given(mutated_packets())
def test_fuzz_mutated_packets(wire: bytes) -> None:
    try:
        result = parse_datagram(wire)
    except RtpParseError:
        return
    if isinstance(result, RtpPacket):
        # whatever parses re-serializes to the same bytes, apart from padding contents
        again = result.serialize()
        assert len(again) == len(wire)
        assert again[: len(wire) - result.padding] == wire[: len(wire) - result.padding]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_random_bytes(wire: bytes) -> None:
    try:
        parse_datagram(wire)
    except RtpParseError:
        pass


# --- sender ---


def test_sender_stamps_and_marks_talkspurts() -> None:
    s = RtpSender(ssrc=0xCAFE, payload_type=0, sequence_number=65534, timestamp=0xFFFFFF00)
    a = s.send(b"a" * 160, 160)
    b = s.send(b"b" * 160, 160)
    assert (a.sequence_number, a.timestamp, a.marker, a.ssrc) == (65534, 0xFFFFFF00, True, 0xCAFE)
    assert (b.sequence_number, b.timestamp, b.marker) == (65535, 0xFFFFFFA0, False)
    s.skip(800)  # 100 ms of suppressed silence
    c = s.send(b"c" * 160, 160)
    assert (c.sequence_number, c.timestamp, c.marker) == (0, 0x40 + 800, True)  # wrapped
    d = s.send(b"d", 160)
    assert not d.marker and d.sequence_number == 1
    s.start_talkspurt()
    assert s.send(b"e", 160).marker


def test_sender_event_packets_keep_their_timestamp() -> None:
    s = RtpSender(ssrc=1, payload_type=0, sequence_number=10, timestamp=1000)
    e1 = s.send_at(b"\x05\x0a\x00\xa0", 1000, marker=True, payload_type=101)
    e2 = s.send_at(b"\x05\x8a\x01\x40", 1000, marker=False, payload_type=101)
    assert (e1.sequence_number, e2.sequence_number) == (10, 11)
    assert e1.timestamp == e2.timestamp == 1000 and e1.payload_type == 101 and e1.marker
    assert s.send(b"x", 160).sequence_number == 12
