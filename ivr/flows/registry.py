"""Build a complete, checked, rendered FlowSet — or a FlowError listing every problem. Nothing in between."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ivr.config import Config
from ivr.errors import FlowError
from ivr.flows import checks, loader
from ivr.flows.model import FlowSet
from ivr.flows.prompts import RenderSettings, render_flowset


async def load_flowset(paths: list[Path], config: Config, *, render: bool = True) -> FlowSet:
    loaded = loader.load(paths, site_timezone=config.timezone)
    problems = loaded.problems + checks.check(loaded)
    if problems:
        raise FlowError(problems)
    flowset = loader.to_flowset(loaded)
    if not render:
        return flowset
    settings = RenderSettings(cache_dir=config.prompt_cache, target_rms_db=config.target_rms_db)
    library, problems = await render_flowset(flowset, settings)
    if problems:
        raise FlowError(problems)
    return dataclasses.replace(flowset, library=library)


def summary(flowset: FlowSet) -> str:
    nodes = sum(len(f.nodes) for f in flowset.flows.values())
    prompts = len(flowset.library.audio) if flowset.library else 0
    return (f"ok: {len(flowset.flows)} flows, {nodes} nodes, {len(flowset.schedules)} schedules, "
            f"{prompts} prompt renderings, version {flowset.version}")
