"""In-band DTMF detection against synthesized tones (ITU-T Q.24 limits), noise and real speech."""

from __future__ import annotations

import math
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ivr.proto import g711
from ivr.proto.dtmf import DTMF_DIGITS, DtmfBank, DtmfDetector, DtmfEvent, DtmfEventKind

FIXTURES = Path(__file__).parent / "fixtures"
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
PAIRS = [(KEYPAD[r][c], ROWS[r], COLS[c]) for r in range(4) for c in range(4)]
A_0DBM0 = 32768 * 10 ** (-3.17 / 20) * 1.0  # peak of a 0 dBm0 sine (G.711: full scale is +3.17 dBm0)


def amplitude(dbm0: float) -> float:
    return A_0DBM0 * 10 ** (dbm0 / 20)


def tone(
    f_low: float, f_high: float, ms: float, low_dbm0: float = -10, high_dbm0: float = -10, phase: float = 0.0
) -> list[float]:
    a, b = amplitude(low_dbm0), amplitude(high_dbm0)
    return [
        a * math.sin(2 * math.pi * f_low * k / 8000 + phase) + b * math.sin(2 * math.pi * f_high * k / 8000 + 1.0)
        for k in range(int(ms * 8))
    ]


def silence(ms: float) -> list[float]:
    return [0.0] * int(ms * 8)


def pcm(samples: list[float]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *(max(-32768, min(32767, round(v))) for v in samples))


def detect(audio: bytes | list[float], chunk: int = 160) -> list[DtmfEvent]:
    data = audio if isinstance(audio, bytes) else pcm(audio)
    detector = DtmfDetector()
    events: list[DtmfEvent] = []
    for i in range(0, len(data), 2 * chunk):
        events += detector.feed(data[i : i + 2 * chunk])
    return events


def digits(samples: list[float], lead_ms: float = 20) -> str:
    events = detect(silence(lead_ms) + samples + silence(100))
    return "".join(e.digit for e in events if e.kind is DtmfEventKind.END)


@pytest.mark.parametrize(("digit", "low", "high"), PAIRS)
def test_every_key_start_and_end(digit: str, low: float, high: float) -> None:
    events = detect(silence(40) + tone(low, high, 100) + silence(100))
    assert [(e.kind, e.digit) for e in events] == [(DtmfEventKind.START, digit), (DtmfEventKind.END, digit)]
    start, end = events
    assert start.timestamp == end.timestamp
    assert abs(start.timestamp - 320) <= 60  # the tone began 40 ms (320 samples) in
    assert abs(end.duration - 800) <= 120  # and lasted 100 ms


def test_fast_dialing_40ms_on_40ms_off() -> None:
    sequence = "".join(d for d, _, _ in PAIRS) + "159#"
    table = {d: (lo, hi) for d, lo, hi in PAIRS}
    audio: list[float] = []
    for i, d in enumerate(sequence):
        audio += tone(*table[d], 40, phase=i * 0.7) + silence(40)
    for lead in (0, 3, 11, 17, 29, 37):  # every alignment of the tones against the 5 ms decisions
        assert digits(audio, lead_ms=lead / 8) == sequence


def test_repeated_key_needs_a_pause() -> None:
    key = tone(941, 1477, 60)
    assert digits(key + silence(40) + key) == "##"
    assert digits(key + silence(10) + key) == "#"  # a 10 ms interruption is bridged


@pytest.mark.parametrize("chunk", [1, 7, 40, 80, 160, 333])
def test_any_chunk_size(chunk: int) -> None:
    audio = pcm(silence(30) + tone(770, 1336, 60) + silence(60) + tone(852, 1633, 60) + silence(100))
    assert [e.digit for e in detect(audio, chunk) if e.kind is DtmfEventKind.END] == ["5", "C"]


@pytest.mark.parametrize("deviation", [-0.015, -0.01, 0.0, 0.01, 0.015])
def test_accepts_frequency_deviation_within_1_5_percent(deviation: float) -> None:
    for digit, low, high in PAIRS:
        assert digits(tone(low * (1 + deviation), high, 60)) == digit
        assert digits(tone(low, high * (1 + deviation), 60)) == digit
        assert digits(tone(low * (1 + deviation), high * (1 - deviation), 60)) == digit


