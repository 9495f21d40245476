"""Which transport a message takes (ivr.sip.transport), stream framing (ivr.sip.framing) and what the
transaction layer does with both (RFC 3261 section 18); sans-I/O, time passed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.config import load_config
from ivr.errors import ConfigError
from ivr.sip.framing import MAX_BODY, PING, FramingError, StreamFramer
from ivr.sip.message import SipRequest, make_response, parse_message
from ivr.sip.transaction import (
    AckTimeout,
    RequestReceived,
    TransactionLayer,
    TransactionTimeout,
)
from ivr.sip.transport import TransportRule, Transports, uri_transport
from tests.sip.test_sip_transaction import events, request, run_until

PEER = ("192.0.2.20", 5062)
PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


def outgoing(method: str = "OPTIONS", pad: int = 0, uri: str = "sip:pbx@192.0.2.20:5062",
             route: str = "") -> SipRequest:
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKout1;rport\r\n"
        + (f"Route: {route}\r\n" if route else "")
        + "Max-Forwards: 70\r\nFrom: <sip:ivr@192.0.2.10>;tag=f1\r\nTo: <sip:pbx@192.0.2.20>\r\n"
        "Call-ID: out-1\r\nCSeq: 1 " + method + "\r\nContact: <sip:ivr@192.0.2.10:5060>\r\n"
        + (f"X-Pad: {'p' * pad}\r\n" if pad else "")
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(data.encode())
    assert isinstance(msg, SipRequest)
    return msg


def sent(layer: TransactionLayer) -> list[tuple[bytes, tuple[str, int]]]:
    return layer.datagrams_to_send()


def test_a_request_to_a_tls_peer_names_tls_and_our_tls_port_and_is_not_retransmitted() -> None:
    layer = TransactionLayer(transports=Transports(dict(PORTS), (TransportRule(("192.0.2.0/24",), "TLS"),)))
    layer.send_request(outgoing(), PEER, 0.0)
    ((data, address),) = sent(layer)
    assert address == PEER and layer.transports.of(PEER) == "TLS"
    assert b"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKout1" in data
    assert b"Contact: <sip:ivr@192.0.2.10:5061;transport=tls>" in data
    assert run_until(layer, 31.0) == []  # no Timer E over a stream; Timer F still ends it
    run_until(layer, 33.0)
    assert any(isinstance(e, TransactionTimeout) and e.timer == "F" for e in events(layer))


def test_a_udp_request_over_1300_bytes_goes_over_tcp_and_back_to_udp_if_refused() -> None:
    layer = TransactionLayer(transports=Transports(dict(PORTS)))
    layer.send_request(outgoing(pad=1400), PEER, 0.0)
    ((data, _),) = sent(layer)
    assert b"SIP/2.0/TCP" in data and layer.transports.of(PEER) == "TCP"
    assert layer.transport_error(PEER, 0.2, definitive=True) == []  # refused: section 18.1.1, over UDP after all
    ((again, _),) = sent(layer)
    assert b"SIP/2.0/UDP" in again and b"transport=tcp" not in again and layer.transports.of(PEER) == "UDP"
    assert [t for t, _ in run_until(layer, 1.8)] == [0.7, 1.7]  # and retransmitted as UDP is (Timer E)


def test_a_small_request_stays_on_udp_and_a_big_one_does_without_tcp() -> None:
    layer = TransactionLayer(transports=Transports({"UDP": 5060}))
    layer.send_request(outgoing(pad=1400), PEER, 0.0)
    ((data, _),) = sent(layer)
    assert b"SIP/2.0/UDP" in data


def test_a_broken_connection_ends_its_transactions_at_once() -> None:
    layer = TransactionLayer(transports=Transports(dict(PORTS), (TransportRule(("192.0.2.20",), "TCP"),)))
    tx = layer.send_request(outgoing("INVITE"), PEER, 0.0)
    sent(layer)
    assert layer.transport_error(PEER, 1.0, definitive=True) == [tx]
    assert any(isinstance(e, TransactionTimeout) and e.transaction_id == tx for e in events(layer))


def test_a_request_over_a_connection_is_answered_on_it_and_its_via_address_reuses_it() -> None:
    layer = TransactionLayer(transports=Transports(dict(PORTS)))
    connection = ("192.0.2.20", 41234)  # the phone's ephemeral port; its Via names 5062
    layer.receive(request(), connection, 0.0, "TCP")
    (received,) = events(layer)
    assert isinstance(received, RequestReceived)
    ((trying, address),) = sent(layer)  # 100 Trying goes back on the connection, not to the Via's port
    assert address == connection and trying.startswith(b"SIP/2.0 100")
    assert layer.transports.of(("192.0.2.20", 5062)) == "TCP"  # our BYE to its Contact takes the connection
    assert run_until(layer, 40.0) == []


def test_uri_transport() -> None:
    assert uri_transport("<sip:a@192.0.2.1;transport=tcp>") == "TCP"
    assert uri_transport("sips:a@example.com") == "TLS"
    assert uri_transport("sip:a@192.0.2.1") is None
    assert uri_transport("tel:+15555550100") is None


def test_a_route_with_transport_decides_how_in_dialog_requests_go() -> None:
    layer = TransactionLayer(transports=Transports(dict(PORTS)))
    layer.send_request(outgoing("BYE", route="<sip:192.0.2.20:5062;lr;transport=tcp>"), PEER, 0.0)
    ((data, _),) = sent(layer)
    assert b"SIP/2.0/TCP" in data


def test_framing_cuts_messages_by_content_length_and_answers_pings() -> None:
    message = b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\nTo: <sip:b>\r\n\r\nhello"
    framer = StreamFramer()
    assert framer.feed(PING + message[:10]) == [PING]
    assert framer.feed(message[10:] + message[:3]) == [message]
    assert framer.feed(message[3:]) == [message]
    assert framer.pending == 0


@pytest.mark.parametrize("bad", [
    b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n",
    b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n",
    b"X" * 20000,
])
def test_framing_refuses_what_cannot_be_framed(bad: bytes) -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(bad)


def test_tls_config_that_cannot_work_is_reported_at_its_line(tmp_path: Path) -> None:
    """A certificate that does not load, a missing key, tls for a peer without sip.tls, tcp without sip.tcp:
    the config's errors with file:line, not a failed start."""
    (tmp_path / "box.pem").write_text("not a certificate\n")
    cases = {
        "sip:\n  tls: {cert: box.pem, key: box.pem}\n": ":3:15: cannot use cert box.pem with key box.pem: not a PEM",
        "sip:\n  tls: {cert: box.pem, key: gone.key}\n": "gone.key does not exist",
        "sip:\n  transport_peers: [{peers: [192.0.2.1], transport: tls}]\n": "transport tls needs sip.tls",
        "sip:\n  transport_peers: [{peers: [192.0.2.1], transport: tcp}]\n": "transport tcp needs sip.tcp: true",
    }
    for text, wanted in cases.items():
        path = tmp_path / "ivr.yaml"
        path.write_text("site: {id: a}\n" + text)
        with pytest.raises(ConfigError) as err:
            load_config(str(path))
        assert wanted in str(err.value) and str(err.value).startswith(f"{path}:"), str(err.value)


