"""Prompt rendering with real sox and espeak-ng: any common format in, one loudness out, 20 ms G.711
frames, cached by content; a file sox cannot read is a check error at the prompt's line."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import Env

FLOW = """
flow: sounds
default: true
languages: [en, de]
start: a
prompts:
  loud: {file: loud.flac}
  quiet: {file: quiet.wav}
  spoken: {say: {en: "Hello there.", de: "Guten Tag."}}
nodes:
  a:
    play: [loud, quiet, spoken]
    next: b
  b:
    hangup: true
"""


def rms_db(ulaw: bytes, tmp: Path) -> float:
    raw = tmp / "x.ul"
    raw.write_bytes(ulaw)
    stats = subprocess.run(["sox", "-t", "raw", "-e", "u-law", "-r", "8000", "-c", "1", str(raw), "-n", "stats"],
                           capture_output=True, text=True, check=True).stderr
    return float(re.search(r"RMS lev dB\s+(-?[\d.]+)", stats).group(1))  # type: ignore[union-attr]


def test_files_and_tts_become_normalised_frames(empty_env: Env) -> None:
    env = empty_env
    # A loud 44.1 kHz stereo FLAC and a quiet 16 kHz WAV: both must come out 8 kHz at about -20 dBFS RMS.
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", str(env.flows / "loud.flac"),
                    "synth", "1.03", "sine", "440", "gain", "-3"], check=True)
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(env.flows / "quiet.wav"),
                    "synth", "0.5", "sine", "700", "gain", "-35"], check=True)
    (env.flows / "sounds.yaml").write_text(FLOW)
    r = env.ivr("check")
    assert r.code == 0, r.out + r.err

    import asyncio

    from ivr.config import load_config
    from ivr.flowset import load_flowset

    flowset = asyncio.run(load_flowset([env.flows], load_config(str(env.config))))
    lib = flowset.library
    assert lib is not None
    flow = flowset.flows["sounds"]
    loud, quiet = lib.get(flow, "loud", "en"), lib.get(flow, "quiet", "en")
    assert abs(loud.duration - 1.04) < 0.011 and len(loud.ulaw) % 160 == 0  # padded to whole frames
    assert all(len(f) == 160 for f in loud.frames("ulaw")) and len(loud.frames("alaw")) == len(loud.frames())
    assert abs(rms_db(loud.ulaw, env.root) - -20) < 1.5
    assert abs(rms_db(quiet.ulaw, env.root) - -20) < 1.5
    # Per-language TTS: two different renderings; a language without a variant falls back to the first.
    assert lib.get(flow, "spoken", "de").ulaw != lib.get(flow, "spoken", "en").ulaw
    assert lib.get(flow, "loud", "de") is loud
    # The A-law and µ-law renderings are the same audio.
    assert len(loud.alaw) == len(loud.ulaw) and loud.alaw != loud.ulaw


def test_rendering_is_cached_by_content(empty_env: Env, prompt_cache: Path) -> None:
    env = empty_env
    (env.flows / "x.yaml").write_text(
        'flow: x\ndefault: true\nstart: a\nprompts: {p: "A sentence only this test renders."}\n'
        "nodes: {a: {hangup: p}}\n")
    before = set(os.listdir(prompt_cache))
    assert env.ivr("check").code == 0
    added = set(os.listdir(prompt_cache)) - before
    assert len(added) == 2  # one µ-law and one A-law file
    stamp = {f: (prompt_cache / f).stat().st_mtime_ns for f in added}
    assert env.ivr("check").code == 0
    assert {f: (prompt_cache / f).stat().st_mtime_ns for f in added} == stamp  # not rendered again


def test_unreadable_audio_file_is_a_check_error(empty_env: Env) -> None:
    env = empty_env
    (env.flows / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    (env.flows / "x.yaml").write_text(
        "flow: x\ndefault: true\nstart: a\nprompts:\n  p: {file: broken.wav}\nnodes: {a: {hangup: p}}\n")
    r = env.ivr("check")
    assert r.code == 1
    assert re.search(r"x\.yaml:5:3: cannot render prompt 'p' \(en\): sox failed: .+", r.out), r.out
