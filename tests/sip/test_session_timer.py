"""RFC 4028 session timers: the pure negotiation, then the user agent with time advanced by handle_timer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.config import load_config
from ivr.errors import ConfigError
from ivr.sip.lexical import SipParseError
from ivr.sip.message import Headers, SipRequest, SipResponse, make_response
from ivr.sip.session_timer import (
    Negotiated,
    SessionTimer,
    SessionTimerConfig,
    TimerAction,
    TooSmall,
    negotiate_uac,
    negotiate_uas,
    retry_after_422,
)
from ivr.sip.ua import UserAgent
from ivr.sip.ua_events import CallConfirmed, CallEnded, IncomingCall, MediaChanged, OutboundCompleted
from ivr.sip.ua_state import LegState
from tests.sip.test_ua import PEER, events, new_ua, offer, our_sdp, request, responses, run_until, sent
from tests.sip.test_uac import Harness

CFG = SessionTimerConfig(session_expires=1800, min_se=90)


def headers(*lines: str) -> Headers:
    out = Headers()
    for line in lines:
        name, _, value = line.partition(":")
        out.add(name.strip(), value.strip())
    return out


# ------------------------------------------------------------------------------------ negotiation


def test_offer_below_our_minimum_gets_422_with_min_se() -> None:
    result = negotiate_uas(headers("Session-Expires: 60", "Supported: timer"), CFG)
    assert result == TooSmall(90) and result.response_headers() == [("Min-SE", "90")]


def test_peer_refresher_is_honoured_and_named_from_the_request() -> None:
    result = negotiate_uas(headers("Session-Expires: 600;refresher=uac", "Supported: timer"), CFG)
    assert result == Negotiated(600, we_refresh=False, peer_supports=True)
    assert result.response_headers() == [("Session-Expires", "600;refresher=uac"), ("Supported", "timer"),
                                         ("Require", "timer")]
    asks_us = negotiate_uas(headers("x: 600;refresher=uas", "k: timer"), CFG)  # compact forms
    assert isinstance(asks_us, Negotiated) and asks_us.we_refresh


def test_long_offer_is_lowered_to_ours_but_not_below_their_min_se() -> None:
    assert negotiate_uas(headers("Session-Expires: 7200", "Supported: timer"), CFG) == Negotiated(1800, False, True)
    lowered = negotiate_uas(headers("Session-Expires: 7200", "Min-SE: 3600", "Supported: timer"), CFG)
    assert isinstance(lowered, Negotiated) and lowered.interval == 3600


def test_peer_without_timer_support_makes_us_the_refresher_without_require() -> None:
    result = negotiate_uas(headers("Allow: INVITE, ACK, BYE, UPDATE"), CFG)
    assert result == Negotiated(1800, we_refresh=True, peer_supports=False, peer_allows_update=True)
    assert result.response_headers() == [("Session-Expires", "1800;refresher=uas"), ("Supported", "timer")]
    # Supported without Session-Expires: our interval, and the peer refreshes.
    assert negotiate_uas(headers("Supported: 100rel, timer"), CFG) == Negotiated(1800, False, True)


@pytest.mark.parametrize("value", ["abc", "90;refresher=me", "0", ""])
def test_malformed_session_expires_is_a_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        negotiate_uas(headers(f"Session-Expires: {value}"), CFG)


def test_uac_side_2xx_and_422() -> None:
    assert negotiate_uac(headers("Session-Expires: 900;refresher=uac", "Require: timer")) == \
        Negotiated(900, we_refresh=True, peer_supports=True, peer_allows_update=False)
    assert negotiate_uac(headers("Session-Expires: 900", "Allow: INVITE"), allows_update=True) == \
        Negotiated(900, True, False, False)  # the peer's Allow, when the 2xx repeats it, wins
    assert negotiate_uac(headers("Session-Expires: 900;refresher=uas"), allows_update=True) == \
        Negotiated(900, False, False, True)
    assert negotiate_uac(headers()) is None  # RFC 4028 section 7.2: no expiry at all
    assert retry_after_422(headers("Min-SE: 1200"), 1800, 90) == (1800, 1200)
    assert retry_after_422(headers("Min-SE: 3600"), 1800, 90) == (3600, 3600)
    assert retry_after_422(headers("Min-SE: 60"), 1800, 90) is None  # nothing to change: no retry
    assert retry_after_422(headers(), 1800, 90) is None


def test_deadlines_half_interval_and_expiry_minus_a_third_up_to_32() -> None:
    timer = SessionTimer(CFG)
    timer.start(Negotiated(90, we_refresh=False, peer_supports=True), 10.0)
    assert timer.get_timer() == 70.0  # 90 - min(32, 30)
    timer.start(Negotiated(1800, we_refresh=False, peer_supports=True), 10.0)
    assert timer.get_timer() == 1778.0  # 1800 - 32
    assert timer.handle_timer(1777.0) is None and timer.handle_timer(1778.0) == TimerAction.EXPIRE
    assert timer.get_timer() is None
    timer.start(Negotiated(1800, we_refresh=True, peer_supports=False), 0.0)
    assert timer.get_timer() == 900.0 and timer.handle_timer(900.0) == TimerAction.REFRESH
    assert timer.get_timer() == 1800.0  # a refresher whose refresh never succeeds gives up at expiry


def test_config_refuses_an_interval_below_its_minimum() -> None:
    with pytest.raises(ValueError, match="below min_se"):
        SessionTimerConfig(session_expires=60, min_se=90)


# -------------------------------------------------------------------------- the UAS, time advanced


def timer_ua(session_expires: int = 1800, min_se: int = 90) -> UserAgent:
    return new_ua(session_timer=SessionTimerConfig(session_expires, min_se))


def answered(ua: UserAgent, *extra: str) -> tuple[IncomingCall, SipResponse]:
    """An INVITE with `extra` headers answered at 0.1 and ACKed at 0.2; (the call, our 2xx)."""
    ua.receive_datagram(request("INVITE", body=offer(), extra=extra), PEER, 0.0)
    (call,) = events(ua)
    assert isinstance(call, IncomingCall)
    ua.answer(call.leg_id, our_sdp(offer()), 0.1)
    ok = responses(ua)[-1]
    assert ok.status == 200
    ua.receive_datagram(request("ACK", branch="z9hG4bKack1", to_tag=ok.to_addr.tag), PEER, 0.2)
    assert events(ua) == [CallConfirmed(call.leg_id)]
    return call, ok


def refresh(ua: UserAgent, tag: str, cseq: int, now: float, method: str = "INVITE") -> SipResponse:
    """The caller's session refresh (re-INVITE with the same SDP, or UPDATE without a body), answered."""
    body = offer() if method == "INVITE" else b""
    ua.receive_datagram(request(method, branch=f"z9hG4bKr{cseq}", cseq=cseq, to_tag=tag, body=body,
                                extra=["Session-Expires: 90;refresher=uac", "Supported: timer"]), PEER, now)
    if method == "INVITE":
        (changed,) = events(ua)
        assert isinstance(changed, MediaChanged)
        ua.answer_reinvite(changed.leg_id, our_sdp(offer()), now)
    ok = responses(ua)[-1]
    if method == "INVITE":
        ua.receive_datagram(request("ACK", branch=f"z9hG4bKra{cseq}", cseq=cseq, cseq_method="ACK", to_tag=tag),
                            PEER, now)
    return ok


