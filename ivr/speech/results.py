"""What a listening turn hands back, and the parsing of Vosk's JSON into it (pure, testable without a model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ivr.speech.rejection import Decision, Hypothesis

__all__ = ["SpeechResult", "join_segments", "parse_nbest", "parse_text"]


@dataclass(frozen=True)
class SpeechResult:
    """One endpointed utterance: what was heard and whether it is an answer."""

    text: str
    """Best hypothesis, normalized ("" when nothing was heard)."""
    confidence: float
    """Top alternative's n-best posterior, 0..1 (see :func:`ivr.speech.rejection.posterior`)."""
    alternatives: tuple[Hypothesis, ...]
    decision: Decision
    """``decision.accepted`` False means no-match; ``decision.value`` is the phrase or digit string."""
    free_text: str | None = None
    """What the free-form recognizer heard, when the turn ran one (for call records)."""
    audio_seconds: float = 0.0
    dropped_frames: int = 0
    """Frames dropped because decoding fell behind (oldest first)."""

    @property
    def accepted(self) -> bool:
        return self.decision.accepted

    @property
    def value(self) -> str:
        return self.decision.value


def parse_nbest(raw: str) -> list[Hypothesis]:
    """Vosk ``Result()``/``FinalResult()`` with ``SetMaxAlternatives(n>0)``: ``{"alternatives": [...]}``."""
    data: dict[str, Any] = json.loads(raw)
    return [Hypothesis(str(a.get("text", "")), float(a.get("confidence", 0.0))) for a in data.get("alternatives", [])]


def parse_text(raw: str) -> str:
    """Text of a result with or without alternatives."""
    data: dict[str, Any] = json.loads(raw)
    if "alternatives" in data:
        alts = data["alternatives"]
        return str(alts[0].get("text", "")) if alts else ""
    return str(data.get("text", ""))


def join_segments(segments: list[list[Hypothesis]]) -> list[Hypothesis]:
    """Vosk's own endpointer may cut one utterance into segments before ours ends it. One non-empty
    segment keeps its n-best; several are joined into one hypothesis (scores summed), which a keyword turn
    then rejects as more than one phrase and a digits turn reads as one digit string."""
    heard = [s for s in segments if s and s[0].text.strip()]
    if not heard:
        return []
    if len(heard) == 1:
        return heard[0]
    return [Hypothesis(" ".join(s[0].text for s in heard), sum(s[0].score for s in heard))]
