"""What the user agent (`ivr.sip.ua`) and its parts (`ua_timers`, `ua_transfer`, `ua_client`) share, sans-I/O:
its settings, the methods and option tags it offers, and the record it keeps per call leg.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ivr.sip.dialog import Dialog
from ivr.sip.message import SipRequest
from ivr.sip.session_timer import SessionTimer, SessionTimerConfig
from ivr.sip.transaction import Address, TimerConfig
from ivr.sip.transport import TransportRule

__all__ = [
    "ALLOWED_METHODS",
    "SUPPORTED_OPTIONS",
    "Leg",
    "LegState",
    "LegStateError",
    "UaStats",
    "UserAgentConfig",
]

#: Methods we implement (the Allow header, RFC 3261 section 20.5). REFER joins in part 2.
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE")
#: Option tags we support: session timers (RFC 4028); no 100rel, no replaces.
SUPPORTED_OPTIONS: frozenset[str] = frozenset({"timer"})


@dataclass(frozen=True)
class PeerLimit:
    """Limits for new calls from the sources in ``networks`` (a PBX or trunk: high or none; the default for
    everyone else comes from UserAgentConfig)."""

    networks: tuple[str, ...]
    #: New INVITEs per second (token bucket refill), per source address; None: no rate limit.
    invite_rate: float | None = None
    #: Token bucket size.
    invite_burst: float = 20.0
    #: Calls at once from these sources together; None: only the global cap.
    max_calls: int | None = None


@dataclass(frozen=True)
class UserAgentConfig:
    """Settings of the user agent; the defaults suit a PBX on the same LAN."""

    #: Addresses or CIDRs (IPv4/IPv6) whose requests we serve; every other source gets a stateless 403.
    #: Empty means nobody: an appliance must not answer the internet by default.
    allowed_peers: tuple[str, ...] = ()
    #: Host (IP or name) put in Contact and Via instead of the bound address, for NAT or a VIP.
    external_address: str | None = None
    #: Port put in Contact and Via instead of the bound one.
    external_port: int | None = None
    #: User part of our Contact URI.
    contact_user: str = "ivr"
    #: Server / User-Agent header value.
    user_agent: str = "edge-ivr"
    #: New INVITEs per second allowed per source address (token bucket refill rate).
    invite_rate: float = 10.0
    #: Token bucket size: how many new INVITEs a source may send in a burst.
    invite_burst: float = 20.0
    #: Retry-After seconds in the 503 sent beyond the rate limit or a call cap.
    retry_after: int = 5
    #: Per-peer limits, first match wins; sources matching none get ``invite_rate``/``invite_burst``.
    peer_limits: tuple[PeerLimit, ...] = ()
    #: Calls at once in all (incoming legs not yet ended); beyond it, 503 with Retry-After. None: no cap.
    max_calls: int | None = None
    #: Refused traffic (403, 503) is logged once per this many seconds per kind, with counts: a flood must not
    #: write a line per packet.
    refused_log_interval: float = 10.0
    #: A call neither answered nor rejected by the app within this many seconds gets 480.
    answer_timeout: float = 120.0
    #: RFC 3261 timer values (T1, T2, T4, D).
    timers: TimerConfig = field(default_factory=TimerConfig)
    #: A REFER we sent without a final sipfrag NOTIFY within this many seconds has failed.
    refer_timeout: float = 30.0
    #: RFC 4028 session timers: the interval we ask for and the smallest we accept.
    session_timer: SessionTimerConfig = field(default_factory=SessionTimerConfig)
    #: Callers' numbers and callees' URIs in the log lines. Off when the config's ``privacy:`` is on: the log
    #: cannot be erased on a data-subject request, so it names calls by Call-ID only (the events hold the rest).
    log_numbers: bool = True
    #: ``sip.transport_peers``: requests to these peers go over TCP or TLS (ivr.sip.transport).
    transport_rules: tuple[TransportRule, ...] = ()


class LegState(Enum):
    INCOMING = "incoming"  # INVITE received, no final response yet
    ANSWERED = "answered"  # 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"  # our BYE is out
    ENDED = "ended"


class LegStateError(Exception):
    """A command does not fit the leg's state (or the leg is gone: state "ended")."""

    def __init__(self, leg_id: str, state: str, command: str) -> None:
        super().__init__(f"{command} on leg {leg_id} in state {state}")
        self.leg_id = leg_id
        self.state = state
        self.command = command


@dataclass
class UaStats:
    """Counters of traffic we refused, for the health page."""

    parse_errors: int = 0
    bad_requests: int = 0
    forbidden: int = 0
    rate_limited: int = 0
    over_capacity: int = 0


@dataclass
class Leg:
    leg_id: str
    source: Address
    invite_tx: str
    invite: SipRequest
    dialog: Dialog
    late_offer: bool
    #: RFC 4028: started by each 2xx that negotiated it, stopped when the call ends.
    timer: SessionTimer
    state: LegState = LegState.INCOMING
    answer_deadline: float | None = None
    local_sdp: bytes | None = None
    #: CSeq of the INVITE whose 2xx waits for its ACK.
    ack_cseq: int | None = None
    #: That ACK must carry the SDP answer (our 2xx carried an offer).
    answer_in_ack: bool = False
    reinvite_tx: str | None = None
    reinvite: SipRequest | None = None
    bye_tx: str | None = None
    hangup_pending: bool = False
    #: Why our BYE went out; reported as the CallEnded reason when it completes.
    bye_reason: str | None = None
    end_reason: str | None = None
    #: We placed this call (start_call): the peer's BYE means the callee hung up.
    outbound: bool = False
    #: A REFER of ours awaiting its outcome (RFC 3515): its client transaction, the overall deadline,
    #: and whether the peer accepted it (2xx) yet.
    refer_tx: str | None = None
    refer_deadline: float | None = None
    refer_accepted: bool = False
    refer_active: bool = False

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.dialog.call_id, self.dialog.local_tag, self.dialog.remote_tag)
