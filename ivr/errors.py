"""The appliance's error types: each carries the fields a caller of the API needs, not just a string."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One finding of a check, printed as ``file:line:column: message`` (1-based, editor style)."""

    file: str
    line: int
    column: int
    message: str
    warning: bool = False
    """Worth a look but not wrong (an unused prompt, a key that is the start of another): printed with
    ``warning:``, never blocks a load."""

    def __str__(self) -> str:
        kind = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}:{self.column}: {kind}{self.message}"


class IvrError(Exception):
    """Base of every error the appliance raises on purpose."""


class ConfigError(IvrError):
    """The config file is unreadable or invalid; ``problems`` lists each finding with its position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class FlowError(IvrError):
    """A flow set failed its checks; nothing of it is switched in. ``warnings`` are the set's warnings, shown
    beside the errors so a fix does not uncover them one run later."""

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None) -> None:
        self.problems = sorted(set(problems))
        self.warnings = sorted(set(warnings or ()))
        super().__init__("\n".join(str(p) for p in self.problems))


class CallerHungUp(IvrError):  # noqa: N818 - it names an event, not a fault
    """The caller went away; raised from whatever the call was awaiting.

    ``outcome`` is what the call record says: ``caller_hangup``, or ``rtp_timeout`` when the caller's audio
    stopped without a BYE (a dead phone or network, not a caller who chose to leave).
    """

    def __init__(self, outcome: str = "caller_hangup") -> None:
        super().__init__(outcome)
        self.outcome = outcome


class PromptRenderError(IvrError):
    """sox or espeak-ng could not turn a prompt into audio."""
