"""Parser/serializer unit tests: compact forms, folding, bodies, URIs, Via, name-addr, responses."""

import pytest

from ivr.sip.lexical import SipParseError
from ivr.sip.message import (
    Headers,
    SipRequest,
    SipResponse,
    make_response,
    parse_cseq,
    parse_message,
    parse_via,
    split_header_values,
)
from ivr.sip.uri import SipUri, parse_name_addr, parse_uri

INVITE = (
    b"INVITE sip:ivr@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKabc;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
    b"To: <sip:ivr@example.com>\r\n"
    b"Call-ID: c1@192.0.2.20\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.20:5062>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def req(data: bytes = INVITE) -> SipRequest:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_compact_forms_are_expanded() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\ni: x\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\nv: SIP/2.0/UDP h\r\n"
        b"m: <sip:e@f>\r\nl: 0\r\nc: text/plain\r\nk: timer\r\ns: hi\r\ne: gzip\r\no: dialog\r\n"
        b"r: <sip:x@y>\r\nb: <sip:z@w>\r\nx: 1800\r\nu: talk\r\n\r\n"
    )
    msg = req(data)
    names = [name for name, _ in msg.headers]
    assert names == [
        "Call-ID", "From", "To", "Via", "Contact", "Content-Length", "Content-Type", "Supported", "Subject",
        "Content-Encoding", "Event", "Refer-To", "Referred-By", "Session-Expires", "Allow-Events",
    ]
    assert msg.headers.get("CALL-id") == "x" and msg.headers.get("i") == "x"
    assert "refer-to" in msg.headers


def test_folding_and_multi_values() -> None:
    data = INVITE.replace(
        b"Contact: <sip:alice@192.0.2.20:5062>\r\n",
        b'Contact: "A, B" <sip:a@h;x=1,2>,\r\n  <sip:b@h>\r\nContact: sip:c@h\r\n',
    )
    msg = req(data)
    assert msg.headers.values("Contact") == ['"A, B" <sip:a@h;x=1,2>', "<sip:b@h>", "sip:c@h"]
    assert [c.display_name for c in msg.contacts] == ["A, B", None, None]
    assert split_header_values('a, "b,\\"c", <d,e>;f') == ["a", '"b,\\"c"', "<d,e>;f"]


def test_body_by_content_length() -> None:
    msg = req(INVITE + b"trailing junk")  # RFC 3261 18.3: octets past Content-Length are ignored
    assert msg.body == b"v=0\n"
    no_length = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert req(no_length + b"more").body == b"v=0\nmore"  # UDP: the rest of the datagram
    with pytest.raises(SipParseError, match="larger than the datagram"):
        parse_message(INVITE.replace(b"Content-Length: 4", b"Content-Length: 5"))
    with pytest.raises(SipParseError, match="bad Content-Length"):
        parse_message(INVITE.replace(b"Content-Length: 4", b"Content-Length: four"))


@pytest.mark.parametrize(
    "data",
    [b"", b"\r\n\r\n", b"garbage", b"INVITE sip:a@b SIP/2.0\r\nVia x\r\n\r\n", b"\xff\xfe\r\n\r\n",
     b"SIP/2.0 20 OK\r\n\r\n", b"INVITE sip:a@b SIP/2.0\r\n"],
)
def test_garbage_raises_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


def test_leading_crlf_ignored_and_bare_lf_accepted() -> None:
    assert req(b"\r\n\r\n" + INVITE).method == "INVITE"
    assert req(INVITE.replace(b"\r\n", b"\n")).call_id == "c1@192.0.2.20"


def test_round_trip_is_canonical() -> None:
    msg = req(INVITE)
    data = msg.to_bytes()
    assert data == INVITE
    msg.body = b"longer body"
    again = req(msg.to_bytes())
    assert again.body == b"longer body" and again.headers.get("Content-Length") == "11"
    response = SipResponse(200, "OK", Headers([("Call-ID", "x"), ("l", "99")]), b"ab")
    assert response.to_bytes() == b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 2\r\n\r\nab"


def test_uri_parser() -> None:
    uri = parse_uri("sip:alice:pw@[2001:db8::1]:5070;transport=udp;lr?Subject=hi%20there&X=1")
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.password, uri.host, uri.port) == ("alice", "pw", "[2001:db8::1]", 5070)
    assert uri.params == {"transport": "udp", "lr": None}
    assert uri.headers == {"Subject": "hi there", "X": "1"}
    assert uri.host_port == ("2001:db8::1", 5070)
    assert str(parse_uri("sips:bob@example.com")) == "sips:bob@example.com"
    assert parse_uri("sip:[2001:db8::10:5070]").port is None  # type: ignore[union-attr]
    for bad in ("alice@example.com", "sip:", "sip:a@", "sip:a@h:99999", "sip:a@h;", "sip:a@h:x", "sip:%zz@h"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_via_helpers() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKabc;rport;received=198.51.100.7")
    assert via.sent_by == ("192.0.2.20", 5062)
    assert via.branch == "z9hG4bKabc" and via.has_magic_cookie
    assert via.has_rport and via.rport is None and via.received == "198.51.100.7"
    v6 = parse_via("SIP/2.0/TCP [2001:db8::9:1];received=[2001:db8::9:255];rport=5090")
    assert v6.received == "2001:db8::9:255" and v6.rport == 5090 and v6.transport == "TCP"
    for bad in ("SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP h;", "SIP/2.0/UDP h junk", "SIP/2.0/UDP h:99999"):
        with pytest.raises(SipParseError):
            parse_via(bad)


def test_name_addr_and_cseq() -> None:
    na = parse_name_addr('"Bob \\"B\\"" <sip:bob@h;transport=udp>;tag=xy;expires=60')
    assert na.display_name == 'Bob "B"' and na.tag == "xy" and na.params["expires"] == "60"
    assert str(na) == '"Bob \\"B\\"" <sip:bob@h;transport=udp>;tag=xy;expires=60'
    bare = parse_name_addr("sip:bob@h;tag=1")
    assert bare.tag == "1" and isinstance(bare.uri, SipUri) and bare.uri.params == {}
    assert parse_cseq(" 42   BYE ") == parse_cseq("42 BYE")
    for bad in ("BYE", "x BYE", "1", str(2**31) + " BYE", "1 BYE x"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_make_response() -> None:
    request = req(INVITE.replace(b"Max-Forwards: 70\r\n", b"Record-Route: <sip:p1;lr>\r\nTimestamp: 5\r\n"))
    trying = make_response(request, 100, to_tag="t9")
    assert trying.reason == "Trying" and trying.to_addr.tag is None and trying.headers.get("Timestamp") == "5"
    ok = make_response(request, 200, to_tag="t9", headers=[("Contact", "<sip:ivr@192.0.2.10>")], body=b"x")
    assert ok.to_addr.tag == "t9" and ok.headers.get("Record-Route") == "<sip:p1;lr>"
    assert ok.headers.get_all("Via") == request.headers.get_all("Via")
    assert ok.cseq == request.cseq and ok.call_id == request.call_id
    assert parse_message(ok.to_bytes()).to_bytes() == ok.to_bytes()
    busy = make_response(request, 486, to_tag="t9")
    assert busy.reason == "Busy Here" and "Record-Route" not in busy.headers


def test_headers_set_and_remove() -> None:
    h = Headers([("Via", "a"), ("X-Foo", "1"), ("v", "b")])
    h.set("VIA", "c")
    assert list(h) == [("Via", "c"), ("X-Foo", "1")]
    h.remove("x-foo")
    assert len(h) == 1
