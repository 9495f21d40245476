"""Outbound calls through the user agent: INVITE out, responses in, ACK/CANCEL/BYE out, time by handle_timer."""

from __future__ import annotations

import pytest

from ivr.sip.message import Headers, SipRequest, SipResponse, make_response, parse_message
from ivr.sip.transaction import Address
from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import CallEnded, DtmfReceived, OutboundCompleted, OutboundProgress
from ivr.sip.ua_state import LegState
from ivr.sip.uac import OutboundCallSpec, OutboundOutcome, Q850Reason, classify, parse_q850
from tests.sip.harness import ClockedUa

LOCAL = ("192.0.2.10", 5060)
PROXY = ("198.51.100.7", 5060)
CALLEE = ("198.51.100.9", 5080)
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=- 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


def spec(**kw: object) -> OutboundCallSpec:
    base: dict[str, object] = dict(target_uri="sip:+15555550100@trunk.example", from_uri="sip:+15555550999@ivr.example",
                                   sdp_offer=SDP, proxy=PROXY, from_display="Callback", ring_timeout=30.0,
                                   asserted_identity="sip:+15555550999@ivr.example")
    base.update(kw)
    return OutboundCallSpec(**base)  # type: ignore[arg-type]


class Harness(ClockedUa):
    def __init__(self, **kw: object) -> None:
        super().__init__(UserAgent(UserAgentConfig(allowed_peers=("192.0.2.0/24",)), LOCAL), 100.0)
        self.leg = self.ua.start_call(spec(**kw), self.now)

    def sent(self) -> list[tuple[SipRequest, Address]]:
        out = []
        for data, dest in self.ua.datagrams_to_send():
            msg = parse_message(data)
            assert isinstance(msg, SipRequest)
            out.append((msg, dest))
        self.drain()
        return out

    def one(self, method: str) -> tuple[SipRequest, Address]:
        found = [(r, d) for r, d in self.sent() if r.method == method]
        assert len(found) == 1, found
        return found[0]

    def respond(self, request: SipRequest, status: int, *headers: tuple[str, str], body: bytes = b"",
                tag: str | None = "callee1", source: Address = PROXY) -> SipResponse:
        response = make_response(request, status, to_tag=tag, headers=headers, body=body)
        self.ua.receive_datagram(response.to_bytes(), source, self.now)
        self.drain()
        return response

    def answer(self, invite: SipRequest, *extra: tuple[str, str], tag: str = "callee1") -> SipResponse:
        return self.respond(invite, 200, ("Contact", f"<sip:callee@{CALLEE[0]}:{CALLEE[1]}>"),
                            ("Content-Type", "application/sdp"), *extra, body=ANSWER, tag=tag)

    def completed(self) -> OutboundCompleted:
        done = [e for e in self.events if isinstance(e, OutboundCompleted)]
        assert len(done) == 1, self.events
        return done[0]


def test_invite_shape() -> None:
    h = Harness()
    invite, dest = h.one("INVITE")
    assert dest == PROXY
    assert invite.uri == "sip:+15555550100@trunk.example"
    assert (invite.headers.get("From") or "").startswith('"Callback" <sip:+15555550999@ivr.example>;tag=')
    assert invite.headers.get("To") == "<sip:+15555550100@trunk.example>"
    assert invite.headers.get("P-Asserted-Identity") == "<sip:+15555550999@ivr.example>"
    assert invite.headers.get("Contact") == "<sip:ivr@192.0.2.10:5060>"
    assert invite.body == SDP and invite.content_type == "application/sdp"
    h.advance(h.now + 0.5)
    assert [r.method for r, _ in h.sent()] == ["INVITE"]  # Timer A: the transaction layer retransmits


