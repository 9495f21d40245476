"""SDES (RFC 4568): the a=crypto lines we honour, and the answers to offers that ask for SRTP by sip.srtp mode."""

from __future__ import annotations

import base64

import pytest

from ivr.proto.sdes import choose, parse_crypto
from ivr.sip.sdp import PCMA, PCMU, TELEPHONE_EVENT, Answer, NoMatch, negotiate_answer, parse_sdp

THEIRS = bytes(range(30))
OURS = bytes(range(100, 130))
B64 = base64.b64encode(THEIRS).decode()


def offer(proto: str, *crypto: str) -> str:
    lines = "".join(f"a=crypto:{c}\r\n" for c in crypto)
    return ("v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
            f"m=audio 40000 {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"{lines}a=sendrecv\r\n")


def negotiate(text: str, mode: str) -> Answer | NoMatch:
    return negotiate_answer(parse_sdp(text), [PCMU, PCMA, TELEPHONE_EVENT], local_address="192.0.2.10",
                            local_port=20000, session_id="1", srtp=mode, srtp_key=OURS)


@pytest.mark.parametrize("value", [
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^31",
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}",
    f"1 AES_CM_128_HMAC_SHA1_32 inline:{B64}|2147483648",
])
def test_lines_we_honour(value: str) -> None:
    crypto = parse_crypto(value)
    assert crypto is not None and crypto.tag == 1 and crypto.key == THEIRS


@pytest.mark.parametrize(("value", "why"), [
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20", "a lifetime we would reach: we never re-key"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^31|1:4", "an MKI on every packet"),
    (f"1 AES_256_CM_HMAC_SHA1_80 inline:{B64}", "another suite"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} UNENCRYPTED_SRTP", "a session parameter"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=", "a key of the wrong length"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!", "not base64"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64};inline:{B64}", "two keys"),
])
def test_lines_we_skip(value: str, why: str) -> None:
    assert parse_crypto(value) is None, why


def test_the_offerers_first_usable_line_is_answered_with_its_tag_and_our_key() -> None:
    picked = choose([f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^31|1:4",
                     f"2 AES_CM_128_HMAC_SHA1_32 inline:{B64}", f"3 AES_CM_128_HMAC_SHA1_80 inline:{B64}"], OURS)
    assert picked is not None
    answer, keys = picked
    assert (answer.tag, answer.suite) == (2, "AES_CM_128_HMAC_SHA1_32")
    assert (keys.local_key, keys.remote_key) == (OURS, THEIRS)
    assert answer.line() == f"2 AES_CM_128_HMAC_SHA1_32 inline:{base64.b64encode(OURS).decode()}"


def test_an_srtp_offer_gets_an_srtp_answer_when_allowed() -> None:
    text = offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^31")
    result = negotiate(text, "optional")
    assert isinstance(result, Answer) and result.srtp is not None
    assert (result.srtp.local_key, result.srtp.remote_key) == (OURS, THEIRS)
    media = parse_sdp(result.sdp.to_bytes()).media[0]
    assert media.proto == "RTP/SAVP" and media.port == 20000
    assert media.attribute_values("crypto") == [f"1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(OURS).decode()}"]
    # off (the default): an RTP/SAVP stream is refused, port zero, and with nothing else 488
    refused = negotiate(text, "off")
    assert isinstance(refused, NoMatch) and "SRTP" in refused.reason


def test_best_effort_srtp_and_required() -> None:
    """RTP/AVP with a=crypto (best effort, as baresip's srtp and Asterisk offer it): SRTP unless off; plain RTP
    is refused when required, and so is an offer whose every a=crypto is unusable."""
    best_effort = offer("RTP/AVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}")
    result = negotiate(best_effort, "optional")
    assert isinstance(result, Answer) and result.srtp is not None
    assert parse_sdp(result.sdp.to_bytes()).media[0].proto == "RTP/AVP"
    plain = negotiate(best_effort, "off")
    assert isinstance(plain, Answer) and plain.srtp is None
    assert parse_sdp(plain.sdp.to_bytes()).media[0].attribute_values("crypto") == []
    assert isinstance(negotiate(offer("RTP/AVP"), "optional"), Answer)
    for text in (offer("RTP/AVP"), offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20")):
        required = negotiate(text, "required")
        assert isinstance(required, NoMatch) and "SRTP required" in required.reason


def test_our_offer_asks_for_srtp_and_takes_the_answers_key() -> None:
    from ivr.proto.sdes import answered, offer_crypto
    from ivr.sip.sdp import build_offer, remote_media

    mine = offer_crypto(OURS)
    required = parse_sdp(build_offer([PCMU, TELEPHONE_EVENT], local_address="192.0.2.10", local_port=20000,
                                     session_id="1", crypto=mine, srtp_required=True).to_bytes())
    assert required.media[0].proto == "RTP/SAVP"
    assert parse_crypto(required.media[0].attribute_values("crypto")[0]) == mine
    best_effort = build_offer([PCMU], local_address="192.0.2.10", local_port=20000, session_id="1", crypto=mine)
    assert best_effort.media[0].proto == "RTP/AVP" and best_effort.media[0].attribute_values("crypto")
    # the answer: the peer's key under our tag and suite; another tag, or none, is plain RTP
    answer = remote_media(parse_sdp(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}")))
    assert answer is not None and answered(mine, list(answer.crypto)) is not None
    keys = answered(mine, list(answer.crypto))
    assert keys is not None and (keys.local_key, keys.remote_key) == (OURS, THEIRS)
    assert answered(mine, [f"2 AES_CM_128_HMAC_SHA1_80 inline:{B64}"]) is None
    assert answered(mine, []) is None
