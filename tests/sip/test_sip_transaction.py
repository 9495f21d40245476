"""RFC 3261 section 17 transactions; time only moves through handle_timer(now)."""

import pytest

from ivr.sip.message import SipRequest, SipResponse, make_response, parse_message
from ivr.sip.transaction import (
    AckReceived,
    AckTimeout,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    new_branch,
    response_destination,
)

PEER = ("192.0.2.20", 5062)
NAT_PEER = ("198.51.100.7", 40000)


def request(method: str = "INVITE", branch: str = "z9hG4bKa1", cseq: int = 1, via_host: str = "192.0.2.20",
            rport: bool = False, to_tag: str | None = None) -> SipRequest:
    to = "<sip:ivr@192.0.2.10>" + (f";tag={to_tag}" if to_tag else "")
    data = (
        f"{method} sip:ivr@192.0.2.10 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}:5062;branch={branch}{';rport' if rport else ''}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1\r\n"
        f"CSeq: {cseq} {'INVITE' if method == 'ACK' else method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).replace("CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\r\n" if method != "ACK" else "CSeq: 1 ACK\r\n")
    msg = parse_message(data.encode())
    assert isinstance(msg, SipRequest)
    return msg


def events(layer: TransactionLayer) -> list[TransactionEvent]:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def run_until(layer: TransactionLayer, limit: float) -> list[tuple[float, bytes]]:
    """Advance time timer by timer up to `limit`, recording when each datagram is sent."""
    sent: list[tuple[float, bytes]] = []
    while (deadline := layer.get_timer()) is not None and deadline <= limit:
        layer.handle_timer(deadline)
        sent += [(deadline, data) for data, _ in layer.datagrams_to_send()]
    return sent


def start_status(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


# --------------------------------------------------------------------------------------------- server side


def new_invite_server(layer: TransactionLayer, now: float = 0.0) -> str:
    layer.receive(request(), PEER, now)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived) and event.request.method == "INVITE"
    return event.transaction_id


def test_invite_server_sends_100_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    tid = new_invite_server(layer)
    (trying,) = layer.datagrams_to_send()
    assert start_status(trying[0]) == "SIP/2.0 100 Trying" and trying[1] == PEER
    layer.receive(request(), PEER, 0.3)  # retransmitted INVITE: the 100 again, nothing for the TU
    assert events(layer) == []
    assert [start_status(d) for d, _ in layer.datagrams_to_send()] == ["SIP/2.0 100 Trying"]
    assert layer.transaction(tid).state == TransactionState.PROCEEDING  # type: ignore[union-attr]


def test_timer_g_retransmits_final_and_timer_h_times_out() -> None:
    layer = TransactionLayer()
    tid = new_invite_server(layer)
    layer.datagrams_to_send()
    invite = layer.transaction(tid).request  # type: ignore[union-attr]
    layer.send_response(tid, make_response(invite, 486, to_tag="t1"), 0.0)
    assert len(layer.datagrams_to_send()) == 1
    sent = run_until(layer, 100.0)
    # Timer G: T1, 2T1, 4T1, then capped at T2 (section 17.2.1); H at 64*T1 = 32 s.
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(start_status(d) == "SIP/2.0 486 Busy Here" for _, d in sent)
    assert events(layer) == [TransactionTimeout(tid, "H"), TransactionTerminated(tid)]
    assert layer.get_timer() is None and layer.transaction(tid) is None


def test_ack_confirms_and_timer_i_absorbs_acks() -> None:
    layer = TransactionLayer()
    tid = new_invite_server(layer)
    invite = layer.transaction(tid).request  # type: ignore[union-attr]
    layer.send_response(tid, make_response(invite, 404, to_tag="t1"), 0.0)
    layer.datagrams_to_send()
    layer.receive(request(), PEER, 0.2)  # INVITE retransmission: the 404 again
    assert [start_status(d) for d, _ in layer.datagrams_to_send()] == ["SIP/2.0 404 Not Found"]
    layer.receive(request("ACK", to_tag="t1"), PEER, 0.4)
    assert layer.transaction(tid).state == TransactionState.CONFIRMED  # type: ignore[union-attr]
    assert layer.get_timer() == pytest.approx(5.4)  # Timer I = T4
    layer.receive(request("ACK", to_tag="t1"), PEER, 1.0)  # absorbed
    assert events(layer) == [] and layer.datagrams_to_send() == []
    assert run_until(layer, 10.0) == []  # no more G retransmissions after the ACK
    assert events(layer) == [TransactionTerminated(tid)]


def test_2xx_retransmitted_until_ack() -> None:
    layer = TransactionLayer()
    tid = new_invite_server(layer)
    invite = layer.transaction(tid).request  # type: ignore[union-attr]
    layer.send_response(tid, make_response(invite, 200, to_tag="t1"), 0.0)
    layer.datagrams_to_send()
    sent = run_until(layer, 4.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5]  # section 13.3.1.4: T1 doubling up to T2
    layer.receive(request(), PEER, 3.6)  # INVITE retransmission in Accepted: absorbed (RFC 6026)
    assert events(layer) == [] and layer.datagrams_to_send() == []
    ack = request("ACK", branch="z9hG4bKack", to_tag="t1")  # ACK for a 2xx is its own transaction
    layer.receive(ack, PEER, 4.0)
    (event,) = events(layer)
    assert isinstance(event, AckReceived) and event.stopped_retransmission
    assert run_until(layer, 100.0) == []
    assert events(layer) == [TransactionTerminated(tid)]  # Timer L


def test_2xx_without_ack_gives_ack_timeout() -> None:
    layer = TransactionLayer()
    tid = new_invite_server(layer)
    invite = layer.transaction(tid).request  # type: ignore[union-attr]
    layer.send_response(tid, make_response(invite, 200, to_tag="t1"), 0.0)
    layer.datagrams_to_send()
    sent = run_until(layer, 100.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    got = events(layer)
    assert AckTimeout("call-1", 1) in got and TransactionTerminated(tid) in got


def test_non_invite_server_timer_j() -> None:
    layer = TransactionLayer()
    layer.receive(request("OPTIONS"), PEER, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    assert layer.datagrams_to_send() == []  # no automatic 100 for non-INVITE
    layer.receive(request("OPTIONS"), PEER, 0.1)  # retransmission before any response: absorbed
    assert events(layer) == [] and layer.datagrams_to_send() == []
    layer.send_response(event.transaction_id, make_response(event.request, 200, to_tag="x"), 0.2)
    assert len(layer.datagrams_to_send()) == 1
    layer.receive(request("OPTIONS"), PEER, 1.0)  # retransmission in Completed: the 200 again
    assert [start_status(d) for d, _ in layer.datagrams_to_send()] == ["SIP/2.0 200 OK"]
    assert layer.get_timer() == pytest.approx(32.2)  # Timer J = 64*T1
    assert run_until(layer, 100.0) == []
    assert events(layer) == [TransactionTerminated(event.transaction_id)]


def test_response_routing_uses_received_and_rport() -> None:
    layer = TransactionLayer()
    layer.receive(request("OPTIONS", rport=True, via_host="10.0.0.5"), NAT_PEER, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    via = event.request.via
    assert via.received == "198.51.100.7" and via.rport == 40000
    layer.send_response(event.transaction_id, make_response(event.request, 200), 0.0)
    ((data, dest),) = layer.datagrams_to_send()
    assert dest == NAT_PEER
    assert b";rport=40000" in data and b";received=198.51.100.7" in data  # RFC 3581: echoed back
    # Section 18.2.2 without rport: received address, sent-by port.
    layer.receive(request("OPTIONS", branch="z9hG4bKb2", via_host="10.0.0.5"), NAT_PEER, 0.0)
    (event,) = events(layer)
    layer.send_response(event.transaction_id, make_response(event.request, 200), 0.0)  # type: ignore[attr-defined]
    assert layer.datagrams_to_send()[0][1] == ("198.51.100.7", 5062)


def test_cancel_has_its_own_transaction() -> None:
    layer = TransactionLayer()
    invite_tid = new_invite_server(layer)
    layer.receive(request("CANCEL"), PEER, 0.1)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived) and event.request.method == "CANCEL"
    assert event.transaction_id != invite_tid
    assert layer.find_invite_for_cancel(event.request) == invite_tid
    other = request("CANCEL", branch="z9hG4bKother")
    assert layer.find_invite_for_cancel(other) is None


def test_rfc2543_requests_match_without_magic_cookie() -> None:
    layer = TransactionLayer()
    layer.receive(request(branch="oldstyle"), PEER, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    layer.receive(request(branch="oldstyle"), PEER, 0.1)
    assert events(layer) == []


# --------------------------------------------------------------------------------------------- client side


def test_invite_client_timer_a_and_timer_b() -> None:
    layer = TransactionLayer()
    tid = layer.send_request(request(branch=new_branch()), PEER, 0.0)
    assert [dest for _, dest in layer.datagrams_to_send()] == [PEER]
    sent = run_until(layer, 100.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A doubles, no cap
    assert events(layer) == [TransactionTimeout(tid, "B"), TransactionTerminated(tid)]


def test_invite_client_acks_error_with_to_tag() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKcli")
    tid = layer.send_request(invite, PEER, 0.0)
    layer.datagrams_to_send()
    layer.receive(make_response(invite, 180, to_tag="remote"), PEER, 0.2)
    assert [type(e) for e in events(layer)] == [ResponseReceived]
    assert run_until(layer, 5.0) == []  # 1xx stopped Timer A
    busy = make_response(invite, 486, to_tag="remote")
    layer.receive(busy, PEER, 6.0)
    (event,) = events(layer)
    assert isinstance(event, ResponseReceived) and event.response.status == 486
    ((data, dest),) = layer.datagrams_to_send()
    ack = parse_message(data)
    assert isinstance(ack, SipRequest) and ack.method == "ACK" and dest == PEER
    assert ack.to_addr.tag == "remote" and ack.via.branch == "z9hG4bKcli"
    assert str(ack.cseq) == "1 ACK" and ack.uri == invite.uri and ack.from_addr.tag == "a1"
    layer.receive(busy, PEER, 7.0)  # retransmitted 486: ACK again, not to the TU
    assert events(layer) == [] and len(layer.datagrams_to_send()) == 1
    assert run_until(layer, 100.0) == []
    assert events(layer) == [TransactionTerminated(tid)]  # Timer D


def test_invite_client_2xx_passed_up_including_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKok")
    tid = layer.send_request(invite, PEER, 0.0)
    ok = make_response(invite, 200, to_tag="r")
    layer.receive(ok, PEER, 0.1)
    layer.receive(ok, PEER, 0.6)
    assert [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)] == [200, 200]
    assert layer.datagrams_to_send() == [(invite.to_bytes(), PEER)]  # no ACK from the transaction
    run_until(layer, 100.0)
    assert events(layer) == [TransactionTerminated(tid)]  # Timer M (RFC 6026)


def test_non_invite_client_timer_e_and_f() -> None:
    layer = TransactionLayer()
    tid = layer.send_request(request("OPTIONS", branch="z9hG4bKopt"), PEER, 0.0)
    layer.datagrams_to_send()
    sent = run_until(layer, 100.0)
    # Timer E: T1 doubling, capped at T2 (section 17.1.2.2); F at 64*T1.
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(layer) == [TransactionTimeout(tid, "F"), TransactionTerminated(tid)]


def test_non_invite_client_proceeding_and_timer_k() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", branch="z9hG4bKopt")
    tid = layer.send_request(options, PEER, 0.0)
    layer.datagrams_to_send()
    layer.receive(make_response(options, 100), PEER, 0.1)
    sent = run_until(layer, 9.0)
    assert [t for t, _ in sent] == [0.5, 4.5, 8.5]  # in Proceeding E fires every T2
    ok = make_response(options, 200, to_tag="r")
    layer.receive(ok, PEER, 9.0)
    layer.receive(ok, PEER, 9.5)  # absorbed in Completed
    statuses = [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)]
    assert statuses == [100, 200]
    assert layer.get_timer() == pytest.approx(14.0)  # Timer K = T4
    run_until(layer, 100.0)
    assert events(layer) == [TransactionTerminated(tid)]


def test_stray_response_and_matching_by_method() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKm")
    layer.send_request(invite, PEER, 0.0)
    stray = make_response(request(branch="z9hG4bKunknown"), 200)
    layer.receive(stray, PEER, 0.1)
    cancel_answer = make_response(request("CANCEL", branch="z9hG4bKm"), 200)  # same branch, other method
    layer.receive(cancel_answer, PEER, 0.1)
    assert [type(e) for e in events(layer)] == [StrayResponse, StrayResponse]


def test_configurable_timers_and_reliable_transport() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1, t2=0.4, t4=1.0))
    tid = layer.send_request(request("OPTIONS", branch="z9hG4bKfast"), PEER, 0.0)
    layer.datagrams_to_send()
    sent = run_until(layer, 10.0)
    assert [round(t, 3) for t, _ in sent] == [0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3, 4.7,
                                              5.1, 5.5, 5.9, 6.3]
    assert TransactionTimeout(tid, "F") in events(layer)
    tcp = TransactionLayer(reliable=True)
    tcp.send_request(request("OPTIONS", branch="z9hG4bKtcp"), PEER, 0.0)
    assert tcp.get_timer() == 32.0  # only Timer F, no retransmissions


def test_send_request_needs_branch_and_response_destination() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError):
        layer.send_request(request(branch="nocookie"), PEER, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request("ACK"), PEER, 0.0)
    via = request(via_host="10.0.0.5").via
    assert response_destination(via) == ("10.0.0.5", 5062)
    assert isinstance(make_response(request(), 200), SipResponse)


def test_abandon_forgets_a_proceeding_invite_that_never_gets_a_final_response() -> None:
    """After a 180 Timer B is off: a CANCELled INVITE whose peer goes silent would stay for ever."""
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKgone")
    tid = layer.send_request(invite, PEER, 0.0)
    layer.receive(make_response(invite, 180, to_tag="r"), PEER, 0.1)
    assert [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)] == [180]
    run_until(layer, 1000.0)
    assert layer.transaction(tid) is not None and events(layer) == []  # lingering, no timer left
    assert layer.abandon(tid) is True
    assert layer.transaction(tid) is None and events(layer) == [TransactionTerminated(tid)]  # no timeout
    assert layer.get_timer() is None
    late = make_response(invite, 200, to_tag="r")
    layer.receive(late, PEER, 2000.0)
    (stray,) = events(layer)
    assert isinstance(stray, StrayResponse) and stray.response.status == 200  # the TU can still ACK and BYE it
    assert layer.abandon(tid) is False and layer.abandon("nonexistent") is False
