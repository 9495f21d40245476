"""Registration of one account with its registrar (RFC 3261 section 10.2), sans-I/O.

A `Registration` builds REGISTER requests and reads their responses; the user agent sends them through
its transaction layer (same socket as the calls, so a NAT binding serves both) and feeds back the
final responses and timeouts. Time is passed in; `get_timer()` / `handle_timer(now)` drive refreshes
and retries.

- digest on 401/407 (`ivr.sip.digest`), credentials re-used pre-emptively on refreshes;
- refresh at 50-80 % of the granted expiry (our Contact's `expires` in the 200, else `Expires`);
- 423 Interval Too Brief: again at once with the `Min-Expires` asked for (section 10.2.8);
- any other failure (timeout, 403, 408, 5xx, wrong credentials...): retry forever, exponential
  backoff with jitter, `Retry-After` honoured;
- the public address seen by the registrar (`received`/`rport` of our Via in the 200, RFC 3581) goes
  into Contact, with an immediate re-REGISTER when it changes;
- `unregister(now)`: Expires: 0 (section 10.2.2), after any REGISTER still in flight (10.2 forbids two);
- keep-alives while registered (`keepalive`: a double CRLF, RFC 5626 section 3.5.1 style for UDP, or an
  OPTIONS) every `keepalive_seconds`, so the NAT binding the registrar reaches us by stays open; an
  OPTIONS that times out means the path is gone: re-REGISTER at once;
- `retry_now(now)`: the UA failed over to another registrar address (RFC 3263): try there without backoff.
"""

from __future__ import annotations

import logging
import random
import secrets
from dataclasses import dataclass
from enum import Enum

from ivr.sip.digest import DigestAuth
from ivr.sip.lexical import SipParseError
from ivr.sip.message import Headers, SipRequest, SipResponse
from ivr.sip.transaction import Address, new_branch
from ivr.sip.uri import SipUri, parse_name_addr, parse_uri

__all__ = [
    "Registration",
    "RegistrationConfig",
    "RegistrationState",
    "RegistrationStatus",
]

log = logging.getLogger(__name__)

_MAX_RETRY_AFTER = 3600.0
KEEPALIVE_MODES = ("crlf", "options", "off")
MAX_KEEPALIVE = 30.0
#: RFC 5626 section 3.5.1: the CRLF keep-alive ping (for UDP sent as one datagram).
CRLF_PING = b"\r\n\r\n"


def _host_port(text: str, default_port: int = 5060) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)


@dataclass(frozen=True)
class RegistrationConfig:
    """One account or trunk to register (RFC 3261 section 10.2)."""

    #: Address of record, e.g. "sip:2000@pbx.example.com"; To and From of the REGISTER.
    aor: str
    #: Registrar as "host[:port]" (port 5060 by default); the REGISTER goes there.
    registrar: str
    #: Digest user name and password (RFC 3261 section 22).
    username: str
    password: str
    #: Expiry asked for, in seconds (the registrar may grant less, or ask for more with 423).
    expires: int = 300
    #: User part of the Contact we register; INVITEs for the account arrive with it in the Request-URI.
    contact_user: str = "ivr"
    #: Only "udp" for now.
    transport: str = "udp"
    #: First retry delay after a failure, seconds; doubles per failure up to `backoff_max`.
    backoff_min: float = 2.0
    backoff_max: float = 300.0
    #: NAT keep-alive while registered: "crlf", "options" or "off".
    keepalive: str = "off"
    #: Seconds between keep-alives; at most 30 (UDP NAT bindings may last no longer, RFC 4787 REQ-5).
    keepalive_seconds: float = 25.0

    def __post_init__(self) -> None:
        uri = parse_uri(self.aor)  # raises SipParseError (a ValueError) on a bad AOR
        if not isinstance(uri, SipUri):
            raise ValueError(f"AOR {self.aor!r} is not a sip: URI")
        _host_port(self.registrar)
        if self.transport.lower() != "udp":
            raise ValueError(f"transport {self.transport!r} is not supported (udp only)")
        if self.expires <= 0:
            raise ValueError("expires must be positive")
        if not 0 < self.backoff_min <= self.backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        if self.keepalive not in KEEPALIVE_MODES:
            raise ValueError(f"keepalive {self.keepalive!r} is not one of {', '.join(KEEPALIVE_MODES)}")
        if not 0 < self.keepalive_seconds <= MAX_KEEPALIVE:
            raise ValueError(f"keepalive_seconds must be within 0-{MAX_KEEPALIVE:g}")

    @property
    def registrar_address(self) -> tuple[str, int]:
        """Host (name or IP) and port of the registrar."""
        return _host_port(self.registrar)

    @property
    def domain_uri(self) -> str:
        """Request-URI: the domain of the AOR, no user part (section 10.2)."""
        uri = parse_uri(self.aor)
        assert isinstance(uri, SipUri)
        port = f":{uri.port}" if uri.port is not None else ""
        return f"{uri.scheme}:{uri.host}{port}"


