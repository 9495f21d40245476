"""Real calls into `ivr run` from sipp on loopback: a menu walked by RFC 2833, SIP INFO and in-band tones,
the prompt audio on the wire checked from a packet capture, and each call in `ivr calls` with its path."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env

SIPP = Path(__file__).parent / "sipp"
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

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
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


def sipp(scenario: Path, sip_port: int, workdir: Path, service: str = "500", timeout: int = 40) -> None:
    cmd = ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(scenario), "-s", service, "-m", "1",
           "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()),
           "-timeout", f"{timeout}s", "-timeout_error", "-nostdin", "-trace_err", "-trace_msg"]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)
    if r.returncode != 0:
        traces = "\n".join(p.read_text(errors="replace")[-4000:] for p in workdir.glob("*_*.log"))
        raise AssertionError(f"sipp exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n{traces}")


def last_call(env: Env) -> dict[str, Any]:
    calls = env.calls()
    assert calls, "no call recorded"
    return calls[-1]


def events_of(env: Env, call_id: str) -> list[Any]:
    return asyncio.run(read_events(env.state / "ivr.db", call_id))


def test_menu_by_rfc2833(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    sipp(SIPP / "call_rfc2833.xml", port, env.root)
    call = last_call(env)
    assert call["channel"] == "sip" and call["flow"] == "keys"
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup"
    events = events_of(env, call["call_id"])
    answered = next(e for e in events if e.type == "sip.answered")
    assert answered.data["codec"] == "PCMU" and answered.data["telephone_event"] is True
    assert answered.data["from"] == "+15555550142" and answered.data["to"] == "500"
    dtmf = [e.data for e in events if e.type == "input.dtmf"]
    assert dtmf == [{"digit": "2", "source": "rfc4733"}]
    assert next(e for e in events if e.type == "sip.ended").data["by"] == "ivr"


def test_menu_by_sip_info(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    sipp(SIPP / "call_info.xml", port, env.root)
    call = last_call(env)
    assert call["path"] == ["menu", "two"]
    dtmf = [e.data for e in events_of(env, call["call_id"]) if e.type == "input.dtmf"]
    assert dtmf == [{"digit": "2", "source": "info"}]


def test_menu_by_inband_tones(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    tone = env.root / "two.ul"
    # "2" is 697 Hz + 1336 Hz; 200 ms of tone then silence, µ-law, made by sox (an independent encoder).
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(tone),
                    "synth", "0.2", "sine", "697", "synth", "0.2", "sine", "mix", "1336", "gain", "-8",
                    "pad", "0", "0.3"], check=True)
    scenario = env.root / "call_inband.xml"
    scenario.write_text((SIPP / "call_inband.xml").read_text().replace("TONE_FILE", str(tone)))
    sipp(scenario, port, env.root)
    call = last_call(env)
    assert call["path"] == ["menu", "two"]
    events = events_of(env, call["call_id"])
    assert next(e for e in events if e.type == "sip.answered").data["telephone_event"] is False
    dtmf = [e.data for e in events if e.type == "input.dtmf"]
    assert dtmf == [{"digit": "2", "source": "inband"}]
