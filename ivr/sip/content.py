"""What the user agent reads out of requests and bodies, and the SDP it offers again; pure functions.

Caller identity (P-Asserted-Identity, sip: and tel: URIs), DTMF in SIP INFO bodies, the status line of a
REFER's message/sipfrag NOTIFY, an SDP body, and our current SDP as a new offer (re-INVITE without SDP).
"""

from __future__ import annotations

from dataclasses import replace

from ivr.sip.lexical import SipParseError
from ivr.sip.message import SipRequest
from ivr.sip.sdp import Direction, SdpParseError, SessionDescription, parse_sdp
from ivr.sip.uri import AbsoluteUri, SipUri, parse_name_addr

__all__ = [
    "DTMF_CONTENT_TYPES",
    "EVENT_DIGITS",
    "asserted_user",
    "dtmf_digit",
    "reoffer",
    "sdp_body",
    "sipfrag_status",
    "user_of",
]

#: INFO bodies we understand (legacy INFO usage, RFC 6086 section 2: no Info Package).
DTMF_CONTENT_TYPES = ("application/dtmf-relay", "application/dtmf")
#: RFC 4733 section 3.2 event codes 10-15 as digits (SIP INFO senders use the same numbering).
EVENT_DIGITS = "0123456789*#ABCD"


def user_of(uri: SipUri | AbsoluteUri) -> str | None:
    """The user part of a sip: URI or the number of a tel: URI (RFC 3966), without parameters."""
    if isinstance(uri, SipUri):
        return uri.user or None
    if uri.scheme.lower() == "tel":
        return uri.opaque.split(";", 1)[0] or None
    return None


def asserted_user(request: SipRequest) -> str | None:
    """The caller from P-Asserted-Identity (RFC 3325 section 9.1), the first identity with a user."""
    for value in request.headers.values("P-Asserted-Identity"):
        try:
            user = user_of(parse_name_addr(value).uri)
        except SipParseError:
            continue
        if user:
            return user
    return None


def sipfrag_status(body: bytes) -> int | None:
    """The status code of a message/sipfrag body's start line (RFC 3420), "SIP/2.0 200 OK" -> 200."""
    line = body.lstrip().split(b"\n", 1)[0].strip()
    parts = line.split(None, 2)
    if len(parts) >= 2 and parts[0].upper().startswith(b"SIP/") and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None


def sdp_body(request: SipRequest) -> SessionDescription | None:
    if not request.body or request.content_type != "application/sdp":
        return None
    try:
        return parse_sdp(request.body)
    except SdpParseError:
        return None


def dtmf_digit(body: bytes, content_type: str | None) -> str | None:
    """The digit of an INFO body: application/dtmf-relay "Signal=5\\r\\nDuration=160" (the Cisco/
    Asterisk form) or application/dtmf "5"; event numbers 10-15 map to * # A-D (RFC 4733 section 3.2)."""
    text = body.decode("utf-8", "replace")
    value: str | None = None
    if content_type == "application/dtmf-relay":
        for line in text.splitlines():
            name, sep, rest = line.partition("=")
            if sep and name.strip().lower() == "signal":
                value = rest.strip()
                break
    else:
        value = text.strip()
    if not value:
        return None
    if value.isdigit() and len(value) <= 2 and int(value) < len(EVENT_DIGITS):
        return EVENT_DIGITS[int(value)]
    if len(value) == 1 and value.upper() in EVENT_DIGITS:
        return value.upper()
    return None


def reoffer(local_sdp: bytes) -> bytes:
    """Our current description as a new offer: sendrecv on the audio stream, the o= version bumped if
    that changed anything (RFC 3264 section 8)."""
    try:
        sdp = parse_sdp(local_sdp)
    except SdpParseError:
        return local_sdp
    changed = False
    for media in sdp.media:
        if media.port == 0:
            continue
        attributes = [(k, v) for k, v in media.attributes if k not in Direction._value2member_map_]
        attributes.append((Direction.SENDRECV.value, None))
        if attributes != media.attributes:
            media.attributes = attributes
            changed = True
    if not changed:
        return local_sdp
    version = sdp.origin.session_version
    bumped = str(int(version) + 1) if version.isdigit() else version
    sdp.origin = replace(sdp.origin, session_version=bumped)
    return sdp.to_bytes()
