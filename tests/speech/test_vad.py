"""Turn-taking on frames with time passed in: synthetic levels, real espeak-ng speech, noise and echo."""

from __future__ import annotations

import dataclasses
from array import array

import pytest

from ivr.proto.vad import (
    NoInput,
    SpeechEnded,
    SpeechStarted,
    TooLong,
    VadConfig,
    VadEvent,
    VoiceActivityDetector,
    frame_dbfs,
)
from ivr.speech import synth

needs_espeak = pytest.mark.skipif(not synth.available(), reason="espeak-ng and sox are needed for spoken audio")

F = 0.02


def tone(level: int, n: int = 160) -> bytes:
    """A square wave at ±level: frame_dbfs is exactly 20·log10(level/32768)."""
    return array("h", [level if i % 8 < 4 else -level for i in range(n)]).tobytes()


def run(vad: VoiceActivityDetector, frames: list[bytes], played: list[bytes] | None = None,
        t0: float = 0.0) -> list[VadEvent]:
    """Feed frames 20 ms apart (each stamped with its end time); collect events."""
    events: list[VadEvent] = []
    for i, frame in enumerate(frames):
        vad.receive(frame, t0 + (i + 1) * F, played[i] if played and i < len(played) else None)
        while (e := vad.next_event()) is not None:
            events.append(e)
    return events


def first_voiced(pcm: bytes, dbfs: float = -40.0) -> tuple[float, float]:
    """Start of the first and end of the last frame above ``dbfs``: the ground truth for onset/end."""
    levels = [frame_dbfs(f) for f in synth.frames(pcm)]
    on = next(i for i, v in enumerate(levels) if v > dbfs)
    off = max(i for i, v in enumerate(levels) if v > dbfs)
    return on * F, (off + 1) * F


def test_frame_level() -> None:
    assert frame_dbfs(bytes(320)) == -100.0
    assert frame_dbfs(tone(32767)) == pytest.approx(0.0, abs=0.01)
    assert frame_dbfs(tone(3277)) == pytest.approx(-20.0, abs=0.01)


def test_onset_needs_minimum_speech_so_clicks_do_not_barge_in() -> None:
    vad = VoiceActivityDetector(VadConfig(onset=0.12, no_input=1.0), now=0.0)
    quiet, loud = tone(30), tone(3000)
    clicks = [quiet] * 10 + ([loud] * 2 + [quiet] * 8) * 3  # 40 ms bursts
    assert run(vad, clicks) == []
    events = run(vad, [loud] * 10, t0=len(clicks) * F)
    assert events == [SpeechStarted(at=pytest.approx(0.92), started=pytest.approx(0.8))]  # type: ignore[arg-type]


def test_end_after_hangover_and_timer_without_audio() -> None:
    cfg = VadConfig.for_keywords()
    vad = VoiceActivityDetector(cfg, now=0.0)
    events = run(vad, [tone(30)] * 5 + [tone(3000)] * 20 + [tone(30)] * 5)
    assert [type(e) for e in events] == [SpeechStarted]
    # RTP stopped: the timer ends the utterance hangover after the last voiced frame (0.5 s)
    assert vad.get_timer() == pytest.approx(0.5 + cfg.hangover)
    vad.handle_timer(0.79)
    assert vad.next_event() is None
    vad.handle_timer(0.8)
    assert vad.next_event() == SpeechEnded(at=0.8, started=pytest.approx(0.1), ended=pytest.approx(0.5))
    assert vad.done and vad.get_timer() is None


def test_digit_strings_get_a_longer_hangover() -> None:
    assert VadConfig.for_digits().hangover >= 0.8
    vad = VoiceActivityDetector(VadConfig.for_digits(), now=0.0)
    gap = [tone(3000)] * 10 + [tone(30)] * 25  # 0.5 s pauses between digits do not end the string
    events = run(vad, gap * 3 + [tone(30)] * 40)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    assert isinstance(events[1], SpeechEnded) and events[1].ended == pytest.approx(2 * 0.7 + 0.2)


def test_no_input_and_too_long() -> None:
    vad = VoiceActivityDetector(VadConfig(no_input=2.0), now=10.0)
    assert vad.get_timer() == 12.0
    assert run(vad, [tone(30)] * 100, t0=10.0) == [NoInput(at=pytest.approx(12.0))]  # type: ignore[arg-type]
    vad = VoiceActivityDetector(VadConfig(max_speech=1.0), now=0.0)
    events = run(vad, [tone(30)] * 5 + [tone(3000)] * 100)
    assert [type(e) for e in events] == [SpeechStarted, TooLong]
    assert events[1].at == pytest.approx(1.1)
    assert vad.done


def test_steady_line_noise_is_not_speech() -> None:
    vad = VoiceActivityDetector(VadConfig(no_input=3.0), now=0.0)
    hiss = synth.frames(synth.noise(3.0, rms=400.0))  # -38 dBFS: above the absolute floor
    assert [type(e) for e in run(vad, hiss)] == [NoInput]


