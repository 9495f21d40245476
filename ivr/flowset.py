"""Build a complete, checked, rendered FlowSet — or a FlowError listing every problem. Nothing in between.

The wiring between the flow language (ivr/flows: parse, check, sans-I/O) and the adapters that give a flow set
its sound (prompt rendering with sox and espeak-ng) and its ears (the speech model's vocabulary): it lives
above both, so ivr/flows imports no adapter (the import contracts in pyproject.toml)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ivr.adapters.render import RenderSettings, render_flowset
from ivr.config import Config
from ivr.errors import FlowError, Problem
from ivr.flows import checks, loader, vocabulary
from ivr.flows.model import FlowSet

log = logging.getLogger(__name__)


async def load_flowset(paths: list[Path], config: Config, *, render: bool = True,
                       notes: list[str] | None = None, warnings: list[Problem] | None = None) -> FlowSet:
    """``notes`` collects what is worth telling but not wrong (flows in a language the speech model is not
    for), ``warnings`` the flows' own oddities at their file:line:column; without them both are logged."""
    loaded = loader.load(paths, site_timezone=config.timezone)
    found = loaded.problems + checks.check(loaded) + checks.check_lookups(loaded, config.lookups)
    problems = [p for p in found if not p.warning]
    flow_warnings = sorted({p for p in found if p.warning})
    if problems:
        raise FlowError(problems, flow_warnings)
    if warnings is not None:
        warnings += flow_warnings
    else:
        for w in flow_warnings:
            log.warning("%s", w)
    flowset = loader.to_flowset(loaded)
    problems, speech_notes = speech_report(flowset, config)
    if problems:
        raise FlowError(problems, flow_warnings)
    if notes is not None:
        notes += speech_notes
    else:
        for note in speech_notes:
            log.warning("%s", note)
    if not render:
        return flowset
    settings = RenderSettings(cache_dir=config.prompt_cache, target_rms_db=config.target_rms_db)
    library, problems = await render_flowset(flowset, settings)
    if problems:
        raise FlowError(problems, flow_warnings)
    return dataclasses.replace(flowset, library=library)


def speech_model_path(config: Config) -> str | None:
    """The configured model, else the one the installed model package provides (the adapter's default)."""
    if config.speech.model_path:
        return config.speech.model_path
    from ivr.adapters.speech import default_model_path  # wiring: the adapter owns the default's location

    return default_model_path()


def speech_report(flowset: FlowSet, config: Config) -> tuple[list[Problem], list[str]]:
    """Keywords the speech model cannot hear (problems), and flows in a language the model is not for
    (notes). Nothing is read unless speech is on and some flow listens."""
    if not config.speech.enabled or not vocabulary.flows_listen(flowset):
        return [], []
    path = speech_model_path(config)
    try:
        if path is None:
            raise vocabulary.VocabularyError("no speech model: set speech.model_path or install one")
        vocab = dataclasses.replace(vocabulary.read_vocabulary(path), language=config.speech.language)
    except (vocabulary.VocabularyError, OSError) as exc:
        first = next(n for f in flowset.flows.values() for n in f.nodes.values()
                     if getattr(n.action, "speech", False))
        return [Problem(first.pos.file, first.pos.line, first.pos.column,
                        f"node '{first.name}' listens for speech, but {exc} (or set speech.enabled: false)")], []
    return vocabulary.check_vocabulary(flowset, vocab), vocabulary.language_notes(flowset, vocab)


def summary(flowset: FlowSet) -> str:
    nodes = sum(len(f.nodes) for f in flowset.flows.values())
    prompts = len(flowset.library.audio) if flowset.library else 0
    return (f"ok: {len(flowset.flows)} flows, {nodes} nodes, {len(flowset.schedules)} schedules, "
            f"{prompts} prompt renderings, version {flowset.version}")
