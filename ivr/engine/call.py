"""The call interface the engine drives. The SIP adapter and the simulator are two implementations of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ivr.flows.audio import Audio
from ivr.flows.model import SpeechSettings


@dataclass(frozen=True)
class CallerInput:
    """A key press or a recognised utterance, in the order the caller gave them."""

    kind: Literal["dtmf", "speech"]
    value: str  # a digit 0-9*#A-D, or the recognised text
    confidence: float | None = None
    source: str = ""  # rfc4733, info, inband, asr, simulator
    details: dict[str, object] | None = None  # a recognition's alternatives, decision, grammar, latency


@dataclass(frozen=True)
class Grammar:
    """What a listening turn may recognise: menu phrases and/or spoken digits."""

    phrases: tuple[str, ...] = ()
    digits: bool = False
    lang: str = ""  # the language the phrases are in (the flow's first language)
    settings: SpeechSettings = field(default_factory=SpeechSettings)
    """The node's own end-of-speech, no-input, length, barge-in and rejection settings (None: defaults)."""


@dataclass(frozen=True)
class TransferTarget:
    kind: Literal["extension", "queue"]
    destination: str
    data: tuple[tuple[str, str], ...] = ()
    """Named values for the agent (``data: [account]`` on the node): each goes to the PBX as the SIP header
    ``X-IVR-Var-<name>`` (REFER and the bridge's INVITE) or the channel variable ``IVR_VAR_<NAME>`` (AMI)."""
    sensitive: frozenset[str] = frozenset()
    """Names in ``data`` whose variables are sensitive: sent to the PBX (the agent needs them), never shown in
    a narration or a log."""


@dataclass(frozen=True)
class LookupRequest:
    """One data look-up of an ``http`` node, its templates filled in: what the look-up adapter sends."""

    lookup: str | None
    """The named back end of the box config (``lookups:``): base URL, secret headers, timeout, breaker."""
    method: str
    url: str
    """Absolute, or relative to the back end's base URL; values from variables already URL-encoded."""
    body: object = None
    """A JSON body (POST/PUT/PATCH), or None."""
    timeout: float | None = None
    """Seconds for the whole look-up, retries included; None: the back end's."""


LookupOutcome = Literal["ok", "http_error", "timeout", "unreachable", "circuit_open", "bad_response",
                        "not_configured"]


@dataclass(frozen=True)
class LookupResult:
    outcome: LookupOutcome
    status: int | None = None
    """The HTTP status of the last answer, if any."""
    body: object = None
    """The answer parsed as JSON (``ok`` only)."""
    detail: str = ""
    attempts: int = 0
    seconds: float = 0.0
    host: str = ""
    """host:port the look-up went to (the circuit breaker's key)."""


class Lookups(Protocol):
    """The data look-up adapter as the engine sees it (ivr.adapters.lookup): never raises for a back end's
    fault, it answers with the outcome instead."""

    async def fetch(self, request: LookupRequest) -> LookupResult: ...


#: Told by a transfer when the caller is provably with the PBX or an agent: ``(stage, data)`` with stage
#: ``referred`` (REFER accepted, final NOTIFY 2xx), ``redirected`` (AMI Redirect answered Success) or
#: ``bridged`` (the agent answered, the bridge is up; data has ``agent_call_id``). Awaited before the transfer
#: goes on, so the engine can commit it (``transfer.progress``): after a crash it proves where the caller went.
TransferProgress = Callable[[str, dict[str, Any]], Awaitable[None]]


RecordingEnd = Literal["key", "silence", "max", "hangup"]


@dataclass(frozen=True)
class Recording:
    """What ``Call.record`` took: 16-bit 8 kHz mono PCM (empty when the caller said nothing) and why it ended:
    ``key`` (an end key), ``silence``, ``max`` (the length limit) or ``hangup`` (kept: a message ends so)."""

    pcm: bytes
    ended: RecordingEnd

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / 8000


@dataclass(frozen=True)
class TransferResult:
    ok: bool
    detail: str = ""  # e.g. "REFER 202 / NOTIFY 200", or why it failed


class Call(Protocol):
    """One caller. Every awaitable raises CallerHungUp when the caller goes away."""

    call_id: str
    caller: str
    dialed: str
    channel: str  # "sip", "simulator"

    @property
    def headers(self) -> Mapping[str, str]:
        """The INVITE's X- headers as sent (X-IVR-Queue: support...); flows see them as ``sip_x_ivr_queue``."""
        ...

    async def play(self, audio: Sequence[Audio]) -> None:
        """Play to the end; cancelling stops the audio at once (barge-in)."""
        ...

    def has_input(self) -> bool:
        """A key or utterance is already waiting (typed ahead)."""
        ...

    async def input_pending(self) -> None:
        """Returns when the caller starts a key or speech; used to interrupt prompts."""
        ...

    async def receive(self, timeout: float, *, mid_entry: bool = False) -> CallerInput | None:
        """Next input, or None after ``timeout`` seconds of nothing.

        ``mid_entry`` says the caller is part-way through typing a number: a simulated caller uses it to
        end a burst of keys, a real call ignores it.
        """
        ...

    def listen(self, grammar: Grammar | None) -> AbstractAsyncContextManager[bool | None]:
        """A listening turn: speech recognised while inside it arrives through receive().

        Yields True when speech is listened for, False when it should be but every speech slot is busy (the
        caller is told to use the keypad), None when this turn does not listen (keys only, nothing said)."""
        ...

    async def transfer(self, target: TransferTarget, progress: TransferProgress | None = None) -> TransferResult:
        """Hand the caller over; ``progress`` is awaited at each point that proves where the caller went."""
        ...

    async def record(self, max_seconds: float, end_keys: str, silence_seconds: float) -> Recording:
        """Record the caller until an end key, ``silence_seconds`` without speech, ``max_seconds`` or a hang-up
        (which does not raise here: what was said is the message)."""
        ...

    async def hangup(self) -> None: ...
