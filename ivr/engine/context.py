"""What a running call carries: its pinned flow version, variables, path, and where it records events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ivr.engine.call import Call
from ivr.flows.model import Flow, FlowSet

if TYPE_CHECKING:
    from ivr.callbacks.desk import CallbackOffer, SlotChoice
    from ivr.callbacks.policy import NumberCheck
    from ivr.store.callbacks import CallbackRequest, Consent, RequestResult


@dataclass(frozen=True)
class Outcome:
    """How a call ended: hangup, caller_hangup, transferred, queued, callback (a callback request was
    filed and confirmed; detail: queue and request id), failed, error, max_length, shutdown."""

    kind: str
    detail: str = ""


class Recorder(Protocol):
    """Where a call's events go (the event log); each await returns once the event is durable."""

    async def begin(self, call: Call, flow: Flow, version: str) -> None: ...

    async def event(self, type: str, **data: Any) -> None: ...

    async def end(self, outcome: Outcome, path: list[str], variables: dict[str, object]) -> None: ...


class Switches(Protocol):
    """The admins' emergency "closed now" switches, per schedule."""

    async def emergency_closed(self, schedule: str) -> bool: ...


class NoSwitches:
    async def emergency_closed(self, schedule: str) -> bool:
        return False


class CallbackDesk(Protocol):
    """Virtual hold as the queue node sees it (ivr.callbacks.desk.Desk): offer, check, file, cancel."""

    async def offer(self, queue: str, caller: str, *, min_wait: float | None = None,
                    requested: bool = False) -> CallbackOffer:
        """Whether to offer this caller a callback from ``queue`` now, with the wait to quote;
        ``requested``: the caller already asked (no wait gate, the calling window still decides)."""
        ...

    async def check_number(self, raw: str) -> NumberCheck:
        """A caller ID or keyed number: E.164 and zones, or the refusal reason (policy rules and caps)."""
        ...

    def readback(self, e164: str) -> list[str]:
        """Digit groups to read the number back in."""
        ...

    def slots(self, zones: tuple[str, ...], earliest: datetime, arrival: datetime, count: int = 3) -> SlotChoice:
        """Times the caller may choose for a scheduled callback (``callback: {schedule: true}``)."""
        ...

    async def request(self, *, queue: str, number: str, zones: tuple[str, ...], arrival_at: datetime,
                      consent: Consent, call_id: str | None = None, quoted: tuple[float, float] | None = None,
                      scheduled_at: datetime | None = None) -> RequestResult:
        """File the request; committed when it returns (only then may the caller hear "confirmed")."""
        ...

    async def pending(self, number: str, queue: str | None = None) -> list[CallbackRequest]:
        """Active requests for a number (optionally one queue)."""
        ...

    async def cancel(self, request_id: str, reason: str) -> bool:
        """Cancel a request waiting to be dialled; False if it is being dialled or has ended."""
        ...


@dataclass
class CallContext:
    call: Call
    flows: FlowSet
    flow: Flow  # the flow being run now (changes inside a sub-flow)
    rec: Recorder
    now: Callable[[], datetime]
    switches: Switches
    log: logging.LoggerAdapter[logging.Logger]
    variables: dict[str, object] = field(default_factory=dict)
    stack: list[tuple[Flow, str | None]] = field(default_factory=list)  # sub-flow return points
    path: list[str] = field(default_factory=list)
    outcome: Outcome | None = None
    node: str = ""
    told_speech_busy: bool = False  # the "please use your keypad" notice is given once per call
    callbacks: CallbackDesk | None = None  # virtual hold; None: queue nodes never offer a callback

    @property
    def lang(self) -> str:
        lang = str(self.variables.get("lang") or self.flow.language)
        return lang if lang in self.flow.languages else self.flow.language
