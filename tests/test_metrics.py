"""The Prometheus endpoint: the ``metrics:`` section, the names and labels a scrape shows (parsed with
prometheus_client's own parser), and a taken address stopping ``ivr run`` with one line."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivr.adapters.simulator import SimulatedCall
from ivr.config import load_config
from ivr.daemon import Daemon
from ivr.errors import ConfigError
from tests.ami.conftest import until
from tests.ami.peer import AmiPeer
from tests.conftest import REPO, Env

TINY_FLOW = """
flow: tiny
default: true
start: bye
prompts:
  bye: "Goodbye."
nodes:
  bye:
    hangup: bye
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ivr.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_metrics_section_defaults_to_loopback_and_can_be_moved_or_turned_off(tmp_path: Path) -> None:
    default = load_config(str(write_config(tmp_path, "site: {id: a}\n"))).metrics
    assert (default.enabled, default.address) == (True, "127.0.0.1:9464")
    moved = load_config(str(write_config(tmp_path, "metrics: {listen: '10.0.0.2:9100'}\n"))).metrics
    assert (moved.enabled, moved.host, moved.port) == (True, "10.0.0.2", 9100)
    v6 = load_config(str(write_config(tmp_path, "metrics: {listen: '[::1]:9100'}\n"))).metrics
    assert (v6.host, v6.address) == ("::1", "[::1]:9100")
    assert load_config(str(write_config(tmp_path, "metrics: {enabled: false}\n"))).metrics.enabled is False


def test_a_bad_listen_is_reported_at_its_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "site: {id: a}\nmetrics:\n  listen: localhost\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == f"{path}:3:11: listen is host:port, e.g. 127.0.0.1:9464"


async def get(address: str, path: str) -> tuple[str, str]:
    """(status line, body) of one HTTP/1.1 GET, over a plain socket: what a scraper sends."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/plain\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return head.split("\r\n", 1)[0], body


async def test_scrape_names_labels_and_a_call_counted_by_outcome(empty_env: Env) -> None:
    """Every family a daemon with SIP, AMI and callbacks shows (speech needs the model: docs/metrics.md),
    with Prometheus' naming rules, and a finished call counted once under its channel and outcome."""
    env = empty_env
    (env.flows / "tiny.yaml").write_text(TINY_FLOW, encoding="utf-8")
    peer = AmiPeer()
    await peer.start()
    with env.config.open("a") as f:
        f.write(f"ami: {{host: 127.0.0.1, port: {peer.port}, username: ivr, secret: s3cret}}\n"
                "callbacks: {clock: trust, dial: {via: sip, proxy: '127.0.0.1:9'}}\n")
    daemon = Daemon(load_config(str(env.config)))
    try:
        await daemon.start()
        address = daemon.status()["metrics"]
        assert address and address.startswith("127.0.0.1:") and not address.endswith(":0")
        await until(lambda: daemon.ami.connected, timeout=20)
        call = SimulatedCall(str(uuid.uuid4()), "+15550000001", "700", emit=lambda _line: None)
        outcome = await daemon.start_call(call)
        assert outcome.kind == "hangup"
        status, body = await get(address, "/metrics")
        assert await get(address, "/nothing-here") == ("HTTP/1.1 404 Not Found", "not found; metrics at /metrics\n")
    finally:
        await daemon.shutdown(grace=1)
        await peer.stop()
    assert status == "HTTP/1.1 200 OK"
    families = {f.name: f for f in text_string_to_metric_families(body)}
    expected = {
        "ivr_info": ("gauge", {"site", "flows_version"}),
        "ivr_calls_active": ("gauge", set()),
        "ivr_calls_ended": ("counter", {"channel", "outcome"}),
        "ivr_flow_reloads": ("counter", {"result"}),
        "ivr_sip_registered": ("gauge", {"aor"}),
        "ivr_sip_registration_state": ("gauge", {"aor", "state"}),
        "ivr_ami_up": ("gauge", set()),
        "ivr_callback_requests": ("gauge", {"state"}),
        "ivr_callback_oldest_request_age_seconds": ("gauge", set()),
        "ivr_callback_attempts": ("counter", {"result"}),
        "ivr_callback_attempts_active": ("gauge", set()),
        "ivr_callback_dialer_paused": ("gauge", set()),
        "ivr_rtp_sessions": ("gauge", set()),
        "ivr_rtp_packets_sent": ("counter", set()),
        "ivr_rtp_ticks_skipped": ("counter", set()),
        "ivr_rtp_send_lateness_seconds": ("histogram", {"le"}),
        "ivr_rtp_worker_restarts": ("counter", set()),
        "ivr_event_loop_lag_seconds": ("histogram", {"le"}),
        "ivr_event_log_commit_seconds": ("histogram", {"le"}),
        "ivr_event_log_post_waits": ("counter", set()),
    }
    ours = {name: f for name, f in families.items() if name.startswith("ivr_")}
    assert set(ours) == set(expected), set(ours) ^ set(expected)
    for name, (kind, labels) in expected.items():
        f = ours[name]
        assert f.type == kind, name
        assert all(set(s.labels) <= labels for s in f.samples), (name, [s.labels for s in f.samples])
        if kind == "counter":
            assert all(s.name in (f"{name}_total", f"{name}_created") for s in f.samples), name
    assert {n for n in families if not n.startswith("ivr_")} <= {
        "process_virtual_memory_bytes", "process_resident_memory_bytes", "process_start_time_seconds",
        "process_cpu_seconds", "process_open_fds", "process_max_fds"}
    # no per-call label anywhere: nothing carries a call id, a caller or a number
    assert not {k for f in ours.values() for s in f.samples for k in s.labels} & {"call_id", "caller", "number"}

    def value(name: str, **labels: str) -> float:
        [v] = [s.value for s in families[name].samples if s.labels == labels and not s.name.endswith("_created")]
        return v

    assert value("ivr_calls_ended", channel="simulator", outcome="hangup") == 1
    assert sum(s.value for s in families["ivr_calls_ended"].samples) == 1
    assert value("ivr_calls_active") == 0
    assert value("ivr_ami_up") == 1
    assert value("ivr_callback_requests", state="requested") == 0
    assert value("ivr_callback_attempts", result="busy") == 0
    commits = [s for s in families["ivr_event_log_commit_seconds"].samples if s.name.endswith("_count")]
    assert commits and commits[0].value >= 2  # daemon.started, flows.loaded and the call's events


def test_a_taken_metrics_address_stops_the_daemon_with_one_line(env: Env) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        text = env.config.read_text()
        env.config.write_text(text.replace("listen: '127.0.0.1:0'}\nspeech", f"listen: '127.0.0.1:{port}'}}\nspeech"))
        r = subprocess.run([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"metrics: cannot listen on 127.0.0.1:{port}: Address already in use" in lines[0]
    assert not (env.state / "ivr.db").exists()  # nothing was opened