class RegistrationState(Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    RETRYING = "retrying"
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


@dataclass(frozen=True)
class RegistrationStatus:
    """What `ivr status` shows for one account; times are on the clock passed in (loop time)."""

    aor: str
    state: RegistrationState
    #: Why the last attempt failed ("503 Service Unavailable", "timeout", "401 wrong credentials"...).
    reason: str | None
    #: When the binding at the registrar runs out (None: no binding we know of).
    expires_at: float | None
    #: When the next REGISTER goes out (refresh or retry).
    next_attempt_at: float | None
    #: Our address as the registrar saw it (received/rport), when it told us.
    public_address: Address | None
    contact: str
    failures: int
    #: "crlf", "options" or "off", and how many keep-alives went out.
    keepalive: str = "off"
    keepalives_sent: int = 0

    def registered(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at > now

    def describe(self, now: float) -> str:
        """One line: "registered, expires in 243 s", "failed: 503 Service Unavailable, retrying in 16 s"."""
        def secs(t: float | None) -> int:
            return max(0, round((t or now) - now))

        state = self.state
        if state == RegistrationState.REGISTERED:
            text = f"registered, expires in {secs(self.expires_at)} s"
        elif state == RegistrationState.RETRYING:
            text = f"failed: {self.reason}, retrying in {secs(self.next_attempt_at)} s"
            if self.registered(now):
                text += f" (binding valid {secs(self.expires_at)} s more)"
        elif state == RegistrationState.UNREGISTERED and self.reason:
            text = f"unregistered ({self.reason})"
        else:
            text = state.value
        if self.public_address is not None:
            text += f", public address {self.public_address[0]}:{self.public_address[1]}"
        if self.keepalive != "off" and state == RegistrationState.REGISTERED:
            text += f", keep-alive {self.keepalive} ({self.keepalives_sent} sent)"
        return text


@dataclass
class _Pending:
    """What the REGISTER in flight was for."""

    expires: int
    contact: str


class Registration:
    """The REGISTER client of one account; see the module docstring."""

    def __init__(
        self,
        config: RegistrationConfig,
        local_address: Address,
        *,
        user_agent: str = "edge-ivr",
        rng: random.Random | None = None,
        auth: DigestAuth | None = None,
        learn_address: bool = True,
    ) -> None:
        self.config = config
        #: Host and port of our Via and, until the registrar tells us better, of our Contact.
        self.local_address = local_address
        self.user_agent = user_agent
        self._rng = rng or random.Random()
        self._auth = auth or DigestAuth(config.username, config.password)
        # Section 10.2: one Call-ID for every REGISTER of this UA to this registrar, CSeq counting up.
        self._call_id = f"{secrets.token_hex(10)}@{local_address[0]}"
        self._from_tag = secrets.token_hex(6)
        self._cseq = 0
        self._expires = config.expires
        self.state = RegistrationState.IDLE
        self.reason: str | None = None
        self.failures = 0
        self.expires_at: float | None = None
        self.next_attempt_at: float | None = None
        self.public_address: Address | None = None
        #: Put the address the registrar saw in Contact (False when an external address is configured).
        self.learn_address = learn_address
        self.next_keepalive_at: float | None = None
        self.keepalives_sent = 0
        self._keepalive_outbox: list[SipRequest | bytes] = []
        self._options_in_flight = False
        self._outbox: list[SipRequest] = []
        self._pending: _Pending | None = None
        self._unregister_wanted = False
        self._registered_contact: str | None = None
        self._changed = False
        self._auth_retries = 0

    # -- aioquic-style surface

    def requests_to_send(self) -> list[SipRequest]:
        out, self._outbox = self._outbox, []
        return out

    def keepalives_to_send(self) -> list[SipRequest | bytes]:
        """Keep-alives due: `CRLF_PING` bytes, or an OPTIONS request (report its fate back with
        `on_keepalive_response` / `on_keepalive_timeout`)."""
        out, self._keepalive_outbox = self._keepalive_outbox, []
        return out

    def get_timer(self) -> float | None:
        if self._pending is not None or self.state in (RegistrationState.UNREGISTERED, RegistrationState.IDLE):
            return None
        if self.state == RegistrationState.REGISTERED and self.next_keepalive_at is not None:
            if self.next_attempt_at is None:
                return self.next_keepalive_at
            return min(self.next_attempt_at, self.next_keepalive_at)
        return self.next_attempt_at

    def handle_timer(self, now: float) -> None:
        due = self._pending is None and self.next_attempt_at is not None and self.next_attempt_at <= now
        if due and self.state in (RegistrationState.REGISTERED, RegistrationState.RETRYING):
            self._send_register(now, new_attempt=True)
            return
        keepalive = self.next_keepalive_at
        if self._pending is None and self.state == RegistrationState.REGISTERED and keepalive is not None \
                and keepalive <= now:
            self.next_keepalive_at = now + self.config.keepalive_seconds
            if self.config.keepalive == "crlf":
                self._keepalive_outbox.append(CRLF_PING)
            elif not self._options_in_flight:  # one OPTIONS at a time: its Timer F is longer than the period
                self._options_in_flight = True
                self._keepalive_outbox.append(self._request("OPTIONS", None))
            else:
                return
            self.keepalives_sent += 1  # not a status change worth an event: `ivr status` reads it

    def retry_now(self, now: float) -> None:
        """After a failure, try again at once (the UA switched to another address of the registrar)."""
        if self._pending is None and self.state == RegistrationState.RETRYING:
            self.next_attempt_at = now

    def on_keepalive_response(self, now: float) -> None:
        """Any final response to the OPTIONS keep-alive: the registrar and the NAT binding are there."""
        self._options_in_flight = False

    def on_keepalive_timeout(self, now: float) -> None:
        """No response to the OPTIONS keep-alive: the binding (or the registrar) is gone; register again
        at once, which also tells us a new public address if the NAT gave us one."""
        self._options_in_flight = False
        if self._pending is None and self.state == RegistrationState.REGISTERED:
            log.warning("sip keep-alive timed out aor=%s: registering again", self.config.aor)
            self.next_attempt_at = now

    def take_changed(self) -> bool:
        """Whether the status changed since the last call (the UA reports it as an event)."""
        changed, self._changed = self._changed, False
        return changed

    @property
    def done(self) -> bool:
        """Unregistered: nothing more will be sent."""
        return self.state == RegistrationState.UNREGISTERED

    @property
    def in_flight(self) -> bool:
        return self._pending is not None

    def status(self) -> RegistrationStatus:
        return RegistrationStatus(
            aor=self.config.aor, state=self.state, reason=self.reason, expires_at=self.expires_at,
            next_attempt_at=None if self._pending is not None else self.next_attempt_at,
            public_address=self.public_address, contact=self.contact, failures=self.failures,
            keepalive=self.config.keepalive, keepalives_sent=self.keepalives_sent,
        )

    @property
    def contact(self) -> str:
        host, port = (self.public_address if self.learn_address else None) or self.local_address
        if ":" in host:
            host = f"[{host}]"
        return f"<sip:{self.config.contact_user}@{host}:{port}>"

    # -- commands

    def start(self, now: float) -> None:
        if self.state == RegistrationState.IDLE:
            self._send_register(now, new_attempt=True)

    def unregister(self, now: float) -> None:
        """Withdraw our binding (Expires: 0); done at once when we hold none."""
        if self.state in (RegistrationState.UNREGISTERING, RegistrationState.UNREGISTERED):
            return
        self._unregister_wanted = True
        if self._pending is not None:
            return  # section 10.2: wait for the final response to the REGISTER in flight
        if self.expires_at is not None and self.expires_at > now:
            self._send_unregister(now)
        else:
            self._finish_unregister("no binding")

    # -- from the transaction layer

    def on_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        pending = self._pending
        if status < 200 or pending is None:
            return
        self._pending = None
        if status in (401, 407) and self._auth_retries < 2:
            failure = self._auth.on_challenge(response)
            if failure is None:
                self._auth_retries += 1
                self._resend(pending, now)
                return
            self._auth.forget()
            self._failed(f"{status} {failure.reason}", now)
            return
        if self.state == RegistrationState.UNREGISTERING:
            self._finish_unregister(None if 200 <= status < 300 else f"{status} {response.reason}")
            return
        if 200 <= status < 300:
            self._registered(response, pending, now)
        elif status == 423:
            self._interval_too_brief(response, pending, now)
        else:
            self._failed(f"{status} {response.reason}", now, _retry_after(response))
        if self._unregister_wanted:
            self.unregister(now)

    def on_timeout(self, now: float, why: str = "timeout") -> None:
        """Timer F, or the registrar unreachable (``why``): no final response (RFC 3261 section 8.1.3.1 treats
        both as 408)."""
        if self._pending is None:
            return
        self._pending = None
        if self.state == RegistrationState.UNREGISTERING:
            self._finish_unregister(why)
            return
        self._failed(why, now)
        if self._unregister_wanted:
            self.unregister(now)

    # -- internals

    def _send_register(self, now: float, *, new_attempt: bool) -> None:
        if new_attempt:
            self._auth.begin()
            self._auth_retries = 0
        if self.state != RegistrationState.REGISTERED:
            self._set_state(RegistrationState.REGISTERING)  # a refresh keeps "registered": the binding holds
        self._send(_Pending(self._expires, self.contact))

    def _send_unregister(self, now: float) -> None:
        self._auth.begin()
        self._auth_retries = 0
        self._set_state(RegistrationState.UNREGISTERING)
        self._send(_Pending(0, self._registered_contact or self.contact))

    def _resend(self, pending: _Pending, now: float) -> None:
        self._send(pending)

    def _send(self, pending: _Pending) -> None:
        request = self._request("REGISTER", pending)
        self._auth.authorize(request)
        self._pending = pending
        self._outbox.append(request)

    def _request(self, method: str, pending: _Pending | None) -> SipRequest:
        """A REGISTER for `pending`, or (pending None) an OPTIONS keep-alive: same Call-ID, next CSeq."""
        self._cseq += 1
        host, port = self.local_address
        if ":" in host:
            host = f"[{host}]"
        headers = Headers()
        headers.add("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self.config.aor}>;tag={self._from_tag}")
        headers.add("To", f"<{self.config.aor}>")
        headers.add("Call-ID", self._call_id)
        headers.add("CSeq", f"{self._cseq} {method}")
        if pending is not None:
            headers.add("Contact", pending.contact)
            headers.add("Expires", str(pending.expires))
        headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")
        headers.add("User-Agent", self.user_agent)
        return SipRequest(method, self.config.domain_uri, headers)

    def _registered(self, response: SipResponse, pending: _Pending, now: float) -> None:
        granted = _granted_expires(response, pending)
        if granted <= 0:
            self._failed("registrar granted no expiry", now)
            return
        self.failures = 0
        self.reason = None
        self.expires_at = now + granted
        self._registered_contact = pending.contact
        self.next_attempt_at = now + max(1.0, granted * self._rng.uniform(0.5, 0.8))
        if self.config.keepalive != "off" and self.next_keepalive_at is None:
            self.next_keepalive_at = now + self.config.keepalive_seconds
        self._set_state(RegistrationState.REGISTERED)
        log.info("sip registered aor=%s expires=%d contact=%s", self.config.aor, granted, pending.contact)
        public = _public_address(response, self.local_address)
        if public is not None and public != self.public_address:
            before = self.contact
            self.public_address = public
            self._changed = True
            if self.contact != before:
                # RFC 3581 / RFC 5626 section 4.2.1 in spirit: register the address the world sees.
                log.info("sip public address aor=%s %s:%d", self.config.aor, public[0], public[1])
                self.next_attempt_at = now

    def _interval_too_brief(self, response: SipResponse, pending: _Pending, now: float) -> None:
        value = (response.headers.get("Min-Expires") or "").strip()
        if value.isdigit() and int(value) > pending.expires and int(value) < 2**31:
            self._expires = int(value)  # section 10.2.8: again, with at least Min-Expires
            self._send_register(now, new_attempt=True)
            return
        self._failed(f"423 {response.reason} (Min-Expires {value or 'missing'})", now)

    def _failed(self, reason: str, now: float, retry_after: float | None = None) -> None:
        self.failures += 1
        self.reason = reason
        step = min(self.config.backoff_max, self.config.backoff_min * 2 ** min(self.failures - 1, 30))
        delay = step * self._rng.uniform(0.5, 1.0)  # jitter: accounts behind one NAT do not retry in step
        if retry_after is not None:
            delay = max(delay, min(retry_after, _MAX_RETRY_AFTER))
        self.next_attempt_at = now + delay
        self._set_state(RegistrationState.RETRYING)
        self._changed = True
        log.warning("sip registration failed aor=%s reason=%s retry_in=%.1f", self.config.aor, reason, delay)

    def _finish_unregister(self, reason: str | None) -> None:
        self.reason = reason
        self.expires_at = None
        self.next_attempt_at = None
        self._set_state(RegistrationState.UNREGISTERED)
        self._changed = True
        log.info("sip unregistered aor=%s%s", self.config.aor, f" reason={reason}" if reason else "")

    def _set_state(self, state: RegistrationState) -> None:
        if state != self.state:
            self.state = state
            self._changed = True


# ------------------------------------------------------------------------------------ pure helpers


def _retry_after(response: SipResponse) -> float | None:
    value = (response.headers.get("Retry-After") or "").split(";", 1)[0].split("(", 1)[0].strip()
    return float(value) if value.isdigit() else None


def _same_contact(a: str, b: str) -> bool:
    """Contact URIs compared on user, host and port (enough for the registrar's echo of ours)."""
    try:
        ua, ub = parse_name_addr(a).uri, parse_name_addr(b).uri
    except SipParseError:
        return False
    if not isinstance(ua, SipUri) or not isinstance(ub, SipUri):
        return False
    return (ua.user, ua.host.lower(), ua.port or 5060) == (ub.user, ub.host.lower(), ub.port or 5060)


def _granted_expires(response: SipResponse, pending: _Pending) -> int:
    """Section 10.2.4: our Contact's expires parameter in the 200, else its Expires header, else ours."""
    try:
        contacts = response.contacts
    except SipParseError:
        contacts = []
    for contact in contacts:
        value = contact.params.get("expires")
        if value is not None and _same_contact(str(contact), pending.contact) and value.isdigit():
            return int(value)
    value = (response.headers.get("Expires") or "").strip()
    if value.isdigit():
        return int(value)
    return pending.expires


def _public_address(response: SipResponse, local: Address) -> Address | None:
    """Our address as the registrar saw it: received and rport of our Via (RFC 3581 section 4)."""
    try:
        via = response.via
    except SipParseError:
        return None
    if via.received is None and via.rport is None:
        return None
    return via.received or local[0], via.rport or local[1]

