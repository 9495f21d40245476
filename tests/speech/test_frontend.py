"""The speech front end: telephone audio raised to the model's rate over a seeded noise floor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ivr.speech.frontend import LineFrontEnd, noise_floor_sigma


def tone(freq: float, seconds: float, amplitude: float = 10000.0, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return np.rint(amplitude * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def test_frames_give_the_same_audio_as_the_whole_utterance() -> None:
    pcm = tone(440, 1.0)
    whole = LineFrontEnd(8000, 16000).process(pcm)
    front = LineFrontEnd(8000, 16000)
    framed = b"".join(front.process(pcm[i:i + 320]) for i in range(0, len(pcm), 320))
    assert framed == whole
    assert len(whole) == 2 * len(pcm)


def test_a_tone_keeps_its_pitch_and_level_and_leaves_no_image_above_4_khz() -> None:
    out = samples(LineFrontEnd(8000, 16000, None).process(tone(1000, 1.0)))[100:]  # past the filter's start
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(len(out), 1 / 16000)
    assert abs(freqs[spectrum.argmax()] - 1000) < 5
    assert out.std() * math.sqrt(2) == pytest.approx(10000, rel=0.01)
    image = spectrum[(freqs > 6800) & (freqs < 7200)].max()  # where zero-stuffing would mirror 1 kHz
    assert 20 * math.log10(image / spectrum.max()) < -60


def test_the_noise_floor_is_at_its_level_and_the_same_every_turn() -> None:
    quiet = bytes(2 * 8000)
    first = LineFrontEnd(8000, 16000, -70.0).process(quiet)
    assert samples(first).std() == pytest.approx(noise_floor_sigma(-70.0), rel=0.05)
    assert LineFrontEnd(8000, 16000, -70.0).process(quiet) == first  # seeded: repeatable decoding
    assert not samples(LineFrontEnd(8000, 16000, None).process(quiet)).any()


def test_a_model_at_the_calls_rate_gets_only_the_noise() -> None:
    pcm = tone(440, 0.1)
    assert LineFrontEnd(8000, 8000, None).process(pcm) == pcm
    assert LineFrontEnd(8000, 8000, -70.0).process(pcm) != pcm


def test_a_rate_that_is_not_a_whole_multiple_is_refused() -> None:
    with pytest.raises(ValueError, match="integer factor"):
        LineFrontEnd(8000, 11025)
