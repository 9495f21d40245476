"""Sensitive values (``sensitive: true`` on collect and set): how they look wherever a call is recorded.

A sensitive value lives in clear only in the call's memory (``CallContext.variables``), where conditions,
read-backs, transfers and look-ups use it. Everything that leaves the call — events (and so the central
sync), the call's record (``calls.variables``), log lines, the simulator's narration — carries ``mask(value)``
instead: its length, never its characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ivr.store.privacy import MASK, mask  # the store masks them too (a callback's data for the agent)

__all__ = ["MASK", "mask", "redact", "refers_to"]


def refers_to(template: object, names: Iterable[str]) -> bool:
    """Whether a ``${var}`` template reads any of ``names`` (its result is then sensitive too)."""
    if not isinstance(template, str):
        return False
    wanted = set(names)
    return any(m in wanted for m in re.findall(r"\$\{([^}]*)\}", template))


def redact(variables: Mapping[str, object], sensitive: Iterable[str]) -> dict[str, object]:
    """The variables as they may be recorded: the sensitive ones masked."""
    hidden = set(sensitive)
    return {k: mask(v) if k in hidden else v for k, v in variables.items()}
