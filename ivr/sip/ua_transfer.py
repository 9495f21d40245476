"""The user agent's blind transfer (RFC 3515 REFER, RFC 3892 Referred-By): the REFER in the call's dialog,
its response, the NOTIFYs whose message/sipfrag reports the referred call, and the one `ReferCompleted`
that settles it. Mixed into `ivr.sip.ua.UserAgent`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ivr.sip.content import sipfrag_status
from ivr.sip.message import SipRequest, SipResponse
from ivr.sip.transaction import Address, TransactionLayer
from ivr.sip.ua_events import ReferCompleted, UaEvent
from ivr.sip.ua_state import Leg, LegState, LegStateError, UserAgentConfig

__all__ = ["Transfers"]

log = logging.getLogger("ivr.sip.ua")  # the user agent's log, as before the split


class Transfers:
    """Blind transfer by REFER, one at a time per call.

    Expects of the class it is mixed into (`UserAgent`): `config` (its `refer_timeout`), the transaction
    layer `_layer`, the map `_tx_leg` of client transactions to legs, the event queue `_events`, and its
    helpers `_leg`, `_respond`, `_next_hop`, `_via`, `_contact` and `_drain`. The REFER's state lives on
    the leg (`Leg.refer_tx`, `refer_deadline`, `refer_accepted`, `refer_active`); `UserAgent.handle_timer`
    enforces the deadline and `_drain`/`_on_response` route the REFER's outcome to `_refer_done` and
    `_on_refer_response`, `_on_in_dialog` routes NOTIFY to `_on_notify`.
    """

    if TYPE_CHECKING:
        config: UserAgentConfig
        _layer: TransactionLayer
        _tx_leg: dict[str, Leg]
        _events: deque[UaEvent]

        def _leg(self, leg_id: str, command: str, state: LegState) -> Leg: ...
        def _respond(self, tx: str, request: SipRequest, status: int, now: float, *, leg: Leg | None = None,
                     reason: str | None = None, headers: Iterable[tuple[str, str]] = (),
                     body: bytes = b"") -> None: ...
        def _next_hop(self, leg: Leg) -> Address: ...
        def _via(self) -> str: ...
        def _contact(self, peer: str | None = None) -> str: ...
        def _drain(self, now: float) -> None: ...

    def refer(self, leg_id: str, refer_to: str, now: float, *, referred_by: str | None = None,
              extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Blind transfer: REFER in the call's dialog (RFC 3515 section 2.4.1) with `Refer-To: <refer_to>`
        and our Contact (REFER refreshes the target like re-INVITE). Answered by one `ReferCompleted`
        once the NOTIFYs' sipfrag (section 2.4.5) gives a final status, the REFER fails, or
        `refer_timeout` passes. One REFER at a time per call."""
        leg = self._leg(leg_id, "refer", LegState.CONFIRMED)
        if leg.refer_active:
            raise LegStateError(leg_id, "refer pending", "refer")
        request = leg.dialog.make_request("REFER", self._via(), contact=self._contact(leg.source[0]))
        request.headers.add("Refer-To", f"<{refer_to}>")
        if referred_by is not None:
            request.headers.add("Referred-By", f"<{referred_by}>")  # RFC 3892
        for name, value in extra_headers:  # e.g. X-IVR-Call-ID: Asterisk keeps a REFER's X- headers (TRANSFER_DATA)
            request.headers.add(name, value)
        request.headers.add("User-Agent", self.config.user_agent)
        destination = self._next_hop(leg)
        tx = self._layer.send_request(request, destination, now)
        self._tx_leg[tx] = leg
        leg.refer_tx = tx
        leg.refer_active = True
        leg.refer_accepted = False
        leg.refer_deadline = now + self.config.refer_timeout
        log.info("sip refer call_id=%s leg=%s refer_to=%s", leg.dialog.call_id, leg.leg_id, refer_to)
        self._drain(now)

    def _on_notify(self, tx: str, leg: Leg, notify: SipRequest, now: float) -> None:
        """RFC 3515 section 2.4.4-2.4.5: the REFER's implicit subscription reports the referred call as a
        message/sipfrag status line; each NOTIFY gets 200, the first final status (>= 200) settles it.
        A NOTIFY we did not ask for (no REFER pending) also gets 200, and is otherwise ignored."""
        self._respond(tx, notify, 200, now, leg=leg)
        event = (notify.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if not leg.refer_active or event != "refer":
            return
        state = (notify.headers.get("Subscription-State") or "").split(";", 1)[0].strip().lower()
        status = sipfrag_status(notify.body) if notify.content_type == "message/sipfrag" else None
        leg.refer_accepted = True  # a NOTIFY may overtake the 202 (section 2.4.4)
        if status is not None and status >= 200:
            detail = f"NOTIFY sipfrag {status}"
            self._refer_done(leg, 200 <= status < 300, status, detail)
        elif state == "terminated":
            self._refer_done(leg, False, status or 0, "subscription terminated without a final status")

    def _on_refer_response(self, leg: Leg, response: SipResponse) -> None:
        """202 (or any 2xx) accepts the REFER and the NOTIFYs follow; 405/501/603/any error refuses it."""
        status = response.status
        if status < 200:
            return
        leg.refer_tx = None
        if status < 300:
            leg.refer_accepted = True
            log.info("sip refer accepted call_id=%s leg=%s status=%d", leg.dialog.call_id, leg.leg_id, status)
        else:
            self._refer_done(leg, False, status, f"REFER {status} {response.reason}".strip())

    def _refer_done(self, leg: Leg, ok: bool, status: int, detail: str) -> None:
        if not leg.refer_active:
            return
        leg.refer_active = False
        leg.refer_deadline = None
        leg.refer_tx = None
        log.info("sip refer done call_id=%s leg=%s ok=%s status=%d detail=%r", leg.dialog.call_id, leg.leg_id,
                 ok, status, detail)
        if leg.end_reason is None:
            self._events.append(ReferCompleted(leg.leg_id, ok, status, detail))
