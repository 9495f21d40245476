"""A collect's own `speech:` settings honoured on a real SIP call: sipp streams espeak-ng Korean digits said
in two groups, starting after the node's key timeout; speech may still start (its own `no_input`), and the
pause between the groups no longer ends the answer (`end_of_speech: 1.5`)."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.proto import g711
from ivr.proto.vad import frame_dbfs
from ivr.speech import synth
from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import run_appliance
from tests.integration.test_calls import last_call, sipp
from tests.speech.test_flow_settings import pauses

pytest.importorskip("vosk")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sipp") is None,
                                reason="espeak-ng and sipp are needed")

FLOW = """
flow: settingscall
numbers: ["701"]
languages: [ko]
voices: {ko: en}
start: number
prompts:
  ask: "Please say your number now, or type it on the keypad."
  thanks: "Thank you."
nodes:
  number:
    collect:
      prompt: ask
      into: number
      timeout: 2
      max_attempts: 1
      speech: {end_of_speech: 1.5, no_input: 8}
    next: done
    failure: done
  done:
    hangup: thanks
"""


def voiced_span(pcm: bytes) -> float:
    """Seconds from the first to the end of the last frame above -40 dBFS."""
    voiced = [frame_dbfs(f) > -40.0 for f in synth.frames(pcm)]
    return (len(voiced) - voiced[::-1].index(True) - voiced.index(True)) * 0.02


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    env.config.write_text(env.config.read_text().replace("speech: {enabled: false}",
                                                         "speech: {enabled: true, echo_return_loss_db: 9}"))
    (env.flows / "settings.yaml").write_text(FLOW, encoding="utf-8")
    yield from run_appliance(env)


def test_collect_settings_hold_on_a_real_call(appliance: tuple[Env, int, Path]) -> None:
    env, port, log = appliance
    assert "speech ready" in log.read_text()
    first, second = synth.speak("이 삼", "ko+f2", ulaw=False), synth.speak("팔 일", "ko+f2", ulaw=False)
    digits = first + synth.silence(0.6) + second
    assert 0.85 < max(pauses(digits)) < 1.4  # past the digits' default 0.8 s end of speech, within 1.5 s
    audio = env.root / "digits.ul"
    audio.write_bytes(g711.ulaw_encode(synth.silence(6.5) + digits + synth.silence(2.5)))
    # The prompt is ~3 s (the line is silent meanwhile: no echo); the caller starts ~3.5 s after it, past
    # the 2 s key timeout.
    sipp(scenarios.call("digits said late, in two groups", [("stream", str(audio))], telephone_event=False),
         port, env.root, service="701")
    call = last_call(env)
    events = asyncio.run(read_events(env.state / "ivr.db", call["call_id"]))
    kinds = [e.type for e in events]
    assert "collect.no_input" not in kinds, kinds  # speech's own no-input (8 s) kept the turn open
    heard = [e.data for e in events if e.type == "input.speech"]
    assert len(heard) == 1, kinds
    assert heard[0]["ended"] == "end-of-speech"
    # One answer from the first group's start into the second group, across the pause.
    assert heard[0]["speech_ms"] > 1000 * (voiced_span(first) + max(pauses(digits))), heard[0]
    assert call["path"] == ["number", "done"]
    # The echo assumption comes from the config; the loss this line showed is logged beside it (sipp sends
    # its file whatever we play: no echo at all, so the loss is the prompt's level over digital silence).
    echo = re.search(r"speech echo call_id=\S+ measured_loss_db=([0-9.]+) assumed_db=9.0", log.read_text())
    assert echo is not None and float(echo.group(1)) > 40.0
