"""Hot reload under a running daemon: new calls get the new version, a call in progress keeps its own,
and a broken edit is logged with file:line:column and ignored."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env

DEMO = """
flow: demo
numbers: ["300"]
start: hello
prompts:
  hello: "Version {v} greeting."
  menu: "Version {v} menu. Press 1 to finish."
  bye: "Version {v} goodbye."
nodes:
  hello:
    play: hello
    next: menu
  menu:
    menu:
      prompt: menu
      options: {{1: bye}}
  bye:
    hangup: bye
"""


@pytest.fixture
def daemon(env: Env) -> Iterator[tuple[Env, subprocess.Popen[str], Path]]:
    (env.flows / "demo.yaml").write_text(DEMO.format(v="one"), encoding="utf-8")
    log = env.root / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)
    sock = env.state / "ivr.sock"
    deadline = time.monotonic() + 60
    while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert sock.exists(), log.read_text()
    yield env, proc, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class LiveCall:
    """A simulated call inside the daemon, driven over the control socket."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.lines: list[str] = []
        self.result: dict[str, Any] = {}

    async def start(self, flow: str) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(str(self.sock))
        await self.send({"cmd": "simulate", "flow": flow})
        await self.until_input()

    async def send(self, obj: dict[str, Any]) -> None:
        self.writer.write(json.dumps(obj).encode() + b"\n")
        await self.writer.drain()

    async def until_input(self) -> None:
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), 30)
            assert raw, "daemon closed the call"
            msg = json.loads(raw)
            if "out" in msg:
                self.lines.append(msg["out"])
            elif "call_id" in msg:
                self.version = msg["version"]
            elif msg.get("need_input"):
                return
            elif "outcome" in msg:
                self.result = msg
                return
            else:
                raise AssertionError(msg)

    async def press(self, token: str) -> None:
        await self.send({"input": token})
        await self.until_input()


async def status(sock: Path) -> dict[str, Any]:
    from ivr.daemon import control

    return await control(sock, {"cmd": "status"})


async def wait_for(sock: Path, pred: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = await status(sock)
        if pred(st):
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {st}")


def test_edit_switches_new_calls_and_keeps_calls_in_progress(daemon: tuple[Env, Any, Path]) -> None:
    env, proc, log = daemon
    sock = env.state / "ivr.sock"

    async def scenario() -> tuple[str, str]:
        v1 = (await status(sock))["version"]
        a = LiveCall(sock)
        await a.start("demo")
        assert "  ♪ Version one menu. Press 1 to finish." in a.lines and a.version == v1

        demo = env.flows / "demo.yaml"
        demo.write_text(DEMO.format(v="two"), encoding="utf-8")
        st = await wait_for(sock, lambda s: s["version"] != v1, "the edit to load")
        v2 = st["version"]

        b = LiveCall(sock)
        await b.start("demo")
        assert "  ♪ Version two menu. Press 1 to finish." in b.lines and b.version == v2
        await b.press("1")
        assert b.result["outcome"] == "hangup" and "  ♪ Version two goodbye." in b.lines

        await a.press("1")  # the call that started before the edit finishes on its own version
        assert a.result["outcome"] == "hangup" and a.result["version"] == v1
        assert "  ♪ Version one goodbye." in a.lines

        # A broken edit: rejected, logged like `ivr check`, and version two keeps serving.
        demo.write_text(DEMO.format(v="three").replace("options: {1: bye}", "options: {1: byee}"),
                        encoding="utf-8")
        await wait_for(sock, lambda s: s["rejected_reloads"] >= 1, "the broken edit to be rejected")
        assert (await status(sock))["version"] == v2
        c = LiveCall(sock)
        await c.start("demo")
        assert "  ♪ Version two menu. Press 1 to finish." in c.lines
        await c.press("hangup")
        assert c.result["outcome"] == "caller_hangup"
        return v1, v2

    v1, v2 = asyncio.run(scenario())
    calls = env.calls()
    assert [(x["flow_version"], x["outcome"]) for x in calls] == [(v1, "hangup"), (v2, "hangup"),
                                                                   (v2, "caller_hangup")]
    text = log.read_text()
    rel = os.path.relpath(env.flows / "demo.yaml")
    assert f"{rel}:16:20: unknown node 'byee' (did you mean 'bye'?)" in text, text
    assert "reload rejected" in text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_sighup_and_reload_command(daemon: tuple[Env, Any, Path]) -> None:
    env, proc, log = daemon
    sock = env.state / "ivr.sock"
    v1 = asyncio.run(status(sock))["version"]
    r = env.ivr("status")
    assert r.code == 0 and r.json()["version"] == v1 and "demo" in r.json()["flows"]
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "SIGHUP" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "SIGHUP: reloading flows" in log.read_text()
    r = env.ivr("reload")
    assert r.code == 0 and r.json()["ok"] is True and r.json()["version"] == v1


def test_daemon_refuses_to_start_on_broken_flows(env: Env) -> None:
    (env.flows / "main.yaml").write_text("flow: main\nstart: x\nnodes: {x: {goto: y}}\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "unknown node 'y'" in r.stderr and "not starting" in r.stderr


def test_a_taken_sip_port_is_one_line_and_a_clean_exit(env: Env) -> None:
    """Issue 18 item 1 and the standard: a bind failure is one clear line naming the address and a non-zero
    exit, never a traceback or a hang; what had started is stopped and `daemon.stopped` recorded."""
    import socket
    import sqlite3

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        text = env.config.read_text()
        env.config.write_text(text.replace("listen: '127.0.0.1:0', rtp", f"listen: '127.0.0.1:{port}', rtp"))
        r = subprocess.run([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                           capture_output=True, text=True, timeout=90)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "level=error" in line]
    assert len(errors) == 1 and f"127.0.0.1', {port})" in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    with sqlite3.connect(env.state / "ivr.db") as db:
        last = db.execute("SELECT type FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
    assert last == "daemon.stopped"
