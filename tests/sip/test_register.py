"""Registration through the user agent: bytes in, REGISTERs out, time moved only by handle_timer(now)."""

from __future__ import annotations

import random

import pytest

from ivr.sip.digest import digest_response
from ivr.sip.message import SipRequest, make_response, parse_message
from ivr.sip.register import Registration, RegistrationConfig, RegistrationState
from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import RegistrationChanged
from tests.sip.harness import ClockedUa

LOCAL = ("192.0.2.10", 5060)
REGISTRAR = ("198.51.100.7", 5060)
CONFIG = RegistrationConfig(aor="sip:2000@pbx.example.com", registrar="pbx.example.com:5060", username="2000",
                            password="secret", expires=300)
CHALLENGE = 'Digest realm="pbx", nonce="n1", qop="auth", algorithm=MD5'


class Harness(ClockedUa):
    def __init__(self, config: RegistrationConfig = CONFIG) -> None:
        super().__init__(UserAgent(UserAgentConfig(allowed_peers=("192.0.2.0/24",)), LOCAL), 1000.0)
        self.reg = self.ua.add_registration(config, REGISTRAR, self.now)

    def sent(self) -> list[SipRequest]:
        out = []
        for data, dest in self.ua.datagrams_to_send():
            msg = parse_message(data)
            assert isinstance(msg, SipRequest) and dest == REGISTRAR
            out.append(msg)
        self.drain()
        return out

    def one(self) -> SipRequest:
        requests = self.sent()
        assert len(requests) == 1, requests
        return requests[0]

    def reply(self, request: SipRequest, status: int, *headers: tuple[str, str], via: str | None = None) -> None:
        response = make_response(request, status, to_tag="reg1", headers=headers)
        if via is not None:
            response.headers.set("Via", via)
        self.ua.receive_datagram(response.to_bytes(), REGISTRAR, self.now)
        self.drain()

    @property
    def state(self) -> RegistrationState:
        return self.ua.registrations()[0].state


def auth_params(request: SipRequest, header: str = "Authorization") -> dict[str, str]:
    value = request.headers.get(header)
    assert value is not None, f"no {header}"
    out = {}
    for part in value.removeprefix("Digest ").split(", "):
        name, _, v = part.partition("=")
        out[name] = v.strip('"')
    return out


def register_with_auth(h: Harness, *ok_headers: tuple[str, str]) -> SipRequest:
    first = h.one()
    h.reply(first, 401, ("WWW-Authenticate", CHALLENGE))
    second = h.one()
    h.reply(second, 200, *ok_headers)
    return second


def test_401_then_auth_then_200() -> None:
    h = Harness()
    first = h.one()
    assert first.uri == "sip:pbx.example.com"
    assert first.headers.get("Authorization") is None
    assert first.headers.get("Expires") == "300"
    assert first.headers.get("Contact") == "<sip:ivr@192.0.2.10:5060>"
    assert ";rport" in (first.headers.get("Via") or "")
    assert h.state == RegistrationState.REGISTERING
    h.reply(first, 401, ("WWW-Authenticate", CHALLENGE))
    second = h.one()
    assert (second.call_id, second.cseq.seq) == (first.call_id, first.cseq.seq + 1)
    assert second.via.branch != first.via.branch
    p = auth_params(second)
    assert (p["username"], p["realm"], p["uri"], p["nc"], p["qop"]) == (
        "2000", "pbx", "sip:pbx.example.com", "00000001", "auth")
    assert p["response"] == digest_response(algorithm="MD5", username="2000", realm="pbx", password="secret",
                                            method="REGISTER", uri="sip:pbx.example.com", nonce="n1",
                                            nc="00000001", cnonce=p["cnonce"], qop="auth")
    h.reply(second, 200, ("Contact", "<sip:ivr@192.0.2.10:5060>;expires=120"))
    status = h.ua.registrations()[0]
    assert status.state == RegistrationState.REGISTERED
    assert status.expires_at == h.now + 120
    assert status.describe(h.now).startswith("registered, expires in 120 s")
    changes = [e for e in h.events if isinstance(e, RegistrationChanged)]
    assert changes and changes[-1].status.state == RegistrationState.REGISTERED


