"""SRTP on a call's media over real UDP (libsrtp on both ends: pylibsrtp is the peer's too, with the keys an SDES
answer gives): our packets decrypt with our key, the peer's digits are heard with its key, and a peer with another
key is not heard at all, with one clear log line."""

from __future__ import annotations

import logging

import pylibsrtp
import pytest

from ivr.proto.dtmf import telephone_event_frames
from ivr.proto.sdes import SrtpKeys
from ivr.rtp.packet import RtpSender, parse_rtp
from ivr.rtp.session import MediaEngine
from tests.rtp.test_session import TE_PT, ULAW_SILENCE, audio_packets, prompt, seq_continuous
from tests.rtp.udp_peer import Peer, wait_until

OURS = bytes(range(30))
THEIRS = bytes(range(50, 80))
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def session_of(key: bytes, outbound: bool) -> pylibsrtp.Session:
    ssrc = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc, srtp_profile=PROFILE))


def keyed_digit(key: bytes) -> list[bytes]:
    """A phone's silence, key 5 by telephone-event and silence again, protected with ``key``."""
    sender = RtpSender(ssrc=0x4321, payload_type=0, sequence_number=100, timestamp=1000)
    datagrams = audio_packets(sender, [ULAW_SILENCE] * 5)
    ts = sender.timestamp
    for ev in telephone_event_frames("5", 400, end_repeats=3):
        datagrams.append(sender.send_at(ev.payload, ts, marker=ev.marker, payload_type=TE_PT).serialize())
    datagrams += audio_packets(sender, [ULAW_SILENCE] * 5)
    tx = session_of(key, outbound=True)
    return [bytes(tx.protect(d)) for d in datagrams]


async def test_both_ways_encrypted_with_the_sdes_keys(engine: MediaEngine, peer: Peer) -> None:
    session = await engine.open_session(call_id="srtp")
    session.configure(remote=peer.addr, payload_type=0, telephone_event_pt=TE_PT,
                      srtp=SrtpKeys("AES_CM_128_HMAC_SHA1_80", OURS, THEIRS))
    digits: list[tuple[str, str, str]] = []
    session.on_dtmf = lambda kind, digit, source: digits.append((kind, digit, source))
    frames = prompt(0x20, 5)
    await session.play(frames)
    await peer.send_paced(keyed_digit(THEIRS), ("127.0.0.1", session.local_port), interval=0.01)
    await wait_until(lambda: len(digits) >= 2, what="the peer's key through SRTP")
    await session.close()
    assert digits == [("start", "5", "rfc4733"), ("end", "5", "rfc4733")]
    wire = [data for _, data, _ in peer.received]
    assert all(frames[0] not in d and len(d) == 12 + 160 + 10 for d in wire)  # encrypted, with an 80-bit tag
    rx = session_of(OURS, outbound=False)
    packets = [parse_rtp(bytes(rx.unprotect(d))) for d in wire]  # raises if one does not authenticate
    assert seq_continuous(packets)
    payloads = [p.payload for p in packets]
    i = payloads.index(frames[0])
    assert payloads[i:i + 5] == frames
    assert session.stats["srtp"] is True and session.stats["srtp_failed"] == 0


async def test_a_peer_with_another_key_is_not_heard_and_the_log_says_why(
        engine: MediaEngine, peer: Peer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    session = await engine.open_session(call_id="srtp-wrong")
    session.configure(remote=peer.addr, payload_type=0, telephone_event_pt=TE_PT,
                      srtp=SrtpKeys("AES_CM_128_HMAC_SHA1_80", OURS, THEIRS))
    digits: list[tuple[str, str, str]] = []
    heard: list[bytes] = []
    session.on_dtmf = lambda kind, digit, source: digits.append((kind, digit, source))
    session.on_audio = heard.append
    sent = keyed_digit(bytes(reversed(THEIRS)))
    await peer.send_paced(sent, ("127.0.0.1", session.local_port), interval=0.01)
    await wait_until(lambda: session.stats["srtp_failed"] >= len(sent), what="every packet refused")
    await session.close()
    assert digits == [] and session.stats["received"] == 0 and heard == []
    lines = [r.getMessage() for r in caplog.records if "srtp" in r.getMessage()]
    assert len(lines) == 1 and "fail authentication" in lines[0] and r"127.0.0.1" in lines[0], lines


def test_a_reinvite_with_the_peers_new_key_keeps_our_direction_going() -> None:
    """Our key is the call's: a re-INVITE that changes only the peer's key must not restart our libsrtp state,
    or after a sequence wrap the rollover counter would go back to 0 and reuse a keystream."""
    from ivr.rtp.srtp import SrtpContext

    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", OURS, THEIRS)
    updated, untouched = SrtpContext(keys), SrtpContext(keys)
    sender = RtpSender(ssrc=0x99, payload_type=0, sequence_number=65534, timestamp=0)
    wrap = [sender.send(ULAW_SILENCE, 160).serialize() for _ in range(3)]  # 65534, 65535, 0: rollover 1
    for packet in wrap:
        assert updated.protect(packet) == untouched.protect(packet)
    updated.update(SrtpKeys("AES_CM_128_HMAC_SHA1_80", OURS, bytes(reversed(THEIRS))))
    after = sender.send(ULAW_SILENCE, 160).serialize()
    assert updated.protect(after) == untouched.protect(after)
    # and the peer's new key is the one its packets are read with from now on
    peer_tx = session_of(bytes(reversed(THEIRS)), outbound=True)
    assert updated.unprotect(bytes(peer_tx.protect(after))) == after
    assert untouched.unprotect(bytes(session_of(bytes(reversed(THEIRS)), outbound=True).protect(after))) is None
