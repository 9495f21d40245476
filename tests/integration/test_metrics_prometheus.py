"""A real Prometheus server scrapes a real `ivr run`, and what it stored matches `ivr status` and the records.

The test writes Prometheus' config (scrape every second, the daemon's /metrics as the one target), starts
Debian's `prometheus` on loopback with its TSDB in the test's directory, and reads the values back through
Prometheus' HTTP API (/api/v1/query), as a site's monitoring would. Around the daemon: a sipp registrar it
registers with, the test AMI peer as Asterisk, a sipp phone that is busy when the dialer calls back, and sipp
callers, one still on the line while the values are compared.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ami.peer import AmiPeer
from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import free_port, start_appliance, stop_appliance
from tests.integration.test_callbacks import file_request, sipp_uas, wait_state

pytestmark = [
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="prometheus not installed (Debian package prometheus; setup.sh test installs it)"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed"),
]

REGISTRAR = Path(__file__).parent / "sipp" / "reg_auth.xml"
AOR = "sip:2000@127.0.0.1"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping one target every second."""

    def __init__(self, root: Path, target: str) -> None:
        self.root = root
        self.port = free_tcp_port()
        (root / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: ivr\n    static_configs: [{{targets: ['{target}']}}]\n",
            encoding="utf-8")
        self.log = (root / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.loads(r.read()) if path.startswith("/api/") else r.status

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "prometheus.log").read_text()
            try:
                if self.get("/-/ready") == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready: " + (self.root / "prometheus.log").read_text())

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: each series' labels (without __name__, job, instance) -> its value."""
        answer = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        out = {}
        for r in answer["data"]["result"]:
            labels = tuple(sorted((k, v) for k, v in r["metric"].items()
                                  if k not in ("__name__", "job", "instance")))
            out[labels] = float(r["value"][1])
        return out

    def one(self, expr: str) -> float | None:
        values = self.query(expr)
        return next(iter(values.values())) if len(values) == 1 else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def until_equal(read: Callable[[], tuple[Any, Any]], what: str, timeout: float = 30) -> Any:
    """Poll (bounded) until both sides read the same; Prometheus holds what its last scrape saw, a second
    old at most. Returns the agreed value."""
    deadline = time.monotonic() + timeout
    ours = theirs = None
    while time.monotonic() < deadline:
        ours, theirs = read()
        if ours == theirs and ours is not None:
            return ours
        time.sleep(0.3)
    raise AssertionError(f"{what}: Prometheus has {theirs!r}, the daemon says {ours!r}")


def uac(scenario: str, sip_port: int, workdir: Path, service: str = "500") -> subprocess.Popen[str]:
    path = workdir / f"scenario-{time.monotonic_ns()}.xml"
    path.write_text(scenario, encoding="utf-8")
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(path), "-s", service, "-m", "1", "-i", "127.0.0.1",
         "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()), "-timeout", "60s",
         "-timeout_error", "-nostdin", "-trace_err"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str], name: str) -> None:
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"{name}: sipp exit {proc.returncode}\n{out[-1500:]}\n{err[-1500:]}"


def configure(env: Env, registrar_port: int, ami_port: int, customer_port: int) -> None:
    (env.root / "pbx.secret").write_text("regpass\n")
    text = env.config.read_text().replace("sip: {listen: '127.0.0.1:0', rtp_ports: 31000-31999}\n", "", 1)
    env.config.write_text(
        text
        + f"sip: {{listen: '127.0.0.1:0', rtp_ports: 31000-31999, accounts: [{{aor: '{AOR}',"
          f" registrar: '127.0.0.1:{registrar_port}', username: '2000', password_file: pbx.secret}}]}}\n"
        + f"ami: {{host: 127.0.0.1, port: {ami_port}, username: ivr, secret: s3cret, ping_interval: 30}}\n"
        + "callbacks: {region: US, zone: America/New_York, clock: trust, poll_seconds: 0.2,"
          f" dial: {{via: sip, proxy: '127.0.0.1:{customer_port}', ring_timeout: 5}},"
          " retry: {intervals: [3600], max_attempts: 3, expiry: 36000},"
          " windows: [{start: '00:00', end: '24:00'}]}\n")


async def test_prometheus_scrapes_the_daemon_and_its_values_match_ivr_status(env: Env) -> None:
    peer = AmiPeer()  # Asterisk, answering on this test's loop; the rest runs in a thread beside it
    await peer.start()
    try:
        await asyncio.to_thread(run_scenario, env, peer.port)
    finally:
        await peer.stop()


