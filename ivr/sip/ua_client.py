"""The user agent's client side (UAC): outbound calls (`ivr.sip.uac` does the INVITE transactions; this is
its `OutboundListener` and the commands), CANCEL and ACK/BYE for orphans of a previous process, and the
registered accounts (`ivr.sip.registrations`). Mixed into `ivr.sip.ua.UserAgent`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from ivr.sip.dialog import Dialog
from ivr.sip.lexical import SipParseError
from ivr.sip.message import SipRequest, SipResponse
from ivr.sip.register import Registration, RegistrationConfig, RegistrationStatus
from ivr.sip.registrations import Accounts
from ivr.sip.resolve import Failover
from ivr.sip.session_timer import SessionTimer
from ivr.sip.transaction import Address, TransactionLayer
from ivr.sip.ua_events import OrphanInviteEnded, OutboundCompleted, OutboundProgress, UaEvent
from ivr.sip.ua_state import Leg, LegState, UserAgentConfig
from ivr.sip.uac import (
    OutboundCalls,
    OutboundCallSpec,
    OutboundResult,
    next_hop,
    orphan_ack_and_bye,
    orphan_ack_for_error,
    orphan_cancel,
)

__all__ = ["ClientSide"]

log = logging.getLogger("ivr.sip.ua")  # the user agent's log, as before the split


class ClientSide:
    """Outbound calls, orphans and registrations.

    Expects of the class it is mixed into (`UserAgent`): `config`, `local_address` and `advertised`, the
    transaction layer `_layer`, the outbound calls `_outbound` (an `OutboundCalls` with this object as its
    listener), the accounts `_accounts`, the legs `_legs` and `_dialogs`, the event queue `_events`, the leg
    counter `_counter`, the hosts we talk to `_trusted_peers`, the orphan records `_orphans` and
    `_orphan_cancels` (all made by `UserAgent.__init__`), and its helpers `_drain`, `_via` and `_peer_allowed`.
    """

    if TYPE_CHECKING:
        config: UserAgentConfig
        local_address: Address
        _layer: TransactionLayer
        _outbound: OutboundCalls
        _accounts: Accounts
        _legs: dict[str, Leg]
        _dialogs: dict[tuple[str, str, str | None], Leg]
        _events: deque[UaEvent]
        _counter: int
        _trusted_peers: set[str]
        _orphans: dict[tuple[str, str, str], tuple[SipRequest, Address, float]]
        _orphan_cancels: set[str]

        @property
        def advertised(self) -> tuple[str, int]: ...
        def _drain(self, now: float) -> None: ...
        def _via(self) -> str: ...
        def _peer_allowed(self, host: str) -> bool: ...

    def start_call(self, spec: OutboundCallSpec, now: float) -> str:
        """Send an outbound INVITE; returns the leg id that `OutboundProgress`/`OutboundCompleted` carry."""
        self._counter += 1
        leg_id = f"leg{self._counter}"
        # the callee's in-dialog requests come through it (whichever address of it takes the call)
        self._trusted_peers.update(host for host, _ in (spec.proxy, *spec.alternates))
        self._outbound.invite(spec, leg_id, now)
        self._drain(now)
        return leg_id

    def trust_peer(self, host: str) -> None:
        """Serve requests and orphan responses from `host` too (a proxy we are about to talk to)."""
        self._trusted_peers.add(host)

    def cancel_orphan(self, spec: OutboundCallSpec, call_id: str, cseq: int, now: float, index: int = 0) -> str:
        """CANCEL an INVITE a previous process sent with this `call_id` (its tag and branch are derived from it,
        ivr.sip.uac.derived_branch) to `spec.proxy`; returns the CANCEL's transaction id, answered by one
        `OrphanCancelAnswered`. The INVITE's own final (487, or a 2xx that crossed) arrives as an orphan:
        `OrphanInviteEnded` once it is ACKed (and BYEd)."""
        self._trusted_peers.add(spec.proxy[0])  # its orphan responses are answered
        cancel = orphan_cancel(spec, call_id, self._via(), cseq, index)
        cancel.headers.add("User-Agent", self.config.user_agent)
        tx = self._layer.send_request(cancel, spec.proxy, now)
        self._orphan_cancels.add(tx)
        log.info("sip orphan cancel call_id=%s cseq=%d to=%s:%d", call_id, cseq, spec.proxy[0], spec.proxy[1])
        self._drain(now)
        return tx

    def cancel_call(self, leg_id: str, now: float) -> None:
        """Give up on an outbound call not answered yet (CANCEL); `OutboundCompleted` says cancelled.
        No-op once it has its outcome (hang up an answered call with `hangup`)."""
        self._outbound.cancel(leg_id, now)
        self._drain(now)

    def add_registration(self, config: RegistrationConfig, destination: Address | Failover,
                         now: float) -> Registration:
        """Register `config.aor` at `destination` (the registrar's resolved IP and port, or every address
        of it in RFC 3263 order) and keep it so."""
        reg, failover = self._accounts.add(config, destination, self.advertised, user_agent=self.config.user_agent,
                                           learn_address=self.config.external_address is None, now=now)
        self._trusted_peers.update(host for host, _ in failover.targets)  # the trunk sends our calls from there
        self._drain(now)
        return reg

    def update_registrar(self, aor: str, targets: list[Address], expires_at: float | None) -> None:
        """A new look-up of the account's registrar (its TTL ran out); the current address stays while listed."""
        if self._accounts.update_registrar(aor, targets, expires_at):
            self._trusted_peers.update(host for host, _ in targets)

    def registrar_of(self, aor: str) -> Failover | None:
        return self._accounts.registrar_of(aor)

    def public_address_for(self, peer_host: str | None) -> Address | None:
        """The address the registrar at `peer_host` saw us at (received/rport of its 2xx): what goes in
        Contact and SDP for calls with that peer. None without such an account or with an external
        address configured (that one wins)."""
        if self.config.external_address or peer_host is None:
            return None
        return self._accounts.public_address_for(peer_host)

    def unregister(self, aor: str, now: float) -> None:
        """Withdraw one registration (Expires: 0); it stays listed as unregistered."""
        if self._accounts.unregister(aor, now):
            self._drain(now)

    def unregister_all(self, now: float) -> None:
        self._accounts.unregister_all(now)
        self._drain(now)

    def registrations(self) -> list[RegistrationStatus]:
        """The status of every account, in the order they were added (for `ivr status`)."""
        return self._accounts.statuses()

    @property
    def registrations_settled(self) -> bool:
        """No REGISTER in flight (shutdown waits for this after unregister_all)."""
        return self._accounts.settled

    def _on_orphan(self, response: SipResponse, source: Address, now: float) -> None:
        """A final response to an INVITE of nobody's (sent before a restart, its transaction gone): a 2xx gets
        ACK and BYE (RFC 3261 section 13.2.2.4: a dialog we do not want), a 3xx-6xx its ACK, so the far end
        stops retransmitting and nobody sits in dead air. Only from peers we talk to (no reflection)."""
        try:
            if response.cseq.method != "INVITE" or response.status < 200:
                log.debug("sip stray response status=%d", response.status)
                return
            key = (response.call_id, response.from_addr.tag or "", response.to_addr.tag or "")
        except SipParseError:
            return
        if key in self._dialogs or not self._peer_allowed(source[0]):
            # A late 2xx retransmission of a live dialog's re-INVITE, or a stranger: not ours to end.
            log.debug("sip stray response status=%d call_id=%s", response.status, key[0])
            return
        self._orphans = {k: v for k, v in self._orphans.items() if v[2] > now}
        known = self._orphans.get(key)
        if known is not None:
            self._layer.send_stateless(known[0], known[1])  # a retransmission: the ACK again, no second BYE
        elif response.status >= 300:
            self._layer.send_stateless(orphan_ack_for_error(response), source)
            log.info("sip orphan final call_id=%s status=%d: ACK", key[0], response.status)
        else:
            try:
                ack, bye, dialog = orphan_ack_and_bye(response, self._via(), self._via())
            except SipParseError as exc:
                log.info("sip orphan 2xx call_id=%s unusable (%s)", key[0], exc.reason)
                return
            bye.headers.add("User-Agent", self.config.user_agent)
            hop = next_hop(dialog, source)
            self._layer.send_stateless(ack, hop)
            self._layer.send_request(bye, hop, now)
            self._orphans[key] = (ack, hop, now + 128 * self.config.timers.t1)
            log.info("sip orphan 2xx call_id=%s from=%s:%d: ACK and BYE (no call of ours)", key[0], source[0],
                     source[1])
        self._events.append(OrphanInviteEnded(key[0], response.status))

    def outbound_progress(self, leg_id: str, response: SipResponse) -> None:
        sdp = response.body if response.body and response.content_type == "application/sdp" else None
        self._events.append(OutboundProgress(leg_id, response.status, response.reason, sdp))

    def outbound_answered(self, leg_id: str, invite: SipRequest, dialog: Dialog, result: OutboundResult,
                          now: float) -> None:
        """The 2xx is ACKed: from here the call is a confirmed leg like any inbound one."""
        leg = Leg(
            leg_id=leg_id, source=self._outbound_source(leg_id, invite), invite_tx="", invite=invite,
            dialog=dialog, late_offer=False, timer=SessionTimer(self.config.session_timer),
            state=LegState.CONFIRMED, local_sdp=invite.body or None, outbound=True,
        )
        self._legs[leg_id] = leg
        self._dialogs[leg.key] = leg
        leg.timer.start(result.session_timer, now)  # RFC 4028 section 7.2, from the 2xx
        self._events.append(OutboundCompleted(leg_id, result))

    def outbound_failed(self, leg_id: str, result: OutboundResult) -> None:
        self._events.append(OutboundCompleted(leg_id, result))

    def _outbound_source(self, leg_id: str, invite: SipRequest) -> Address:
        """Fallback next hop of the leg's in-dialog requests: the proxy the INVITE went to."""
        spec = self._outbound.spec(leg_id)
        return spec.proxy if spec is not None else self.local_address
