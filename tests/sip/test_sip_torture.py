"""RFC 4475 torture messages (tests/sip/torture/*.sip, CRLF line ends as on the wire)."""

from pathlib import Path

import pytest

from ivr.sip.lexical import SipParseError
from ivr.sip.message import SipRequest, SipResponse, check_message, parse_message
from ivr.sip.uri import AbsoluteUri, SipUri

TORTURE = Path(__file__).parent / "torture"


def load(name: str) -> SipRequest | SipResponse:
    return parse_message((TORTURE / f"{name}.sip").read_bytes())


def request(name: str) -> SipRequest:
    msg = load(name)
    assert isinstance(msg, SipRequest)
    return msg


# RFC 4475 3.1.1, 3.2 and the valid ones of 3.3: parse, pass check_message.
VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "unreason", "noreason", "badbranch", "unksm2", "bext01", "invut", "regaut01", "bcast",
    "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
]

# Must be refused by the parser itself.
UNPARSABLE = {
    "clerr": "Content-Length larger than the datagram",  # 3.1.2.2
    "ncl": "bad Content-Length",  # 3.1.2.3 negative Content-Length
    "ltgtruri": "bad Request-URI",  # 3.1.2.6
    "lwsruri": "bad request line",  # 3.1.2.7
    "lwsstart": "bad request line",  # 3.1.2.8
    "trws": "bad request line",  # 3.1.2.9
    "bigcode": "bad status code",  # 3.1.2.18
    "mcl01": "several Content-Length headers",  # 3.3.16
}

# Parse, but flagged with the status the RFC says a UAS answers with.
FLAGGED = {
    "badinv01": 400,  # 3.1.2.1 extraneous separators
    "scalar02": 400,  # 3.1.2.4 overlarge values
    "quotbal": 400,  # 3.1.2.5 unterminated quoted string
    "escruri": 400,  # 3.1.2.10 headers in Request-URI
    "baddate": 400,  # 3.1.2.11 non-GMT Date
    "regbadct": 400,  # 3.1.2.12 URI with ? outside <>
    "badaspec": 400,  # 3.1.2.13 spaces in addr-spec
    "baddn": 400,  # 3.1.2.14 non-token display name
    "badvers": 505,  # 3.1.2.15 unknown protocol version
    "mismatch01": 400,  # 3.1.2.16
    "mismatch02": 400,  # 3.1.2.17 (501 also acceptable)
    "insuf": 400,  # 3.3.1 missing required headers
    "unkscm": 416,  # 3.3.2 unknown scheme
    "novelsc": 416,  # 3.3.3
    "multi01": 400,  # 3.3.9 multiple single-value headers
    "scalarlg": 400,  # 3.1.2.4 response with overlarge values: dropped
}


def test_every_fixture_is_classified() -> None:
    names = {p.stem for p in TORTURE.glob("*.sip")}
    assert names == set(VALID) | set(UNPARSABLE) | set(FLAGGED)


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse_and_pass_checks(name: str) -> None:
    msg = load(name)
    assert check_message(msg) is None
    # Every helper works on a valid message.
    _ = msg.vias, msg.from_addr, msg.to_addr, msg.cseq, msg.call_id, msg.contacts, msg.routes
    # Canonical output parses back to the same message and is a fixed point.
    again = parse_message(msg.to_bytes())
    assert again.to_bytes() == msg.to_bytes()
    assert again.body == msg.body
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == [
        (n, v) for n, v in msg.headers if n != "Content-Length"
    ]


