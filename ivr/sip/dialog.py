"""UAS dialog state (RFC 3261 section 12), sans-I/O: enough to send BYE and accept in-dialog requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.sip.lexical import SipParseError
from ivr.sip.message import Headers, SipRequest

__all__ = ["Dialog"]


@dataclass
class Dialog:
    """One dialog created by our 2xx to an INVITE (the UAS side, section 12.1.1)."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    #: From value for our requests: the INVITE's To plus our tag.
    local_header: str
    #: To value for our requests: the INVITE's From, with the remote tag.
    remote_header: str
    #: The peer's Contact URI: Request-URI of our in-dialog requests (section 12.2.1.1).
    remote_target: str
    #: Record-Route values in the order of the request (section 12.1.1), sent as Route.
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None

    @classmethod
    def from_invite(cls, invite: SipRequest, local_tag: str) -> Dialog:
        """Dialog state for the 2xx we send with To tag `local_tag` (section 12.1.1)."""
        contacts = invite.contacts
        if len(contacts) != 1:
            raise SipParseError("INVITE needs exactly one Contact")
        to_value = invite.headers.get("To") or ""
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_addr.tag,
            local_header=f"{to_value};tag={local_tag}" if invite.to_addr.tag is None else to_value,
            remote_header=invite.headers.get("From") or "",
            remote_target=str(contacts[0].uri),
            route_set=invite.headers.values("Record-Route"),
            remote_seq=invite.cseq.seq,
        )

    def matches(self, request: SipRequest) -> bool:
        """Whether an in-dialog request belongs here: Call-ID and both tags (section 12.2.2)."""
        try:
            return (
                request.call_id == self.call_id
                and request.to_addr.tag == self.local_tag
                and request.from_addr.tag == self.remote_tag
            )
        except SipParseError:
            return False

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """Section 12.2.2: a CSeq lower than the last one is out of order (answer 500); ACK and
        CANCEL reuse the INVITE's number and are always accepted."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and seq <= self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def make_request(self, method: str, via: str, *, contact: str | None = None,
                     cseq: int | None = None) -> SipRequest:
        """A new in-dialog request such as BYE (section 12.2.1.1); `via` is the full top Via value,
        with a fresh branch. Loose routing only: the route set is sent as Route, Request-URI is the
        remote target. ``cseq`` keeps a given number instead of the next one (the ACK for a 2xx carries
        its INVITE's, section 13.2.2.4)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        for route in self.route_set:
            headers.add("Route", route)
        headers.add("From", self.local_header)
        headers.add("To", self.remote_header)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            headers.add("Contact", contact)
        return SipRequest(method=method, uri=self.remote_target, headers=headers)
