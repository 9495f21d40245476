"""Pure helpers: grammar building, digit words, Vosk JSON parsing, the rejection rules."""

from __future__ import annotations

import json
import math

from ivr.speech.grammar import DIGIT_WORDS, build_grammar, normalize, pick_digit_words, words_to_digits
from ivr.speech.rejection import Hypothesis, RejectionPolicy, decide, posterior
from ivr.speech.results import join_segments, parse_nbest, parse_text

VOCAB = {"billing", "agent", "sales", "zero", "oh", "one", "two", "three", "four", "five", "six", "seven",
         "eight", "nine", "opening", "hours"}


def test_grammar_keeps_known_phrases_and_reports_unknown_words() -> None:
    plan = build_grammar(["Billing", "  opening   hours ", "refunds", "agent", "billing"], VOCAB.__contains__)
    assert plan.phrases == ("billing", "opening hours", "agent")
    assert plan.missing == ("refunds",)
    assert json.loads(plan.to_json(["one"])) == ["billing", "opening hours", "agent", "one"]


def test_grammar_json_is_not_ascii_escaped() -> None:
    # Vosk looks words up by their UTF-8 bytes: "\uc544..." escapes are "missing in vocabulary".
    plan = build_grammar(["아니요"], lambda w: True)
    assert plan.to_json() == '["아니요"]'


def test_digit_table_is_chosen_by_the_model_vocabulary() -> None:
    assert pick_digit_words(VOCAB.__contains__) is DIGIT_WORDS["en"]
    assert pick_digit_words(set(DIGIT_WORDS["ko"]).__contains__) is DIGIT_WORDS["ko"]
    assert pick_digit_words({"one"}.__contains__) is None
    assert words_to_digits("One two  oh", DIGIT_WORDS["en"]) == "120"
    assert words_to_digits("일 이 공", DIGIT_WORDS["ko"]) == "120"
    assert words_to_digits("one billing", DIGIT_WORDS["en"]) is None
    assert words_to_digits("", DIGIT_WORDS["en"]) is None


def test_parse_vosk_json() -> None:
    raw = json.dumps({"alternatives": [{"confidence": 58.8, "text": "아니요"}, {"confidence": 57.1, "text": "네"}]},
                     ensure_ascii=False)
    assert parse_nbest(raw) == [Hypothesis("아니요", 58.8), Hypothesis("네", 57.1)]
    assert parse_text(raw) == "아니요"
    assert parse_text('{"text": "agent"}') == "agent"
    assert parse_nbest('{"alternatives": []}') == []


def test_segments_cut_by_vosks_endpointer_are_joined() -> None:
    a = [Hypothesis("one", 10.0), Hypothesis("two", 9.0)]
    assert join_segments([[Hypothesis("", 3.0)], a, []]) == a
    assert join_segments([a, [Hypothesis("three", 5.0)]]) == [Hypothesis("one three", 15.0)]
    assert join_segments([[Hypothesis("", 1.0)]]) == []


PHRASES = ("billing", "agent")


def test_one_phrase_with_a_clear_margin_is_accepted() -> None:
    d = decide([Hypothesis("billing", 60.0), Hypothesis("agent", 58.0)], phrases=PHRASES, digit_words=None,
               frames=50)
    assert (d.accepted, d.reason, d.value, d.margin) == (True, "match", "billing", 2.0)
    alone = decide([Hypothesis("agent", 60.0)], phrases=PHRASES, digit_words=None, frames=50)
    assert alone.accepted and alone.margin == math.inf


def test_rejections_say_why() -> None:
    def why(nbest: list[Hypothesis], **kw: object) -> str:
        args: dict[str, object] = {"phrases": PHRASES, "digit_words": None, "frames": 50, **kw}
        d = decide(nbest, **args)  # type: ignore[arg-type]
        assert not d.accepted and d.value == ""
        return d.reason

    assert why([]) == "no-speech"
    assert why([Hypothesis("", 30.0)]) == "no-speech"
    assert why([Hypothesis("billing agent", 60.0)]) == "not-a-phrase"  # the grammar loops
    assert why([Hypothesis("billing", 60.0), Hypothesis("agent", 59.9)]) == "low-margin"
    assert why([Hypothesis("billing", 60.0)], free_score=60.0 + 0.2 * 50) == "free-form-better"
    assert why([Hypothesis("one billing", 60.0)], digit_words=DIGIT_WORDS["en"]) == "not-digits"


def test_margin_ignores_alternatives_with_the_same_text() -> None:
    d = decide([Hypothesis("billing", 60.0), Hypothesis(" billing", 59.99), Hypothesis("agent", 50.0)],
               phrases=PHRASES, digit_words=None, frames=50)
    assert d.accepted and d.margin == 10.0


def test_free_form_gap_within_policy_is_accepted() -> None:
    d = decide([Hypothesis("billing", 60.0)], phrases=PHRASES, digit_words=None, frames=50,
               free_score=62.0, policy=RejectionPolicy(max_free_gap=0.15))
    assert d.accepted and d.free_gap is not None and abs(d.free_gap - 0.04) < 1e-9


def test_digits_skip_the_keyword_margin() -> None:
    d = decide([Hypothesis("one two", 40.0), Hypothesis("one", 39.99)], phrases=(), digit_words=DIGIT_WORDS["en"],
               frames=50)
    assert (d.accepted, d.reason, d.value) == (True, "digits", "12")


def test_posterior() -> None:
    assert posterior([]) == 0.0
    assert posterior([Hypothesis("a", 5.0)]) == 1.0
    assert abs(posterior([Hypothesis("a", 5.0), Hypothesis("b", 5.0)]) - 0.5) < 1e-12
    assert posterior([Hypothesis("a", 9.0), Hypothesis("b", 5.0)]) > 0.98
    assert normalize("  Opening\tHOURS ") == "opening hours"
