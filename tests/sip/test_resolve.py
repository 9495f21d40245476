"""RFC 3263 target choice (SRV order, failover, stickiness) and the NAT side of registration (keep-alives,
the learned public address in Contact), sans-I/O: datagrams in and out of the user agent, time passed in."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ivr.sip.message import SipRequest, SipResponse, make_response, parse_message
from ivr.sip.register import CRLF_PING, RegistrationConfig, RegistrationState
from ivr.sip.resolve import Failover, SrvRecord, order_srv, parse_host, srv_name
from ivr.sip.transaction import Address
from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import IncomingCall

LOCAL = ("10.0.0.2", 5060)
FIRST = ("198.51.100.7", 5060)
SECOND = ("198.51.100.8", 5070)


# ------------------------------------------------------------------------------------- pure choices


def test_parse_host_decides_whether_srv_is_asked() -> None:
    assert parse_host("pbx.example.com").use_srv
    assert not parse_host("pbx.example.com:5060").use_srv  # explicit port: A/AAAA only (RFC 3263 4.2)
    literal = parse_host("192.0.2.1")
    assert literal.literal and not literal.use_srv and literal.port is None
    assert parse_host("[2001:db8::1]:5070") == parse_host("[2001:db8::1]:5070")
    assert parse_host("[2001:db8::1]:5070").port == 5070 and parse_host("[2001:db8::1]:5070").literal
    assert srv_name("pbx.example.com") == "_sip._udp.pbx.example.com"
    for bad in ("", ":5060", "pbx:0", "pbx:99999", "pbx:x"):
        with pytest.raises(ValueError):
            parse_host(bad)


def test_srv_order_is_by_priority_first() -> None:
    records = [SrvRecord(20, 100, 5060, "backup"), SrvRecord(10, 0, 5060, "zero"), SrvRecord(10, 50, 5060, "main")]
    for seed in range(20):
        order = [r.target for r in order_srv(records, random.Random(seed))]
        assert order[2] == "backup"
        assert set(order[:2]) == {"zero", "main"}


def test_srv_weights_share_the_first_place_in_proportion() -> None:
    """RFC 2782: within a priority, a record is picked first with probability weight/sum."""
    records = [SrvRecord(10, 75, 5060, "a"), SrvRecord(10, 25, 5060, "b"), SrvRecord(10, 0, 5060, "c")]
    rng = random.Random(7)
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(4000))
    assert 2700 < firsts["a"] < 3300
    assert 700 < firsts["b"] < 1300
    assert firsts["c"] < 100  # weight 0: rarely first, but still listed
    assert all(len(order_srv(records, rng)) == 3 for _ in range(10))


def test_srv_dot_target_means_no_service() -> None:
    assert order_srv([SrvRecord(0, 0, 0, ".")], random.Random(1)) == []


def test_failover_is_sticky_moves_on_and_starts_over_after_a_full_round() -> None:
    f = Failover([FIRST, SECOND], expires_at=100.0)
    assert f.current == FIRST
    f.succeeded()
    assert f.current == FIRST  # sticky while it works
    assert f.failed() == SECOND and f.current == SECOND
    f.succeeded()
    assert f.current == SECOND  # the one that works stays chosen
    assert f.failed() == FIRST
    assert f.failed() is None  # every target failed in a row: back to the best, after backoff
    assert f.current == FIRST
    assert not f.refresh_due(99.0) and f.refresh_due(100.0)


def test_update_keeps_the_chosen_target_while_listed() -> None:
    f = Failover([FIRST, SECOND], expires_at=10.0)
    f.failed()
    f.update([("198.51.100.9", 5060), SECOND], 20.0)
    assert f.current == SECOND and f.expires_at == 20.0
    f.update([("198.51.100.9", 5060)], 30.0)
    assert f.current == ("198.51.100.9", 5060)
    f.update([], 40.0)  # a failed look-up keeps the old answer
    assert f.current == ("198.51.100.9", 5060) and f.expires_at == 30.0


# ------------------------------------------------------------------------------ through the user agent


class Box:
    """A user agent registering one account at `targets`; datagrams recorded with their destination."""

    def __init__(self, config: RegistrationConfig, targets: list[Address], *,
                 external_address: str | None = None) -> None:
        self.ua = UserAgent(UserAgentConfig(allowed_peers=("192.0.2.0/24",), external_address=external_address),
                            LOCAL)
        self.now = 1000.0
        self.ua.add_registration(config, Failover(list(targets), expires_at=None), self.now)

    def out(self) -> list[tuple[SipRequest | SipResponse | bytes, Address]]:
        result: list[tuple[SipRequest | SipResponse | bytes, Address]] = []
        for data, dest in self.ua.datagrams_to_send():
            result.append((data if data == CRLF_PING else parse_message(data), dest))
        while self.ua.next_event() is not None:
            pass
        return result

    def requests(self, method: str) -> list[tuple[SipRequest, Address]]:
        return [(m, d) for m, d in self.out() if isinstance(m, SipRequest) and m.method == method]

    def reply(self, request: SipRequest, status: int, source: Address, *headers: tuple[str, str],
              via: str | None = None) -> None:
        response = make_response(request, status, to_tag="reg1", headers=headers)
        if via is not None:
            response.headers.set("Via", via)
        self.ua.receive_datagram(response.to_bytes(), source, self.now)

    def advance(self, until: float) -> list[tuple[SipRequest | SipResponse | bytes, Address]]:
        """Fire timers up to `until` (bounded), collecting what went out."""
        sent = []
        for _ in range(10000):
            deadline = self.ua.get_timer()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            sent += self.out()
        self.now = until
        return sent

    @property
    def status(self) -> RegistrationState:
        return self.ua.registrations()[0].state


def account(**kw: object) -> RegistrationConfig:
    return RegistrationConfig(aor="sip:2000@pbx.example.com", registrar="pbx.example.com", username="2000",
                              password="secret", **kw)  # type: ignore[arg-type]


def test_timed_out_registrar_is_skipped_for_the_next_address() -> None:
    box = Box(account(), [FIRST, SECOND])
    [(first, dest)] = box.requests("REGISTER")
    assert dest == FIRST
    sent = box.advance(box.now + 40)  # retransmissions, then Timer F (64*T1 = 32 s)
    to_second = [(m, d) for m, d in sent if isinstance(m, SipRequest) and d == SECOND]
    assert to_second, "no REGISTER went to the second address after the first timed out"
    box.reply(to_second[0][0], 200, SECOND, ("Expires", "300"))
    assert box.status == RegistrationState.REGISTERED
    # Sticky: the refresh goes to the address that answered, not back to the first.
    refresh_at = box.ua.registrations()[0].next_attempt_at
    assert refresh_at is not None
    sent = box.advance(refresh_at)
    refreshes = [d for m, d in sent if isinstance(m, SipRequest) and m.method == "REGISTER"]
    assert refreshes == [SECOND]


def test_503_moves_on_at_once_and_a_full_round_of_failures_backs_off() -> None:
    box = Box(account(), [FIRST, SECOND])
    [(first, _)] = box.requests("REGISTER")
    box.reply(first, 503, FIRST, ("Retry-After", "120"))
    [(second, dest)] = box.advance(box.now)  # at once: no wait for the Retry-After of the first
    assert isinstance(second, SipRequest) and second.method == "REGISTER" and dest == SECOND
    box.reply(second, 503, SECOND)
    assert box.advance(box.now) == []  # both failed: backoff, then from the best one again
    assert box.status == RegistrationState.RETRYING
    sent = box.advance(box.now + 200)
    again = [d for m, d in sent if isinstance(m, SipRequest) and m.method == "REGISTER"]
    assert again[:1] == [FIRST]


def test_other_failures_do_not_fail_over() -> None:
    box = Box(account(), [FIRST, SECOND])
    [(first, _)] = box.requests("REGISTER")
    box.reply(first, 403, FIRST)
    assert box.advance(box.now) == []
    assert box.ua.registrar_of("sip:2000@pbx.example.com").current == FIRST  # type: ignore[union-attr]


def test_crlf_keepalives_at_the_interval_while_registered() -> None:
    box = Box(account(keepalive="crlf", keepalive_seconds=20), [FIRST])
    [(first, _)] = box.requests("REGISTER")
    box.reply(first, 200, FIRST, ("Expires", "3600"))
    start = box.now
    sent = box.advance(start + 100)
    pings = [d for m, d in sent if m == CRLF_PING]
    assert pings == [FIRST] * 5  # at +20, +40, +60, +80, +100
    assert "keep-alive crlf (5 sent)" in box.ua.registrations()[0].describe(box.now)


def test_options_keepalive_timeout_registers_again() -> None:
    box = Box(account(keepalive="options", keepalive_seconds=25), [FIRST])
    [(first, _)] = box.requests("REGISTER")
    box.reply(first, 200, FIRST, ("Expires", "3600"))
    sent = box.advance(box.now + 25)
    [options] = [m for m, _ in sent if isinstance(m, SipRequest) and m.method == "OPTIONS"]
    assert options.call_id == first.call_id and options.cseq.seq == first.cseq.seq + 1
    box.reply(options, 200, FIRST)  # answered: nothing more than the next keep-alive
    sent = box.advance(box.now + 25)
    methods = [m.method for m, _ in sent if isinstance(m, SipRequest)]
    assert methods == ["OPTIONS"]
    # Now nobody answers: after the OPTIONS' Timer F the account registers again at once.
    sent = box.advance(box.now + 40)
    methods = [m.method for m, _ in sent if isinstance(m, SipRequest)]
    assert "REGISTER" in methods
    assert methods.index("REGISTER") > 0


def test_learned_public_address_goes_in_contact_of_calls_with_that_registrar() -> None:
    box = Box(account(), [FIRST])
    [(first, _)] = box.requests("REGISTER")
    box.reply(first, 200, FIRST, ("Expires", "300"),
              via=f"{first.headers.get('Via')};received=203.0.113.5".replace(";rport", ";rport=40001"))
    [(again, _)] = box.advance(box.now)  # the binding is re-registered with the public Contact at once
    assert isinstance(again, SipRequest)
    assert again.headers.get("Contact") == "<sip:ivr@203.0.113.5:40001>"
    assert box.ua.public_address_for(FIRST[0]) == ("203.0.113.5", 40001)
    assert box.ua.public_address_for("192.0.2.50") is None  # a LAN peer gets the local address
    invite = (
        "INVITE sip:ivr@203.0.113.5:40001 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKinv1\r\n"
        "From: <sip:100@pbx.example.com>;tag=a1\r\nTo: <sip:ivr@203.0.113.5>\r\nCall-ID: c1@pbx\r\n"
        "CSeq: 1 INVITE\r\nContact: <sip:100@198.51.100.7>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    box.ua.receive_datagram(invite.encode(), FIRST, box.now)
    calls = []
    while (event := box.ua.next_event()) is not None:
        if isinstance(event, IncomingCall):
            calls.append(event)
    [call] = calls
    box.ua.answer(call.leg_id, b"v=0\r\n", box.now)
    answers = [m for m, _ in box.out() if isinstance(m, SipResponse) and m.status == 200]
    assert answers and answers[-1].headers.get("Contact") == "<sip:ivr@203.0.113.5:40001>"


def test_external_address_wins_over_the_learned_one() -> None:
    box = Box(account(), [FIRST], external_address="203.0.113.99")
    [(first, _)] = box.requests("REGISTER")
    assert first.headers.get("Contact") == "<sip:ivr@203.0.113.99:5060>"
    box.reply(first, 200, FIRST, ("Expires", "300"),
              via=f"{first.headers.get('Via')};received=203.0.113.5".replace(";rport", ";rport=40001"))
    assert box.advance(box.now) == []  # nothing to re-register: the Contact stays the configured one
    assert box.ua.public_address_for(FIRST[0]) is None


def test_keepalive_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="keepalive_seconds"):
        account(keepalive="crlf", keepalive_seconds=31)
    with pytest.raises(ValueError, match="keepalive"):
        account(keepalive="stun")
