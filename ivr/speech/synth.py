"""Spoken test audio: espeak-ng → sox → 16-bit 8 kHz mono PCM, plus the line effects tests need.

Shared by ``tests/speech``, ``bench/speech.py`` and (later) ``ivr simulate --input``. Synthesis runs two
short subprocesses, bounded by a timeout; results are cached on disk by content hash because espeak-ng
costs ~50 ms per phrase and the benchmark speaks hundreds.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import subprocess
import tempfile
import wave
from array import array
from pathlib import Path

from ivr.proto import g711

RATE = 8000
FRAME_BYTES = 320
"""One 20 ms frame of 16-bit 8 kHz PCM."""


def available() -> bool:
    """espeak-ng and sox are both on PATH."""
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def _cache_dir() -> Path:
    root = os.environ.get("IVR_SPEECH_AUDIO_CACHE") or os.path.join(tempfile.gettempdir(), "edge-ivr-espeak")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def speak(text: str, voice: str = "ko", speed: int = 175, *, ulaw: bool = True, timeout: float = 30.0) -> bytes:
    """``text`` spoken by espeak-ng, as 16-bit 8 kHz mono PCM; ``ulaw`` adds a G.711 µ-law round trip."""
    key = hashlib.sha256(f"{voice}|{speed}|{text}".encode()).hexdigest()[:24]
    cached = _cache_dir() / f"{key}.s16"
    if cached.exists():
        pcm = cached.read_bytes()
    else:
        wav = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
            check=True, capture_output=True, timeout=timeout,
        ).stdout
        pcm = subprocess.run(
            ["sox", "-t", "wav", "-", "-r", str(RATE), "-b", "16", "-c", "1", "-e", "signed-integer",
             "-t", "raw", "-"],
            input=wav, check=True, capture_output=True, timeout=timeout,
        ).stdout
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pcm)
        tmp.replace(cached)
    return g711.ulaw_decode(g711.ulaw_encode(pcm)) if ulaw else pcm


def silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * RATE))


def noise(seconds: float, rms: float, *, seed: int = 1) -> bytes:
    """White Gaussian noise at a given RMS (in 16-bit sample units), repeatable by seed."""
    rng = random.Random(seed)
    n = round(seconds * RATE)
    return array("h", (max(-32768, min(32767, round(rng.gauss(0.0, rms)))) for _ in range(n))).tobytes()


def rms(pcm: bytes) -> float:
    samples = array("h", pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def mix(a: bytes, b: bytes, gain_b: float = 1.0, offset_b: int = 0) -> bytes:
    """``a`` plus ``b`` × ``gain_b`` starting ``offset_b`` samples into ``a``; the result has ``a``'s length."""
    xs = array("h", a)
    ys = array("h", b)
    for i, y in enumerate(ys):
        j = i + offset_b
        if j >= len(xs):
            break
        if j >= 0:
            xs[j] = max(-32768, min(32767, xs[j] + round(y * gain_b)))
    return xs.tobytes()


def add_noise(pcm: bytes, snr_db: float, *, seed: int = 1) -> bytes:
    """``pcm`` with white noise ``snr_db`` below its RMS (speech RMS over the whole clip)."""
    level = rms(pcm) / (10.0 ** (snr_db / 20.0))
    return mix(pcm, noise(len(pcm) / 2 / RATE, level, seed=seed))


def write_wav(path: Path, pcm: bytes) -> Path:
    """``pcm`` (16-bit 8 kHz mono) as a WAV file at ``path``: a caller's answer for ``ivr simulate``, or the
    audio a test phone plays."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return path


def frames(pcm: bytes) -> list[bytes]:
    """Split into 20 ms frames, the last one zero-padded."""
    if len(pcm) % FRAME_BYTES:
        pcm += bytes(FRAME_BYTES - len(pcm) % FRAME_BYTES)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