def test_407_answered_with_proxy_authorization() -> None:
    h = Harness()
    first = h.one()
    h.reply(first, 407, ("Proxy-Authenticate", 'Digest realm="edge", nonce="p1", algorithm=SHA-256, qop="auth"'))
    second = h.one()
    assert second.headers.get("Authorization") is None
    assert auth_params(second, "Proxy-Authorization")["algorithm"] == "SHA-256"
    h.reply(second, 200, ("Expires", "300"))
    assert h.state == RegistrationState.REGISTERED


def test_refresh_between_half_and_four_fifths_with_preemptive_credentials() -> None:
    h = Harness()
    second = register_with_auth(h, ("Contact", "<sip:ivr@192.0.2.10:5060>;expires=100"), ("Expires", "3600"))
    start = h.now
    refresh_at = h.ua.registrations()[0].next_attempt_at
    assert refresh_at is not None and start + 50 <= refresh_at <= start + 80
    h.advance(refresh_at - 0.01)
    assert h.sent() == []
    h.advance(refresh_at)
    refresh = h.one()
    assert refresh.cseq.seq == second.cseq.seq + 1 and refresh.call_id == second.call_id
    p = auth_params(refresh)
    assert (p["nonce"], p["nc"]) == ("n1", "00000002")  # nonce count per nonce
    assert h.state == RegistrationState.REGISTERED  # the binding holds during the refresh


def test_shorter_expires_header_honoured() -> None:
    h = Harness()
    register_with_auth(h, ("Expires", "60"))
    status = h.ua.registrations()[0]
    assert status.expires_at == h.now + 60
    timer = status.next_attempt_at
    assert timer is not None and h.now + 30 <= timer <= h.now + 48


def test_backoff_on_503_grows_with_jitter_and_honours_retry_after() -> None:
    h = Harness()
    delays = []
    for _ in range(4):
        request = h.one()
        h.reply(request, 503)
        status = h.ua.registrations()[0]
        assert status.state == RegistrationState.RETRYING and status.reason == "503 Service Unavailable"
        assert status.next_attempt_at is not None
        delays.append(status.next_attempt_at - h.now)
        assert "retrying in" in status.describe(h.now)
        h.advance(status.next_attempt_at)
    for n, delay in enumerate(delays):
        step = 2.0 * 2**n
        assert step * 0.5 <= delay <= step
    request = h.one()
    h.reply(request, 503, ("Retry-After", "120"))
    status = h.ua.registrations()[0]
    assert status.next_attempt_at is not None and status.next_attempt_at - h.now >= 120 - 1e-6


def test_backoff_capped() -> None:
    reg = Registration(RegistrationConfig(aor="sip:a@b", registrar="b", username="a", password="p",
                                          backoff_min=1, backoff_max=10), LOCAL, rng=random.Random(1))
    now = 0.0
    reg.start(now)
    for _ in range(12):
        (request,) = reg.requests_to_send()
        reg.on_response(make_response(request, 500), now)
        assert reg.next_attempt_at is not None and reg.next_attempt_at - now <= 10
        now = reg.next_attempt_at
        reg.handle_timer(now)


def test_timeout_then_retry() -> None:
    h = Harness()
    h.one()
    h.advance(h.now + 32.1)  # Timer F (64*T1 = 32 s) fires; the first retry waits at least 1 s more
    status = h.ua.registrations()[0]
    assert status.state == RegistrationState.RETRYING and status.reason == "timeout"
    assert {r.cseq.seq for r in h.sent()} == {1}  # retransmissions of the first REGISTER only
    assert status.next_attempt_at is not None
    h.advance(status.next_attempt_at)
    assert h.one().cseq.seq == 2


def test_423_retries_with_min_expires() -> None:
    h = Harness()
    first = h.one()
    h.reply(first, 423, ("Min-Expires", "600"))
    second = h.one()
    assert second.headers.get("Expires") == "600"
    h.reply(second, 200)
    assert h.ua.registrations()[0].expires_at == h.now + 600


def test_423_without_usable_min_expires_is_a_failure() -> None:
    h = Harness()
    h.reply(h.one(), 423)
    assert h.state == RegistrationState.RETRYING


def test_wrong_password_stops_and_retries_later() -> None:
    h = Harness()
    first = h.one()
    h.reply(first, 401, ("WWW-Authenticate", CHALLENGE))
    second = h.one()
    h.reply(second, 401, ("WWW-Authenticate", CHALLENGE))
    assert h.sent() == []  # no third REGISTER at once
    status = h.ua.registrations()[0]
    assert status.state == RegistrationState.RETRYING and status.reason == "401 wrong credentials"


