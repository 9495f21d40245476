"""A real softphone calls `ivr run`: headless baresip dials 500, presses 2 (RFC 2833 telephone-event)
and the appliance records the call with its path, the digit and the codec baresip negotiated."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration.baresip.client import Baresip

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

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip (Debian baresip) not installed")


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    """`ivr run` on loopback with the keys flow (the same start-up as tests/integration/test_calls.py)."""
    (env.flows / "keys.yaml").write_text(KEYS_FLOW, encoding="utf-8")
    log = env.root / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    sip_port = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        r = env.ivr("status") if (env.state / "ivr.sock").exists() else None
        if r is not None and r.code == 0 and r.json().get("sip"):
            sip_port = int(r.json()["sip"].rsplit(":", 1)[1])
            break
        time.sleep(0.2)
    assert sip_port, log.read_text()
    yield env, sip_port, log
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[Baresip]:
    phone = Baresip(tmp_path)
    phone.start()
    try:
        yield phone
    finally:
        phone.stop()


def wait_for_call(env: Env, timeout: float = 20.0) -> dict[str, Any]:
    """The recorded call once its outcome is written (the record is committed at hang-up)."""
    deadline = time.monotonic() + timeout
    calls: list[dict[str, Any]] = []
    for _ in range(int(timeout / 0.2) + 1):
        calls = env.calls()
        if (calls and calls[-1].get("outcome")) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert calls and calls[-1].get("outcome"), f"no finished call recorded: {calls}"
    return calls[-1]


def test_baresip_menu_by_rfc2833(appliance: tuple[Env, int, Path], baresip: Baresip) -> None:
    env, port, log = appliance
    dialed = baresip.command("dial", f"sip:500@127.0.0.1:{port}")
    assert dialed.get("ok"), dialed
    try:
        baresip.wait_event("CALL_ESTABLISHED", timeout=15)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- daemon log ---\n{log.read_text()[-4000:]}") from None
    time.sleep(0.5)  # the menu prompt has started: the digit is a barge-in, as from a person
    sent = baresip.command("sndcode", "2")
    assert sent.get("ok"), sent
    closed = baresip.wait_event("CALL_CLOSED", timeout=20)  # the flow says goodbye and hangs up

    call = wait_for_call(env)
    assert call["channel"] == "sip" and call["flow"] == "keys"
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup", (call, closed)
    events = asyncio.run(read_events(env.state / "ivr.db", call["call_id"]))
    answered = next(e for e in events if e.type == "sip.answered")
    negotiated = re.search(r"Set audio encoder: (\S+) ", baresip.output())  # baresip's own word for it
    assert negotiated is not None, baresip.output()
    assert answered.data["codec"] == negotiated.group(1) == "PCMU"  # the only codec its account offers
    assert answered.data["from"] == "baresip"
    assert answered.data["telephone_event"] is True
    assert answered.data["to"] == "500"
    dtmf = [e.data for e in events if e.type == "input.dtmf"]
    assert dtmf == [{"digit": "2", "source": "rfc4733"}]
    assert next(e for e in events if e.type == "sip.ended").data["by"] == "ivr"