def test_a_response_whose_connection_closed_goes_over_a_new_one_to_the_via() -> None:
    """RFC 3261 section 18.2.2: the request's connection is gone before the final response; it goes to the
    received address and the Via's sent-by port, over the same transport (a new connection)."""
    layer = TransactionLayer(transports=Transports(dict(PORTS)))
    connection = ("192.0.2.20", 41234)
    layer.receive(request("OPTIONS"), connection, 0.0, "TCP")
    (received,) = events(layer)
    assert isinstance(received, RequestReceived)
    assert layer.transport_error(connection, 0.5, definitive=True) == []  # a server transaction is not ended
    layer.transports.forget(connection)
    layer.send_response(received.transaction_id, make_response(received.request, 200), 1.0)
    ((data, address),) = sent(layer)
    assert data.startswith(b"SIP/2.0 200") and address == ("192.0.2.20", 5062)
    assert layer.transports.of(address) == "TCP"


def test_over_a_stream_the_2xx_is_not_resent_but_its_missing_ack_still_ends_the_call() -> None:
    """Section 13.3.1.4 retransmits a 2xx over UDP only; the ACK is awaited 64*T1 on every transport, so a
    call whose ACK never comes over TCP still ends (``no_ack``) instead of running on."""
    layer = TransactionLayer(transports=Transports(dict(PORTS)))
    connection = ("192.0.2.20", 41234)
    layer.receive(request(), connection, 0.0, "TCP")
    (received,) = events(layer)
    assert isinstance(received, RequestReceived)
    sent(layer)  # 100 Trying
    layer.send_response(received.transaction_id, make_response(received.request, 200, to_tag="t1"), 0.0)
    assert len(sent(layer)) == 1
    assert run_until(layer, 31.0) == []  # not resent
    run_until(layer, 33.0)
    assert any(isinstance(e, AckTimeout) for e in events(layer))
