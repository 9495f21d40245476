"""RFC 3263 section 4.3 for outbound calls: an INVITE that times out or gets 503 before any 1xx goes,
identical but for its branch, to the proxy's next address; time advanced as in test_uac."""

from __future__ import annotations

from ivr.sip.message import SipRequest
from ivr.sip.resolve import Failover
from ivr.sip.transaction import Address
from ivr.sip.ua_state import LegState
from ivr.sip.uac import OutboundOutcome, TargetFailure
from tests.sip.test_uac import PROXY, Harness

SECOND = ("198.51.100.8", 5060)
THIRD = ("198.51.100.6", 5070)


def failover_harness(**kw: object) -> Harness:
    return Harness(alternates=(SECOND, THIRD), **kw)


def invite_to(h: Harness, dest: Address) -> SipRequest:
    """The one INVITE (one branch, whatever its retransmissions) sent to `dest` since the last look."""
    found = {r.via.branch: r for r, d in h.sent() if r.method == "INVITE" and d == dest}
    assert len(found) == 1, found
    return next(iter(found.values()))


def test_503_goes_to_the_next_address_with_the_same_call_id_from_tag_and_cseq() -> None:
    h = failover_harness()
    first, dest = h.one("INVITE")
    assert dest == PROXY
    h.respond(first, 503, tag="busy")
    sent = h.sent()
    assert [r.method for r, _ in sent] == ["ACK", "INVITE"]  # the transaction layer ACKs the 503
    again, dest = [(r, d) for r, d in sent if r.method == "INVITE"][0]
    assert dest == SECOND
    assert again.call_id == first.call_id and again.from_addr.tag == first.from_addr.tag
    assert again.cseq.seq == first.cseq.seq and again.body == first.body
    assert again.via.branch != first.via.branch  # a new transaction
    h.respond(again, 180, source=SECOND)
    h.answer(again)
    ack, dest = h.one("ACK")
    result = h.completed().result
    assert result.outcome == OutboundOutcome.ANSWERED and result.call_id == first.call_id
    assert result.target == SECOND and result.failed_targets == (TargetFailure(PROXY, "503"),)
    assert h.ua.leg_state(h.leg) == LegState.CONFIRMED


def test_silent_address_fails_over_at_timer_b_not_at_the_ring_timeout() -> None:
    h = failover_harness(ring_timeout=5.0)
    first, _ = h.one("INVITE")
    h.advance(h.now + 31)  # past the ring timeout, but nothing came back: no CANCEL, only retransmissions
    assert {r.method for r, _ in h.sent()} == {"INVITE"}
    h.advance(h.now + 1)  # Timer B (64*T1 = 32 s)
    again = invite_to(h, SECOND)
    assert again.via.branch != first.via.branch
    # The ring timeout starts again for the address that took the call.
    h.respond(again, 180, source=SECOND)
    h.advance(h.now + 4.9)
    assert h.sent() == []
    h.advance(h.now + 0.2)
    cancel, dest = h.one("CANCEL")
    assert dest == SECOND and cancel.via.branch == again.via.branch
    h.respond(again, 487, source=SECOND)
    result = h.completed().result
    assert result.outcome == OutboundOutcome.NO_ANSWER and result.target == SECOND
    assert result.failed_targets == (TargetFailure(PROXY, "timeout"),)


def test_no_failover_once_a_provisional_came() -> None:
    h = failover_harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 100, tag=None)
    h.respond(invite, 503)
    assert [r.method for r, _ in h.sent()] == ["ACK"]
    result = h.completed().result
    assert (result.outcome, result.status) == (OutboundOutcome.TRUNK_FAILURE, 503)
    assert result.failed_targets == () and result.target == PROXY


