"""SDP parse/serialize and RFC 3264 offer/answer for G.711 + telephone-event."""

import pytest

from ivr.sip.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Answer,
    Direction,
    NoMatch,
    SdpParseError,
    build_offer,
    negotiate_answer,
    parse_sdp,
    remote_media,
)

OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 18 8 0 96\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:96 telephone-event/8000\r\n"
    "a=fmtp:96 0-15\r\n"
    "a=ptime:30\r\n"
    "a=sendrecv\r\n"
    "m=video 51372 RTP/AVP 31\r\n"
)
OURS = [PCMU, PCMA, TELEPHONE_EVENT]


def answer(offer: str = OFFER, supported: list = OURS) -> Answer:  # type: ignore[type-arg]
    result = negotiate_answer(
        parse_sdp(offer), supported, local_address="192.0.2.10", local_port=10000, session_id="42"
    )
    assert isinstance(result, Answer)
    return result


def test_parse_and_round_trip() -> None:
    sdp = parse_sdp(OFFER.encode())
    assert sdp.origin.username == "alice" and sdp.connection is not None
    assert sdp.connection.address == "198.51.100.7"
    audio, video = sdp.media
    assert (audio.port, audio.formats, audio.ptime, audio.direction) == (49170, ["18", "8", "0", "96"], 30,
                                                                         Direction.SENDRECV)
    assert [c.name for c in audio.codecs()] == ["G729", "PCMA", "PCMU", "telephone-event"]
    assert video.media == "video"
    assert sdp.to_bytes() == OFFER.encode()
    assert parse_sdp(sdp.to_bytes()) == sdp


def test_answer_picks_offerers_preference_and_keeps_its_event_payload_type() -> None:
    result = answer()
    assert result.codec.name == "PCMA" and result.codec.payload_type == 8
    assert result.telephone_event is not None and result.telephone_event.payload_type == 96
    assert result.ptime == 20  # 30 ms is not whole G.711 frames: sent as 20, so answered as 20 (issue 15 defect 2)
    assert (result.remote.address, result.remote.port) == ("198.51.100.7", 49170)
    assert result.direction == Direction.SENDRECV and result.send_media
    audio, video = result.sdp.media
    assert audio.formats == ["8", "96"] and audio.port == 10000
    assert ("rtpmap", "96 telephone-event/8000") in audio.attributes
    assert ("fmtp", "96 0-15") in audio.attributes
    assert audio.attribute("ptime") == "20"
    assert video.port == 0  # RFC 3264 section 6: rejected, same number of m= lines
    text = result.sdp.to_bytes().decode()
    assert "c=IN IP4 192.0.2.10\r\n" in text and "o=- 42 0 IN IP4 192.0.2.10\r\n" in text
    reparsed = parse_sdp(text)
    assert len(reparsed.media) == 2


@pytest.mark.parametrize(("offered", "sent"), [(10, 20), (20, 20), (30, 20), (40, 40), (60, 60), (200, 200),
                                                (240, 20)])
def test_the_answer_says_the_ptime_the_rtp_will_have(offered: int, sent: int) -> None:
    """What the answer says is what the media engine sends: whole 20 ms frames per packet, else 20 ms."""
    from ivr.rtp.media import MediaStream

    result = answer(OFFER.replace("a=ptime:30", f"a=ptime:{offered}"))
    assert isinstance(result, Answer) and result.ptime == sent
    assert result.sdp.media[0].attribute("ptime") == str(sent)
    stream = MediaStream(ssrc=1, sequence_number=1, timestamp=0)
    stream.configure(remote=("198.51.100.7", 49170), payload_type=0, telephone_event_pt=None, ptime_ms=result.ptime)
    assert stream.frames_per_packet * 20 == sent


def test_default_ptime_and_static_types_without_rtpmap() -> None:
    offer = OFFER.replace("a=ptime:30\r\n", "").replace(" 18 8 0 96", " 0").replace("a=rtpmap:8 PCMA/8000\r\n", "")
    result = answer(offer)
    assert result.codec == PCMU and result.ptime == 20 and result.telephone_event is None


def test_no_common_codec_is_no_match() -> None:
    offer = OFFER.replace(" 18 8 0 96", " 18")
    result = negotiate_answer(parse_sdp(offer), OURS, local_address="192.0.2.10", local_port=1, session_id="1")
    assert isinstance(result, NoMatch)
    no_audio = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\nm=video 5000 RTP/AVP 31\r\n"
    assert isinstance(
        negotiate_answer(parse_sdp(no_audio), OURS, local_address="h", local_port=1, session_id="1"), NoMatch
    )


@pytest.mark.parametrize(
    ("attribute", "ours", "on_hold"),
    [("sendonly", Direction.RECVONLY, True), ("recvonly", Direction.SENDONLY, False),
     ("inactive", Direction.INACTIVE, True), ("sendrecv", Direction.SENDRECV, False)],
)
def test_hold_directions(attribute: str, ours: Direction, on_hold: bool) -> None:
    result = answer(OFFER.replace("a=sendrecv", f"a={attribute}"))
    assert result.direction == ours and result.remote.on_hold == on_hold
    assert result.sdp.media[0].direction == ours


def test_rfc2543_hold_address() -> None:
    result = answer(OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0"))
    assert result.remote.on_hold and not result.send_media


def test_media_level_connection_wins() -> None:
    m_line = "m=audio 49170 RTP/AVP 18 8 0 96\r\n"
    offer = OFFER.replace(m_line, m_line + "c=IN IP4 203.0.113.5\r\n")
    assert answer(offer).remote.address == "203.0.113.5"


def test_build_offer_and_read_answer() -> None:
    offer = build_offer(OURS, local_address="192.0.2.10", local_port=10000, session_id="7")
    text = offer.to_bytes().decode()
    assert "m=audio 10000 RTP/AVP 0 8 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text
    assert "a=ptime:20\r\na=sendrecv\r\n" in text
    # The peer answers our offer; we find its media.
    peer = answer(text)
    media = remote_media(peer.sdp)
    assert media is not None and (media.address, media.port) == ("192.0.2.10", 10000)
    assert peer.codec == PCMU and peer.telephone_event is not None and peer.telephone_event.payload_type == 101
    with pytest.raises(ValueError):
        build_offer([TELEPHONE_EVENT], local_address="h", local_port=1, session_id="1")


@pytest.mark.parametrize("bad", ["", "x", "v=1\r\n", "v=0\r\ns=-\r\n", "v=0\r\no=a b\r\n",
                                 "v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", b"\xff"])
def test_bad_sdp(bad: str | bytes) -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(bad)
