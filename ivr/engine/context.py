"""What a running call carries: its pinned flow version, variables, path, and where it records events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ivr.engine.call import Call, Lookups
from ivr.engine.privacy import mask, redact
from ivr.flows.model import Flow, FlowSet

if TYPE_CHECKING:
    from ivr.callbacks.desk import CallbackOffer, SlotChoice
    from ivr.callbacks.policy import NumberCheck
    from ivr.store.callbacks import CallbackRequest, Consent, RequestResult


@dataclass(frozen=True)
class Outcome:
    """How a call ended: hangup, caller_hangup, transferred, queued, callback (a callback request was
    filed and confirmed; detail: queue and request id), transfer_failed (a transfer or queue hand-over failed
    and the call then ended in the IVR, however politely), failed, error, max_length, shutdown.

    ``resolved``: a node marked ``resolved: true`` completed during the call (the caller's task was done in
    the IVR), so containment is counted from the record, not guessed from the path."""

    kind: str
    detail: str = ""
    resolved: bool = False


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


@dataclass(frozen=True)
class SavedRecording:
    id: str
    file: str  # relative to the recordings folder
    seconds: float
    url: str = ""  # its link when the box serves recordings over HTTP (recordings.listen), else ""


class RecordingStore(Protocol):
    """Where the ``record`` node's messages go (ivr.adapters.recordings): on disk when ``save`` returns."""

    async def save(self, call_id: str, node: str, pcm: bytes) -> SavedRecording: ...


class CallbackDesk(Protocol):
    """Virtual hold as the queue node sees it (ivr.callbacks.desk.Desk): offer, check, file, cancel."""

    async def offer(self, queue: str, caller: str, *, min_wait: float | None = None,
                    requested: bool = False, hours: Sequence[tuple[datetime, datetime]] | None = None
                    ) -> CallbackOffer:
        """Whether to offer this caller a callback from ``queue`` now, with the wait to quote;
        ``requested``: the caller already asked (no wait gate, the calling window still decides);
        ``hours``: when the queue's agents are there (UTC intervals), which must hold at the dial time too."""
        ...

    async def check_number(self, raw: str) -> NumberCheck:
        """A caller ID or keyed number: E.164 and zones, or the refusal reason (policy rules and caps)."""
        ...

    def readback(self, e164: str) -> list[str]:
        """Digit groups to read the number back in."""
        ...

    def queue_fact(self, queue: str, fact: str) -> int | None:
        """Live queue state for conditions (``queue.NAME.wait``, ``.agents_available``, ``.callers_waiting``);
        None when unknown."""
        ...

    def slots(self, zones: tuple[str, ...], earliest: datetime, arrival: datetime, count: int = 3,
              hours: Sequence[tuple[datetime, datetime]] | None = None) -> SlotChoice:
        """Times the caller may choose for a scheduled callback (``callback: {schedule: true}``)."""
        ...

    async def request(self, *, queue: str, number: str, zones: tuple[str, ...], arrival_at: datetime,
                      consent: Consent, call_id: str | None = None, quoted: tuple[float, float] | None = None,
                      scheduled_at: datetime | None = None, data: Sequence[tuple[str, str]] = (),
                      sensitive: Collection[str] = (), hours: str | None = None) -> RequestResult:
        """File the request with the caller's ``data`` for the agent (``sensitive``: names never stored in
        clear) and the ``hours`` schedule the dialer keeps; committed when it returns (only then may the caller
        hear "confirmed")."""
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
    entry: str = ""  # the flow the call started on (what KPIs group by); set by run_call
    node_failed: bool = False  # the current node failed (node.failed): a resolved: mark does not count
    resolved: str | None = None  # the first resolved: node completed (qualified name)
    transfer_failed: str | None = None  # the last failed hand-over ("queue payments"), until one succeeds
    lookups: Lookups | None = None  # data look-ups (http nodes); None: every look-up fails as not configured
    menu_trail: list[tuple[str, str]] = field(default_factory=list)  # (flow, menu) visited: global key "back"
    recordings: RecordingStore | None = None  # None: record nodes fail (nowhere to keep a message)
    sensitive: set[str] = field(default_factory=set)
    """Variables holding a sensitive value this call (ivr/engine/privacy.py): recorded only masked."""
    masking_input: bool = False
    """A sensitive entry is being read: key presses and speech are recorded masked (turns.record_input)."""
    carried: tuple[tuple[str, str], ...] = ()
    """The caller's data a callback leg brings from the call that asked for it (the queue node's ``data:``):
    handed to the agent by every transfer of this call, with the node's own ``data:`` (steps.handover_data)."""

    def label(self, name: str) -> str:
        """A node of the flow running now as events and paths name it: ``flow.node`` inside a sub-flow,
        bare in the call's own flow (one naming everywhere, so KPIs join events without guessing)."""
        return name if not self.stack else f"{self.flow.name}.{name}"

    async def event(self, type: str, **data: Any) -> None:
        """Record a node-level event: ``node`` (and ``target``/``failure``, nodes of the same flow) qualified
        like the path, plus ``flow`` and ``flow_version`` of the call, so a KPI groups without a join."""
        if isinstance(data.get("node"), str):
            for key in ("node", "target", "failure"):
                if isinstance(data.get(key), str):
                    data[key] = self.label(data[key])
            data.setdefault("flow", self.entry)
            data.setdefault("flow_version", self.flows.version)
        await self.rec.event(type, **data)

    def recordable(self, name: str, value: object) -> object:
        """A variable's value as events and logs may carry it (masked when sensitive)."""
        return mask(value) if name in self.sensitive else value

    def recorded_variables(self) -> dict[str, object]:
        """The call's variables as its record keeps them (``calls.variables``): sensitive ones masked."""
        return redact(self.variables, self.sensitive)

    @property
    def lang(self) -> str:
        lang = str(self.variables.get("lang") or self.flow.language)
        return lang if lang in self.flow.languages else self.flow.language
