"""What the CLI says about the running daemon (issue #18, items 4, 5 and 10): ``ivr simulate --live`` goes by
the daemon's own transfer settings, ``ivr reload`` of a broken edit prints its problems like ``ivr check``,
and ``ivr status | head`` is not a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import REPO, Env
from tests.test_simulate_input import run_closed_stdout

VIP = "+15550101234"  # main.yaml sends this caller straight to vip_transfer (failure: check_hours)


@pytest.fixture
def daemon(env: Env) -> Iterator[Callable[..., Env]]:
    procs: list[subprocess.Popen[str]] = []

    def start(extra: str = "") -> Env:
        with env.config.open("a", encoding="utf-8") as f:
            f.write(extra)
        log = env.root / "daemon.log"
        proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                                stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        procs.append(proc)
        sock = env.state / "ivr.sock"
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert sock.exists(), log.read_text()
        return env

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_live_transfer_without_transfer_section_fails_as_a_real_call_does(daemon: Callable[..., Env]) -> None:
    env = daemon()
    r = env.ivr("simulate", "main", "--live", "--caller", VIP)
    assert r.code == 0, r.err
    assert "  ⇒ transfer to extension 2100: not placed, transfer not configured (no transfer: section)" in r.out
    assert "outcome: transferred" not in r.out
    assert "[check_hours]" in r.out  # the node's failure target, as a real call on this daemon takes
    [call] = env.calls()
    assert call["path"][:4] == ["greet", "vip", "vip_transfer", "check_hours"]


def test_live_transfer_with_transfer_section_says_what_it_fakes(daemon: Callable[..., Env]) -> None:
    env = daemon("transfer: {mode: bridge}\n")
    r = env.ivr("simulate", "main", "--live", "--caller", VIP)
    assert r.code == 0, r.err
    assert ("  ⇒ transfer to extension 2100 (simulated: a real call would go by transfer.mode bridge; nothing is "
            "placed, the transfer is taken as done)") in r.out
    assert "outcome: transferred (extension 2100)" in r.out


def test_reload_of_a_broken_edit_prints_the_problems(daemon: Callable[..., Env]) -> None:
    env = daemon()
    version = env.ivr("status").json()["version"]
    (env.flows / "survey.yaml").write_text("flow: survey\nstart: a\nnodes:\n  a: {goto: b}\n", encoding="utf-8")
    r = env.ivr("reload")
    assert r.code == 1
    lines = r.err.splitlines()
    assert any(re.fullmatch(r"\S*flows/survey\.yaml:4:\d+: unknown node 'b'", line) for line in lines), r.err
    assert lines[-1] == f"reload rejected: {len(lines) - 1} problem{'s' if len(lines) > 2 else ''} found; " \
                        f"still serving version {version}"
    assert r.json()["ok"] is False and "problems" not in r.json()


def test_status_into_a_closed_pipe_is_quiet(daemon: Callable[..., Env]) -> None:
    env = daemon()
    p = run_closed_stdout(env, "status")
    assert p.returncode == 1 and p.stderr == ""
