"""RTCP reports (RFC 3550 section 6), sans-I/O: what one call's media says about itself every few seconds.

Each report is a compound packet (section 6.1): a sender report (SR, when we sent media since the last one) or
a receiver report (RR), with one reception report block for the caller's stream, then an SDES with our CNAME.
A PBX, an SBC or a carrier reads loss and jitter from them, and some end calls whose RTCP stops. The interval is
5 s scaled by a random 0.5-1.5 (section 6.3.1: not all calls of a box report in the same tick). Parsing takes
what a reception report needs back: the middle 32 bits of a peer's SR time (LSR) for the round trip.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

__all__ = [
    "INTERVAL",
    "ReceptionReport",
    "ReceptionState",
    "RtcpError",
    "SenderInfo",
    "build_report",
    "next_interval",
    "ntp_middle",
    "parse_compound",
]

#: Seconds between reports before the random factor (section 6.2's minimum for a two-party session).
INTERVAL = 5.0
#: Seconds between 1900 (NTP's epoch) and 1970 (Unix's).
NTP_OFFSET = 2208988800

SR, RR, SDES, BYE = 200, 201, 202, 203


class RtcpError(ValueError):
    """Not an RTCP compound packet (the reason is for the log)."""


@dataclass(frozen=True)
class SenderInfo:
    """Section 6.4.1: our wallclock (Unix seconds), the RTP timestamp of the same instant, and counts."""

    wallclock: float
    rtp_timestamp: int
    packets: int
    octets: int


@dataclass(frozen=True)
class ReceptionReport:
    """One report block (section 6.4.1) about the stream ``ssrc`` we receive."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0


def next_interval(interval: float = INTERVAL, rng: random.Random | None = None) -> float:
    """Seconds to the next report: ``interval`` times a random factor in [0.5, 1.5] (section 6.3.1)."""
    return interval * (rng or random).uniform(0.5, 1.5)


def ntp_middle(wallclock: float) -> int:
    """The middle 32 bits of the 64-bit NTP time of ``wallclock`` (LSR, DLSR units: 1/65536 s)."""
    ntp = wallclock + NTP_OFFSET
    return (int(ntp) & 0xFFFF) << 16 | int((ntp % 1.0) * 65536) & 0xFFFF


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def _block(report: ReceptionReport) -> bytes:
    lost = max(-0x800000, min(0x7FFFFF, report.cumulative_lost)) & 0xFFFFFF  # 24-bit signed (section 6.4.1)
    return struct.pack("!IIIIII", report.ssrc & 0xFFFFFFFF, (report.fraction_lost & 0xFF) << 24 | lost,
                       report.highest_sequence & 0xFFFFFFFF, report.jitter & 0xFFFFFFFF, report.lsr & 0xFFFFFFFF,
                       report.dlsr & 0xFFFFFFFF)


def build_report(ssrc: int, cname: str, *, sender: SenderInfo | None,
                 reception: ReceptionReport | None) -> bytes:
    """SR (``sender`` given) or RR, with ``reception`` as its one block if any, then SDES CNAME."""
    blocks = _block(reception) if reception is not None else b""
    count = 1 if reception is not None else 0
    if sender is not None:
        ntp = sender.wallclock + NTP_OFFSET
        seconds, fraction = int(ntp) & 0xFFFFFFFF, int((ntp % 1.0) * (1 << 32)) & 0xFFFFFFFF
        body = struct.pack("!IIIIII", ssrc & 0xFFFFFFFF, seconds, fraction, sender.rtp_timestamp & 0xFFFFFFFF,
                           sender.packets & 0xFFFFFFFF, sender.octets & 0xFFFFFFFF) + blocks
        first = _header(count, SR, body)
    else:
        first = _header(count, RR, struct.pack("!I", ssrc & 0xFFFFFFFF) + blocks)
    name = cname.encode("utf-8")[:255]
    chunk = struct.pack("!IBB", ssrc & 0xFFFFFFFF, 1, len(name)) + name + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)  # the item list ends with a null octet, padded to 32 bits
    return first + _header(1, SDES, chunk)


@dataclass(frozen=True)
class RtcpPacket:
    packet_type: int
    ssrc: int
    #: SR only: the middle 32 bits of its NTP time (what our next block returns as LSR).
    ntp_middle: int | None = None


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """The packets of an RTCP datagram: version 2, RTCP packet types, lengths that add up. SR or RR need not
    come first (RFC 5506 reduced-size RTCP: baresip sends an APP packet alone)."""
    out: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 8:
            raise RtcpError("truncated RTCP header")
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise RtcpError("not RTCP version 2")
        end = offset + 4 * (words + 1)
        if end > len(data):
            raise RtcpError("RTCP length beyond the datagram")
        if not 192 <= packet_type <= 223:
            raise RtcpError(f"packet type {packet_type} is not RTCP")  # RFC 5761 section 4: RTCP's range
        ssrc = struct.unpack_from("!I", data, offset + 4)[0]
        middle = None
        if packet_type == SR and end - offset >= 28:
            seconds, fraction = struct.unpack_from("!II", data, offset + 8)
            middle = (seconds & 0xFFFF) << 16 | fraction >> 16
        out.append(RtcpPacket(packet_type, ssrc, middle))
        offset = end
    return out


class ReceptionState:
    """What one report block needs between reports (RFC 3550 appendix A.3): the counts at the last report, to
    give the fraction lost since, and the peer's last SR (when it came) for LSR/DLSR."""

    def __init__(self) -> None:
        self._expected_prior = 0
        self._lost_prior = 0
        self._lsr = 0
        self._lsr_at: float | None = None

    def sender_report_received(self, middle: int, now: float) -> None:
        self._lsr, self._lsr_at = middle, now

    def block(self, ssrc: int, *, received: int, lost: int, highest_sequence: int, jitter_seconds: float,
              clock_rate: int, now: float) -> ReceptionReport:
        expected = received + max(lost, 0)
        expected_interval = expected - self._expected_prior
        lost_interval = max(lost, 0) - self._lost_prior
        self._expected_prior, self._lost_prior = expected, max(lost, 0)
        fraction = (lost_interval << 8) // expected_interval if expected_interval > 0 and lost_interval > 0 else 0
        dlsr = int((now - self._lsr_at) * 65536) if self._lsr_at is not None else 0
        return ReceptionReport(ssrc, min(fraction, 255), max(lost, 0), highest_sequence,
                               int(jitter_seconds * clock_rate), self._lsr if self._lsr_at is not None else 0, dlsr)
