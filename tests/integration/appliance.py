"""`ivr run` started for a test, on loopback, with a small "keys" flow beside the sample flows."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.conftest import Env

KEYS_FLOW = """
flow: keys
numbers: ["500"]
start: menu
prompts:
  menu: "Welcome to the test line. Press 2 for two."
  two: "You chose two. Goodbye."
nodes:
  menu:
    menu: {prompt: menu, timeout: 8, options: {2: two}}
  two:
    hangup: two
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_appliance(env: Env, prefix: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start the daemon with the keys flow; (process, SIP port, daemon log) once it answers `ivr status`.
    ``prefix`` runs it under another command (``ip netns exec NAME``). The caller stops it
    (:func:`stop_appliance`); a failed start is killed here."""
    (env.flows / "keys.yaml").write_text(KEYS_FLOW, encoding="utf-8")
    log = env.root / "daemon.log"
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=Path(__file__).parents[2])
    sip_port = 0
    deadline = time.monotonic() + 120  # a cold prompt cache renders every sample prompt and spoken-value fragment
    while time.monotonic() < deadline and proc.poll() is None:
        r = env.ivr("status") if (env.state / "ivr.sock").exists() else None
        if r is not None and r.code == 0 and r.json().get("sip"):
            sip_port = int(r.json()["sip"].rsplit(":", 1)[1])
            break
        time.sleep(0.2)
    while time.monotonic() < deadline and proc.poll() is None:  # the speech model loads in the background
        speech = env.ivr("status").json().get("speech")
        if not speech or speech.get("state") != "loading":
            break
        time.sleep(0.2)
    if not sip_port or proc.poll() is not None:
        proc.kill()
        raise AssertionError(log.read_text())
    return proc, sip_port, log


def run_appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    """Start the daemon, yield (env, SIP port, daemon log), stop it with SIGTERM (bounded)."""
    proc, sip_port, log = start_appliance(env)
    try:
        yield env, sip_port, log
    finally:
        stop_appliance(proc)


def stop_appliance(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (the daemon drains and exits), killed if it is not gone within ``timeout``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for_call(env: Env, timeout: float = 20.0) -> dict[str, object]:
    """The last recorded call once its outcome is written (the record is committed at hang-up)."""
    calls: list[dict[str, object]] = []
    for _ in range(int(timeout / 0.2) + 1):
        calls = env.calls()
        if calls and calls[-1].get("outcome"):
            break
        time.sleep(0.2)
    assert calls and calls[-1].get("outcome"), f"no finished call recorded: {calls}"
    return calls[-1]
