"""G.711 against the standard's table entries, round-trip properties and sox as an outside reference."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.proto import g711

FIXTURES = Path(__file__).parent / "fixtures"
ALL_CODES = bytes(range(256))


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def unpcm(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))


# --- table entries (G.711 tables 1a/2a, as expanded by G.191 and every codec derived from it) ---


@pytest.mark.parametrize(
    ("code", "linear"),
    [
        (0xFF, 0),  # +0: all bits inverted
        (0x7F, 0),  # -0
        (0xFE, 8),
        (0x7E, -8),
        (0xF0, 120),
        (0xEF, 132),  # first code of segment 1
        (0x80, 32124),  # +max
        (0x00, -32124),  # -max
        (0x8F, 16764),  # top of segment 7 range start
        (0x9F, 8316),
    ],
)
def test_ulaw_table_entries(code: int, linear: int) -> None:
    assert g711.ulaw_decode_sample(code) == linear
    assert unpcm(g711.ulaw_decode(bytes([code]))) == [linear]


@pytest.mark.parametrize(
    ("code", "linear"),
    [
        (0xD5, 8),  # smallest positive: 0x80 with the even bits inverted (0x55)
        (0x55, -8),
        (0xD4, 24),
        (0xC5, 264),  # segment 1 starts at 256 (+half step 8)
        (0xAA, 32256),  # +max
        (0x2A, -32256),
        (0x00, -5504),  # 0x00 ^ 0x55 = segment 5
        (0x80, 5504),
    ],
)
def test_alaw_table_entries(code: int, linear: int) -> None:
    assert g711.alaw_decode_sample(code) == linear
    assert unpcm(g711.alaw_decode(bytes([code]))) == [linear]


def test_silence_codes() -> None:
    assert g711.ulaw_encode(pcm(0, 0)) == bytes([g711.ULAW_SILENCE] * 2) == b"\xff\xff"
    assert g711.alaw_encode(pcm(0, 0)) == bytes([g711.ALAW_SILENCE] * 2) == b"\xd5\xd5"
    assert g711.alaw_encode(pcm(-1)) == b"\x55"  # smallest negative level, even-bit inverted


def test_sign_handling_is_symmetric() -> None:
    for code in range(128):
        assert g711.ulaw_decode_sample(code) == -g711.ulaw_decode_sample(code | 0x80)
        assert g711.alaw_decode_sample(code) == -g711.alaw_decode_sample(code | 0x80)
    # The encoders follow G.191: negatives use the one's complement, so -1 behaves like +0.
    assert g711.ulaw_encode(pcm(-1)) == b"\x7f"
    assert g711.ulaw_encode(pcm(100)) == bytes([g711.ulaw_encode(pcm(-101))[0] | 0x80])


def test_clipping() -> None:
    assert g711.ulaw_encode(pcm(32767, 32635, -32768, -32636)) == b"\x80\x80\x00\x00"
    assert g711.alaw_encode(pcm(32767, -32768)) == b"\xaa\x2a"


def test_decode_encode_round_trip_every_code() -> None:
    ulaw_back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    assert ulaw_back == ALL_CODES.replace(b"\x7f", b"\xff")  # -0 re-encodes as +0
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


def test_scalar_and_table_paths_agree_for_every_sample() -> None:
    everything = struct.pack("<65536h", *range(-32768, 32768))
    u = g711.ulaw_encode(everything)
    a = g711.alaw_encode(everything)
    for i, x in enumerate(range(-32768, 32768)):
        assert u[i] == g711.ulaw_encode_sample(x)
        assert a[i] == g711.alaw_encode_sample(x)


def test_encoders_are_monotonic_and_within_half_a_step() -> None:
    everything = list(range(-32768, 32768))
    for encode, decode, top in (
        (g711.ulaw_encode, g711.ulaw_decode, 32635),
        (g711.alaw_encode, g711.alaw_decode, 32767),
    ):
        back = unpcm(decode(encode(struct.pack("<65536h", *everything))))
        assert back == sorted(back)
        for x, y in zip(everything, back, strict=True):
            if abs(x) <= top:
                # the largest step is 1024 (µ-law) or 1024 (A-law segment 7); a value is at most
                # half a step (plus the one's-complement offset of 1..4) from its reconstruction
                step = 1024
                assert abs(x - y) <= step // 2 + 4, (x, y)
        # near zero the error bound is tight
        assert all(abs(x - y) <= 8 for x, y in zip(everything, back, strict=True) if abs(x) < 64)


@given(st.binary(max_size=400))
def test_decode_length_and_reencode_property(data: bytes) -> None:
    for encode, decode in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        linear = decode(data)
        assert len(linear) == 2 * len(data)
        assert decode(encode(linear)) == linear


def test_odd_length_pcm_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        g711.ulaw_encode(b"\x00\x01\x02")


def test_empty_and_single_sample() -> None:
    assert g711.ulaw_encode(b"") == b"" == g711.alaw_decode(b"")
    assert g711.ulaw_encode(pcm(1000)) == bytes([g711.ulaw_encode_sample(1000)])


# --- sox as an independent reference ---


def _compare_with_sox(pcm16: bytes, ours: bytes, theirs: bytes, decode: Callable[[int], int]) -> None:
    """Same code, or the neighbouring level when the sample sits on the decision boundary.

    sox rounds the 16-bit sample to 14 (µ-law) or 13 (A-law) bits before companding; the G.191
    reference truncates. So the two may pick adjacent levels for samples within a few LSBs of a
    decision threshold, and nowhere else.
    """
    samples = unpcm(pcm16)
    assert len(ours) == len(theirs) == len(samples)
    encode = {
        g711.ulaw_decode_sample: g711.ulaw_encode_sample,
        g711.alaw_decode_sample: g711.alaw_encode_sample,
    }
    for x, a, b in zip(samples, ours, theirs, strict=True):
        if a == b or decode(a) == decode(b) == 0:  # equal, or -0 versus +0
            continue
        # x lies within a few LSBs of the decision threshold between the two codes
        nearby = {encode[decode](min(max(x + d, -32768), 32767)) for d in range(-8, 9)}
        assert {a, b} <= nearby, (x, hex(a), hex(b))
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) > 0.75 * len(ours)


def test_sweep_matches_sox_fixture() -> None:
    sweep = (FIXTURES / "sweep.s16").read_bytes()
    ul = (FIXTURES / "sweep.sox.ul").read_bytes()
    al = (FIXTURES / "sweep.sox.al").read_bytes()
    _compare_with_sox(sweep, g711.ulaw_encode(sweep), ul, g711.ulaw_decode_sample)
    _compare_with_sox(sweep, g711.alaw_encode(sweep), al, g711.alaw_decode_sample)


SOX = shutil.which("sox")


def _sox(args: list[str], data: bytes) -> bytes:
    assert SOX is not None
    return subprocess.run([SOX, "-D", *args], input=data, capture_output=True, check=True).stdout


@pytest.mark.skipif(SOX is None, reason="sox not installed")
@pytest.mark.parametrize(("encoding", "decode"), [("u-law", g711.ulaw_decode), ("a-law", g711.alaw_decode)])
def test_decode_matches_live_sox(encoding: str, decode: object) -> None:
    assert callable(decode)
    theirs = _sox(
        [
            "-t",
            "raw",
            "-r",
            "8000",
            "-e",
            encoding,
            "-b",
            "8",
            "-c",
            "1",
            "-",
            "-t",
            "raw",
            "-e",
            "signed",
            "-b",
            "16",
            "-L",
            "-",
        ],
        ALL_CODES,
    )
    assert decode(ALL_CODES) == theirs


@pytest.mark.skipif(SOX is None, reason="sox not installed")
def test_tone_encode_matches_live_sox() -> None:
    tone = pcm(*(round(20000 * math.sin(2 * math.pi * 1004 * n / 8000)) for n in range(800)))
    raw16 = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", "-L", "-"]
    ul = _sox([*raw16, "-t", "raw", "-e", "u-law", "-b", "8", "-"], tone)
    al = _sox([*raw16, "-t", "raw", "-e", "a-law", "-b", "8", "-"], tone)
    _compare_with_sox(tone, g711.ulaw_encode(tone), ul, g711.ulaw_decode_sample)
    _compare_with_sox(tone, g711.alaw_encode(tone), al, g711.alaw_decode_sample)
