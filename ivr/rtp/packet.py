"""RFC 3550 RTP packets: parse, serialize, RTP/RTCP demultiplexing and a sender-side stamper.

Sans-I/O: bytes in, dataclasses out. Every malformed datagram raises :class:`RtpParseError` (a
``ValueError``) and nothing else, so the transport adapter can log and carry on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RTP_VERSION",
    "RtcpHeader",
    "RtpPacket",
    "RtpParseError",
    "RtpSender",
    "is_rtcp",
    "parse_datagram",
    "parse_rtcp",
    "parse_rtp",
]

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")


class RtpParseError(ValueError):
    """A datagram that is not a valid RTP or RTCP packet; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1). ``padding`` is only used when serializing."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    """The 16-bit "defined by profile" field of the header extension, None when X is clear."""
    extension: bytes = b""
    """Header extension body (a multiple of 4 bytes), without its 4-byte header."""
    padding: int = 0
    """Number of padding bytes to append on serialize (0..255); parsed packets report theirs."""

    def serialize(self) -> bytes:
        """Build the wire form; raises ``ValueError`` on out-of-range fields."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")  # RFC 3550 section 5.1: CC is 4 bits
        if len(self.extension) % 4 or len(self.extension) > 4 * 0xFFFF:
            raise ValueError("extension body must be a multiple of 4 bytes")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must be 0..255 bytes")
        has_ext = self.extension_profile is not None
        b0 = (RTP_VERSION << 6) | (0x20 if self.padding else 0) | (0x10 if has_ext else 0) | len(self.csrc)
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _HEADER.pack(b0, b1, self.sequence_number & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc),
            struct.pack(f"!{len(self.csrc)}I", *self.csrc),
        ]
        if self.extension_profile is not None:
            parts.append(_EXT_HEADER.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            # RFC 3550 section 5.1: the last octet counts the padding octets, itself included.
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class RtcpHeader:
    """The common header of one packet inside an RTCP compound packet (RFC 3550 section 6.4)."""

    packet_type: int
    count: int
    """Reception report count, or source count, or FMT, by packet type."""
    ssrc: int | None
    body: bytes = field(repr=False)
    """Everything after the 4-byte common header, padding removed."""


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: RTCP when the second octet is 192..223 (the RTCP types 200-204 and kin).

    RTP payload types 64..95 are not used, so with the marker bit these values never start RTP.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse and validate an RTP packet (RFC 3550 section 5.1, validity checks of appendix A.1)."""
    n = len(data)
    if n < 12:
        raise RtpParseError(f"RTP packet too short ({n} bytes)")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version {b0 >> 6}, expected 2")
    if 192 <= b1 <= 223:
        raise RtpParseError("RTCP packet (RFC 5761 section 4), not RTP")
    cc = b0 & 0x0F
    offset = 12 + 4 * cc
    if offset > n:
        raise RtpParseError(f"CSRC count {cc} exceeds packet length {n}")
    csrc = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
    extension_profile: int | None = None
    extension = b""
    if b0 & 0x10:  # RFC 3550 section 5.3.1: X bit, one extension after the CSRC list
        if offset + 4 > n:
            raise RtpParseError("header extension truncated")
        extension_profile, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4
        if offset + 4 * words > n:
            raise RtpParseError(f"header extension length {words} words exceeds packet")
        extension = bytes(data[offset : offset + 4 * words])
        offset += 4 * words
    end = n
    padding = 0
    if b0 & 0x20:  # RFC 3550 section 5.1: P bit, last octet counts the padding
        padding = data[-1]
        if padding == 0:
            raise RtpParseError("padding count of zero")
        if offset + padding > n:
            raise RtpParseError(f"padding count {padding} exceeds payload")
        end = n - padding
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(b1 & 0x80),
        csrc=tuple(csrc),
        extension_profile=extension_profile,
        extension=extension,
        padding=padding,
    )


def parse_rtcp(data: bytes) -> list[RtcpHeader]:
    """Split and validate an RTCP compound packet (RFC 3550 section 6.1 and appendix A.2).

    Only the framing is checked (version, lengths, padding only in the last packet); the body of
    each report is left to whoever needs it.
    """
    n = len(data)
    if n < 4:
        raise RtpParseError(f"RTCP packet too short ({n} bytes)")
    packets: list[RtcpHeader] = []
    offset = 0
    while offset < n:
        if offset + 4 > n:
            raise RtpParseError("RTCP compound packet has trailing bytes")
        b0, pt, words = _RTCP_HEADER.unpack_from(data, offset)
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTCP version {b0 >> 6}, expected 2")
        if not 192 <= pt <= 223:
            raise RtpParseError(f"RTCP packet type {pt} outside 192..223")
        end = offset + 4 * (words + 1)
        if end > n:
            raise RtpParseError(f"RTCP length {words} words exceeds packet")
        body_end = end
        if b0 & 0x20:
            if end != n:
                raise RtpParseError("RTCP padding only allowed in the last packet")  # appendix A.2
            pad = data[end - 1]
            if pad == 0 or offset + 4 + pad > end:
                raise RtpParseError(f"RTCP padding count {pad} invalid")
            body_end = end - pad
        body = bytes(data[offset + 4 : body_end])
        ssrc = int.from_bytes(body[:4], "big") if len(body) >= 4 else None
        packets.append(RtcpHeader(packet_type=pt, count=b0 & 0x1F, ssrc=ssrc, body=body))
        offset = end
    return packets


def parse_datagram(data: bytes) -> RtpPacket | list[RtcpHeader]:
    """Demultiplex one datagram from an RTP port shared with RTCP (RFC 5761 section 4)."""
    if is_rtcp(data):
        return parse_rtcp(data)
    return parse_rtp(data)


class RtpSender:
    """Stamps outgoing packets: sequence number, timestamp, SSRC, and the marker bit.

    Sans-I/O: the caller picks the random initial values (RFC 3550 section 5.1 asks for random
    sequence number and timestamp) and sends the packets it gets back.
    """

    def __init__(self, ssrc: int, payload_type: int, *, sequence_number: int = 0, timestamp: int = 0) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self.payload_type = payload_type
        self.sequence_number = sequence_number & 0xFFFF
        """Sequence number of the next packet."""
        self.timestamp = timestamp & 0xFFFFFFFF
        """RTP timestamp of the next media sample."""
        self._talkspurt_start = True

    def start_talkspurt(self) -> None:
        """Set the marker on the next packet (RFC 3551 section 4.1: first packet after silence)."""
        self._talkspurt_start = True

    def skip(self, samples: int) -> None:
        """Advance the clock over suppressed silence; the next packet starts a talkspurt."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._talkspurt_start = True

    def send(self, payload: bytes, samples: int, *, payload_type: int | None = None) -> RtpPacket:
        """Stamp one media packet covering ``samples`` clock ticks, then advance the clock."""
        packet = self._stamp(payload, self.timestamp, self._talkspurt_start, payload_type)
        self._talkspurt_start = False
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        return packet

    def send_at(self, payload: bytes, timestamp: int, *, marker: bool, payload_type: int) -> RtpPacket:
        """Stamp a packet whose timestamp the caller sets (RFC 4733 events keep the event start)."""
        return self._stamp(payload, timestamp & 0xFFFFFFFF, marker, payload_type)

    def _stamp(self, payload: bytes, timestamp: int, marker: bool, payload_type: int | None) -> RtpPacket:
        packet = RtpPacket(
            payload_type=self.payload_type if payload_type is None else payload_type,
            sequence_number=self.sequence_number,
            timestamp=timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF  # RFC 3550 section 5.1: +1 per packet
        return packet