def test_answered_acked_by_us_with_route_set_and_to_tag() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 100, tag=None)
    h.respond(invite, 180)
    assert [e.status for e in h.events if isinstance(e, OutboundProgress)] == [180]
    h.answer(invite, ("Record-Route", "<sip:198.51.100.7;lr>"), ("Record-Route", "<sip:198.51.100.8;lr>"))
    ack, dest = h.one("ACK")
    assert ack.uri == f"sip:callee@{CALLEE[0]}:{CALLEE[1]}"
    assert ack.to_addr.tag == "callee1" and ack.cseq.seq == invite.cseq.seq and ack.cseq.method == "ACK"
    assert ack.headers.values("Route") == ["<sip:198.51.100.8;lr>", "<sip:198.51.100.7;lr>"]  # reversed
    assert dest == ("198.51.100.8", 5060)
    assert ack.via.branch != invite.via.branch  # the ACK for a 2xx is a new transaction (section 13.2.2.4)
    result = h.completed().result
    assert result.outcome == OutboundOutcome.ANSWERED and result.status == 200 and result.remote_sdp == ANSWER
    assert result.provisional == (180,)
    assert h.ua.leg_state(h.leg) == LegState.CONFIRMED
    # We hang up: BYE in the dialog, route set and the callee's tag.
    h.ua.hangup(h.leg, h.now)
    bye, dest = h.one("BYE")
    assert bye.to_addr.tag == "callee1" and bye.from_addr.tag == invite.from_addr.tag
    assert bye.cseq.seq == invite.cseq.seq + 1 and dest == ("198.51.100.8", 5060)
    h.respond(bye, 200, tag=None, source=("198.51.100.8", 5060))
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["hangup"]


def test_2xx_retransmission_re_acked_even_after_timer_m() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    ok = h.answer(invite)
    first_ack, dest = h.one("ACK")
    h.ua.receive_datagram(ok.to_bytes(), PROXY, h.now)
    again, dest2 = h.one("ACK")
    assert again.to_bytes() == first_ack.to_bytes() and dest2 == dest == CALLEE
    h.advance(h.now + 33)  # Timer M ends the transaction: the 2xx is now a stray response
    h.sent()
    h.ua.receive_datagram(ok.to_bytes(), PROXY, h.now)
    late, _ = h.one("ACK")
    assert late.to_bytes() == first_ack.to_bytes()
    assert len([e for e in h.events if isinstance(e, OutboundCompleted)]) == 1


def test_forked_second_2xx_acked_and_byed() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.answer(invite, tag="first")
    h.one("ACK")
    h.answer(invite, tag="second")
    sent = h.sent()
    assert sorted(r.method for r, _ in sent) == ["ACK", "BYE"]
    assert all(r.to_addr.tag == "second" for r, _ in sent)
    assert h.ua.leg_state(h.leg) == LegState.CONFIRMED


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(486, OutboundOutcome.BUSY), (600, OutboundOutcome.BUSY), (404, OutboundOutcome.INVALID_NUMBER),
     (484, OutboundOutcome.INVALID_NUMBER), (604, OutboundOutcome.INVALID_NUMBER),
     (408, OutboundOutcome.NO_ANSWER), (480, OutboundOutcome.NO_ANSWER), (503, OutboundOutcome.TRUNK_FAILURE),
     (500, OutboundOutcome.TRUNK_FAILURE), (403, OutboundOutcome.FAILED), (603, OutboundOutcome.FAILED)],
)
def test_rejections(status: int, outcome: OutboundOutcome) -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 100, tag=None)
    h.respond(invite, status)
    ack, dest = h.one("ACK")  # built by the INVITE client transaction (section 17.1.1.3)
    assert ack.via.branch == invite.via.branch and dest == PROXY
    result = h.completed().result
    assert (result.outcome, result.status) == (outcome, status)
    assert result.outcome.retryable == (outcome in (OutboundOutcome.BUSY, OutboundOutcome.NO_ANSWER,
                                                    OutboundOutcome.TRUNK_FAILURE))
    assert h.ua.leg_state(h.leg) == LegState.ENDED


def test_q850_cause_overrides_the_status() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 480, ("Reason", 'Q.850;cause=17;text="User busy"'))
    result = h.completed().result
    assert (result.outcome, result.q850_cause, result.q850_text) == (OutboundOutcome.BUSY, 17, "User busy")