def test_2xx_carries_the_timer_and_a_silent_refresher_is_hung_up_with_the_reason() -> None:
    ua = timer_ua()
    call, ok = answered(ua, "Session-Expires: 90;refresher=uac", "Supported: timer")
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get("Require") == "timer" and "timer" in ok.headers.values("Supported")
    assert "UPDATE" in ok.headers.values("Allow")
    run_until(ua, 60.0)
    assert [m for m, _ in sent(ua)] == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED
    run_until(ua, 60.1 + 0.01)  # the 2xx went out at 0.1: BYE at 0.1 + 90 - 30
    (bye, dest), = sent(ua)
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and dest == ("192.0.2.20", 5062)
    assert events(ua) == [CallEnded(call.leg_id, "session timer expired")]


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
def test_refreshes_keep_the_call_up_past_the_interval(method: str) -> None:
    ua = timer_ua()
    call, ok = answered(ua, "Session-Expires: 90;refresher=uac", "Supported: timer")
    tag = ok.to_addr.tag or ""
    for n, at in enumerate((45.0, 90.0, 135.0), start=2):
        run_until(ua, at)
        answer = refresh(ua, tag, n, at, method)
        assert (answer.status, answer.headers.get("Session-Expires")) == (200, "90;refresher=uac")
        assert (answer.body != b"") == (method == "INVITE")
        assert [m.method for m, _ in sent(ua) if isinstance(m, SipRequest)] == []
    run_until(ua, 135.0 + 59.0)
    assert events(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED  # 3 x 45 s > 90 s
    run_until(ua, 135.0 + 60.0)
    assert events(ua) == [CallEnded(call.leg_id, "session timer expired")]


def test_too_small_interval_gets_422_and_no_call() -> None:
    ua = timer_ua()
    ua.receive_datagram(request("INVITE", body=offer(), extra=["Session-Expires: 30", "Supported: timer"]),
                        PEER, 0.0)
    trying, rejected = responses(ua)
    assert (trying.status, rejected.status, rejected.reason) == (100, 422, "Session Interval Too Small")
    assert rejected.headers.get("Min-SE") == "90"
    assert events(ua) == []


def test_a_small_configured_minimum_is_honoured_for_tests() -> None:
    ua = timer_ua(session_expires=4, min_se=2)
    ua.receive_datagram(request("INVITE", call_id="small", branch="z9hG4bKsmall", body=offer(),
                                extra=["Session-Expires: 1"]), PEER, 0.0)
    assert [r.status for r in responses(ua)] == [100, 422]
    call, ok = answered(ua)
    assert ok.headers.get("Session-Expires") == "4;refresher=uas" and ok.headers.get("Require") is None
    assert ua.leg_state(call.leg_id) == LegState.CONFIRMED


def our_refresh(ua: UserAgent, limit: float) -> SipRequest:
    run_until(ua, limit)
    (message, dest), = sent(ua)
    assert isinstance(message, SipRequest) and dest == ("192.0.2.20", 5062)
    return message


def test_peer_without_timer_support_is_refreshed_by_re_invite_with_the_same_sdp_and_acked() -> None:
    ua = timer_ua(session_expires=120)
    call, ok = answered(ua)  # no Supported: timer, no Allow: UPDATE
    assert ok.headers.get("Session-Expires") == "120;refresher=uas" and ok.headers.get("Require") is None
    reinvite = our_refresh(ua, 60.1)
    assert reinvite.method == "INVITE" and reinvite.body == our_sdp(offer())  # same o= version: no change
    assert reinvite.headers.get("Session-Expires") == "120;refresher=uac"
    assert reinvite.to_addr.tag == "a1" and reinvite.cseq.seq == 1
    assert reinvite.headers.get("Content-Type") == "application/sdp"
    ua.receive_datagram(make_response(reinvite, 200, headers=[("Session-Expires", "120;refresher=uac"),
                                                             ("Contact", "<sip:alice@192.0.2.20:5062>")],
                                      body=offer()).to_bytes(), PEER, 60.2)
    (ack, _), = sent(ua)
    assert isinstance(ack, SipRequest) and ack.method == "ACK" and ack.cseq.seq == reinvite.cseq.seq
    # The peer retransmits its 2xx: we ACK again, nothing else.
    ua.receive_datagram(make_response(reinvite, 200, headers=[("Session-Expires", "120;refresher=uac")],
                                      body=offer()).to_bytes(), PEER, 60.7)
    assert [m.method for m, _ in sent(ua) if isinstance(m, SipRequest)] == ["ACK"]
    second = our_refresh(ua, 120.2)
    assert second.method == "INVITE" and second.cseq.seq == 2
    assert events(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED


def test_refresh_by_update_when_allowed_and_422_retried_with_their_min_se() -> None:
    ua = timer_ua(session_expires=120)
    call, _ = answered(ua, "Allow: INVITE, ACK, BYE, CANCEL, UPDATE")
    update = our_refresh(ua, 60.1)
    assert update.method == "UPDATE" and update.body == b"" and update.headers.get("Min-SE") == "90"
    ua.receive_datagram(make_response(update, 422, "Session Interval Too Small", headers=[("Min-SE", "300")])
                        .to_bytes(), PEER, 60.2)
    (again, _), = sent(ua)
    assert isinstance(again, SipRequest) and again.method == "UPDATE" and again.cseq.seq == update.cseq.seq + 1
    assert (again.headers.get("Session-Expires"), again.headers.get("Min-SE")) == ("300;refresher=uac", "300")
    ua.receive_datagram(make_response(again, 200, headers=[("Session-Expires", "300;refresher=uac")]).to_bytes(),
                        PEER, 60.3)
    assert sent(ua) == []  # no ACK for UPDATE
    run_until(ua, 60.3 + 149.9)
    assert sent(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED
    assert our_refresh(ua, 60.3 + 150.0).headers.get("Session-Expires") == "300;refresher=uac"  # half of 300


@pytest.mark.parametrize("answer", [481, 408, None])
def test_refresh_failing_ends_the_call_with_bye(answer: int | None) -> None:
    ua = timer_ua(session_expires=120)
    call, _ = answered(ua)
    reinvite = our_refresh(ua, 60.1)
    if answer is None:
        run_until(ua, 60.1 + 32.0)  # Timer B: no answer at all
    else:
        ua.receive_datagram(make_response(reinvite, answer).to_bytes(), PEER, 60.2)
    byes = [m for m, _ in sent(ua) if isinstance(m, SipRequest) and m.method == "BYE"]
    assert len(byes) == 1
    assert events(ua) == [CallEnded(call.leg_id, "session refresh failed")]


def test_peer_re_invite_during_our_refresh_is_glare_491() -> None:
    ua = timer_ua(session_expires=120)
    _, ok = answered(ua)
    our_refresh(ua, 60.1)
    ua.receive_datagram(request("INVITE", branch="z9hG4bKglare", cseq=2, to_tag=ok.to_addr.tag, body=offer()),
                        PEER, 60.2)
    assert [r.status for r in responses(ua)] == [100, 491]


def test_hangup_stops_the_timer() -> None:
    ua = timer_ua()
    call, _ = answered(ua, "Session-Expires: 90;refresher=uac", "Supported: timer")
    ua.hangup(call.leg_id, 10.0)
    (bye, _), = sent(ua)
    assert isinstance(bye, SipRequest)
    ua.receive_datagram(make_response(bye, 200).to_bytes(), PEER, 10.1)
    assert events(ua) == [CallEnded(call.leg_id, "hangup")]
    run_until(ua, 200.0)
    assert events(ua) == [] and sent(ua) == []


# -------------------------------------------------------------------------- the UAC (outbound calls)


def test_outbound_invite_offers_the_timer_retries_422_once_and_refreshes_as_uac() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    assert invite.headers.get("Supported") == "timer"
    assert (invite.headers.get("Session-Expires"), invite.headers.get("Min-SE")) == ("1800", "90")
    h.respond(invite, 422, ("Min-SE", "3600"))
    again, _ = h.one("INVITE")  # (the 422 was ACKed by the transaction layer)
    assert again.cseq.seq == 2 and again.call_id == invite.call_id
    assert (again.headers.get("Session-Expires"), again.headers.get("Min-SE")) == ("3600", "3600")
    h.answer(again, ("Session-Expires", "3600;refresher=uac"), ("Require", "timer"))
    h.one("ACK")
    assert h.completed().result.session_timer == Negotiated(3600, True, True, False)
    h.advance(h.now + 1800.0)
    update_or_invite, _ = h.one("INVITE")  # the callee's Allow did not list UPDATE
    assert update_or_invite.headers.get("Session-Expires") == "3600;refresher=uac"
    assert update_or_invite.cseq.seq == 3 and update_or_invite.to_addr.tag == "callee1"


def test_outbound_second_422_fails_the_call() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 422, ("Min-SE", "3600"))
    again, _ = h.one("INVITE")
    h.respond(again, 422, ("Min-SE", "7200"))
    result = h.completed().result
    assert (result.answered, result.status) == (False, 422)
    assert h.sent() and not [r for r, _ in h.sent() if r.method == "INVITE"]


def test_outbound_callee_refreshes_and_we_expire_it_when_it_stops() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.answer(invite, ("Session-Expires", "90;refresher=uas"))
    h.one("ACK")
    assert isinstance(h.completed(), OutboundCompleted)
    h.advance(h.now + 59.0)
    assert h.sent() == []
    h.advance(h.now + 1.0)
    assert [r.method for r, _ in h.sent()] == ["BYE"]
    assert [e for e in h.events if isinstance(e, CallEnded)] == [CallEnded(h.leg, "session timer expired")]


def test_our_refresh_answered_491_is_retried_shortly() -> None:
    ua = timer_ua(session_expires=120)
    call, _ = answered(ua)
    first = our_refresh(ua, 60.1)
    ua.receive_datagram(make_response(first, 491).to_bytes(), PEER, 60.2)
    assert [m.method for m, _ in sent(ua) if isinstance(m, SipRequest)] == ["ACK"]  # the 491 ACKed, no retry yet
    run_until(ua, 62.2)
    assert sent(ua) == []
    retry = our_refresh(ua, 62.4)  # RETRY_SECONDS = 2.1 after the 491
    assert retry.method == "INVITE" and retry.cseq.seq == first.cseq.seq + 1
    assert events(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED


def test_peer_refresh_below_our_minimum_gets_422_and_the_call_goes_on() -> None:
    ua = timer_ua()
    call, ok = answered(ua, "Session-Expires: 90;refresher=uac", "Supported: timer")
    ua.receive_datagram(request("UPDATE", branch="z9hG4bKu2", cseq=2, to_tag=ok.to_addr.tag,
                                extra=["Session-Expires: 30", "Supported: timer"]), PEER, 10.0)
    (rejected,) = responses(ua)
    assert (rejected.status, rejected.headers.get("Min-SE")) == (422, "90")
    assert events(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED


def test_update_with_an_offer_goes_to_the_app_and_needs_no_ack() -> None:
    ua = timer_ua()
    call, ok = answered(ua, "Session-Expires: 90;refresher=uac", "Supported: timer")
    ua.receive_datagram(request("UPDATE", branch="z9hG4bKu2", cseq=2, to_tag=ok.to_addr.tag, body=offer("sendonly"),
                                extra=["Session-Expires: 90;refresher=uac", "Supported: timer"]), PEER, 50.0)
    (changed,) = events(ua)
    assert isinstance(changed, MediaChanged) and changed.offer.media[0].direction.value == "sendonly"
    ua.answer_reinvite(call.leg_id, our_sdp(offer("sendonly"), version="2"), 50.1)
    (answer,) = responses(ua)
    assert answer.status == 200 and answer.headers.get("Session-Expires") == "90;refresher=uac" and answer.body
    run_until(ua, 50.1 + 59.0)  # no ACK wait (it would end the call after 32 s), and the timer restarted
    assert events(ua) == [] and ua.leg_state(call.leg_id) == LegState.CONFIRMED
    assert [m.method for m, _ in sent(ua) if isinstance(m, SipRequest)] == []


def test_options_lists_timer_as_supported() -> None:
    ua = timer_ua()
    ua.receive_datagram(request("OPTIONS", call_id="o1", branch="z9hG4bKo1"), PEER, 0.0)
    (ok,) = responses(ua)
    assert "timer" in ok.headers.values("Supported") and "UPDATE" in ok.headers.values("Allow")


# --------------------------------------------------------------------------------------------- config


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("sip:\n  listen: 127.0.0.1:5060\n", encoding="utf-8")
    sip = load_config(str(path)).sip
    assert (sip.session_expires, sip.min_se) == (1800, 90)
    path.write_text("sip:\n  session_expires: 300\n  min_se: 120\n", encoding="utf-8")
    sip = load_config(str(path)).sip
    assert (sip.session_expires, sip.min_se) == (300, 120)
    path.write_text("sip:\n  min_se: 120\n  session_expires: 100\n", encoding="utf-8")
    with pytest.raises(ConfigError) as bad:
        load_config(str(path))
    assert str(bad.value) == f"{path}:3:20: session_expires (100) is below min_se (120)"
    path.write_text("sip:\n  min_se: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r":2:\d+: .*min_se"):
        load_config(str(path))
