"""The real Vosk model on espeak-ng Korean: keywords, digits, rejection, admission, a free event loop.

Only what measured reliable is asserted (see bench/speech.py for accuracy over the whole frozen set).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ivr.adapters.speech import SpeechTurn, prepare_model_dir
from ivr.proto.vad import SpeechEnded, SpeechStarted, VadConfig, VoiceActivityDetector
from ivr.speech import synth
from ivr.speech.results import SpeechResult

KEYWORDS: list[str] = json.loads((Path(__file__).parent / "data" / "eval_set.json").read_text())["keywords"]


def spoken(text: str, voice: str = "ko", speed: int = 175) -> bytes:
    return synth.silence(0.2) + synth.speak(text, voice, speed) + synth.silence(0.3)


async def recognize(turn: SpeechTurn, pcm: bytes) -> SpeechResult:
    async with turn:
        for frame in synth.frames(pcm):
            turn.feed(frame)
        turn.end()
        return await asyncio.wait_for(turn.result(), 30)


@pytest.mark.parametrize(("word", "voice"), [("아니요", "ko"), ("아니요", "ko+f2"), ("네", "ko"), ("예약", "ko+f2"),
                                           ("확인", "ko"), ("확인", "ko+f2"), ("변경", "ko")])
async def test_keyword_is_recognised(speech: Any, word: str, voice: str) -> None:
    turn = speech.open_turn(KEYWORDS, digits=False)
    result = await recognize(turn, spoken(word, voice))
    assert result.accepted, result
    assert result.value == word and result.text == word
    assert 0.0 < result.confidence <= 1.0
    assert result.alternatives[0].text == word
    assert result.dropped_frames == 0


async def test_results_are_repeatable_with_dither_off(speech: Any) -> None:
    pcm = spoken("감사합니다", "ko+f2", 140)
    first = await recognize(speech.open_turn(KEYWORDS, digits=False), pcm)
    second = await recognize(speech.open_turn(KEYWORDS, digits=False), pcm)
    assert first.alternatives == second.alternatives
    conf = (Path(speech.model_dir) / "conf" / "mfcc.conf").read_text()
    assert "--dither=0" in conf.splitlines()


def test_dither_shadow_leaves_the_installed_model_alone(speech: Any, tmp_path: Path) -> None:
    shadow = prepare_model_dir(speech.model_path, tmp_path)
    assert prepare_model_dir(speech.model_path, tmp_path) == shadow  # built once
    assert "--dither=0" not in (Path(speech.model_path) / "conf" / "mfcc.conf").read_text()
    assert (shadow / "graph").resolve() == (Path(speech.model_path) / "graph").resolve()
    assert prepare_model_dir(shadow, tmp_path / "again") == shadow  # already dither-free: used as is


def test_model_says_its_unknown_word_and_vocabulary(speech: Any) -> None:
    assert speech.unk_token == "<UNK>"
    assert speech.digit_words is not None and speech.digit_words["삼"] == "3"
    plan = speech.plan(["아니요", "상담원 연결", "zzqx"])
    assert plan.phrases == ("아니요", "상담원 연결")
    assert plan.missing == ("zzqx",)


@pytest.mark.parametrize(("text", "voice", "digits"), [("삼", "ko", "3"), ("사", "ko+f2", "4")])
async def test_spoken_digit(speech: Any, text: str, voice: str, digits: str) -> None:
    result = await recognize(speech.open_turn(None, digits=True), spoken(text, voice))
    assert result.accepted and result.decision.reason == "digits"
    assert result.value == digits


@pytest.mark.parametrize("text", ["안녕하세요", "사람이랑 얘기하고 싶어요"])
async def test_out_of_grammar_speech_is_no_match(speech: Any, text: str) -> None:
    result = await recognize(speech.open_turn(KEYWORDS, digits=False), spoken(text))
    assert not result.accepted
    assert result.decision.reason in {"not-a-phrase", "low-margin", "no-speech"}


async def test_silence_is_no_speech(speech: Any) -> None:
    result = await recognize(speech.open_turn(KEYWORDS, digits=False), synth.silence(1.0))
    assert not result.accepted and result.decision.reason == "no-speech" and result.text == ""


async def test_verify_runs_a_free_form_pass(speech: Any) -> None:
    result = await recognize(speech.open_turn(KEYWORDS, digits=False, verify=True), spoken("아니요"))
    assert result.accepted and result.value == "아니요"
    assert result.free_text is not None and result.decision.free_gap is not None


async def test_vad_ends_the_turn(speech: Any) -> None:
    """The VAD, not Vosk's endpointer, decides the end: FinalResult() right after SpeechEnded."""
    pcm = synth.add_noise(synth.silence(0.5) + synth.speak("아니요") + synth.silence(2.0), 25.0, seed=7)
    vad = VoiceActivityDetector(VadConfig.for_keywords(), now=0.0)
    turn = speech.open_turn(KEYWORDS, digits=False)
    events: list[object] = []
    async with turn:
        for i, frame in enumerate(synth.frames(pcm)):
            turn.feed(frame)
            vad.receive(frame, (i + 1) * 0.02)
            while (e := vad.next_event()) is not None:
                events.append(e)
            if isinstance(events[-1:] and events[-1], SpeechEnded):
                turn.end()
                break
        result = await asyncio.wait_for(turn.result(), 30)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    assert result.accepted and result.value == "아니요"


