"""A caller speaks to a menu over a real SIP call: espeak-ng Korean audio streamed by sipp interrupts the
prompt, is recognised by Vosk against the menu's keywords, and chooses the option (issue: offline speech).
Only keywords the model recognises reliably from espeak-ng voices are used (see bench/speech.py)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import run_appliance
from tests.integration.test_calls import last_call, sipp

pytest.importorskip("vosk")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

FLOW = """
flow: voicetest
numbers: ["700"]
languages: [ko]
voices: {ko: en}
start: menu
prompts:
  menu: "Say reservation or no. You can also press 1 or 2."
  one: "Reservations. Goodbye."
  two: "You said no. Goodbye."
nodes:
  menu:
    menu:
      prompt: menu
      timeout: 6
      options:
        1: {goto: one, say: [예약]}
        2: {goto: two, say: [아니요]}
  one:
    hangup: one
  two:
    hangup: two
"""


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    env.config.write_text(env.config.read_text().replace("speech: {enabled: false}", "speech: {enabled: true}"))
    (env.flows / "voice.yaml").write_text(FLOW, encoding="utf-8")
    yield from run_appliance(env)


def spoken(path: Path, text: str, gain_db: float = 0.0) -> Path:
    """Korean speech by espeak-ng, as 8 kHz µ-law with silence around it (a caller, then a pause)."""
    wav = path.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(wav), text], check=True)
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(path),
                    "gain", str(gain_db), "pad", "0.3", "2.0"], check=True)
    return path


def test_spoken_keyword_chooses_the_option(appliance: tuple[Env, int, Path]) -> None:
    env, port, log = appliance
    assert "speech ready" in log.read_text()
    # Talking over the prompt must beat its worst-case echo (the detector assumes 6 dB echo return loss):
    # a caller a few dB louder than the prompt, as tests/speech/test_vad.py also shows.
    audio = spoken(env.root / "aniyo.ul", "아니요", gain_db=4.0)
    steps = [("pause", "1500"), ("stream", str(audio))]  # speaks over the prompt: barge-in by voice
    sipp(scenarios.call("say 아니요", steps, telephone_event=False), port, env.root, service="700")
    call = last_call(env)
    assert call["path"] == ["menu", "two"], call
    events = asyncio.run(read_events(env.state / "ivr.db", call["call_id"]))
    heard = [e.data for e in events if e.type == "input.speech"]
    assert heard and heard[0]["text"] == "아니요" and heard[0]["source"] == "asr"
    choice = next(e.data for e in events if e.type == "menu.choice")
    assert choice["via"] == "speech" and choice["key"] == "2"
    interrupted = [e.data["interrupted"] for e in events if e.type == "prompt.played"]
    assert interrupted[0] is True  # the caller spoke over the menu prompt
    assert heard[0]["accepted"] is True and heard[0]["decision"] == "match" and "latency_ms" in heard[0]
    assert 0 < heard[0]["latency_ms"] <= heard[0]["after_speech_ms"]  # the hangover comes before the decision
    speech = env.ivr("status").json()["speech"]  # what an admin sees of the recogniser
    assert speech["turns"] >= 1 and speech["listening"] == 0 and speech["refused"] == 0


def test_speech_after_the_prompt_and_out_of_grammar(appliance: tuple[Env, int, Path]) -> None:
    """At a normal level after the prompt: heard. Out-of-grammar speech takes no-match, then a key works."""
    env, port, _ = appliance
    yes = spoken(env.root / "yeyak.ul", "예약")
    hello = spoken(env.root / "hello.ul", "안녕하세요")
    steps = [("pause", "4500"), ("stream", str(hello)), ("pause", "7000"), ("stream", str(yes))]
    sipp(scenarios.call("out of grammar, then 예약", steps, telephone_event=False), port, env.root,
         service="700")
    call = last_call(env)
    events = asyncio.run(read_events(env.state / "ivr.db", call["call_id"]))
    heard = [e.data for e in events if e.type == "input.speech"]
    assert heard[0]["accepted"] is False and heard[0]["text"] == ""  # rejected, not forced onto a keyword
    assert any(e.type == "menu.no_match" for e in events)
    assert call["path"] == ["menu", "one"], [e.type for e in events]


def test_silence_takes_no_input(appliance: tuple[Env, int, Path]) -> None:
    """RTP keeps coming but nobody speaks: the menu counts a no-input (not a no-match), then a word works."""
    env, port, _ = appliance
    quiet = env.root / "quiet.ul"
    quiet.write_bytes(b"\xff" * 8000 * 11)  # 11 s of µ-law silence: the 6 s menu timeout runs out once
    yes = spoken(env.root / "yeyak.ul", "예약", gain_db=4.0)  # over the re-prompt: loud enough to barge in
    steps = [("pause", "500"), ("stream", str(quiet)), ("pause", "12500"), ("stream", str(yes))]
    sipp(scenarios.call("silence, then 예약", steps, telephone_event=False), port, env.root, service="700")
    call = last_call(env)
    events = asyncio.run(read_events(env.state / "ivr.db", call["call_id"]))
    kinds = [e.type for e in events]
    assert "menu.no_input" in kinds and "menu.no_match" not in kinds
    assert call["path"] == ["menu", "one"]
