"""RFC 4028 session timers, sans-I/O: negotiation from headers, and one `SessionTimer` per dialog.

A dialog whose peer vanished (a crashed phone, a lost BYE) would otherwise hold a call and its RTP port
for ever. Each side agrees on an interval in the Session-Expires header of an INVITE (or UPDATE) and
its 2xx; one side, the refresher, repeats a re-INVITE or UPDATE before half of it has passed; the
other sends BYE when no refresh came in time.

The pure functions read and write the headers: `negotiate_uas` for a request we answer (422 with our
Min-SE when the interval is too small), `negotiate_uac` for the 2xx to a request we sent,
`request_headers` and `retry_after_422` for requests we send. `SessionTimer` holds the deadlines and
the refresh we have in flight; the user agent asks it what to do when its timer fires and what a
response to our refresh means. Time is passed in; nothing here reads a clock or a socket.

Roles: "uac"/"uas" in the refresher parameter name the client and server of the transaction that
carries the header (RFC 4028 section 9), not of the call; here they become `we_refresh`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ivr.sip.dialog import Dialog
from ivr.sip.lexical import SipParseError
from ivr.sip.message import Headers, SipRequest, SipResponse

__all__ = [
    "EXPIRED",
    "MIN_SE_FLOOR",
    "Negotiated",
    "REFRESH_FAILED",
    "RETRY_SECONDS",
    "RefreshResult",
    "SessionExpires",
    "SessionTimer",
    "SessionTimerConfig",
    "TimerAction",
    "TooSmall",
    "negotiate_uac",
    "negotiate_uas",
    "parse_min_se",
    "parse_session_expires",
    "request_headers",
    "retry_after_422",
    "supports_timer",
]

#: RFC 4028 section 4: no Min-SE below 90 seconds is ever sent to a peer that follows the RFC.
MIN_SE_FLOOR = 90
#: Reason of the BYE (and of CallEnded) when the peer did not refresh in time.
EXPIRED = "session timer expired"
#: Reason when our own refresh was answered 408/481 or timed out (RFC 4028 section 10).
REFRESH_FAILED = "session refresh failed"
#: Seconds before retrying a refresh answered 491 or deferred for a pending offer (RFC 3261 section 14.1
#: asks 2.1-4 s of the dialog's Call-ID owner, 0-2 s of the other: 2.1 s suits both).
RETRY_SECONDS = 2.1


@dataclass(frozen=True)
class SessionTimerConfig:
    """Our side of the negotiation (config `sip.session_expires` and `sip.min_se`)."""

    #: The interval we ask for and the largest we accept (a peer asking for more gets this).
    session_expires: int = 1800
    #: The smallest interval we accept; smaller offers get 422 with this as Min-SE. RFC 4028 never
    #: goes below 90 towards peers; smaller values are for tests (peers may refuse them).
    min_se: int = MIN_SE_FLOOR

    def __post_init__(self) -> None:
        if self.min_se < 1:
            raise ValueError(f"min_se must be at least 1 second, not {self.min_se}")
        if self.session_expires < self.min_se:
            raise ValueError(f"session_expires ({self.session_expires}) is below min_se ({self.min_se})")


@dataclass(frozen=True)
class SessionExpires:
    """A Session-Expires value: `1800;refresher=uac` (RFC 4028 section 4)."""

    delta: int
    refresher: str | None = None

    def __str__(self) -> str:
        return f"{self.delta};refresher={self.refresher}" if self.refresher else str(self.delta)


def _delta(text: str, header: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        raise SipParseError(f"bad {header} value {text!r}")
    return int(text)


def parse_session_expires(headers: Headers) -> SessionExpires | None:
    """The Session-Expires header (compact form x), or None; SipParseError when it is malformed."""
    value = headers.get("Session-Expires")
    if value is None:
        return None
    delta, *params = value.split(";")
    refresher: str | None = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
            if refresher not in ("uac", "uas"):
                raise SipParseError(f"bad Session-Expires refresher {val.strip()!r}")
    seconds = _delta(delta, "Session-Expires")
    if seconds < 1:
        raise SipParseError("Session-Expires of 0 seconds")
    return SessionExpires(seconds, refresher)


def parse_min_se(headers: Headers) -> int | None:
    """The Min-SE header's seconds (parameters ignored), or None; SipParseError when malformed."""
    value = headers.get("Min-SE")
    return None if value is None else _delta(value.split(";", 1)[0], "Min-SE")


def supports_timer(headers: Headers) -> bool:
    """Whether Supported (compact form k) or Require lists the `timer` option tag."""
    tags = headers.values("Supported") + headers.values("Require")
    return any(tag.strip().lower() == "timer" for tag in tags)


def _allows_update(headers: Headers) -> bool:
    return any(method.strip().upper() == "UPDATE" for method in headers.values("Allow"))


