"""The UAS core: bytes in, events and datagrams out; time moves only through handle_timer(now)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from ivr.sip.message import SipRequest, SipResponse, parse_message
from ivr.sip.sdp import PCMU, TELEPHONE_EVENT, Answer, Direction, negotiate_answer, parse_sdp
from ivr.sip.transaction import TimerConfig
from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import CallConfirmed, CallEnded, DtmfReceived, IncomingCall, MediaAnswered, MediaChanged, UaEvent
from ivr.sip.ua_state import LegState, LegStateError

PEER = ("192.0.2.20", 5062)
LOCAL = ("192.0.2.10", 5060)
CONFIG = UserAgentConfig(allowed_peers=("192.0.2.0/24",))

OFFER = (
    "v=0\r\no=alice 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n{direction}"
)


def offer(direction: str = "", port: int = 40000, address: str = "192.0.2.20") -> bytes:
    text = OFFER.format(direction=f"a={direction}\r\n" if direction else "")
    return text.replace("40000", str(port)).replace("c=IN IP4 192.0.2.20", f"c=IN IP4 {address}").encode()


def our_sdp(remote: bytes, version: str = "1") -> bytes:
    answer = negotiate_answer(parse_sdp(remote), [PCMU, TELEPHONE_EVENT], local_address=LOCAL[0],
                              local_port=30000, session_id="77", session_version=version)
    assert isinstance(answer, Answer)
    return answer.sdp.to_bytes()


def request(
    method: str,
    *,
    call_id: str = "call-1",
    branch: str = "z9hG4bKinv1",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    from_tag: str = "a1",
    uri: str = "sip:5000@192.0.2.10",
    body: bytes = b"",
    content_type: str = "application/sdp",
    extra: Iterable[str] = (),
    contact: str = "<sip:alice@192.0.2.20:5062>",
) -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5062;branch={branch}",
        "Max-Forwards: 70",
        f"From: \"Alice\" <sip:alice@example.com>;tag={from_tag}",
        "To: <sip:5000@192.0.2.10>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        f"Contact: {contact}",
        *extra,
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def events(ua: UserAgent) -> list[UaEvent]:
    out = []
    while (event := ua.next_event()) is not None:
        out.append(event)
    return out


def sent(ua: UserAgent) -> list[tuple[SipRequest | SipResponse, tuple[str, int]]]:
    return [(parse_message(data), address) for data, address in ua.datagrams_to_send()]


def statuses(ua: UserAgent) -> list[int | str]:
    return [m.status if isinstance(m, SipResponse) else m.method for m, _ in sent(ua)]


def responses(ua: UserAgent) -> list[SipResponse]:
    return [m for m, _ in sent(ua) if isinstance(m, SipResponse)]


def run_until(ua: UserAgent, limit: float) -> None:
    while (deadline := ua.get_timer()) is not None and deadline <= limit:
        ua.handle_timer(deadline)


def incoming(ua: UserAgent, data: bytes | None = None, now: float = 0.0) -> IncomingCall:
    ua.receive_datagram(data if data is not None else request("INVITE", body=offer()), PEER, now)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    assert statuses(ua) == [100]
    return event


def confirmed_call(ua: UserAgent, extra: Iterable[str] = ()) -> tuple[IncomingCall, str]:
    """An answered and ACKed call; returns the event and our To tag."""
    call = incoming(ua, request("INVITE", body=offer(), extra=extra))
    ua.answer(call.leg_id, our_sdp(offer()), 0.1)
    (ok,) = responses(ua)
    tag = ok.to_addr.tag
    assert tag is not None
    ua.receive_datagram(request("ACK", branch="z9hG4bKack1", to_tag=tag), PEER, 0.2)
    assert events(ua) == [CallConfirmed(call.leg_id)]
    return call, tag


def new_ua(**settings: object) -> UserAgent:
    config = UserAgentConfig(**{"allowed_peers": ("192.0.2.0/24",), **settings})  # type: ignore[arg-type]
    return UserAgent(config, LOCAL)


# ------------------------------------------------------------------------------------------- INVITE


def test_invite_reports_incoming_call_with_caller_and_dialed() -> None:
    ua = new_ua()
    pai = "P-Asserted-Identity: <tel:+4930123;verstat=ok>, <sip:+4930123@pbx>"
    call = incoming(ua, request("INVITE", body=offer(), extra=[pai]))
    assert (call.call_id, call.caller, call.dialed, call.source) == ("call-1", "+4930123", "5000", PEER)
    assert call.offer is not None and call.offer.media[0].port == 40000
    assert ua.leg_state(call.leg_id) == LegState.INCOMING


def test_caller_falls_back_to_from_and_dialed_to_to() -> None:
    ua = new_ua()
    call = incoming(ua, request("INVITE", uri="sip:192.0.2.10"))
    assert (call.caller, call.dialed, call.offer) == ("alice", "5000", None)


def test_peer_outside_allowed_peers_gets_stateless_403() -> None:
    ua = new_ua(allowed_peers=("198.51.100.0/24", "2001:db8::/32"))
    ua.receive_datagram(request("INVITE", body=offer()), PEER, 0.0)
    ((response, address),) = sent(ua)
    assert isinstance(response, SipResponse) and response.status == 403 and address == PEER
    assert response.to_addr.tag is not None
    ua.receive_datagram(request("ACK", to_tag=response.to_addr.tag), PEER, 0.1)  # its ACK: dropped
    assert events(ua) == [] and sent(ua) == [] and ua.stats.forbidden == 2


def test_rate_limit_per_source_gives_503_with_retry_after() -> None:
    ua = new_ua(invite_rate=1.0, invite_burst=2.0, retry_after=7)
    for n in range(2):
        incoming(ua, request("INVITE", call_id=f"c{n}", branch=f"z9hG4bK{n}"), now=0.0)
    ua.receive_datagram(request("INVITE", call_id="c3", branch="z9hG4bK3"), PEER, 0.1)
    assert events(ua) == []
    (trying, busy) = responses(ua)
    assert busy.status == 503 and busy.headers.get("Retry-After") == "7" and ua.stats.rate_limited == 1
    incoming(ua, request("INVITE", call_id="c4", branch="z9hG4bK4"), now=1.2)  # a token refilled


def test_require_100rel_gets_420_with_unsupported() -> None:
    ua = new_ua()
    ua.receive_datagram(request("INVITE", body=offer(), extra=["Require: 100rel"]), PEER, 0.0)
    assert events(ua) == []
    trying, bad = responses(ua)
    assert bad.status == 420 and bad.headers.get("Unsupported") == "100rel"


def test_ring_answer_ack_with_one_to_tag_contact_and_record_route() -> None:
    ua = new_ua(external_address="203.0.113.5", external_port=5080)
    rr = "Record-Route: <sip:192.0.2.30;lr>, <sip:192.0.2.31;lr>"
    call = incoming(ua, request("INVITE", body=offer(), extra=[rr]))
    ua.ring(call.leg_id, 0.1)
    ua.answer(call.leg_id, our_sdp(offer()), 0.2)
    ringing, ok = responses(ua)
    assert (ringing.status, ok.status) == (180, 200)
    assert ringing.to_addr.tag == ok.to_addr.tag is not None
    assert ok.headers.get("To", "").count("tag=") == 1
    assert ok.headers.get("Contact") == "<sip:ivr@203.0.113.5:5080>"
    assert ok.headers.values("Record-Route") == ["<sip:192.0.2.30;lr>", "<sip:192.0.2.31;lr>"]
    assert ok.content_type == "application/sdp" and parse_sdp(ok.body).media[0].port == 30000
    run_until(ua, 0.8)  # no ACK yet: the 2xx is retransmitted (RFC 3261 section 13.3.1.4)
    assert [r.status for r in responses(ua)] == [200]
    ua.receive_datagram(request("ACK", branch="z9hG4bKack", to_tag=ok.to_addr.tag), PEER, 0.9)
    assert events(ua) == [CallConfirmed(call.leg_id)]
    run_until(ua, 10.0)
    assert responses(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED


def test_ack_reusing_the_invite_branch_still_confirms() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.answer(call.leg_id, our_sdp(offer()), 0.1)
    (ok,) = responses(ua)
    ua.receive_datagram(request("ACK", branch="z9hG4bKinv1", to_tag=ok.to_addr.tag), PEER, 0.2)
    assert events(ua) == [CallConfirmed(call.leg_id)]
    run_until(ua, 10.0)
    assert responses(ua) == []


def test_reject_488_ends_the_leg() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.reject(call.leg_id, 488, 0.1)
    (response,) = responses(ua)
    assert response.status == 488 and response.to_addr.tag is not None
    # RFC 3261 21.4.26: a 488 says why in a Warning header, 305 "Incompatible media format" (issue 15 defect 10)
    warning = response.headers.get("Warning") or ""
    assert warning.startswith("305 ") and warning.endswith('"Incompatible media format"'), warning
    assert events(ua) == [CallEnded(call.leg_id, "rejected 488")]
    ua.receive_datagram(request("ACK", to_tag=response.to_addr.tag), PEER, 0.2)  # absorbed by the transaction
    assert events(ua) == [] and sent(ua) == []
    with pytest.raises(LegStateError):
        ua.answer(call.leg_id, b"", 0.3)
    with pytest.raises(ValueError):
        ua.reject(incoming(ua, request("INVITE", call_id="c2", branch="z9hG4bK2")).leg_id, 200, 0.4)


def test_reject_503_while_draining_says_when_to_retry() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.reject(call.leg_id, 503, 0.1, retry_after=30)
    (response,) = responses(ua)
    assert response.status == 503 and response.headers.get("Retry-After") == "30"
    assert events(ua) == [CallEnded(call.leg_id, "rejected 503")]


def test_retransmitted_invite_is_absorbed() -> None:
    ua = new_ua()
    incoming(ua)
    ua.receive_datagram(request("INVITE", body=offer()), PEER, 0.5)
    assert events(ua) == [] and statuses(ua) == [100]


def test_second_invite_same_call_id_new_branch_gets_482_or_491() -> None:
    ua = new_ua()
    incoming(ua)
    ua.receive_datagram(request("INVITE", branch="z9hG4bKother", body=offer()), PEER, 0.1)
    assert events(ua) == [] and statuses(ua) == [100, 482]  # merged request, RFC 3261 section 8.2.2.2
    ua.receive_datagram(request("INVITE", branch="z9hG4bKthird", cseq=2, body=offer()), PEER, 0.2)
    assert events(ua) == [] and statuses(ua) == [100, 491]


def test_invite_with_other_body_or_bad_sdp() -> None:
    ua = new_ua()
    ua.receive_datagram(request("INVITE", body=b"<xml/>", content_type="application/xml"), PEER, 0.0)
    trying, unsupported = responses(ua)
    assert unsupported.status == 415 and unsupported.headers.get("Accept") == "application/sdp"
    ua.receive_datagram(request("INVITE", branch="z9hG4bK2", call_id="c2", body=b"v=0\r\n"), PEER, 0.0)
    trying, bad = responses(ua)
    assert bad.status == 400 and events(ua) == []


def test_unanswered_call_gets_480_after_answer_timeout() -> None:
    ua = new_ua(answer_timeout=30.0)
    call = incoming(ua)
    run_until(ua, 31.0)
    assert events(ua) == [CallEnded(call.leg_id, "not answered")]
    assert 480 in statuses(ua)


# ------------------------------------------------------------------------------------------- CANCEL


def test_cancel_before_answer_gives_200_and_487() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.ring(call.leg_id, 0.1)
    (ringing,) = responses(ua)
    ua.receive_datagram(request("CANCEL", cseq_method="CANCEL"), PEER, 0.2)
    cancel_ok, terminated = responses(ua)
    assert (cancel_ok.status, cancel_ok.cseq.method, terminated.status) == (200, "CANCEL", 487)
    assert terminated.to_addr.tag == ringing.to_addr.tag == cancel_ok.to_addr.tag
    assert events(ua) == [CallEnded(call.leg_id, "cancelled")]
    ua.receive_datagram(request("ACK", to_tag=terminated.to_addr.tag), PEER, 0.3)
    assert events(ua) == [] and sent(ua) == []


def test_cancel_after_answer_only_answers_the_cancel() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.answer(call.leg_id, our_sdp(offer()), 0.1)
    sent(ua)
    ua.receive_datagram(request("CANCEL", cseq_method="CANCEL"), PEER, 0.2)
    assert statuses(ua) == [200] and events(ua) == []
    assert ua.leg_state(call.leg_id) == LegState.ANSWERED


def test_cancel_for_nothing_gets_481() -> None:
    ua = new_ua()
    ua.receive_datagram(request("CANCEL", cseq_method="CANCEL"), PEER, 0.0)
    assert statuses(ua) == [481]


# --------------------------------------------------------------------------------------- ACK and BYE


def test_no_ack_sends_bye_and_ends_the_call() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.answer(call.leg_id, our_sdp(offer()), 0.0)
    sent(ua)
    run_until(ua, 32.5)
    assert events(ua) == [CallEnded(call.leg_id, "no ACK")]
    byes = [(m, a) for m, a in sent(ua) if isinstance(m, SipRequest)]
    assert byes and byes[0][0].method == "BYE" and byes[0][1] == ("192.0.2.20", 5062)


def test_bye_from_peer_then_unknown_dialog_481() -> None:
    ua = new_ua()
    call, tag = confirmed_call(ua)
    ua.receive_datagram(request("BYE", branch="z9hG4bKbye", cseq=2, to_tag=tag), PEER, 1.0)
    (ok,) = responses(ua)
    assert ok.status == 200 and ok.to_addr.tag == tag
    assert events(ua) == [CallEnded(call.leg_id, "caller hung up")]
    ua.receive_datagram(request("BYE", branch="z9hG4bKbye2", cseq=3, to_tag=tag), PEER, 1.1)
    assert statuses(ua) == [481]


def test_bye_on_early_dialog_gets_200_and_487() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.ring(call.leg_id, 0.1)
    (ringing,) = responses(ua)
    ua.receive_datagram(request("BYE", branch="z9hG4bKbye", cseq=2, to_tag=ringing.to_addr.tag), PEER, 0.2)
    assert statuses(ua) == [200, 487]
    assert events(ua) == [CallEnded(call.leg_id, "caller hung up")]


def test_hangup_sends_bye_along_the_route_set() -> None:
    ua = new_ua()
    rr = "Record-Route: <sip:192.0.2.30:5070;lr>"
    call, tag = confirmed_call(ua, extra=[rr])
    ua.hangup(call.leg_id, 1.0)
    ((bye, address),) = sent(ua)
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and address == ("192.0.2.30", 5070)
    assert bye.uri == "sip:alice@192.0.2.20:5062" and bye.headers.get("Route") == "<sip:192.0.2.30:5070;lr>"
    assert bye.from_addr.tag == tag and bye.to_addr.tag == "a1" and bye.cseq.method == "BYE"
    assert events(ua) == []  # reported when the BYE completes
    ok = (
        f"SIP/2.0 200 OK\r\nVia: {bye.headers.get('Via')}\r\nFrom: {bye.headers.get('From')}\r\n"
        f"To: {bye.headers.get('To')}\r\nCall-ID: call-1\r\nCSeq: {bye.cseq}\r\nContent-Length: 0\r\n\r\n"
    )
    ua.receive_datagram(ok.encode(), ("192.0.2.30", 5070), 1.1)
    assert events(ua) == [CallEnded(call.leg_id, "hangup")]
    ua.hangup(call.leg_id, 1.2)  # no-op once ended
    assert sent(ua) == []


def test_hangup_bye_timeout_still_ends() -> None:
    ua = new_ua()
    call, _ = confirmed_call(ua)
    ua.hangup(call.leg_id, 1.0)
    run_until(ua, 40.0)
    assert events(ua) == [CallEnded(call.leg_id, "hangup")]


def test_hangup_before_ack_waits_for_the_ack() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.answer(call.leg_id, our_sdp(offer()), 0.1)
    (ok,) = responses(ua)
    ua.hangup(call.leg_id, 0.2)
    assert sent(ua) == []  # RFC 3261 section 15: no BYE before the ACK
    ua.receive_datagram(request("ACK", branch="z9hG4bKack", to_tag=ok.to_addr.tag), PEER, 0.3)
    assert events(ua) == [CallConfirmed(call.leg_id)]
    assert statuses(ua) == ["BYE"]


def test_hangup_before_answer_is_480() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.hangup(call.leg_id, 0.1)
    assert statuses(ua) == [480] and events(ua) == [CallEnded(call.leg_id, "hangup")]


def test_lower_cseq_in_dialog_gets_500() -> None:
    ua = new_ua()
    call, tag = confirmed_call(ua)
    ua.receive_datagram(request("INFO", branch="z9hG4bKi", cseq=5, to_tag=tag), PEER, 1.0)
    ua.receive_datagram(request("INFO", branch="z9hG4bKj", cseq=4, to_tag=tag), PEER, 1.1)
    assert statuses(ua) == [200, 500]


def test_shutdown_byes_confirmed_and_503s_pending() -> None:
    ua = new_ua()
    call, _ = confirmed_call(ua)
    pending = incoming(ua, request("INVITE", call_id="c2", branch="z9hG4bK2"))
    ua.shutdown(1.0)
    assert sorted(map(str, statuses(ua))) == ["503", "BYE"]
    assert events(ua) == [CallEnded(pending.leg_id, "shutdown")]
    run_until(ua, 40.0)
    assert events(ua) == [CallEnded(call.leg_id, "shutdown")]


# ----------------------------------------------------------------------------------- OPTIONS and INFO


def test_options_out_of_and_in_dialog() -> None:
    ua = new_ua()
    ua.receive_datagram(request("OPTIONS", call_id="opt"), PEER, 0.0)
    (ok,) = responses(ua)
    assert ok.status == 200 and ok.to_addr.tag is not None
    assert "INVITE" in ok.headers.get("Allow", "") and ok.headers.get("Accept") == "application/sdp"
    assert "Supported" in ok.headers
    _, tag = confirmed_call(ua)
    ua.receive_datagram(request("OPTIONS", branch="z9hG4bKo", cseq=2, to_tag=tag), PEER, 1.0)
    (ok,) = responses(ua)
    assert ok.status == 200 and ok.to_addr.tag == tag


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"Signal= #\r\nDuration= 100\r\n", "#"),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=160\r\n", "#"),
        ("application/dtmf", b"*", "*"),
        ("application/dtmf", b"12", "A"),
    ],
)
def test_info_dtmf(content_type: str, body: bytes, digit: str) -> None:
    ua = new_ua()
    call, tag = confirmed_call(ua)
    info = request("INFO", branch="z9hG4bKi", cseq=2, to_tag=tag, body=body, content_type=content_type)
    ua.receive_datagram(info, PEER, 1.0)
    assert statuses(ua) == [200]
    assert events(ua) == [DtmfReceived(call.leg_id, digit, "info")]


def test_info_other_bodies() -> None:
    ua = new_ua()
    _, tag = confirmed_call(ua)
    ua.receive_datagram(request("INFO", branch="z9hG4bK1", cseq=2, to_tag=tag), PEER, 1.0)
    xml = request("INFO", branch="z9hG4bK2", cseq=3, to_tag=tag, body=b"<x/>", content_type="application/xml")
    ua.receive_datagram(xml, PEER, 1.1)
    package = request("INFO", branch="z9hG4bK3", cseq=4, to_tag=tag, extra=["Info-Package: foo"],
                      body=b"x", content_type="application/foo")
    ua.receive_datagram(package, PEER, 1.2)
    unreadable = request("INFO", branch="z9hG4bK4", cseq=5, to_tag=tag, body=b"Signal=Z",
                         content_type="application/dtmf-relay")
    ua.receive_datagram(unreadable, PEER, 1.3)
    empty, unsupported, bad_package, lenient = responses(ua)
    assert (empty.status, unsupported.status, bad_package.status, lenient.status) == (200, 415, 469, 200)
    assert "application/dtmf-relay" in (unsupported.headers.get("Accept") or "")
    assert events(ua) == []


def test_unsupported_methods() -> None:
    ua = new_ua()
    ua.receive_datagram(request("SUBSCRIBE", call_id="s1"), PEER, 0.0)
    ua.receive_datagram(request("NOTIFY", call_id="n1", branch="z9hG4bKn"), PEER, 0.0)
    ua.receive_datagram(request("INFO", call_id="i1", branch="z9hG4bKi"), PEER, 0.0)
    assert statuses(ua) == [501, 501, 481]
    _, tag = confirmed_call(ua)
    for n, method in enumerate(("REFER", "PRACK", "NOTIFY"), start=2):
        ua.receive_datagram(request(method, branch=f"z9hG4bKm{n}", cseq=n, to_tag=tag), PEER, 1.0)
    assert statuses(ua) == [501, 501, 200]  # UPDATE is served (session refresh, tests/sip/test_session_timer.py)


# ---------------------------------------------------------------------------------------- re-INVITE


def reinvite(tag: str, cseq: int, body: bytes = b"", branch: str | None = None, **kw: str) -> bytes:
    return request("INVITE", branch=branch or f"z9hG4bKre{cseq}", cseq=cseq, to_tag=tag, body=body, **kw)


def test_reinvite_hold_resume_and_new_port_keep_the_call() -> None:
    ua = new_ua()
    call, tag = confirmed_call(ua)
    cases = [(2, offer("sendonly")), (3, offer("inactive")), (4, offer(address="0.0.0.0")),
             (5, offer("sendrecv")), (6, offer(port=41000, address="192.0.2.21"))]
    for cseq, body in cases:
        ua.receive_datagram(reinvite(tag, cseq, body), PEER, float(cseq))
        (event,) = events(ua)
        assert isinstance(event, MediaChanged) and event.leg_id == call.leg_id
        ua.answer_reinvite(call.leg_id, our_sdp(body, version=str(cseq)), float(cseq) + 0.1)
        trying, ok = responses(ua)
        assert (trying.status, ok.status, ok.to_addr.tag) == (100, 200, tag)
        assert parse_sdp(ok.body).media[0].port == 30000 and ok.headers.get("Contact")
        ua.receive_datagram(request("ACK", branch=f"z9hG4bKa{cseq}", cseq=cseq, cseq_method="ACK",
                                    to_tag=tag), PEER, float(cseq) + 0.2)
        assert events(ua) == []
    answer = parse_sdp(our_sdp(offer("sendonly")))
    assert answer.media[0].direction == Direction.RECVONLY
    run_until(ua, 60.0)
    assert events(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED


def test_reinvite_rejected_keeps_the_call_and_second_pending_gets_500() -> None:
    ua = new_ua()
    call, tag = confirmed_call(ua)
    ua.receive_datagram(reinvite(tag, 2, offer("sendonly")), PEER, 1.0)
    assert isinstance(events(ua)[0], MediaChanged)
    ua.receive_datagram(reinvite(tag, 3, offer()), PEER, 1.1)
    assert statuses(ua) == [100, 100, 500]
    ua.reject_reinvite(call.leg_id, 488, 1.2)
    assert statuses(ua) == [488] and ua.leg_state(call.leg_id) == LegState.CONFIRMED
    with pytest.raises(LegStateError):
        ua.answer_reinvite(call.leg_id, b"", 1.3)


def test_reinvite_before_ack_gets_491() -> None:
    ua = new_ua()
    call = incoming(ua)
    ua.answer(call.leg_id, our_sdp(offer()), 0.1)
    (ok,) = responses(ua)
    ua.receive_datagram(reinvite(ok.to_addr.tag or "", 2, offer()), PEER, 0.2)
    assert statuses(ua) == [100, 491]


def test_reinvite_without_sdp_offers_ours_and_takes_the_answer_from_the_ack() -> None:
    ua = new_ua()
    call, tag = confirmed_call(ua)
    ua.receive_datagram(reinvite(tag, 2, offer("sendonly")), PEER, 1.0)
    events(ua)
    ua.answer_reinvite(call.leg_id, our_sdp(offer("sendonly"), version="2"), 1.1)  # recvonly
    sent(ua)
    ua.receive_datagram(request("ACK", branch="z9hG4bKa2", cseq=2, to_tag=tag), PEER, 1.2)
    ua.receive_datagram(reinvite(tag, 3, contact="<sip:alice@192.0.2.22:5064>"), PEER, 2.0)
    assert events(ua) == []
    trying, ok = responses(ua)
    reoffer = parse_sdp(ok.body)
    assert ok.status == 200 and reoffer.media[0].direction == Direction.SENDRECV
    assert reoffer.origin.session_version == "3"  # bumped: the direction changed
    ua.receive_datagram(request("ACK", branch="z9hG4bKa3", cseq=3, to_tag=tag, body=offer()), PEER, 2.1)
    (event,) = events(ua)
    assert isinstance(event, MediaAnswered) and event.sdp.media[0].port == 40000 and event.body == offer()
    ua.hangup(call.leg_id, 3.0)
    ((bye, address),) = sent(ua)
    assert address == ("192.0.2.22", 5064)  # the re-INVITE refreshed the remote target


# --------------------------------------------------------------------------------------- late offer


def test_late_offer_answer_arrives_with_the_ack() -> None:
    ua = new_ua()
    call = incoming(ua, request("INVITE"))
    assert call.offer is None
    our_offer = (
        b"v=0\r\no=- 9 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
    )
    ua.answer(call.leg_id, our_offer, 0.1)
    (ok,) = responses(ua)
    assert ok.body == our_offer
    ua.receive_datagram(request("ACK", branch="z9hG4bKack", to_tag=ok.to_addr.tag, body=offer()), PEER, 0.2)
    answered, confirmed = events(ua)
    assert isinstance(answered, MediaAnswered) and answered.sdp.media[0].port == 40000
    assert confirmed == CallConfirmed(call.leg_id)


def test_late_offer_ack_without_answer_ends_the_call() -> None:
    ua = new_ua()
    call = incoming(ua, request("INVITE"))
    ua.answer(call.leg_id, b"v=0\r\no=- 9 1 IN IP4 192.0.2.10\r\ns=-\r\nt=0 0\r\n", 0.1)
    (ok,) = responses(ua)
    ua.receive_datagram(request("ACK", branch="z9hG4bKack", to_tag=ok.to_addr.tag), PEER, 0.2)
    assert events(ua) == [CallEnded(call.leg_id, "bad SDP in ACK")]
    assert statuses(ua) == ["BYE"]


# ---------------------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    "data", [b"\x00\xff garbage", b"GET / HTTP/1.1\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nVia: ???\r\n", b"x" * 2000]
)
def test_garbage_is_counted_never_raised(data: bytes) -> None:
    ua = new_ua()
    ua.receive_datagram(data, PEER, 0.0)
    assert sent(ua) == [] and events(ua) == [] and ua.stats.parse_errors == 1


def test_keepalive_and_check_message_answers() -> None:
    ua = new_ua()
    ua.receive_datagram(b"\r\n\r\n", PEER, 0.0)
    ua.receive_datagram(request("OPTIONS").replace(b"sip:5000@192.0.2.10 SIP/2.0", b"sip:5000@x SIP/7.0"), PEER, 0.0)
    ua.receive_datagram(request("OPTIONS", uri="isbn:1234"), PEER, 0.0)
    ua.receive_datagram(request("OPTIONS").replace(b"Call-ID: call-1\r\n", b""), PEER, 0.0)
    assert statuses(ua) == [505, 416, 400] and ua.stats.bad_requests == 3 and ua.stats.parse_errors == 0
    incoming(ua)  # still serving


def test_config_defaults_deny_everyone() -> None:
    ua = UserAgent(UserAgentConfig(timers=TimerConfig()), LOCAL)
    ua.receive_datagram(request("OPTIONS"), PEER, 0.0)
    assert statuses(ua) == [403]
    assert CONFIG.allowed_peers == ("192.0.2.0/24",)


def _fuzz_invite(branch: str, from_tag: str, content_length: str = "172") -> bytes:
    """An INVITE exactly as test_ua_fuzz renders it for call 0 (CSeq 3: the peer's second INVITE)."""
    return (
        "INVITE sip:500@192.0.2.10 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.20:5062;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Fuzz" <sip:+15555550100@192.0.2.20>;tag={from_tag}\r\n'
        "To: <sip:500@192.0.2.10>\r\n"
        "Call-ID: fuzz-0@192.0.2.20\r\n"
        f"CSeq: {2 if content_length.startswith('-') else 3} INVITE\r\n"
        "Contact: <sip:fuzz@192.0.2.20:5062>\r\n"
        "Record-Route: <sip:192.0.2.30;lr>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode() + offer()


def test_two_dialogs_with_one_call_id_and_cseq_each_keep_their_2xx_and_ack_timeout() -> None:
    """Found by test_ua_fuzz: INVITEs with the same Call-ID and CSeq but other From tags are two
    dialogs (no merged request, RFC 3261 section 8.2.2.2). The 2xx retransmission was keyed by Call-ID
    and CSeq only, so the second 2xx replaced the first's: the ACK of the second stopped the only one
    left and the first leg had neither retransmission nor ACK timeout, answered for ever."""
    ua = new_ua()
    # Step 1: the INVITE with its Content-Length mutated to "-0": unparsable, dropped.
    ua.receive_datagram(_fuzz_invite("z9hG4bKp0x1", "peer0", "-0"), PEER, 0.0)
    assert events(ua) == [] and sent(ua) == [] and ua.stats.parse_errors == 1
    # Step 2: the next INVITE with its From tag mutated ("tag=x..."); the app rings and answers.
    first = incoming(ua, _fuzz_invite("z9hG4bKp0x2", "xpeer0"))
    ua.ring(first.leg_id, 0.0)
    ua.answer(first.leg_id, our_sdp(offer()), 0.0)
    first_tag = responses(ua)[-1].to_addr.tag
    # Step 3: the same Call-ID and CSeq on a new branch with the real From tag: another dialog.
    second = incoming(ua, _fuzz_invite("z9hG4bKp0x3", "peer0"))
    ua.ring(second.leg_id, 0.0)
    ua.answer(second.leg_id, our_sdp(offer()), 0.0)
    second_tag = responses(ua)[-1].to_addr.tag
    assert first_tag and second_tag and first_tag != second_tag
    # Step 4: the ACK of the second 2xx (reusing its INVITE's branch, as the fuzzer's "ack" does).
    ack = (
        "ACK sip:500@192.0.2.10 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKp0x3;rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Fuzz" <sip:+15555550100@192.0.2.20>;tag=peer0\r\n'
        f"To: <sip:500@192.0.2.10>;tag={second_tag}\r\n"
        "Call-ID: fuzz-0@192.0.2.20\r\n"
        "CSeq: 3 ACK\r\n"
        "Contact: <sip:fuzz@192.0.2.20:5062>\r\n"
        "Record-Route: <sip:192.0.2.30;lr>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    ua.receive_datagram(ack, PEER, 0.0)
    assert events(ua) == [CallConfirmed(second.leg_id)]
    assert ua.leg_state(first.leg_id) == LegState.ANSWERED
    # The first 2xx is still retransmitted (section 13.3.1.4), the second is not.
    run_until(ua, 0.6)
    assert [(r.status, r.to_addr.tag) for r in responses(ua)] == [(200, first_tag)]
    # 64*T1 without its ACK: BYE on the first dialog only, the second call goes on.
    run_until(ua, 32.5)
    assert events(ua) == [CallEnded(first.leg_id, "no ACK")]
    byes = [m for m, _ in sent(ua) if isinstance(m, SipRequest)]
    assert {(b.method, b.to_addr.tag, b.from_addr.tag) for b in byes} == {("BYE", "xpeer0", first_tag)}
    assert ua.leg_state(second.leg_id) == LegState.CONFIRMED
