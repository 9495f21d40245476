"""Saying "no match" honestly: deciding whether a grammar-mode result is a real keyword.

Measured on this repo's frozen espeak-ng set (``tests/speech/data/eval_set.json``, tuning group): the Korean
model forces out-of-grammar speech onto keywords with word confidence ~1.0, so confidence alone cannot
reject. Three signals can, each cheaper than the next is strong:

1. **one phrase**: Vosk compiles a grammar as a loop, so out-of-grammar speech usually comes out as
   several keywords ("네 아니요"), or none. Accept only a result that is exactly one phrase. Free.
   (tuning: 77 % of out-of-grammar rejected, no correct keyword lost)
2. **n-best margin**: with ``SetMaxAlternatives(n)`` each alternative carries a total path score; a real
   keyword wins by a clear margin or is the only path in the lattice. Free (same decode).
   (with 1: 85 % rejected, no correct keyword lost)
3. **free-form check** (optional, ``verify``): a second, free-form recognizer over the same audio; when
   the best unconstrained path scores much better per frame than the grammar's path, the audio was not
   the keyword. Costs a free-form decode (~3× the CPU of a grammar one, 20-60 MB).
   (with 1+2: 90 % rejected, 4 points of keyword accuracy lost)

The tuning figures above predate the front end's noise floor (``ivr/speech/frontend.py``); the current
reporting-group figures are in bench/README.md ("Keywords").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ivr.speech.grammar import normalize, words_to_digits

__all__ = ["Decision", "Hypothesis", "RejectionPolicy", "decide", "posterior"]


@dataclass(frozen=True)
class Hypothesis:
    """One n-best alternative: text and Vosk's total path score (higher is better; not a probability)."""

    text: str
    score: float


@dataclass(frozen=True)
class RejectionPolicy:
    """Thresholds, tuned on the tuning group of the frozen evaluation set."""

    min_margin: float = 0.3
    """Score by which the best alternative must beat the next different one (keywords only)."""
    max_free_gap: float = 0.15
    """Most the free-form path may beat the grammar path by, per 20 ms frame (only with ``verify``)."""


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    """``match``, ``digits``, ``no-speech``, ``not-a-phrase``, ``not-digits``, ``low-margin``,
    ``free-form-better``."""
    value: str = ""
    """The phrase matched (normalized), or the digit string; empty when rejected."""
    margin: float = math.inf
    free_gap: float | None = None


def posterior(nbest: Sequence[Hypothesis]) -> float:
    """The top alternative's share of the n-best, softmax over scores: a 0..1 confidence that, unlike
    Vosk's word ``conf``, drops when a competitor is close. 1.0 when there is no competitor."""
    if not nbest:
        return 0.0
    top = nbest[0].score
    return 1.0 / sum(math.exp(min(50.0, h.score - top)) for h in nbest)


def decide(
    nbest: Sequence[Hypothesis],
    *,
    phrases: Sequence[str],
    digit_words: Mapping[str, str] | None,
    frames: int,
    free_score: float | None = None,
    policy: RejectionPolicy | None = None,
) -> Decision:
    """Accept or reject a turn's best hypothesis.

    ``phrases`` are the turn's normalized grammar phrases; ``digit_words`` is set for a digits turn;
    ``frames`` counts the 20 ms frames decoded (to put the free-form gap per frame); ``free_score`` is the
    free-form recognizer's best path score, when the turn ran one.
    """
    policy = policy or RejectionPolicy()
    top = normalize(nbest[0].text) if nbest else ""
    if not top:
        return Decision(False, "no-speech")
    competitor = next((h.score for h in nbest[1:] if normalize(h.text) != top), None)
    margin = math.inf if competitor is None else nbest[0].score - competitor
    gap = None if free_score is None else (free_score - nbest[0].score) / max(1, frames)
    if top in phrases:
        if margin < policy.min_margin:
            return Decision(False, "low-margin", margin=margin, free_gap=gap)
        if gap is not None and gap > policy.max_free_gap:
            return Decision(False, "free-form-better", margin=margin, free_gap=gap)
        return Decision(True, "match", top, margin, gap)
    if digit_words is not None:
        # Digit strings vary legitimately, so neither margin nor free-form gap (tuned on keywords) applies.
        digits = words_to_digits(top, digit_words)
        if digits is None:
            return Decision(False, "not-digits", margin=margin, free_gap=gap)
        return Decision(True, "digits", digits, margin, gap)
    return Decision(False, "not-a-phrase", margin=margin, free_gap=gap)