async def test_each_result_is_timed_from_the_end_of_speech(speech: Any) -> None:
    """The recognition latency histogram (docs/metrics.md) gets one observation per result: the time from
    end() to the final result, which cannot exceed what the caller of end() waited."""
    loop = asyncio.get_running_loop()
    count, total = speech.latency.count, speech.latency.sum
    turn = speech.open_turn(KEYWORDS, digits=False)
    async with turn:
        for frame in synth.frames(spoken("네")):
            turn.feed(frame)
        ended = loop.time()
        turn.end()
        await asyncio.wait_for(turn.result(), 30)
        waited = loop.time() - ended
    assert speech.latency.count == count + 1
    assert 0 <= speech.latency.sum - total <= waited


async def test_admission_limit(speech: Any) -> None:
    turns = [speech.open_turn(KEYWORDS, digits=False) for _ in range(speech.max_streams)]
    assert all(t is not None for t in turns)
    refused = speech.turns_refused
    assert speech.open_turn(KEYWORDS, digits=False) is None
    assert speech.turns_refused == refused + 1
    turns[0].close()
    again = speech.open_turn(KEYWORDS, digits=False)
    assert again is not None
    for t in [*turns, again]:
        t.close()
    assert speech.active_turns == 0


async def test_full_queue_drops_the_oldest_audio(speech: Any) -> None:
    old = speech.queue_frames
    speech.queue_frames = 5
    try:
        turn = speech.open_turn(KEYWORDS, digits=False)
    finally:
        speech.queue_frames = old
    async with turn:
        frames = synth.frames(synth.silence(6.0))
        for frame in frames:  # no await: one job (≤ 50 frames) at most can run meanwhile
            turn.feed(frame)
        turn.end()
        result = await asyncio.wait_for(turn.result(), 30)
    assert turn.dropped >= len(frames) - 50 - 5
    assert result.dropped_frames == turn.dropped
    assert turn.frames_decoded + turn.dropped == len(frames)


async def test_decoding_does_not_block_the_event_loop(speech: Any) -> None:
    """A ticker keeps running while decode jobs are in flight (ticks counted, never timed)."""
    turns = [speech.open_turn(KEYWORDS, digits=False, verify=True) for _ in range(2)]
    ticks_during_decode = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks_during_decode
        for _ in range(100_000):  # bounded
            if stop.is_set():
                return
            if any(t._job is not None for t in turns):
                ticks_during_decode += 1
            await asyncio.sleep(0.001)

    pcm = spoken("사람이랑 얘기하고 싶어요", "ko", 140) * 2
    async with asyncio.TaskGroup() as tg:
        tg.create_task(ticker())
        for frame in synth.frames(pcm):
            for t in turns:
                t.feed(frame)
        for t in turns:
            t.end()
        results = await asyncio.wait_for(asyncio.gather(*(t.result() for t in turns)), 60)
        stop.set()
    for t in turns:
        t.close()
    assert len(results) == 2
    assert ticks_during_decode >= 5