def test_stale_nonce_retried_once() -> None:
    h = Harness()
    first = h.one()
    h.reply(first, 401, ("WWW-Authenticate", CHALLENGE))
    second = h.one()
    h.reply(second, 401, ("WWW-Authenticate", 'Digest realm="pbx", nonce="n2", qop="auth", stale=true'))
    third = h.one()
    assert auth_params(third)["nonce"] == "n2"
    h.reply(third, 200)
    assert h.state == RegistrationState.REGISTERED


def test_403_retried_forever() -> None:
    h = Harness()
    for _ in range(5):
        h.reply(h.one(), 403)
        status = h.ua.registrations()[0]
        assert status.state == RegistrationState.RETRYING
        assert status.next_attempt_at is not None
        h.advance(status.next_attempt_at)
    assert h.ua.registrations()[0].failures == 5


def test_unregister_on_shutdown() -> None:
    h = Harness()
    second = register_with_auth(h, ("Expires", "300"))
    h.ua.shutdown(h.now)
    bye = h.one()
    assert bye.headers.get("Expires") == "0"
    assert bye.headers.get("Contact") == second.headers.get("Contact")
    assert auth_params(bye)["nonce"] == "n1"
    assert not h.ua.registrations_settled
    h.reply(bye, 200)
    assert h.state == RegistrationState.UNREGISTERED
    assert h.ua.registrations_settled
    assert h.ua.get_timer() is None or h.sent() == []


def test_unregister_waits_for_the_register_in_flight() -> None:
    h = Harness()
    first = h.one()
    h.ua.unregister(CONFIG.aor, h.now)
    assert h.sent() == []  # RFC 3261 section 10.2: one REGISTER at a time
    h.reply(first, 200)
    withdraw = h.one()
    assert withdraw.headers.get("Expires") == "0"
    h.reply(withdraw, 200)
    assert h.state == RegistrationState.UNREGISTERED


def test_unregister_without_binding_is_immediate() -> None:
    h = Harness()
    h.reply(h.one(), 503)
    h.ua.unregister(CONFIG.aor, h.now)
    assert h.state == RegistrationState.UNREGISTERED
    assert h.sent() == []


def test_public_address_from_received_rport_goes_into_contact() -> None:
    h = Harness()
    first = h.one()
    via = str(first.via).replace(";rport", ";received=203.0.113.5;rport=40000")
    h.reply(first, 200, ("Expires", "300"), via=via)
    status = h.ua.registrations()[0]
    assert status.public_address == ("203.0.113.5", 40000)
    h.advance(h.now)
    again = h.one()
    assert again.headers.get("Contact") == "<sip:ivr@203.0.113.5:40000>"
    via = str(again.via).replace(";rport", ";received=203.0.113.5;rport=40000")
    h.reply(again, 200, ("Contact", "<sip:ivr@203.0.113.5:40000>;expires=200"), via=via)
    assert h.ua.registrations()[0].expires_at == h.now + 200
    assert h.sent() == []


def test_several_accounts() -> None:
    h = Harness()
    other = RegistrationConfig(aor="sip:trunk1@carrier.example", registrar="carrier.example", username="t1",
                               password="x", contact_user="trunk1")
    h.ua.add_registration(other, REGISTRAR, h.now)
    requests = h.sent()
    assert len(requests) == 2 and {r.headers.get("To") for r in requests} == {
        "<sip:2000@pbx.example.com>", "<sip:trunk1@carrier.example>"}
    assert len({r.call_id for r in requests}) == 2
    with pytest.raises(ValueError):
        h.ua.add_registration(other, REGISTRAR, h.now)


def test_config_checks() -> None:
    with pytest.raises(ValueError):
        RegistrationConfig(aor="tel:+1555", registrar="x", username="a", password="b")
    with pytest.raises(ValueError):
        RegistrationConfig(aor="sip:a@b", registrar="x", username="a", password="b", transport="tcp")
    with pytest.raises(ValueError):
        RegistrationConfig(aor="sip:a@b", registrar="x:99999", username="a", password="b")
    assert RegistrationConfig(aor="sip:a@b:5070", registrar="[::1]:5080", username="a",
                              password="b").registrar_address == ("::1", 5080)
