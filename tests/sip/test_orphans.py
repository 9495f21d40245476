"""After a restart (issue #12 defect 10): a fresh user agent ends the INVITEs of the process before it, knowing
only their Call-ID: a 2xx gets ACK and BYE (RFC 3261 section 13.2.2.4), a ringing INVITE a CANCEL that matches
it (derived From tag and branch), its 487 an ACK."""

from __future__ import annotations

from ivr.sip.message import SipRequest
from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import OrphanCancelAnswered, OrphanInviteEnded
from ivr.sip.uac import build_cancel
from tests.sip.test_uac import CALLEE, LOCAL, PROXY, Harness, spec

CALL_ID = "cb-0123456789abcdef@192.0.2.10"


class Restarted(Harness):
    """The new process: same address and config, no memory of the call."""

    def __init__(self) -> None:
        super().__init__(call_id="unrelated@192.0.2.10")
        self.ua = UserAgent(UserAgentConfig(allowed_peers=("198.51.100.0/24",)), LOCAL)
        self.events.clear()


def test_an_orphan_2xx_gets_ack_then_bye_and_its_retransmission_the_ack_only() -> None:
    crashed = Harness(call_id=CALL_ID)
    invite, _ = crashed.one("INVITE")
    new = Restarted()
    ok = new.answer(invite, ("Record-Route", "<sip:198.51.100.7;lr>"))
    sent = new.sent()
    assert [r.method for r, _ in sent] == ["ACK", "BYE"]
    (ack, to_ack), (bye, to_bye) = sent
    for request in (ack, bye):
        assert request.call_id == CALL_ID and request.uri == f"sip:callee@{CALLEE[0]}:{CALLEE[1]}"
        assert request.from_addr.tag == invite.from_addr.tag and request.to_addr.tag == "callee1"
        assert request.headers.values("Route") == ["<sip:198.51.100.7;lr>"]
    assert ack.cseq.seq == invite.cseq.seq and bye.cseq.seq == invite.cseq.seq + 1
    assert to_ack == to_bye == PROXY
    assert [e for e in new.events if isinstance(e, OrphanInviteEnded)] == [OrphanInviteEnded(CALL_ID, 200)]
    new.ua.receive_datagram(ok.to_bytes(), PROXY, new.now)
    new.drain()
    assert [r.method for r, _ in new.sent()] == ["ACK"]


def test_an_orphan_from_a_stranger_is_not_answered() -> None:
    crashed = Harness(call_id=CALL_ID)
    invite, _ = crashed.one("INVITE")
    new = Restarted()
    new.respond(invite, 200, ("Contact", "<sip:victim@203.0.113.5>"), source=("203.0.113.5", 5060))
    assert new.sent() == []


def test_a_ringing_orphan_is_cancelled_with_its_own_branch_tag_and_cseq() -> None:
    crashed = Harness(call_id=CALL_ID)
    invite, _ = crashed.one("INVITE")
    crashed.respond(invite, 401, ("WWW-Authenticate", 'Digest realm="pbx", nonce="abc", qop="auth"'))
    again = [r for r, _ in crashed.sent() if r.method == "INVITE"]
    new = Restarted()
    s = spec(call_id=CALL_ID)
    for cseq, sent in ((1, invite), *((2, r) for r in again)):
        tx = new.ua.cancel_orphan(s, CALL_ID, cseq, new.now)
        new.drain()
        cancel, dest = new.one("CANCEL")
        expected = build_cancel(sent)
        assert dest == PROXY and cancel.uri == expected.uri
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            assert cancel.headers.get(name) == expected.headers.get(name), name
        new.respond(cancel, 200, tag=None)
        assert OrphanCancelAnswered(tx, 200) in new.events
    # the INVITE's 487 (its transaction is gone here): ACKed with the INVITE's branch
    new.respond(invite, 487)
    [(ack, dest)] = [(r, d) for r, d in new.sent() if isinstance(r, SipRequest)]
    assert ack.method == "ACK" and ack.via.branch == invite.via.branch and dest == PROXY
    assert OrphanInviteEnded(CALL_ID, 487) in new.events
