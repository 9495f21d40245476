"""Rendering prompt audio with sox and espeak-ng, once per flow version, before it is switched in.

Text is spoken by espeak-ng, files are read by sox; both are resampled to 8 kHz mono, brought to one
loudness (RMS, with sox's limiter guarding boosts) and encoded to µ-law and A-law by sox. Results are
cached on disk by content hash, so a reload re-renders only what changed and no call ever synthesises or
encodes audio. The flow model (ivr.flows.prompts) says what to render; this adapter runs the programs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.errors import Problem
from ivr.flows.model import Flow, FlowSet, Pos, PromptVariant
from ivr.flows.prompts import ALAW_SILENCE, FRAME_BYTES, ULAW_SILENCE, Audio, PromptLibrary, needed_variants

log = logging.getLogger("ivr.render")

RENDER_VERSION = "2"  # bump when the pipeline changes, to invalidate caches


@dataclass(frozen=True)
class RenderSettings:
    cache_dir: Path
    target_rms_db: float = -20.0
    jobs: int = max(1, os.cpu_count() or 1)


def cache_key(v: PromptVariant, settings: RenderSettings) -> str:
    h = hashlib.sha256()
    h.update(f"{RENDER_VERSION}\0{v.kind}\0{v.voice}\0{settings.target_rms_db}\0".encode())
    if v.kind == "file":
        h.update(Path(v.source).read_bytes())
    else:
        h.update(v.source.encode())
    return h.hexdigest()[:24]


async def render_flowset(flowset: FlowSet, settings: RenderSettings) -> tuple[PromptLibrary, list[Problem]]:
    """Render (or take from the cache) every prompt of every flow; problems instead of exceptions."""
    missing = [tool for tool in ("sox", "espeak-ng") if shutil.which(tool) is None]
    if missing:
        first = next(iter(flowset.flows.values()), None)
        file = first.file if first else "."
        return PromptLibrary(), [Problem(file, 1, 1, f"{', '.join(missing)} not installed: prompts cannot be "
                                         f"rendered (apt-get install {' '.join(missing)})")]
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    sem = asyncio.Semaphore(settings.jobs)
    library = PromptLibrary()
    problems: list[Problem] = []
    rendered: dict[str, asyncio.Task[tuple[bytes, bytes] | str]] = {}

    async def one(key: str, v: PromptVariant) -> tuple[bytes, bytes]:
        async with sem:
            return await _render_cached(key, v, settings)

    jobs: list[tuple[Flow, str, str, PromptVariant, Pos, asyncio.Task[tuple[bytes, bytes] | str]]] = []
    async with asyncio.TaskGroup() as tg:
        for flow in flowset.flows.values():
            for (name, lang), (v, pos) in needed_variants(flow).items():
                try:
                    key = cache_key(v, settings)
                except OSError as exc:
                    problems.append(Problem(pos.file, pos.line, pos.column, f"cannot read prompt file: {exc}"))
                    continue
                if key not in rendered:
                    rendered[key] = tg.create_task(_guard(one(key, v)))
                jobs.append((flow, name, lang, v, pos, rendered[key]))
        reporter = tg.create_task(_report_progress(list(rendered.values())))
        await asyncio.wait(rendered.values())
        reporter.cancel()
    for flow, name, lang, v, pos, task in jobs:
        result = task.result()
        if isinstance(result, str):
            problems.append(Problem(pos.file, pos.line, pos.column,
                                    f"cannot render prompt '{name}' ({lang}): {result}"))
            continue
        ulaw, alaw = result
        text = v.source if v.kind == "say" else os.path.relpath(v.source)
        library.audio[(flow.name, name, lang)] = Audio(name, lang, text, ulaw, alaw)
    return library, problems


PROGRESS_EVERY = 5.0
"""Seconds between progress lines while prompts render (a first start renders every prompt: ~35 s for the
samples), so a console or journal never looks hung."""


async def _report_progress(tasks: list[asyncio.Task[tuple[bytes, bytes] | str]]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        done = sum(t.done() for t in tasks)
        log.info("rendering prompts: %d of %d done (rendered audio is cached: later starts take seconds)", done,
                 len(tasks))


async def _guard(coro: Coroutine[Any, Any, tuple[bytes, bytes]]) -> tuple[bytes, bytes] | str:
    """A render's audio, or why it failed (so one bad prompt does not cancel the others)."""
    try:
        return await coro
    except _RenderFailed as exc:
        return str(exc)


