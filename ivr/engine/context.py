"""What a running call carries: its pinned flow version, variables, path, and where it records events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ivr.engine.call import Call
from ivr.flows.model import Flow, FlowSet


@dataclass(frozen=True)
class Outcome:
    """How a call ended: hangup, caller_hangup, transferred, queued, failed, error, max_length, shutdown."""

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

    @property
    def lang(self) -> str:
        lang = str(self.variables.get("lang") or self.flow.language)
        return lang if lang in self.flow.languages else self.flow.language