@needs_espeak
@pytest.mark.parametrize("lead", ["silence", "noise"])
def test_onset_and_end_on_spoken_audio(lead: str) -> None:
    word = synth.speak("상담원 연결해 주세요", "ko", 175)
    pcm = synth.silence(0.6) + word + synth.silence(1.0)
    on, off = first_voiced(pcm)
    if lead == "noise":
        pcm = synth.add_noise(pcm, 20.0, seed=3)
    cfg = VadConfig.for_keywords()
    events = run(VoiceActivityDetector(cfg, now=0.0), synth.frames(pcm))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert on - 0.04 <= started.started <= on + 0.1
    assert started.at - started.started <= cfg.onset_window + F
    assert off - 0.1 <= ended.ended <= off + 0.04
    assert ended.at == pytest.approx(ended.ended + cfg.hangover, abs=F)


@needs_espeak
@pytest.mark.parametrize(("delay_ms", "loss_db"), [(20, 6.0), (40, 10.0), (60, 6.0)])
def test_prompt_echo_does_not_barge_in(delay_ms: int, loss_db: float) -> None:
    prompt = synth.speak("요금 안내는 일번, 상담원 연결은 이번을 누르세요", "ko", 175, ulaw=False)
    played = synth.frames(prompt + synth.silence(0.5))
    line = synth.noise(len(played) * F, rms=20.0, seed=5)  # a quiet line: -64 dBFS
    echo = synth.mix(line, prompt, gain_b=10 ** (-loss_db / 20), offset_b=delay_ms * 8)
    heard = synth.frames(echo)
    cfg = VadConfig(no_input=len(played) * F)
    assert [type(e) for e in run(VoiceActivityDetector(cfg, now=0.0), heard, played)] == [NoInput]
    # The same echo without telling the detector what we played would have cut the prompt:
    assert [type(e) for e in run(VoiceActivityDetector(cfg, now=0.0), heard)][:1] == [SpeechStarted]


@needs_espeak
def test_caller_talking_over_the_prompt_still_barges_in() -> None:
    prompt = synth.speak("요금 안내는 일번, 상담원 연결은 이번을 누르세요", "ko", 175, ulaw=False)
    caller = synth.speak("상담원", "ko+f2", 175, ulaw=False)
    played = synth.frames(prompt)
    heard = synth.mix(prompt, prompt, gain_b=10 ** (-6 / 20) - 1.0, offset_b=0)  # the prompt at -6 dB …
    heard = synth.mix(synth.silence(0.04) + heard, caller, gain_b=2.0, offset_b=8000)  # … + caller from 1.0 s
    events = run(VoiceActivityDetector(VadConfig(), now=0.0), synth.frames(heard), played)
    assert isinstance(events[0], SpeechStarted)
    assert events[0].started >= 0.98


@needs_espeak
def test_echo_return_loss_is_measured_and_the_assumption_is_a_setting() -> None:
    """A line whose echo comes back 14 dB down, and a caller speaking a little softer than the prompt (2 dB):
    with the default 6 dB assumption the caller cannot interrupt; set to what the line measures, they can,
    and the echo alone still does not."""
    prompt = synth.speak("요금 안내는 일번, 상담원 연결은 이번을 누르세요", "ko", 175, ulaw=False)
    caller = synth.speak("상담원", "ko+f2", 175, ulaw=False)
    played = synth.frames(prompt + synth.silence(0.5))
    line = synth.noise(len(played) * F, rms=20.0, seed=5)
    echo = synth.mix(line, prompt, gain_b=10 ** (-14 / 20), offset_b=320)  # 40 ms late, 14 dB down
    scale = synth.rms(prompt) / synth.rms(caller) * 10 ** (-2 / 20)
    talk = synth.frames(synth.mix(echo, caller, gain_b=scale, offset_b=8000))  # from 1.0 s
    cfg = VadConfig(no_input=len(played) * F)
    echo_only = VoiceActivityDetector(cfg, now=0.0)
    assert [type(e) for e in run(echo_only, synth.frames(echo), played)] == [NoInput]
    assert echo_only.measured_echo_loss() == pytest.approx(14.0, abs=2.5)
    assert SpeechStarted not in [type(e) for e in run(VoiceActivityDetector(cfg, now=0.0), talk, played)]
    tuned = dataclasses.replace(cfg, echo_return_loss_db=12.0)
    assert [type(e) for e in run(VoiceActivityDetector(tuned, now=0.0), synth.frames(echo), played)] == [NoInput]
    barged = VoiceActivityDetector(tuned, now=0.0)
    events = run(barged, talk, played)
    assert isinstance(events[0], SpeechStarted) and events[0].started >= 0.98
    assert barged.measured_echo_loss() is None  # the caller's voice was in the prompt's frames