@pytest.mark.parametrize("deviation", [-0.06, -0.045, -0.035, 0.035, 0.045, 0.06])
def test_rejects_frequency_deviation_beyond_3_5_percent(deviation: float) -> None:
    for _, low, high in PAIRS:
        assert digits(tone(low * (1 + deviation), high, 80)) == ""
        assert digits(tone(low, high * (1 + deviation), 80)) == ""


@pytest.mark.parametrize("twist_db", [-4, -2, 0, 4, 8])
def test_accepts_twist_within_limits(twist_db: float) -> None:
    # positive: normal twist (high group weaker, up to 8 dB); negative: reverse (up to 4 dB)
    for digit, low, high in PAIRS:
        for phase in (0.0, 1.3, 2.9):
            assert digits(tone(low, high, 60, -10, -10 - twist_db, phase)) == digit


@pytest.mark.parametrize("twist_db", [-7, -6, 10, 12])
def test_rejects_excess_twist(twist_db: float) -> None:
    for _, low, high in PAIRS:
        assert digits(tone(low, high, 60, -10, -10 - twist_db)) == ""


def test_single_tones_are_not_digits() -> None:
    for f in ROWS + COLS + (1000.0, 2100.0):
        assert digits(tone(f, f, 200, -10, -80)) == ""


@pytest.mark.parametrize("level", [-3, -10, -20, -26, -30])
def test_level_range(level: float) -> None:
    assert digits(tone(852, 1477, 60, level, level)) == "9"


def test_too_quiet_rejected() -> None:
    assert digits(tone(852, 1477, 60, -45, -45)) == ""


@pytest.mark.parametrize("ms", [40, 45, 60])
def test_minimum_duration_accepted_at_every_alignment(ms: float) -> None:
    for lead in range(0, 40, 3):
        assert digits(tone(697, 1209, ms), lead_ms=lead / 8) == "1"


@pytest.mark.parametrize("ms", [10, 15, 20, 23])
def test_short_tones_rejected_at_every_alignment(ms: float) -> None:
    for lead in range(0, 40, 3):
        assert digits(tone(697, 1209, ms), lead_ms=lead / 8) == ""


def test_detects_in_white_noise() -> None:
    rnd = random.Random(7)
    sigma = amplitude(-17 - 12) / math.sqrt(2)  # noise 12 dB under the two tones together
    for digit, low, high in PAIRS:
        noisy = [v + rnd.gauss(0, sigma) for v in tone(low, high, 80, -20, -20)]
        assert digits(noisy) == digit


def test_noise_alone_is_silent() -> None:
    rnd = random.Random(3)
    for level in (-10, -30):
        sigma = amplitude(level) / math.sqrt(2)
        assert detect([rnd.gauss(0, sigma) for _ in range(16000)]) == []


def test_survives_g711_round_trip() -> None:
    audio = pcm(silence(20) + tone(941, 1336, 60, -26, -28) + silence(60) + tone(697, 1633, 60) + silence(80))
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        events = detect(dec(enc(audio)))
        assert [e.digit for e in events if e.kind is DtmfEventKind.END] == ["0", "A"]


def test_speech_fixture_has_no_digits() -> None:
    # espeak-ng saying digits, "star" and "pound", resampled to 8 kHz by sox (make_fixtures.sh)
    speech = (FIXTURES / "speech.s16").read_bytes()
    for gain in (0.5, 1.0, 3.0):
        samples = struct.unpack(f"<{len(speech) // 2}h", speech)
        assert detect([v * gain for v in samples]) == []


def test_digits_survive_speech_around_them() -> None:
    speech = list(struct.unpack("<4000h", (FIXTURES / "speech.s16").read_bytes()[16000:24000]))
    quiet = [v * 0.2 for v in speech]
    assert digits(quiet[:2000] + tone(770, 1477, 80) + quiet[2000:]) == "6"


ESPEAK = shutil.which("espeak-ng")
SOX = shutil.which("sox")


