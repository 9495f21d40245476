"""The REFER/NOTIFY state machine of the user agent (RFC 3515), bytes in and out, time passed in."""

from __future__ import annotations

from ivr.sip.content import sipfrag_status
from ivr.sip.message import SipRequest, SipResponse, make_response, parse_message
from ivr.sip.ua import UserAgent
from ivr.sip.ua_events import CallEnded, ReferCompleted
from tests.sip.test_ua import PEER, confirmed_call, events, new_ua, request, run_until, sent

REFER_TO = "sip:200@192.0.2.20"


def refer(ua: UserAgent, now: float = 1.0) -> tuple[str, str, SipRequest]:
    """A confirmed call and our REFER on it; returns (leg id, our tag, the REFER as sent)."""
    call, tag = confirmed_call(ua)
    ua.refer(call.leg_id, REFER_TO, now)
    (msg, address), = sent(ua)
    assert isinstance(msg, SipRequest) and msg.method == "REFER" and address == PEER
    return call.leg_id, tag, msg


def answer(ua: UserAgent, req: SipRequest, status: int, now: float) -> None:
    ua.receive_datagram(make_response(req, status).to_bytes(), PEER, now)


def notify(ua: UserAgent, tag: str, cseq: int, frag: bytes, now: float, state: str = "active") -> SipResponse:
    data = request("NOTIFY", branch=f"z9hG4bKn{cseq}", cseq=cseq, to_tag=tag, body=frag,
                   content_type="message/sipfrag", extra=["Event: refer", f"Subscription-State: {state}"])
    ua.receive_datagram(data, PEER, now)
    (ok, _), = sent(ua)
    assert isinstance(ok, SipResponse)
    return ok


def test_refer_request_on_the_wire() -> None:
    ua = new_ua()
    _, tag, msg = refer(ua)
    assert msg.headers.get("Refer-To") == f"<{REFER_TO}>"
    assert msg.uri == "sip:alice@192.0.2.20:5062"  # the caller's Contact
    assert msg.from_addr.tag == tag and msg.to_addr.tag == "a1" and msg.call_id == "call-1"
    assert msg.cseq.method == "REFER" and msg.headers.get("Contact") is not None


def test_202_then_sipfrag_trying_then_200_is_transferred() -> None:
    ua = new_ua()
    leg, tag, msg = refer(ua)
    answer(ua, msg, 202, 1.1)
    assert events(ua) == []
    assert notify(ua, tag, 2, b"SIP/2.0 100 Trying\r\n", 1.2).status == 200
    assert events(ua) == []
    assert notify(ua, tag, 3, b"SIP/2.0 200 OK\r\n", 1.5, "terminated;reason=noresource").status == 200
    assert events(ua) == [ReferCompleted(leg, True, 200, "NOTIFY sipfrag 200")]
    # The transferee then hangs up on us: the leg ends as usual, nothing more about the REFER.
    ua.receive_datagram(request("BYE", branch="z9hG4bKbye", cseq=4, to_tag=tag), PEER, 1.6)
    assert events(ua) == [CallEnded(leg, "caller hung up")]


def test_notify_overtaking_the_202_still_counts() -> None:
    ua = new_ua()
    leg, tag, msg = refer(ua)
    notify(ua, tag, 2, b"SIP/2.0 200 OK\r\n", 1.1, "terminated")
    answer(ua, msg, 202, 1.2)
    assert events(ua) == [ReferCompleted(leg, True, 200, "NOTIFY sipfrag 200")]


def test_refer_refused_405_603_501() -> None:
    for status in (405, 603, 501):
        ua = new_ua()
        leg, _, msg = refer(ua)
        answer(ua, msg, status, 1.1)
        (done,) = events(ua)
        assert isinstance(done, ReferCompleted) and (done.leg_id, done.ok, done.status) == (leg, False, status)


def test_failing_sipfrag_is_refused() -> None:
    ua = new_ua()
    leg, tag, msg = refer(ua)
    answer(ua, msg, 202, 1.1)
    notify(ua, tag, 2, b"SIP/2.0 486 Busy Here\r\n", 1.2, "terminated")
    assert events(ua) == [ReferCompleted(leg, False, 486, "NOTIFY sipfrag 486")]


def test_no_final_notify_times_out() -> None:
    ua = new_ua(refer_timeout=10.0)
    leg, tag, msg = refer(ua)
    answer(ua, msg, 202, 1.1)
    notify(ua, tag, 2, b"SIP/2.0 180 Ringing\r\n", 2.0)
    run_until(ua, 10.9)
    assert events(ua) == []
    run_until(ua, 11.1)
    assert events(ua) == [ReferCompleted(leg, False, 408, "no final NOTIFY")]
    # A late NOTIFY is still answered, and ignored.
    assert notify(ua, tag, 3, b"SIP/2.0 200 OK\r\n", 12.0).status == 200
    assert events(ua) == []


def test_refer_unanswered_times_out_with_the_transaction() -> None:
    ua = new_ua(refer_timeout=60.0)
    leg, _, _ = refer(ua)
    run_until(ua, 1.0 + 64 * 0.5 + 0.1)  # Timer F
    done = [e for e in events(ua) if isinstance(e, ReferCompleted)]
    assert done == [ReferCompleted(leg, False, 408, "REFER timed out")]


def test_call_ending_during_refer_reports_before_call_ended() -> None:
    ua = new_ua()
    leg, tag, msg = refer(ua)
    answer(ua, msg, 202, 1.1)
    ua.receive_datagram(request("BYE", branch="z9hG4bKbye", cseq=2, to_tag=tag), PEER, 1.2)
    assert events(ua) == [ReferCompleted(leg, False, 0, "call ended (caller hung up)"),
                          CallEnded(leg, "caller hung up")]


def test_dtmf_info_out() -> None:
    ua = new_ua()
    call, _ = confirmed_call(ua)
    ua.send_dtmf_info(call.leg_id, "5", 1.0)
    (msg, _), = sent(ua)
    assert isinstance(msg, SipRequest) and msg.method == "INFO"
    assert msg.content_type == "application/dtmf-relay" and msg.body == b"Signal=5\r\nDuration=160\r\n"


def test_sipfrag_status() -> None:
    assert sipfrag_status(b"SIP/2.0 200 OK\r\n") == 200
    assert sipfrag_status(b"  SIP/2.0 603 Declined") == 603
    assert sipfrag_status(b"garbage") is None and sipfrag_status(b"") is None
    assert parse_message(request("OPTIONS")).method == "OPTIONS"  # helper sanity
