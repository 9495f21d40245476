"""On built-in defaults (no config file), as a newcomer runs it from a fresh clone (issue #18, items 8 and 12):
the README's "Try a flow without a phone" commands run as written, and the commands that only look at flows
or try them leave nothing in the folder they are run from."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$XDG_CACHE_HOME for these runs, shared so the prompts are rendered once."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A folder holding a copy of the repository's flows, as a fresh clone has them (no var/, no config)."""
    shutil.copytree(REPO / "flows", tmp_path / "flows")
    return tmp_path


def ivr(cwd: Path, user_cache: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("IVR_CONFIG", "CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "CACHE_DIRECTORY",
                        "RUNTIME_DIRECTORY")}
    env |= {"PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(user_cache)}
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300, check=False)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_check_graph_and_simulate_leave_nothing_where_they_run(clone: Path, user_cache: Path) -> None:
    before = files(clone)
    r = ivr(clone, user_cache, "check")
    assert r.returncode == 0 and r.stdout.startswith("ok: "), r.stderr
    r = ivr(clone, user_cache, "graph", "main", "-o", "main.dot")
    assert r.returncode == 0, r.stderr
    assert files(clone) == before | {"main.dot"}  # no var/, no prompt cache
    r = ivr(clone, user_cache, "simulate", "main", "--at", "2026-12-01T10:00", "-i", "hangup", "--json")
    assert r.returncode == 0, r.stderr
    assert files(clone) == before | {"main.dot"}
    assert (user_cache / "edge-ivr" / "simulate.db").is_file()
    assert any((user_cache / "edge-ivr" / "cache" / "prompts").iterdir())
    r = ivr(clone, user_cache, "calls", "--simulated")  # the simulated call is where `ivr calls` looks
    assert r.returncode == 0 and "main@" in r.stdout and "caller_hangup" in r.stdout, r.stdout
    # Once ./var exists (the daemon ran, or an emergency switch was thrown), it is the state folder again.
    assert ivr(clone, user_cache, "closed", "office", "on").returncode == 0
    r = ivr(clone, user_cache, "simulate", "main", "--at", "2026-12-01T10:00", "-i", "hangup")
    assert r.returncode == 0 and "emergency switch" in r.stdout, r.stdout
    assert (clone / "var" / "simulate.db").is_file()


def readme_try_commands() -> list[str]:
    """The fenced block under "## Try a flow without a phone", one command a line, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Try a flow without a phone", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = []
    for line in block.group(1).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a shell comment starts a word: `1234567#` is a key
        if line:
            commands.append(line)
    return commands


def test_readme_try_commands_run_as_written(clone: Path, user_cache: Path) -> None:
    commands = readme_try_commands()
    assert len(commands) >= 10 and all(c.startswith(".venv/bin/ivr ") for c in commands), commands
    for command in commands:
        args = shlex.split(command)[1:]
        r = ivr(clone, user_cache, *args)  # --interactive reads an empty stdin: the caller hangs up
        assert r.returncode == 0 and "Traceback" not in r.stderr, f"{command}\n{r.stdout}\n{r.stderr}"
        if "wav:" in command:
            assert "accepted '예약'" in r.stdout and "outcome: transferred (queue reservations)" in r.stdout, r.stdout
        if "--wait" in command:
            assert "callback offer: made" in r.stdout and "outcome: callback" in r.stdout, r.stdout