@pytest.mark.skipif(ESPEAK is None or SOX is None, reason="needs espeak-ng and sox")
def test_live_espeak_speech_has_no_digits(tmp_path: Path) -> None:
    assert ESPEAK is not None and SOX is not None
    wav = tmp_path / "speech.wav"
    text = "Hello, you have reached the billing department. Enter your account number followed by hash."
    subprocess.run([ESPEAK, "-s", "160", "-v", "en-us", "-w", str(wav), text], check=True, capture_output=True)
    raw = subprocess.run(
        [
            SOX,
            "-D",
            str(wav),
            "-t",
            "raw",
            "-r",
            "8000",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-L",
            "-",
            "rate",
            "8000",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert len(raw) > 8000
    assert detect(raw) == []


@pytest.mark.skipif(SOX is None, reason="needs sox")
def test_sox_synth_dtmf_pair() -> None:
    assert SOX is not None
    raw = subprocess.run(
        [
            SOX,
            "-D",
            "-n",
            "-t",
            "raw",
            "-r",
            "8000",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-L",
            "-",
            "synth",
            "0.08",
            "sine",
            "852",
            "sine",
            "1336",
            "remix",
            "1,2",
            "vol",
            "0.3",
            "pad",
            "0.05",
            "0.1",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert [e.digit for e in detect(raw) if e.kind is DtmfEventKind.END] == ["8"]


def test_odd_byte_count_rejected() -> None:
    with pytest.raises(ValueError):
        DtmfDetector().feed(b"\x00")


SPEECH = (FIXTURES / "speech.s16").read_bytes()


def _call_audio(rnd: random.Random, keys: str) -> bytes:
    """One caller: the keys at the caller's own level, twist, timing and line (noise, speech, G.711)."""
    table = {d: (lo, hi) for d, lo, hi in PAIRS}
    level = rnd.uniform(-24, -4)
    twist = rnd.uniform(-3, 7)
    audio = silence(rnd.uniform(0, 300))
    for i, key in enumerate(keys):
        audio += tone(*table[key], rnd.uniform(45, 120), level, level - twist, phase=i + rnd.random())
        audio += silence(rnd.uniform(45, 150))
    audio += silence(200)
    line = rnd.randrange(4)
    if line == 1:  # white noise 15 dB under the weaker tone
        sigma = amplitude(level - max(twist, 0) - 15) / math.sqrt(2)
        audio = [v + rnd.gauss(0, sigma) for v in audio]
    elif line == 2:  # quiet speech under the whole call
        speech = struct.unpack(f"<{len(SPEECH) // 2}h", SPEECH)
        offset = rnd.randrange(len(speech) - len(audio)) if len(speech) > len(audio) else 0
        audio = [v + 0.1 * speech[(offset + k) % len(speech)] for k, v in enumerate(audio)]
    data = pcm(audio)
    if line == 3:  # through the codec
        law = rnd.choice([(g711.alaw_encode, g711.alaw_decode), (g711.ulaw_encode, g711.ulaw_decode)])
        data = law[1](law[0](data))
    return data


def test_bank_hears_many_calls_at_once() -> None:
    """The media tick's path: 150 calls' 20 ms frames analysed together each tick, calls joining and
    leaving (slots are reused); every call's keys come out, as the same detector alone gives them."""
    rnd = random.Random(19)
    calls = 150
    keys = ["".join(rnd.choice(DTMF_DIGITS) for _ in range(rnd.randint(0, 6))) for _ in range(calls)]
    audio = [_call_audio(rnd, k) for k in keys]
    joins = [rnd.randrange(0, 40) if n % 3 == 0 else 0 for n in range(calls)]  # ticks before the call starts
    bank = DtmfBank(capacity=4)  # grows as calls come
    detectors: dict[int, DtmfDetector] = {}
    heard: dict[int, list[DtmfEvent]] = {n: [] for n in range(calls)}
    tick = 0
    while tick <= max(joins) or detectors:
        for n in range(calls):
            if joins[n] == tick:
                detectors[n] = bank.open()
            if n in detectors:
                frame = audio[n][(tick - joins[n]) * 320 : (tick - joins[n] + 1) * 320]
                detectors[n].push(frame)
        bank.run()
        for n, detector in list(detectors.items()):
            heard[n] += detector.take()
            if (tick - joins[n] + 1) * 320 >= len(audio[n]):
                detector.close()  # the call ends: its slot goes to the next one
                del detectors[n]
        tick += 1
    assert bank.open_detectors == 0
    for n in range(calls):
        assert "".join(e.digit for e in heard[n] if e.kind is DtmfEventKind.END) == keys[n], f"call {n}"
        assert heard[n] == detect(audio[n]), f"call {n}: the bank and a detector alone disagree"