def test_every_address_failed_is_a_trunk_failure_naming_them_all() -> None:
    h = failover_harness()
    invite, _ = h.one("INVITE")
    h.respond(invite, 503, ("Retry-After", "120 (maintenance)"))
    second = invite_to(h, SECOND)
    h.advance(h.now + 32)  # Timer B at the second
    third = invite_to(h, THIRD)
    assert second.via.branch != third.via.branch
    h.respond(third, 503, source=THIRD)
    result = h.completed().result
    assert (result.outcome, result.status) == (OutboundOutcome.TRUNK_FAILURE, 503)
    assert [(f.address, f.reason) for f in result.failed_targets] == [(PROXY, "503"), (SECOND, "timeout"),
                                                                      (THIRD, "503")]
    assert result.failed_targets[0].hold_until == 100.0 + 120  # the first 503 came at the harness's start


def test_a_late_2xx_from_an_address_given_up_on_is_acked_and_byed() -> None:
    h = failover_harness()
    first, _ = h.one("INVITE")
    h.advance(h.now + 32)  # Timer B: on to the second
    second = invite_to(h, SECOND)
    h.respond(second, 180, source=SECOND)
    h.answer(first, tag="slow")  # the first proxy was slow, not dead: its call is not wanted now
    assert sorted(r.method for r, _ in h.sent()) == ["ACK", "BYE"]
    assert [e for e in h.events if type(e).__name__ == "OutboundCompleted"] == []
    h.answer(second, tag="callee1")
    h.one("ACK")
    result = h.completed().result
    assert result.outcome == OutboundOutcome.ANSWERED and result.target == SECOND


def test_failover_order_is_sticky_per_address_and_honours_retry_after() -> None:
    f = Failover([PROXY, SECOND, THIRD])
    assert f.order(0.0) == [PROXY, SECOND, THIRD]
    f.failed_at(PROXY)
    f.succeeded_at(SECOND)
    assert f.order(1.0) == [SECOND, PROXY, THIRD]  # the next call starts where the last one got through
    f.failed_at(PROXY)  # a call still on the old address failing later does not move the current one
    assert f.current == SECOND
    f.failed_at(SECOND, hold_until=100.0)  # 503 with Retry-After: 99
    assert f.order(50.0) == [THIRD, PROXY]
    assert f.order(100.0)[0] == THIRD and SECOND in f.order(100.0)
    f.failed_at(THIRD, hold_until=200.0)
    f.failed_at(PROXY, hold_until=200.0)
    f.failed_at(SECOND, hold_until=200.0)
    assert sorted(f.order(150.0)) == sorted([PROXY, SECOND, THIRD])  # all held: try anyway
    f.update([SECOND, THIRD], expires_at=None)  # a new look-up dropped the first
    assert PROXY not in f.order(150.0)


def test_an_unreachable_address_fails_over_at_once_not_at_timer_b() -> None:
    """RFC 3261 section 17.1.4: the socket's ICMP port unreachable for the proxy ends the INVITE now, and RFC 3263
    moves it to the next address; the ICMP error of another destination changes nothing."""
    h = failover_harness()
    first, _ = h.one("INVITE")
    h.ua.transport_error(("192.0.2.99", 5060), h.now)  # someone else
    assert h.sent() == []
    h.ua.transport_error(PROXY, h.now + 0.01)
    assert h.sent() == []  # one bounce: a peer just starting may answer the retransmission
    h.advance(h.now + 0.5)  # Timer A: the retransmission, which bounces too
    assert {r.method for r, _ in h.sent()} == {"INVITE"}
    h.ua.transport_error(PROXY, h.now + 0.01)
    again = invite_to(h, SECOND)
    assert again.call_id == first.call_id and again.via.branch != first.via.branch
    h.respond(again, 180, source=SECOND)
    for _ in range(2):  # late ICMP errors after a provisional: the peer is alive
        h.ua.transport_error(SECOND, h.now + 0.5)
    h.answer(again)
    h.one("ACK")
    result = h.completed().result
    assert result.outcome == OutboundOutcome.ANSWERED and result.target == SECOND
    assert result.failed_targets == (TargetFailure(PROXY, "unreachable"),)
