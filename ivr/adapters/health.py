"""``ivr health``: is the running daemon serving calls? What an update's boot check and a monitoring probe ask.

Two looks from outside, as a caller's PBX would see the box: the control socket answers ``status`` (the
daemon is up, its flows loaded), and its SIP address answers an OPTIONS (the SIP stack and its event loop are
alive). Any final response counts for the second: a box whose ``sip.allowed_peers`` leave out loopback
answers 403, which still shows a live stack. The firmware's boot-counting check (``ivr-health.service``)
marks a new slot good only when this passes.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import uuid
from dataclasses import dataclass

from ivr.sip.message import Headers, SipParseError, SipRequest, SipResponse, parse_message


@dataclass(frozen=True)
class SipProbe:
    status: int | None
    """The final response's status; None when nothing answered in time."""
    reason: str
    seconds: float


def probe_address(host: str) -> str:
    """Where to reach a daemon listening on ``host``: its loopback when it listens on every address."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def options_probe(host: str, port: int, timeout: float = 5.0) -> SipProbe:
    """One OPTIONS over UDP, retransmitted at RFC 3261's T1 doubling, until a final response or ``timeout``."""
    target = probe_address(host)
    family = socket.AF_INET6 if ipaddress.ip_address(target).version == 6 else socket.AF_INET
    call_id = uuid.uuid4().hex
    started = time.monotonic()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        loopback = ipaddress.ip_address(target).is_loopback
        sock.bind((target if loopback else "::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        here = sock.getsockname()[1]
        shown = f"[{target}]" if family == socket.AF_INET6 else target
        headers = Headers([
            ("Via", f"SIP/2.0/UDP {shown}:{here};branch=z9hG4bK{call_id[:16]};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:health@{shown}>;tag={call_id[16:24]}"),
            ("To", f"<sip:ivr@{shown}:{port}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
            ("User-Agent", "ivr-health"),
        ])
        request = SipRequest("OPTIONS", f"sip:ivr@{shown}:{port}", headers).to_bytes()
        wait = 0.5
        deadline = started + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.sendto(request, (target, port))
            resend_at = time.monotonic() + min(wait, left)
            wait *= 2
            while (now := time.monotonic()) < resend_at:
                sock.settimeout(resend_at - now)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    break
                try:
                    answer = parse_message(data)
                except SipParseError:
                    continue
                if (isinstance(answer, SipResponse) and answer.headers.get("Call-ID") == call_id
                        and answer.status >= 200):
                    return SipProbe(answer.status, answer.reason, time.monotonic() - started)
    return SipProbe(None, f"no answer within {timeout:g} s", time.monotonic() - started)