def run_scenario(env: Env, ami_port: int) -> None:
    registrar_port, customer_port = free_port(), free_port()
    registrar = subprocess.Popen(["sipp", "-sf", str(REGISTRAR), "-m", "1", "-i", "127.0.0.1", "-p",
                                  str(registrar_port), "-timeout", "180s", "-timeout_error", "-nostdin"],
                                 cwd=env.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    customer = sipp_uas("uas_busy.xml", customer_port, env.root, timeout=180)
    configure(env, registrar_port, ami_port, customer_port)
    prom: Prometheus | None = None
    daemon = None
    try:
        daemon, sip_port, log = start_appliance(env)
        prom = Prometheus(env.root, env.ivr("status").json()["metrics"])
        prom.wait_ready()
        check_values(env, prom, sip_port, log)
    finally:
        if prom is not None:
            prom.stop()
        if daemon is not None:
            stop_appliance(daemon)
        for p in (registrar, customer):
            if p.poll() is None:
                p.kill()
            p.communicate()


def check_values(env: Env, prom: Prometheus, sip_port: int, log: Path) -> None:
    """The scenario, run off the test's loop (the AMI peer answers there meanwhile)."""

    def status() -> dict[str, Any]:
        return dict(env.ivr("status").json())

    # Prometheus reaches the daemon at all.
    until_equal(lambda: (1.0, prom.one('up{job="ivr"}')), "up")

    # The PBX link and the registration, as `ivr status` shows them.
    until_equal(lambda: (status()["ami"], "connected" if prom.one("ivr_ami_up") == 1.0 else "not connected"),
                "AMI link")

    def registration() -> tuple[str | None, str | None]:
        lines = status()["registrations"]  # "sip:2000@127.0.0.1: registered, expires in 300 s"
        ours = lines[0].removeprefix(f"{AOR}: ").split(",")[0] if lines else None
        states = prom.query(f'ivr_sip_registration_state{{aor="{AOR}"}} == 1')
        return ours, next((dict(k)["state"] for k in states), None)

    assert until_equal(registration, "registration") == "registered"
    assert prom.one(f'ivr_sip_registered{{aor="{AOR}"}}') == 1.0

    # The dialer calls a customer back; their phone is busy: one attempt, the request waits for its retry.
    rid, _ = file_request(env)
    wait_state(env, rid, ("retry",))
    queue = env.ivr("callbacks", "list", "--json").json()
    by_state = Counter(r["state"] for r in queue)
    assert by_state == {"retry": 1}, queue
    until_equal(lambda: (by_state["retry"], prom.one('ivr_callback_requests{state="retry"}')), "callback queue")
    assert prom.one('ivr_callback_requests{state="requested"}') == 0.0
    until_equal(lambda: (status()["callbacks"]["dialed"], prom.one('ivr_callback_attempts_total{result="busy"}')),
                "dialer attempts")
    assert prom.one("sum(ivr_callback_attempts_total)") == 1.0
    age = prom.one("ivr_callback_oldest_request_age_seconds")
    assert age is not None and age > 0

    # Calls: one presses 2 and is hung up on; one stays on the line while the values are compared.
    quick = uac(scenarios.call("two", [("pause", "800"), ("pcap", "2"), ("pause", "1200")]), sip_port, env.root)
    finished(quick, "quick call")
    held = uac(scenarios.call("held", [("pause", "12000")], hangup="caller"), sip_port, env.root)
    try:
        until_equal(lambda: (status()["calls_in_progress"] or None, prom.one("ivr_calls_active")), "active calls")
        assert prom.one("ivr_calls_active") == 1.0
    finally:
        finished(held, "held call")
    until_equal(lambda: (status()["calls_in_progress"], prom.one("ivr_calls_active")), "active calls after")

    # Calls by outcome: what the event log recorded (`ivr calls`), counted once each.
    def outcomes() -> tuple[dict[str, float], dict[str, float]]:
        recorded = Counter(c["outcome"] for c in env.calls() if c["channel"] == "sip" and c.get("outcome"))
        scraped = {dict(k)["outcome"]: v for k, v in prom.query('ivr_calls_ended_total{channel="sip"} > 0').items()}
        return {k: float(v) for k, v in recorded.items()}, scraped

    assert until_equal(outcomes, "calls by outcome") == {"hangup": 1.0, "caller_hangup": 1.0}

    # The histograms have data from this run.
    assert (prom.one("ivr_event_log_commit_seconds_count") or 0) > 0
    assert (prom.one("ivr_rtp_send_lateness_seconds_count") or 0) > 0
    assert (prom.one("ivr_event_loop_lag_seconds_count") or 0) > 0
    assert "level=error" not in log.read_text(), log.read_text()[-3000:]
