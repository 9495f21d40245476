"""What the user agent (`ivr.sip.ua.UserAgent.next_event`) reports to the app."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.sip.register import RegistrationStatus
from ivr.sip.sdp import SessionDescription
from ivr.sip.transaction import Address
from ivr.sip.uac import OutboundResult

__all__ = [
    "CallConfirmed",
    "CallEnded",
    "DtmfReceived",
    "IncomingCall",
    "MediaAnswered",
    "MediaChanged",
    "OrphanCancelAnswered",
    "OrphanInviteEnded",
    "OutboundCompleted",
    "OutboundProgress",
    "ReferCompleted",
    "RegistrationChanged",
    "UaEvent",
]


class UaEvent:
    """Base class of what the user agent reports to the app."""


@dataclass(frozen=True)
class IncomingCall(UaEvent):
    """A new INVITE from an allowed peer; answer with ring/answer/reject.

    `offer` is None for a late-offer INVITE: pass an offer to `answer` and the answer arrives as
    `MediaAnswered` with the ACK.
    """

    call_id: str
    leg_id: str
    caller: str
    dialed: str
    source: Address
    offer: SessionDescription | None
    #: The INVITE's extension headers (X-...), as sent: e.g. X-IVR-Caller-Channel from an Asterisk dialplan.
    extra_headers: tuple[tuple[str, str], ...] = ()
    #: udp, tcp or tls: how the INVITE came (its signalling, and so its SDES keys, travelled that way).
    transport: str = "udp"


@dataclass(frozen=True)
class CallConfirmed(UaEvent):
    """The ACK for our 2xx arrived: the call is up on both sides."""

    leg_id: str


@dataclass(frozen=True)
class MediaAnswered(UaEvent):
    """The SDP answer carried by an ACK (late offer: initial INVITE or re-INVITE without SDP)."""

    leg_id: str
    sdp: SessionDescription
    body: bytes


@dataclass(frozen=True)
class MediaChanged(UaEvent):
    """A re-INVITE with an offer (hold, resume, new address); call `answer_reinvite` or `reject_reinvite`."""

    leg_id: str
    offer: SessionDescription


@dataclass(frozen=True)
class DtmfReceived(UaEvent):
    leg_id: str
    digit: str
    source: str = "info"


@dataclass(frozen=True)
class CallEnded(UaEvent):
    """The leg is over; `reason` is "cancelled", "caller hung up", "no ACK", "hangup", "rejected 488",
    "not answered", "bad SDP in ACK", "shutdown", "session timer expired" (the peer did not refresh,
    RFC 4028 section 10) or "session refresh failed" (our refresh got 408/481 or no answer)."""

    leg_id: str
    reason: str


@dataclass(frozen=True)
class ReferCompleted(UaEvent):
    """The outcome of `refer`, exactly once per REFER (RFC 3515): `ok` when a NOTIFY's sipfrag carried
    a 2xx (the peer then BYEs us); otherwise `status` is the REFER's error response, the sipfrag's
    non-2xx status, 408 for no final NOTIFY in time, or 0 when the call ended first."""

    leg_id: str
    ok: bool
    status: int
    detail: str


@dataclass(frozen=True)
class OutboundProgress(UaEvent):
    """A provisional response (180, 183...) to our outbound INVITE."""

    leg_id: str
    status: int
    reason: str
    #: Early media SDP carried by the provisional, if any.
    sdp: bytes | None = None


@dataclass(frozen=True)
class OutboundCompleted(UaEvent):
    """The outcome of `start_call`, exactly once per call; if answered, the leg lives on (CONFIRMED)."""

    leg_id: str
    result: OutboundResult


@dataclass(frozen=True)
class OrphanInviteEnded(UaEvent):
    """A final response to an INVITE we hold no transaction or dialog for (sent before a restart): a 2xx was
    ACKed and ended with BYE, a 3xx-6xx ACKed. Once per response received (retransmissions too)."""

    call_id: str
    status: int


@dataclass(frozen=True)
class OrphanCancelAnswered(UaEvent):
    """The final response to a `cancel_orphan` CANCEL (200: the INVITE was there; 481: no such INVITE), or 408
    when none came."""

    transaction_id: str
    status: int


@dataclass(frozen=True)
class RegistrationChanged(UaEvent):
    """An account's registration status changed (registered, failed and retrying, unregistered)."""

    aor: str
    status: RegistrationStatus