def test_outcome_table_and_reason_parsing() -> None:
    assert classify(503, Q850Reason(1)) == OutboundOutcome.INVALID_NUMBER
    assert classify(603, Q850Reason(21)) == OutboundOutcome.FAILED
    assert classify(200, Q850Reason(17)) == OutboundOutcome.ANSWERED
    headers = Headers([("Reason", 'SIP;cause=200;text="Call completed elsewhere", Q.850;cause=16')])
    assert parse_q850(headers) == Q850Reason(16, None)
    assert parse_q850(Headers([("Reason", "Q.850;text=x")])) is None


def test_407_answered_once_then_200() -> None:
    h = Harness(credentials=("trunkuser", "pw"))
    invite, _ = h.one("INVITE")
    h.respond(invite, 407, ("Proxy-Authenticate", 'Digest realm="carrier", nonce="abc", qop="auth"'))
    sent = h.sent()
    assert [(r.method, r.cseq.seq) for r, _ in sent] == [("ACK", 1), ("INVITE", 2)]  # ACK by the transaction
    retry, dest = sent[1]
    assert dest == PROXY and retry.cseq.seq == 2 and retry.call_id == invite.call_id
    assert retry.from_addr.tag == invite.from_addr.tag and retry.via.branch != invite.via.branch
    assert 'username="trunkuser"' in (retry.headers.get("Proxy-Authorization") or "")
    h.answer(retry)
    ack, _ = h.one("ACK")
    assert ack.cseq.seq == 2 and ack.headers.get("Proxy-Authorization") == retry.headers.get("Proxy-Authorization")
    assert h.completed().result.outcome == OutboundOutcome.ANSWERED


def test_407_twice_is_wrong_credentials() -> None:
    h = Harness(credentials=("trunkuser", "bad"))
    invite, _ = h.one("INVITE")
    challenge = ("Proxy-Authenticate", 'Digest realm="carrier", nonce="abc"')
    h.respond(invite, 407, challenge)
    retry, _ = h.one("INVITE")
    h.respond(retry, 407, challenge)
    assert [r.method for r, _ in h.sent()] == ["ACK"]
    result = h.completed().result
    assert result.outcome == OutboundOutcome.FAILED and "wrong credentials" in result.reason


def test_401_without_credentials_fails() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 401, ("WWW-Authenticate", 'Digest realm="r", nonce="n"'))
    assert h.completed().result.outcome == OutboundOutcome.FAILED


def test_ring_timeout_cancels_then_487() -> None:
    h = Harness(ring_timeout=20.0)
    invite, _ = h.one("INVITE")
    h.respond(invite, 180)
    h.advance(h.now + 19.9)
    assert [r.method for r, _ in h.sent()] == []
    h.advance(h.now + 0.2)
    cancel, dest = h.one("CANCEL")
    assert dest == PROXY and cancel.via.branch == invite.via.branch and cancel.cseq.seq == invite.cseq.seq
    assert cancel.uri == invite.uri and cancel.headers.get("To") == invite.headers.get("To")
    h.respond(cancel, 200)
    h.respond(invite, 487)
    ack, _ = h.one("ACK")
    assert ack.via.branch == invite.via.branch
    result = h.completed().result
    assert (result.outcome, result.status, result.reason) == (OutboundOutcome.NO_ANSWER, 487,
                                                             "ring timeout Request Terminated")


def test_183_only_until_ring_timeout_is_failed() -> None:
    h = Harness(ring_timeout=10.0)
    invite, _ = h.one("INVITE")
    h.respond(invite, 183, ("Content-Type", "application/sdp"), body=ANSWER)
    progress = [e for e in h.events if isinstance(e, OutboundProgress)]
    assert progress[0].status == 183 and progress[0].sdp == ANSWER
    h.advance(h.now + 10)
    cancel, _ = h.one("CANCEL")
    h.respond(cancel, 200)
    h.respond(invite, 487)
    result = h.completed().result
    assert (result.outcome, result.reason) == (OutboundOutcome.FAILED, "183 without final response")


def test_cancel_waits_for_a_provisional() -> None:
    h = Harness(ring_timeout=1.0)
    invite, _ = h.one("INVITE")
    h.advance(h.now + 1.2)
    assert [r.method for r, _ in h.sent()] == ["INVITE"]  # retransmissions, no CANCEL (section 9.1)
    h.respond(invite, 100, tag=None)
    cancel, _ = h.one("CANCEL")
    h.respond(cancel, 200)
    h.respond(invite, 487)
    assert h.completed().result.outcome == OutboundOutcome.NO_ANSWER


