"""Sensitive values (``sensitive: true`` on collect and set): how they look wherever a call is recorded.

A sensitive value lives in clear only in the call's memory (``CallContext.variables``), where conditions,
read-backs, transfers and look-ups use it. Everything that leaves the call — events (and so the central
sync), the call's record (``calls.variables``), log lines, the simulator's narration — carries ``mask(value)``
instead: its length, never its characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "••••"


def mask(value: object) -> str:
    """``"4111111111111111"`` → ``"•••• 16 digits"``; other text → ``"•••• 7 characters"``; empty → ``""``."""
    text = "" if value is None else str(value)
    if not text:
        return ""
    unit = "digit" if text.isdigit() else "character"
    return f"{MASK} {len(text)} {unit}{'s' if len(text) != 1 else ''}"


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
