"""Shared fixtures: a private config + state dir per test, the sample flows copied in, one prompt cache."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class SteppingClock:
    """A ``now()`` whose every reading is one second later, so arrival, consent and commit times differ."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


@dataclass
class Env:
    root: Path
    config: Path
    flows: Path
    state: Path

    def ivr(self, *args: str) -> Result:
        """Run the ``ivr`` command in-process against this environment's config."""
        from ivr.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(self.config), *args])
        return Result(code, out.getvalue(), err.getvalue())

    def calls(self, *, simulated: bool = False) -> list[dict[str, Any]]:
        """``ivr calls --json`` (``simulated``: the calls ``ivr simulate`` recorded apart, ``--simulated``)."""
        return self.ivr("calls", "--json", "--last", "1000", *(["--simulated"] if simulated else [])).json()


@pytest.fixture(scope="session")
def prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompt-cache")


def make_env(root: Path, prompt_cache: Path, flows_src: Path | None = REPO / "flows") -> Env:
    flows = root / "flows"
    if flows_src is not None:
        shutil.copytree(flows_src, flows)
    else:
        flows.mkdir()
    state = root / "var"
    config = root / "ivr.yaml"
    config.write_text(
        f"site: {{id: test-site, timezone: America/New_York}}\n"
        f"state_dir: {state}\n"
        f"flows_dir: {flows}\n"
        f"prompts: {{cache_dir: {prompt_cache}}}\n"
        f"sip: {{listen: '127.0.0.1:0', rtp_ports: 31000-31999}}\n"
        # Daemons of parallel tests (and worktrees) would collide on the default 127.0.0.1:9464.
        f"metrics: {{listen: '127.0.0.1:0'}}\n"
        # The 550 MB speech model loads only in the tests about speech (they turn it on).
        f"speech: {{enabled: false}}\n",
        encoding="utf-8",
    )
    return Env(root, config, flows, state)


@pytest.fixture
def env(tmp_path: Path, prompt_cache: Path) -> Env:
    return make_env(tmp_path, prompt_cache)


@pytest.fixture
def empty_env(tmp_path: Path, prompt_cache: Path) -> Env:
    return make_env(tmp_path, prompt_cache, flows_src=None)