def test_no_487_after_cancel_ends_after_64_t1() -> None:
    h = Harness(ring_timeout=5.0)
    invite, _ = h.one("INVITE")
    h.respond(invite, 180)
    h.advance(h.now + 5)
    h.one("CANCEL")
    h.advance(h.now + 33)
    assert h.completed().result.outcome == OutboundOutcome.NO_ANSWER


def test_no_response_at_all_is_trunk_failure() -> None:
    h = Harness(ring_timeout=60.0)
    h.one("INVITE")
    h.advance(h.now + 33)  # Timer B
    result = h.completed().result
    assert (result.outcome, result.status) == (OutboundOutcome.TRUNK_FAILURE, 408)


def test_app_cancel() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 180)
    h.ua.cancel_call(h.leg, h.now)
    cancel, _ = h.one("CANCEL")
    h.respond(cancel, 200)
    h.respond(invite, 487)
    assert h.completed().result.outcome == OutboundOutcome.CANCELLED


def test_answer_after_cancel_is_acked_and_byed() -> None:
    h = Harness(ring_timeout=5.0)
    invite, _ = h.one("INVITE")
    h.respond(invite, 180)
    h.advance(h.now + 5)
    h.one("CANCEL")
    h.answer(invite)
    assert sorted(r.method for r, _ in h.sent()) == ["ACK", "BYE"]
    assert h.completed().result.outcome == OutboundOutcome.NO_ANSWER


def test_callee_hangs_up_and_sends_info_dtmf() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    ok = h.answer(invite)
    h.sent()
    callee_tag = ok.to_addr.tag
    our_tag = invite.from_addr.tag

    def in_dialog(method: str, cseq: int, body: bytes = b"", ctype: str = "") -> bytes:
        lines = [f"{method} sip:ivr@192.0.2.10:5060 SIP/2.0",
                 f"Via: SIP/2.0/UDP 198.51.100.9:5080;branch=z9hG4bK{cseq}", "Max-Forwards: 70",
                 f"From: <sip:+15555550100@trunk.example>;tag={callee_tag}",
                 f"To: <sip:+15555550999@ivr.example>;tag={our_tag}", f"Call-ID: {invite.call_id}",
                 f"CSeq: {cseq} {method}"]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    # The callee is not in allowed_peers, but its requests come through the proxy we dialled through.
    h.ua.receive_datagram(in_dialog("INFO", 1, b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"), PROXY,
                          h.now)
    h.ua.receive_datagram(in_dialog("BYE", 2), PROXY, h.now)
    h.drain()
    statuses = [parse_message(d).status for d, _ in h.ua.datagrams_to_send()]  # type: ignore[union-attr]
    assert statuses == [200, 200]
    assert [e.digit for e in h.events if isinstance(e, DtmfReceived)] == ["5"]
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["callee hung up"]


def test_shutdown_cancels_pending_outbound_calls() -> None:
    h = Harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 180)
    h.ua.shutdown(h.now)
    h.one("CANCEL")
    h.respond(invite, 487)
    result = h.completed().result
    assert (result.outcome, result.reason) == (OutboundOutcome.CANCELLED, "shutdown")


def test_cancelled_call_whose_callee_goes_silent_is_abandoned_but_a_late_200_is_still_byed() -> None:
    h = Harness(ring_timeout=5.0)
    invite, _ = h.one("INVITE")
    h.respond(invite, 180)
    h.advance(h.now + 5)
    h.one("CANCEL")
    h.advance(h.now + 33)
    assert h.completed().result.outcome == OutboundOutcome.NO_ANSWER
    h.sent()
    # The INVITE transaction is gone (TransactionLayer.abandon): the 200 arrives as a stray response, and
    # is still ACKed and hung up (we no longer want the call, RFC 3261 section 15).
    h.answer(invite)
    assert sorted(r.method for r, _ in h.sent()) == ["ACK", "BYE"]
    assert len([e for e in h.events if isinstance(e, OutboundCompleted)]) == 1