@dataclass(frozen=True)
class Negotiated:
    """An agreed session interval: who refreshes, and how."""

    interval: int
    we_refresh: bool
    #: The peer understands session timers: our 2xx says Require: timer (RFC 4028 section 9).
    peer_supports: bool
    #: The peer's Allow lists UPDATE: refresh with UPDATE (no SDP, no ACK) instead of re-INVITE.
    peer_allows_update: bool = False

    def response_headers(self) -> list[tuple[str, str]]:
        """Session-Expires, Supported and Require of our 2xx to the request that was negotiated.

        The refresher is named from that request: its sender is "uac", we are "uas". Require: timer
        only when the peer supports it (section 9: a UAC that does not would reject the 2xx)."""
        refresher = "uas" if self.we_refresh else "uac"
        headers = [("Session-Expires", str(SessionExpires(self.interval, refresher))), ("Supported", "timer")]
        if self.peer_supports:
            headers.append(("Require", "timer"))
        return headers


@dataclass(frozen=True)
class TooSmall:
    """The offered interval is below our minimum: answer 422 with our Min-SE (RFC 4028 section 9)."""

    min_se: int

    def response_headers(self) -> list[tuple[str, str]]:
        return [("Min-SE", str(self.min_se))]


def negotiate_uas(request: Headers, config: SessionTimerConfig) -> Negotiated | TooSmall:
    """RFC 4028 section 9 for an INVITE, re-INVITE or UPDATE we are about to answer.

    An offer below our Min-SE gets 422. Otherwise the interval is the offer, lowered to our
    session_expires but never below the request's own Min-SE; without an offer, our session_expires
    (or their Min-SE if larger). The refresher the peer asked for is honoured; when it asked for none
    it refreshes itself if it supports timers, and when it does not support them we refresh."""
    offered = parse_session_expires(request)
    their_min = parse_min_se(request) or 0
    supported = supports_timer(request)
    if offered is not None and offered.delta < config.min_se:
        return TooSmall(max(config.min_se, their_min))
    wanted = config.session_expires if offered is None else min(offered.delta, config.session_expires)
    interval = max(wanted, their_min)
    if not supported:
        we_refresh = True  # section 9: a peer without timer support cannot refresh
    elif offered is not None and offered.refresher is not None:
        we_refresh = offered.refresher == "uas"
    else:
        we_refresh = False
    return Negotiated(interval, we_refresh, supported, _allows_update(request))


def negotiate_uac(response: Headers, allows_update: bool = False) -> Negotiated | None:
    """RFC 4028 section 7.2: the session timer a 2xx to our INVITE/UPDATE sets, or None when the 2xx
    carries no Session-Expires (then the session does not expire). We sent the request, so
    refresher=uac (or none named) means us. `allows_update`: what we knew of the peer's Allow, for a
    2xx that does not repeat it."""
    answered = parse_session_expires(response)
    if answered is None:
        return None
    if "Allow" in response:
        allows_update = _allows_update(response)
    return Negotiated(answered.delta, answered.refresher != "uas", supports_timer(response), allows_update)


def request_headers(session_expires: int, min_se: int, refresher: str | None = None) -> list[tuple[str, str]]:
    """Supported, Session-Expires and Min-SE of a request we send (RFC 4028 section 7.1): an initial
    INVITE names no refresher (the UAS picks), a refresh names us ("uac") when we keep refreshing."""
    return [
        ("Supported", "timer"),
        ("Session-Expires", str(SessionExpires(session_expires, refresher))),
        ("Min-SE", str(min_se)),
    ]


def retry_after_422(response: Headers, session_expires: int, min_se: int) -> tuple[int, int] | None:
    """RFC 4028 section 7.4: after a 422, the new (Session-Expires, Min-SE): Min-SE the larger of ours
    and the response's, Session-Expires at least that. None when the 422 gives no usable Min-SE."""
    try:
        theirs = parse_min_se(response)
    except SipParseError:
        return None
    if theirs is None or theirs <= session_expires and theirs <= min_se:
        return None  # nothing would change: asking again would only get another 422
    new_min = max(min_se, theirs)
    return max(session_expires, new_min), new_min


# -------------------------------------------------------------------------------------- per dialog


class TimerAction(Enum):
    """What the user agent must do when `SessionTimer.handle_timer` fires."""

    REFRESH = "refresh"  # send `refresh_request` now
    EXPIRE = "expire"  # no refresh in time: BYE with reason EXPIRED


class RefreshResult(Enum):
    """What a response to our refresh means for the call."""

    PENDING = "pending"  # provisional, or a 2xx retransmission (ACK again)
    DONE = "done"  # refreshed (or the peer turned the timer off)
    RETRY = "retry"  # send `refresh_request` again now (422, or UPDATE refused: re-INVITE)
    FAILED = "failed"  # 408/481/timeout: BYE with reason REFRESH_FAILED (section 10)
    IGNORED = "ignored"  # another error: the session goes on until it expires


