"""What systemd sees of ``ivr run`` (systemd/ivr.service is Type=notify with WatchdogSec=): the daemon started
with ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` pointing at a datagram socket the test reads, and the unit's
``StateDirectory=``/``CacheDirectory=``/``RuntimeDirectory=`` given as systemd gives them (in the environment,
with a config that names none of them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, Env, make_env


class Manager:
    """The service manager's end of sd_notify: the datagrams in arrival order, each as a dict of its lines."""

    def __init__(self) -> None:
        self.address = f"@ivr-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.messages: list[dict[str, str]] = []

    def until(self, key: str, value: str | None = None, timeout: float = 90.0) -> dict[str, str]:
        """Read datagrams until one carries ``key`` (with ``value``); AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                raw = self.sock.recv(65536)
            except TimeoutError:
                break
            msg = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
            self.messages.append(msg)
            if key in msg and (value is None or msg[key] == value):
                return msg
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.messages}")

    def drain(self, seconds: float) -> list[dict[str, str]]:
        got: list[dict[str, str]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                raw = self.sock.recv(65536)
            except TimeoutError:
                break
            got.append(dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line))
        self.messages.extend(got)
        return got

    def close(self) -> None:
        self.sock.close()


def options_answer(port: int) -> str:
    """The status line the daemon answers a SIP OPTIONS with (the health check a box's update waits for)."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:ivr@127.0.0.1:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{call_id[:10]};rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={call_id[:6]}\r\n"
                  f"To: <sip:ivr@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                  f"Contact: <sip:probe@127.0.0.1:{me}>\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        s.settimeout(5)
        return s.recv(65536).decode(errors="replace").split("\r\n", 1)[0]


def service_env(env: Env, root: Path, manager: Manager, prompt_cache: Path) -> dict[str, str]:
    """The environment systemd gives the unit, the config naming no state, cache or runtime folder."""
    text = env.config.read_text(encoding="utf-8").splitlines()
    env.config.write_text("\n".join(line for line in text if not line.startswith(("state_dir:", "prompts:")))
                          + "\n", encoding="utf-8")
    cache = root / "cache"
    cache.mkdir()
    (cache / "prompts").symlink_to(prompt_cache)  # the session's rendered prompts: a start in seconds
    for name in ("state", "run"):
        (root / name).mkdir()
    return {**os.environ, "NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000",
            "STATE_DIRECTORY": str(root / "state"), "CACHE_DIRECTORY": str(cache),
            "RUNTIME_DIRECTORY": str(root / "run")}


@pytest.fixture
def manager() -> Manager:
    m = Manager()
    yield m
    m.close()


def test_ready_only_once_it_answers_then_watchdog_reload_and_stop(tmp_path: Path, prompt_cache: Path,
                                                                   manager: Manager,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path / "box", prompt_cache)
    environ = service_env(env, tmp_path, manager, prompt_cache)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"], env=environ,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=REPO)
    try:
        ready = manager.until("READY", "1")
        steps = [m["STATUS"] for m in manager.messages[:-1] if "STATUS" in m]
        # systemctl status shows what the start is doing while the prompts render, in order
        assert any(s.startswith("loading flows") for s in steps), steps
        assert any(s.startswith("starting SIP") for s in steps), steps
        assert [s.split()[0] for s in steps].index("loading") < [s.split()[0] for s in steps].index("starting")
        # READY means it answers: SIP at the address it states, the control socket where systemd put it
        sip = ready["STATUS"].split("SIP ", 1)[1].split(";", 1)[0]
        assert options_answer(int(sip.rsplit(":", 1)[1])).startswith("SIP/2.0 200")
        assert ready["MAINPID"] == str(proc.pid)
        for name, value in environ.items():
            if name.endswith("_DIRECTORY"):
                monkeypatch.setenv(name, value)
        status = env.ivr("status")
        assert status.code == 0 and status.json()["sip"] == sip
        health = env.ivr("health")  # what the firmware's boot check runs before it keeps a new slot
        assert health.code == 0 and f"SIP {sip} answered OPTIONS 200" in health.out, health
        assert (tmp_path / "run" / "ivr.sock").exists() and (tmp_path / "state" / "ivr.db").exists()
        assert not (env.root / "var").exists()

        # the watchdog is fed from the event loop at half of WatchdogSec
        pings = [m for m in manager.drain(2.2) if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 3, manager.messages[-10:]
        # a frozen loop feeds nothing: systemd's watchdog fires (firmware's qemu test sees the restart)
        proc.send_signal(signal.SIGSTOP)
        frozen = [m for m in manager.drain(1.5) if m.get("WATCHDOG") == "1"]
        proc.send_signal(signal.SIGCONT)
        assert frozen == []
        manager.until("WATCHDOG", "1", timeout=5)

        # systemctl reload: RELOADING=1, then READY=1 again once the new flows serve
        proc.send_signal(signal.SIGHUP)
        reloading = manager.until("RELOADING", "1", timeout=30)
        assert "MONOTONIC_USEC" in reloading
        manager.until("READY", "1", timeout=60)

        # systemctl stop: STOPPING=1, a clean exit
        proc.send_signal(signal.SIGTERM)
        manager.until("STOPPING", "1", timeout=30)
        assert proc.wait(timeout=60) == 0
        gone = env.ivr("health", "--timeout", "1")
        assert gone.code == 1 and gone.out.startswith("unhealthy: no daemon answers")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "ERROR" not in text and "never awaited" not in text and "never retrieved" not in text, text
    assert "call it at sip:100@127.0.0.1:" in text, text  # the newcomer's line: how to call it, how to watch it


def test_a_start_that_fails_never_says_ready(tmp_path: Path, prompt_cache: Path, manager: Manager) -> None:
    env = make_env(tmp_path / "box", prompt_cache)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        text = env.config.read_text(encoding="utf-8").replace("'127.0.0.1:0'", f"'127.0.0.1:{port}'", 1)
        env.config.write_text(text, encoding="utf-8")
        environ = service_env(env, tmp_path, manager, prompt_cache)
        run = subprocess.run([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"], env=environ,
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 1
    manager.drain(0.5)
    assert not any(m.get("READY") == "1" for m in manager.messages), manager.messages
    assert any(m.get("STATUS", "").startswith("starting SIP") for m in manager.messages)
    assert f"127.0.0.1:{port}" in run.stderr and "Traceback" not in run.stderr
