"""A first start renders every prompt (~35 s for the samples): the console and the journal show how far it is,
so nobody takes the box for hung (issue 18 item 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ivr.adapters import render
from ivr.config import Config
from ivr.flows.registry import load_flowset
from tests.conftest import REPO


async def test_rendering_prompts_reports_its_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "PROGRESS_EVERY", 0.2)
    config = Config(site_id="t", state_dir=tmp_path, prompt_cache_dir=tmp_path / "cold-cache",
                    flows_dir=REPO / "flows")
    with caplog.at_level(logging.INFO, logger="ivr.render"):
        await load_flowset([REPO / "flows"], config)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rendering prompts:")]
    assert lines, "no progress while every prompt was rendered from scratch"
    done = [int(line.split()[2]) for line in lines]
    assert done == sorted(done) and done[-1] <= int(lines[-1].split()[4])
