"""The prompts docs/asterisk's sample dialplan and queues.conf play on the PBX, rendered by the appliance.

Asterisk plays them from its sounds folder; without them ``Read()`` hears no "press 1" and every callback is
declined. ``ivr pbx-prompts DIR`` writes each one as ``DIR/<name>.wav`` (8 kHz 16-bit mono) with the same
espeak-ng + sox pipeline as the flows' prompts (ivr.adapters.render).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.adapters.render import render_wav
from ivr.flows.model import PromptVariant

__all__ = ["PBX_PROMPTS", "render_pbx_prompts"]

#: sound name as the dialplan plays it (relative to the sounds folder, no extension) → English text
PBX_PROMPTS: dict[str, str] = {
    "custom/callback-press-1": "Hello, this is your callback. To be connected to an agent now, press 1.",
    "custom/press-1-for-callback": "To keep your place in line and be called back, press 1 at any time.",
}


async def render_pbx_prompts(folder: Path, *, voice: str = "en", target_rms_db: float = -20.0) -> list[Path]:
    """Every ``PBX_PROMPTS`` entry as ``folder/<name>.wav``; the files written, in ``PBX_PROMPTS`` order."""
    paths = [folder / f"{name}.wav" for name in PBX_PROMPTS]
    await asyncio.gather(*(render_wav(PromptVariant("say", text, "en", voice), path, target_rms_db)
                           for text, path in zip(PBX_PROMPTS.values(), paths, strict=True)))
    return paths
