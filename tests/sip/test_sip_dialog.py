"""UAS dialog: BYE construction and in-dialog matching (RFC 3261 section 12)."""

from ivr.sip.dialog import Dialog
from ivr.sip.message import SipRequest, parse_message

INVITE = (
    b"INVITE sip:ivr@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKabc\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:ivr@example.com>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 5 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.20:5062;transport=udp>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite() -> SipRequest:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    return msg


def test_bye_from_uas_dialog() -> None:
    dialog = Dialog.from_invite(invite(), local_tag="ivr1")
    bye = dialog.make_request("BYE", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye")
    again = parse_message(bye.to_bytes())
    assert isinstance(again, SipRequest)
    assert again.uri == "sip:alice@192.0.2.20:5062;transport=udp"
    assert again.headers.values("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert again.from_addr.tag == "ivr1" and again.to_addr.tag == "a1"
    assert str(again.cseq) == "1 BYE" and again.call_id == "c1"
    assert str(dialog.make_request("INFO", "SIP/2.0/UDP h;branch=z9hG4bKx").cseq) == "2 INFO"


def test_in_dialog_matching_and_cseq_order() -> None:
    dialog = Dialog.from_invite(invite(), local_tag="ivr1")
    bye = parse_message(
        INVITE.replace(b"INVITE sip", b"BYE sip")
        .replace(b"CSeq: 5 INVITE", b"CSeq: 6 BYE")
        .replace(b"To: <sip:ivr@example.com>", b"To: <sip:ivr@example.com>;tag=ivr1")
    )
    assert isinstance(bye, SipRequest)
    assert dialog.matches(bye) and dialog.accept_remote_cseq(bye)
    assert not dialog.accept_remote_cseq(bye)  # same CSeq again: out of order
    assert not dialog.matches(invite())  # no To tag
