"""The user agent's session-timer wiring (RFC 4028): 422 to too small an interval, refreshes by re-INVITE
or UPDATE, glare with a peer's re-INVITE, and the call's end when the session expires or a refresh fails.
The timer logic itself is `ivr.sip.session_timer`'s; this module connects it to the legs and the
transaction layer. Mixed into `ivr.sip.ua.UserAgent`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ivr.sip.message import SipRequest, SipResponse
from ivr.sip.session_timer import EXPIRED, REFRESH_FAILED, RefreshResult, TimerAction, TooSmall, negotiate_uas
from ivr.sip.transaction import Address, TransactionLayer
from ivr.sip.ua_state import ALLOWED_METHODS, Leg, LegState, UserAgentConfig
from ivr.sip.uac import build_ack_for_2xx

__all__ = ["SessionTimers"]

log = logging.getLogger("ivr.sip.ua")  # the user agent's log, as before the split


class SessionTimers:
    """RFC 4028 session timers on the user agent's legs.

    Expects of the class it is mixed into (`UserAgent`): `config`, the transaction layer `_layer`, the map
    `_tx_leg` of client transactions to legs, and its helpers `_respond`, `_send_2xx`, `_send_bye`,
    `_report_end`, `_on_reinvite`, `_next_hop`, `_via` and `_contact`. Each leg's timer state is its own
    `Leg.timer` (a `SessionTimer`); `UserAgent.handle_timer` runs it and calls `_session_timer_fired`,
    `_on_response` routes the refresh's responses to `_on_refresh_result`.
    """

    if TYPE_CHECKING:
        config: UserAgentConfig
        _layer: TransactionLayer
        _tx_leg: dict[str, Leg]

        def _respond(self, tx: str, request: SipRequest, status: int, now: float, *, leg: Leg | None = None,
                     reason: str | None = None, headers: Iterable[tuple[str, str]] = (),
                     body: bytes = b"") -> None: ...
        def _send_2xx(self, leg: Leg, tx: str, invite: SipRequest, sdp: bytes, now: float) -> None: ...
        def _send_bye(self, leg: Leg, reason: str, now: float) -> None: ...
        def _report_end(self, leg: Leg, reason: str) -> None: ...
        def _on_reinvite(self, tx: str, leg: Leg, invite: SipRequest, now: float) -> None: ...
        def _next_hop(self, leg: Leg) -> Address: ...
        def _via(self) -> str: ...
        def _contact(self, peer: str | None = None) -> str: ...

    def _on_update(self, tx: str, leg: Leg, update: SipRequest, now: float) -> None:
        """RFC 3311 UPDATE: with an offer it runs like a re-INVITE's (MediaChanged, then
        answer_reinvite); without one it is a session refresh (RFC 4028 section 7.4), answered 2xx."""
        if update.body:
            self._on_reinvite(tx, leg, update, now)
        elif leg.state == LegState.TERMINATING:
            self._respond(tx, update, 481, now, leg=leg)
        elif not self._interval_too_small(tx, update, now, leg):
            self._send_2xx(leg, tx, update, b"", now)

    def _interval_too_small(self, tx: str, request: SipRequest, now: float, leg: Leg | None) -> bool:
        """422 with our Min-SE to an INVITE/UPDATE offering less than it (RFC 4028 section 9)."""
        negotiated = negotiate_uas(request.headers, self.config.session_timer)
        if isinstance(negotiated, TooSmall):
            self._respond(tx, request, 422, now, leg=leg, reason="Session Interval Too Small",
                          headers=negotiated.response_headers())
            return True
        return False

    def _refresh_pending(self, leg: Leg, method: str) -> bool:
        """Our re-INVITE refresh awaits its final response (a peer's re-INVITE now is glare)."""
        request = leg.timer.request
        return (method == "INVITE" and leg.timer.tx is not None and not leg.timer.answered
                and request is not None and request.method == "INVITE")

    def _session_timer_fired(self, leg: Leg, action: TimerAction | None, now: float) -> None:
        if action == TimerAction.EXPIRE:
            log.info("sip session timer expired call_id=%s leg=%s", leg.dialog.call_id, leg.leg_id)
            self._send_bye(leg, EXPIRED, now)
            self._report_end(leg, EXPIRED)
        elif action == TimerAction.REFRESH:
            self._send_refresh(leg, now)

    def _send_refresh(self, leg: Leg, now: float) -> None:
        """Our session refresh (RFC 4028 section 7.4), unless an offer/answer is open: then shortly."""
        if leg.state != LegState.CONFIRMED or leg.reinvite_tx is not None or leg.ack_cseq is not None:
            leg.timer.defer(now)
            return
        request = leg.timer.refresh_request(leg.dialog, via=self._via(), contact=self._contact(leg.source[0]),
                                            user_agent=self.config.user_agent, sdp=leg.local_sdp,
                                            allow=", ".join(ALLOWED_METHODS))
        tx = self._layer.send_request(request, self._next_hop(leg), now)
        self._tx_leg[tx] = leg
        leg.timer.sent(tx)
        log.info("sip session refresh call_id=%s leg=%s method=%s", leg.dialog.call_id, leg.leg_id, request.method)

    def _on_refresh_result(self, leg: Leg, result: RefreshResult, now: float,
                           response: SipResponse | None = None) -> None:
        request = leg.timer.request
        if request is not None and request.method == "INVITE" and response is not None and 200 <= response.status < 300:
            # Section 13.2.2.4: the ACK for a 2xx is ours to send, again for each retransmitted 2xx.
            leg.timer.ack = leg.timer.ack or build_ack_for_2xx(request, leg.dialog, self._via())
            self._layer.send_stateless(leg.timer.ack, self._next_hop(leg))
        if result == RefreshResult.RETRY:
            self._send_refresh(leg, now)
        elif result == RefreshResult.FAILED and leg.state in (LegState.ANSWERED, LegState.CONFIRMED):
            log.info("sip session refresh failed call_id=%s leg=%s", leg.dialog.call_id, leg.leg_id)
            self._send_bye(leg, REFRESH_FAILED, now)  # RFC 4028 section 10
            self._report_end(leg, REFRESH_FAILED)