@pytest.mark.parametrize(("name", "reason"), sorted(UNPARSABLE.items()))
def test_invalid_messages_raise(name: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        load(name)
    assert info.value.reason == reason


@pytest.mark.parametrize(("name", "status"), sorted(FLAGGED.items()))
def test_invalid_messages_are_flagged(name: str, status: int) -> None:
    problem = check_message(load(name))
    assert problem is not None
    assert problem.status == status


def test_wsinv_values() -> None:
    msg = request("wsinv")
    assert msg.method == "INVITE"
    uri = msg.request_uri
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, uri.params) == ("vivekg", "chair-dnrc.example.com", {"unknownparam": None})
    assert msg.to_addr.tag == "1918181833n"
    assert msg.from_addr.display_name == 'J Rosenberg \\"'
    assert msg.from_addr.tag == "98asjd8"
    assert msg.headers.get("Max-Forwards") == "0068"
    assert msg.cseq.seq == 9 and msg.cseq.method == "INVITE"
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert not vias[0].has_magic_cookie and vias[1].has_magic_cookie
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    (route,) = msg.routes
    assert isinstance(route.uri, SipUri)
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert len(msg.body) == 150 and msg.content_type == "application/sdp"


def test_intmeth_values() -> None:
    msg = request("intmeth")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = msg.request_uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.via.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.to_addr.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_addr.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_addr.tag == "_token~1'+`*%!-."
    assert msg.from_addr.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escapes() -> None:
    esc01 = request("esc01")
    ruri = esc01.request_uri
    assert isinstance(ruri, SipUri) and ruri.user == "sips:user@example.com"
    to_uri = esc01.to_addr.uri
    assert isinstance(to_uri, SipUri) and to_uri.user == "user"
    from_uri = esc01.from_addr.uri
    assert isinstance(from_uri, SipUri) and from_uri.user == "I have spaces"
    contact = esc01.contacts[0].uri
    assert isinstance(contact, SipUri)
    assert contact.user == "caller" and contact.params == {"lr": None, "name": "value%41"}
    escnull = request("escnull")
    users = [c.uri.user for c in escnull.contacts if isinstance(c.uri, SipUri)]
    assert users == ["\x00", "\x00\x00"]
    esc02 = request("esc02")
    assert esc02.method == "RE%47IST%45R" and esc02.cseq.method == "RE%47IST%45R"
    assert esc02.to_addr.display_name == "%Z%45"
    assert len(esc02.contacts) == 2  # C%6Fntact is another header
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    semi = request("semiuri").request_uri
    assert isinstance(semi, SipUri) and semi.user == "user;par=u@example.net" and semi.host == "example.com"
    assert str(semi) == "sip:user;par=u%40example.net@example.com"


def test_misc_valid() -> None:
    assert request("lwsdisp").from_addr.display_name == "caller"
    longreq = request("longreq")
    assert len(longreq.vias) == 34
    assert longreq.vias[-1].received == "192.0.2.5"
    to_uri = longreq.to_addr.uri
    assert isinstance(to_uri, SipUri) and to_uri.port == 6000
    dblreq = request("dblreq")
    assert dblreq.method == "REGISTER" and dblreq.body == b""
    transports = [v.transport for v in request("transports").vias]
    assert transports == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert request("semiuri").headers.values("Accept")[-1] == "message/sipfrag"
    unreason = load("unreason")
    assert isinstance(unreason, SipResponse)
    assert unreason.status == 200 and unreason.reason.endswith("простое")
    noreason = load("noreason")
    assert isinstance(noreason, SipResponse) and noreason.reason == ""
    unksm2 = request("unksm2")
    assert isinstance(unksm2.to_addr.uri, AbsoluteUri) and unksm2.to_addr.uri.scheme == "isbn"
    inv2543 = request("inv2543")
    assert inv2543.via.branch is None and inv2543.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    cparam01 = request("cparam01").contacts[0]
    assert cparam01.params == {"unknownparam": None}  # a header parameter, not a URI one
    cparam02 = request("cparam02").contacts[0]
    assert cparam02.params == {} and isinstance(cparam02.uri, SipUri)
    assert cparam02.uri.params == {"unknownparam": None}
    regescrt = request("regescrt").contacts[0].uri
    assert isinstance(regescrt, SipUri) and regescrt.headers == {"Route": "<sip:sip.example.com>"}
    assert request("badbranch").via.branch == "z9hG4bK"