class _RenderFailed(Exception):
    pass


async def _run(*args: str, stdin: bytes | None = None) -> tuple[bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        raise _RenderFailed(f"{args[0]} failed: {msg[-1] if msg else f'exit {proc.returncode}'}")
    return out, err


async def _render_cached(key: str, v: PromptVariant, settings: RenderSettings) -> tuple[bytes, bytes]:
    ulaw_path = settings.cache_dir / f"{key}.ulaw"
    alaw_path = settings.cache_dir / f"{key}.alaw"
    if ulaw_path.is_file() and alaw_path.is_file():
        return ulaw_path.read_bytes(), alaw_path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="ivr-prompt-") as tmp:
        t = Path(tmp)
        pcm, gain = await _leveled_pcm(v, t, settings.target_rms_db)
        encoded = []
        for law, silence in (("u-law", ULAW_SILENCE), ("a-law", ALAW_SILENCE)):
            out = t / f"out.{law}"
            await _run("sox", str(pcm), "-t", "raw", "-e", law, "-b", "8", "-r", "8000", "-c", "1", str(out),
                       *_gain_effect(gain))
            data = out.read_bytes()
            pad = (-len(data)) % FRAME_BYTES
            encoded.append(data + silence * pad)
    for path, data in ((ulaw_path, encoded[0]), (alaw_path, encoded[1])):
        tmp_path = path.with_suffix(path.suffix + ".tmp")
        tmp_path.write_bytes(data)
        os.replace(tmp_path, path)
    return encoded[0], encoded[1]


async def _leveled_pcm(v: PromptVariant, t: Path, target_rms_db: float) -> tuple[Path, float]:
    """The prompt as 8 kHz 16-bit mono PCM in folder ``t``, and the gain in dB that brings it to
    ``target_rms_db`` (bounded to +-30 dB; 0 for silence)."""
    if v.kind == "say":
        src = t / "tts.wav"
        await _run("espeak-ng", "-v", v.voice, "-w", str(src), "--stdin", stdin=v.source.encode())
    else:
        src = Path(v.source)
    pcm = t / "pcm.wav"
    await _run("sox", str(src), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(pcm))
    _, stats = await _run("sox", str(pcm), "-n", "stats")
    m = re.search(rb"RMS lev dB\s+(-?[\d.]+|-inf)", stats)
    rms = float(m.group(1)) if m and m.group(1) != b"-inf" else None
    gain = 0.0 if rms is None else max(-30.0, min(30.0, target_rms_db - rms))
    return pcm, gain


def _gain_effect(gain: float) -> list[str]:
    # Boosts go through sox's limiter so peaks cannot clip; cuts need none (and sox misreads "gain -l"
    # followed by a negative number).
    return ["gain", "-l", f"{gain:.2f}"] if gain > 0 else ["gain", f"{gain:.2f}"]


async def render_wav(v: PromptVariant, out: Path, target_rms_db: float = -20.0) -> None:
    """One prompt as an 8 kHz 16-bit mono WAV file (what Asterisk's format_wav plays) at the loudness of the
    appliance's own prompts, for the PBX's sounds folder (``ivr pbx-prompts``). RuntimeError when espeak-ng
    or sox fails."""
    with tempfile.TemporaryDirectory(prefix="ivr-prompt-") as tmp:
        t = Path(tmp)
        try:
            pcm, gain = await _leveled_pcm(v, t, target_rms_db)
            part = t / "out.wav"
            await _run("sox", str(pcm), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(part),
                       *_gain_effect(gain))
        except _RenderFailed as exc:
            raise RuntimeError(str(exc)) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(out.name + ".tmp")
        shutil.copyfile(part, tmp_out)
        os.replace(tmp_out, out)