class SessionTimer:
    """The session timer of one dialog: deadlines, and the refresh we sent, if any.

    `start(negotiated, now)` on every 2xx that carried the negotiation (ours or the peer's); when we
    refresh, `get_timer()` comes at half the interval and `handle_timer` says REFRESH; when the peer
    refreshes, it comes at the expiry minus min(32, interval/3) (RFC 4028 section 10) and says EXPIRE.
    A refresher whose refreshes all fail expires at the full interval."""

    def __init__(self, config: SessionTimerConfig) -> None:
        self.config = config
        self.negotiated: Negotiated | None = None
        self.refresh_at: float | None = None
        self.expire_at: float | None = None
        #: Our last refresh: its client transaction and request, and whether a 2xx answered it.
        self.tx: str | None = None
        self.request: SipRequest | None = None
        self.answered = False
        #: The ACK of our re-INVITE's 2xx, sent again when the 2xx is retransmitted.
        self.ack: SipRequest | None = None
        self._retried_422 = False
        #: (Session-Expires, Min-SE) we ask for in refreshes; raised by a 422.
        self._asking = (config.session_expires, config.min_se)

    def start(self, negotiated: Negotiated | None, now: float) -> None:
        """A 2xx refreshed the session with `negotiated` (None: the session no longer expires)."""
        self.negotiated = negotiated
        if negotiated is None:
            self.stop()
            return
        interval = negotiated.interval
        self._asking = (max(interval, self._asking[1]), self._asking[1])
        if negotiated.we_refresh:
            self.refresh_at = now + interval / 2
            self.expire_at = now + interval
        else:
            self.refresh_at = None
            self.expire_at = now + interval - min(32.0, interval / 3)

    def stop(self) -> None:
        """The call is ending: no refresh, no expiry."""
        self.negotiated = None
        self.refresh_at = self.expire_at = None

    def defer(self, now: float) -> None:
        """A refresh cannot go out now (an offer/answer is open): try again shortly."""
        if self.negotiated is not None:
            self.refresh_at = now + RETRY_SECONDS

    def get_timer(self) -> float | None:
        deadlines = [t for t in (self.refresh_at, self.expire_at) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> TimerAction | None:
        if self.expire_at is not None and self.expire_at <= now:
            self.stop()
            return TimerAction.EXPIRE
        if self.refresh_at is not None and self.refresh_at <= now:
            self.refresh_at = None  # until the response: the expiry still stands
            return TimerAction.REFRESH
        return None

    def refresh_request(self, dialog: Dialog, *, via: str, contact: str, user_agent: str, sdp: bytes | None,
                        allow: str) -> SipRequest:
        """Our session refresh (RFC 4028 section 7.4): UPDATE without a body when the peer allows it,
        else re-INVITE with our current SDP unchanged (same o= version: RFC 3264 section 8 makes it
        no change), asking to stay the refresher."""
        assert self.negotiated is not None
        method = "UPDATE" if self.negotiated.peer_allows_update else "INVITE"
        request = dialog.make_request(method, via, contact=contact)
        for name, value in request_headers(*self._asking, refresher="uac"):
            request.headers.add(name, value)
        request.headers.add("Allow", allow)
        request.headers.add("User-Agent", user_agent)
        if method == "INVITE" and sdp:
            request.headers.add("Content-Type", "application/sdp")
            request.body = sdp
        self.request = request
        return request

    def sent(self, tx: str) -> None:
        self.tx = tx
        self.answered = False
        self.ack = None

    def on_response(self, response: SipResponse, now: float) -> RefreshResult:
        """A response to our refresh (`self.request`, sent as transaction `self.tx`)."""
        status = response.status
        request = self.request
        if request is None or status < 200 or self.answered:
            return RefreshResult.PENDING  # provisional, or a retransmitted 2xx: the caller ACKs again
        if status < 300:
            self.answered = True
            self._retried_422 = False  # one 422 retry per refresh, not per call
            try:
                allows_update = self.negotiated is not None and self.negotiated.peer_allows_update
                negotiated = negotiate_uac(response.headers, allows_update)
            except SipParseError:
                negotiated = self.negotiated  # unreadable Session-Expires: keep what we had
            if self.negotiated is not None:  # not stopped meanwhile (our BYE went out)
                self.start(negotiated, now)
            return RefreshResult.DONE
        self.answered = True
        if status in (408, 481):
            self.stop()
            return RefreshResult.FAILED
        if status == 422 and not self._retried_422:
            asking = retry_after_422(response.headers, *self._asking)
            if asking is not None:
                self._retried_422 = True
                self._asking = asking
                return RefreshResult.RETRY
        if status in (405, 501) and request.method == "UPDATE" and self.negotiated is not None:
            self.negotiated = Negotiated(self.negotiated.interval, True, self.negotiated.peer_supports, False)
            return RefreshResult.RETRY
        if status == 491:
            self.defer(now)
        return RefreshResult.IGNORED

    def on_timeout(self) -> RefreshResult:
        """Our refresh got no response at all (Timer B or F)."""
        self.answered = True
        self.stop()
        return RefreshResult.FAILED
