"""RTCP reports over real UDP (RFC 3550 section 6, issue 15 item 13 "RTCP protected too"): a call reports to
the peer's RTP port + 1 as a sender report with our RTP stream's SSRC and counts, a reception block about the
peer's stream and an SDES CNAME; with SRTP the reports are SRTCP (they decrypt with our key and not without),
the peer's SRTCP is authenticated (its SR time comes back as our LSR), and SRTCP under another key is dropped."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from ivr.proto import rtcp
from ivr.proto.sdes import SrtpKeys
from ivr.rtp.packet import RtpSender, parse_rtp
from ivr.rtp.session import MediaEngine, RtpSession
from tests.rtp.test_session import ULAW_SILENCE, audio_packets, prompt
from tests.rtp.test_srtp import OURS, THEIRS, session_of
from tests.rtp.udp_peer import free_port_range, wait_until

PHONE_SSRC = 0x4321


class Phone:
    """An RTP socket on an even port and its RTCP socket on the port above, as RFC 3550 pairs them."""

    def __init__(self) -> None:
        base = free_port_range(2)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", base))
        self.rtcp.bind(("127.0.0.1", base + 1))
        for s in (self.rtp, self.rtcp):
            s.setblocking(False)
        self.addr = ("127.0.0.1", base)

    async def next_rtcp(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.rtcp, 2048), timeout)

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
async def phone() -> AsyncIterator[Phone]:
    p = Phone()
    try:
        yield p
    finally:
        p.close()


def phone_audio(key: bytes | None) -> list[bytes]:
    packets = audio_packets(RtpSender(ssrc=PHONE_SSRC, payload_type=0, sequence_number=100, timestamp=1000),
                            [ULAW_SILENCE] * 10)
    if key is None:
        return packets
    tx = session_of(key, outbound=True)
    return [bytes(tx.protect(p)) for p in packets]


async def talk(session: RtpSession, phone: Phone, packets: list[bytes]) -> None:
    for packet in packets:
        phone.rtp.sendto(packet, ("127.0.0.1", session.local_port))
        await asyncio.sleep(0.02)


async def test_a_call_sends_sender_reports_about_both_streams(engine: MediaEngine, phone: Phone) -> None:
    """To the phone's RTP port + 1: SR with our RTP stream's SSRC and counts, a block about the phone's stream,
    SDES with our CNAME."""
    engine.rtcp_interval = 0.6
    session = await engine.open_session(call_id="rtcp")
    session.configure(remote=phone.addr, payload_type=0, telephone_event_pt=None)
    playing = asyncio.ensure_future(session.play(prompt(0x20, 100)))
    await talk(session, phone, phone_audio(None))
    await wait_until(lambda: session.stats["received"] >= 10, what="the phone's audio")
    data = await phone.next_rtcp()
    ours = parse_rtp(await asyncio.get_running_loop().sock_recv(phone.rtp, 2048)).ssrc
    playing.cancel()
    await session.close()
    report = rtcp.parse_compound(data)
    assert [p.packet_type for p in report] == [rtcp.SR, rtcp.SDES]
    assert report[0].ssrc == ours and report[1].ssrc == ours
    packets, octets = struct.unpack_from("!II", data, 20)
    assert packets > 0 and octets == 160 * packets  # sender info: 20 ms PCMU frames
    assert data[0] & 0x1F == 1  # one reception report block
    block_ssrc, lost_word, highest = struct.unpack_from("!III", data, 28)
    assert block_ssrc == PHONE_SSRC and highest == 100 + 9 and lost_word & 0xFFFFFF == 0
    assert b"edge-ivr-" in data  # the CNAME


async def test_with_srtp_reports_are_srtcp_and_the_peers_are_authenticated(engine: MediaEngine,
                                                                           phone: Phone) -> None:
    engine.rtcp_interval = 0.3
    session = await engine.open_session(call_id="srtcp")
    session.configure(remote=phone.addr, payload_type=0, telephone_event_pt=None,
                      srtp=SrtpKeys("AES_CM_128_HMAC_SHA1_80", OURS, THEIRS))
    playing = asyncio.ensure_future(session.play(prompt(0x20, 100)))
    await talk(session, phone, phone_audio(THEIRS))
    wire = await phone.next_rtcp()
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(wire)  # encrypted: no plain SR on the wire
    plain = bytes(session_of(OURS, outbound=False).unprotect_rtcp(wire))  # raises if it does not authenticate
    assert [p.packet_type for p in rtcp.parse_compound(plain)] == [rtcp.SR, rtcp.SDES]
    # The phone's own SR, under its key: authenticated, and its time returns as our block's LSR.
    phone_sr = rtcp.build_report(PHONE_SSRC, "phone", sender=rtcp.SenderInfo(1_800_000_000.25, 1, 10, 1600),
                                 reception=None)
    phone.rtcp.sendto(bytes(session_of(THEIRS, outbound=True).protect_rtcp(phone_sr)),
                      ("127.0.0.1", session.local_port + 1))
    await wait_until(lambda: session.stats["rtcp"] >= 1, what="the phone's SRTCP")
    lsr = 0
    for _ in range(10):  # bounded: a report or two later
        plain = bytes(session_of(OURS, outbound=False).unprotect_rtcp(await phone.next_rtcp()))
        lsr = struct.unpack_from("!I", plain, 44)[0]
        if lsr:
            break
    # Another key: dropped and counted.
    wrong = bytes(session_of(bytes(reversed(THEIRS)), outbound=True).protect_rtcp(phone_sr))
    phone.rtcp.sendto(wrong, ("127.0.0.1", session.local_port + 1))
    await wait_until(lambda: session.stats["srtcp_failed"] >= 1, what="the wrong key's SRTCP refused")
    playing.cancel()
    await session.close()
    assert lsr == rtcp.ntp_middle(1_800_000_000.25)
    assert session.stats["srtcp_failed"] == 1 and session.stats["rtcp_garbage"] == 0


def test_report_layout_and_parse_round_trip() -> None:
    block = rtcp.ReceptionReport(0xABC, 25, 7, 0x1_0005, 40, 0x1234_5678, 0x10000)
    data = rtcp.build_report(0x99, "x", sender=rtcp.SenderInfo(1_700_000_000.5, 4242, 3, 480), reception=block)
    assert len(data) % 4 == 0 and data[0] == 0x81 and data[1] == rtcp.SR
    (sr, sdes) = rtcp.parse_compound(data)
    assert sr.ssrc == 0x99 and sr.ntp_middle == rtcp.ntp_middle(1_700_000_000.5) and sdes.packet_type == rtcp.SDES
    assert struct.unpack_from("!IIIIII", data, 28) == (0xABC, 25 << 24 | 7, 0x1_0005, 40, 0x1234_5678, 0x10000)
    rr = rtcp.build_report(0x99, "x", sender=None, reception=None)
    assert rr[1] == rtcp.RR and [p.packet_type for p in rtcp.parse_compound(rr)] == [rtcp.RR, rtcp.SDES]
    for bad in (b"\x80\xc8", b"\x40" + data[1:], data[:-4], b"\x81\x60" + data[2:]):
        with pytest.raises(rtcp.RtcpError):
            rtcp.parse_compound(bad)


def test_fraction_lost_is_since_the_last_report() -> None:
    state = rtcp.ReceptionState()
    first = state.block(1, received=90, lost=10, highest_sequence=99, jitter_seconds=0.002, clock_rate=8000, now=0)
    second = state.block(1, received=190, lost=10, highest_sequence=199, jitter_seconds=0.0, clock_rate=8000, now=5)
    assert (first.fraction_lost, first.cumulative_lost, first.jitter) == (25, 10, 16)  # 10/100 of 256
    assert (second.fraction_lost, second.cumulative_lost) == (0, 10)


