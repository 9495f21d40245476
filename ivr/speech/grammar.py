"""Vosk grammars from menu phrases and spoken digits, checked against the model's own vocabulary.

Language-neutral: words are looked up in the model (``has_word``); the only per-language data are the
spoken-digit tables below, and the table is chosen by which one the model's vocabulary holds.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "DIGIT_WORDS",
    "GrammarPlan",
    "build_grammar",
    "normalize",
    "pick_digit_words",
    "words_to_digits",
]

DIGIT_WORDS: Mapping[str, Mapping[str, str]] = {
    # Sino-Korean digits, as read in phone numbers; 공 and 영 are both zero.
    "ko": {"영": "0", "공": "0", "일": "1", "이": "2", "삼": "3", "사": "4", "오": "5", "육": "6", "칠": "7",
           "팔": "8", "구": "9"},
    "en": {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9"},
}
"""Spoken digit words per language → the digit. Add a language by adding its table."""


def normalize(text: str) -> str:
    """NFC, lower case, single spaces: the form phrases are compared in."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


@dataclass(frozen=True)
class GrammarPlan:
    """What a recognizer is built with, and what could not go in."""

    phrases: tuple[str, ...]
    """Normalized phrases whose every word the model knows."""
    missing: tuple[str, ...]
    """Words the model does not know (their phrases are left out): an error for ``ivr check``."""

    def to_json(self, extra: Iterable[str] = ()) -> str:
        """Vosk's grammar argument. ``ensure_ascii=False``: Vosk looks words up by their UTF-8 bytes and
        ignores escaped ones (it logs "Ignoring word missing in vocabulary: '\\uc544...'")."""
        return json.dumps([*self.phrases, *extra], ensure_ascii=False)


def build_grammar(phrases: Iterable[str], has_word: Callable[[str], bool]) -> GrammarPlan:
    kept: list[str] = []
    missing: list[str] = []
    for phrase in phrases:
        p = normalize(phrase)
        if not p:
            continue
        absent = [w for w in p.split() if not has_word(w)]
        for w in absent:
            if w not in missing:
                missing.append(w)
        if not absent and p not in kept:
            kept.append(p)
    return GrammarPlan(tuple(kept), tuple(missing))


def pick_digit_words(has_word: Callable[[str], bool]) -> Mapping[str, str] | None:
    """The first digit table the model knows every word of, or None (spoken digits unavailable)."""
    for table in DIGIT_WORDS.values():
        if all(has_word(w) for w in table):
            return table
    return None


def words_to_digits(text: str, table: Mapping[str, str]) -> str | None:
    """"일 이 삼" → "123"; None when any word is not a digit word (or there are none)."""
    words = normalize(text).split()
    if not words or any(w not in table for w in words):
        return None
    return "".join(table[w] for w in words)
