"""``ivr simulate --live`` honours the simulator's options or refuses them (issue #12, defect 14).

``--wait`` was dropped on the way to the daemon, so a callback could not be filed through the live daemon
unless its own wait estimate happened to be long: the offer never came.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Env

CALLER = "+12125550123"
FLOW = """
flow: cb
numbers: ["400"]
languages: [en]
timezone: America/New_York
start: q
prompts:
  hold: "Please hold."
nodes:
  q:
    queue:
      name: support
      prompt: hold
      callback: {min_wait_seconds: 120}
"""
#: any hour of the day is inside the calling window, so the offer does not depend on when the test runs
CALLBACKS = ("callbacks: {zone: America/New_York, windows: [{start: '00:00', end: '24:00'}],"
             " dial: {proxy: '127.0.0.1:9'}}\n")


def start_daemon(env: Env) -> subprocess.Popen[str]:
    (env.flows / "cb.yaml").write_text(FLOW, encoding="utf-8")
    log = env.root / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)
    sock = env.state / "ivr.sock"
    deadline = time.monotonic() + 60
    while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert sock.exists(), log.read_text()
    return proc


@pytest.fixture
def daemon(env: Env) -> Iterator[Callable[..., Env]]:
    proc: subprocess.Popen[str] | None = None

    def start(extra: str = "") -> Env:
        nonlocal proc
        with env.config.open("a", encoding="utf-8") as f:
            f.write(extra)
        proc = start_daemon(env)
        return env

    yield start
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_live_wait_files_a_real_callback_through_the_daemon(daemon: Callable[..., Env]) -> None:
    env = daemon(CALLBACKS)
    r = env.ivr("simulate", "cb", "--live", "--wait", "support=600", "--caller", CALLER, "-i", "1", "-i", "1")
    assert r.code == 0, r.err
    assert "  ☏ callback offer: made (ok, wait about 8-12 min)" in r.out.splitlines()
    assert "outcome: callback" in r.out
    listed = env.ivr("callbacks", "list", "--all", "--json").json()
    assert [(c["queue"], c["number"]) for c in listed] == [("support", CALLER)]  # the daemon's own queue


def test_live_refuses_what_it_cannot_honour(daemon: Callable[..., Env]) -> None:
    env = daemon(CALLBACKS)
    r = env.ivr("simulate", "cb", "--live", "--at", "2026-12-01T10:00", "-i", "1")
    assert r.code == 2 and "--at cannot be used with --live" in r.err
    r = env.ivr("simulate", "cb", "--live", "--json", "-i", "1")
    assert r.code == 2 and "--json cannot be used with --live" in r.err
    r = env.ivr("simulate", "cb", "--live", "--wait", "support", "-i", "1")
    assert r.code == 2 and "bad --wait 'support'" in r.err
    assert env.ivr("callbacks", "list", "--all", "--json").json() == []


def test_live_wait_without_callbacks_says_why(daemon: Callable[..., Env]) -> None:
    env = daemon()
    r = env.ivr("simulate", "cb", "--live", "--wait", "support=600", "-i", "1", "-i", "1")
    assert r.code == 2 and "this daemon offers no callbacks" in r.err
