"""``ivr sync --once`` and ``ivr sync status`` as an admin runs them, the daemon's relay, a box without a
center, the ``central:`` section's rules, and a SIGKILL between writing events and sending them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivr.adapters.simulator import SimulatedCall
from ivr.config import load_config
from ivr.daemon import Daemon
from ivr.errors import ConfigError
from ivr.store.eventlog import EventLog, iter_events
from tests.conftest import REPO, Env
from tests.sync.center import Answer, Center
from tests.sync.conftest import until

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


def configure(env: Env, center: Center, **extra: object) -> None:
    token = env.root / "central-token"
    token.write_text(center.token + "\n", encoding="utf-8")
    token.chmod(0o600)
    items = {"url": center.url, "token_file": str(token), "ca_file": str(center.ca_pem), **extra}
    with env.config.open("a", encoding="utf-8") as f:
        f.write("central: " + json.dumps(items) + "\n")  # JSON is YAML


async def ivr(env: Env, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """The ``ivr`` command as a process (the stand-in center serves on this test's loop meanwhile)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ivr.cli", "--config", str(env.config), *args,
                                                cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def write_events(env: Env, n: int, type: str = "test.event") -> list[int]:
    async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
        return [await log.append(type, None, n=i) for i in range(n)]


async def test_sync_once_pushes_a_real_log_and_reports(env: Env, center: Center) -> None:
    configure(env, center, batch={"max_events": 4})
    seqs = await write_events(env, 10)
    code, out, err = await ivr(env, "sync", "--once")
    assert (code, err) == (0, ""), err
    assert out.splitlines() == [f"central {center.url}", "sent 3 batches: 10 events",
                                "acked seq 10 of 10: caught up"]
    assert center.stored_seqs() == seqs
    assert [json.dumps(e, separators=(",", ":")) for e in center.stored()] == [
        e.to_json() for e in iter_events(env.state / "ivr.db")]
    code, out, _ = await ivr(env, "sync", "--once", "--json")
    report = json.loads(out)
    assert code == 0 and report["central"] == center.url and report["batches"] == 0 and report["caught_up"]
    status = env.ivr("sync", "status", "--json").json()
    assert (status["central"], status["acked_seq"], status["head_seq"], status["backlog"]) == (center.url, 10, 10, 0)
    assert status["lag_seconds"] is None and status["last_success_at"] and status["last_error"] is None
    assert center.token not in json.dumps(status) and center.token not in env.ivr("sync", "status").out


async def test_sync_once_fails_with_one_clear_line_and_keeps_the_cursor(env: Env, center: Center) -> None:
    configure(env, center)
    await write_events(env, 3)
    center.script.append(Answer(status=503, headers={"Retry-After": "30"}))
    code, out, err = await ivr(env, "sync", "--once")
    assert code == 1
    assert err.splitlines() == ["ivr sync: not delivered: the center answered 503"]
    assert out.splitlines()[-1] == "acked seq 0 of 3: 3 events left"
    status = env.ivr("sync", "status")
    assert status.code == 0
    lines = status.out.splitlines()
    assert lines[0] == f"central       {center.url}"
    assert lines[1].startswith("acked seq     0 of 3 (3 events unsent; the oldest, seq 1, written ")
    assert "last error    the center answered 503 (at " in status.out and "1 failure since" in status.out


async def test_sync_status_lists_the_quarantine(env: Env, center: Center) -> None:
    configure(env, center)
    await write_events(env, 2)
    await write_events(env, 1, type="test.bad")
    await write_events(env, 2)
    center.invalid = lambda e: "unknown type test.bad" if e["type"] == "test.bad" else None
    code, out, err = await ivr(env, "sync", "--once")
    assert code == 0, err
    assert "quarantined 1 event the center refused as invalid (ivr sync status lists them)" in out
    status = env.ivr("sync", "status").out.splitlines()
    assert "quarantined   1" in status
    assert "  seq        3  test.bad                 422: unknown type test.bad" in status
    js = env.ivr("sync", "status", "--json").json()
    assert [(q["seq"], q["type"], q["error"]) for q in js["quarantine"]] == [(3, "test.bad", "unknown type test.bad")]
    assert center.stored_seqs() == [1, 2, 4, 5]


async def test_sync_once_waits_its_turn_behind_the_lock(env: Env, center: Center) -> None:
    """Another relay holds STATE_DIR/sync.lock for a step: the CLI waits, then finds the rest and sends it."""
    from ivr.sync.relay import SyncLock

    configure(env, center)
    await write_events(env, 2)
    lock = SyncLock(env.state / "sync.lock")
    assert await lock.acquire(1)
    proc = asyncio.create_task(ivr(env, "sync", "--once"))
    await asyncio.sleep(1.5)
    assert not proc.done() and center.seen == []
    lock.close()
    code, out, err = await proc
    assert code == 0, err
    assert center.stored_seqs() == [1, 2] and out.splitlines()[-1] == "acked seq 2 of 2: caught up"


async def test_no_central_the_daemon_runs_and_keeps_its_log(empty_env: Env) -> None:
    env = empty_env
    (env.flows / "tiny.yaml").write_text(TINY_FLOW, encoding="utf-8")
    daemon = Daemon(load_config(str(env.config)))
    try:
        await daemon.start()
        outcome = await daemon.start_call(SimulatedCall(str(uuid.uuid4()), "+15550000001", "700",
                                                        emit=lambda _line: None))
        assert outcome.kind == "hangup"
        assert daemon.status()["sync"] is None and daemon.relay is None
    finally:
        await daemon.shutdown(grace=1)
    status = env.ivr("sync", "status")
    head = max(e.seq for e in iter_events(env.state / "ivr.db"))
    assert status.code == 0 and status.out.strip() == (
        f"no central configured (central.url in {env.config}): nothing is sent; the event log keeps every event "
        f"(head seq {head})")
    assert env.ivr("sync", "status", "--json").json()["central"] is None
    once = env.ivr("sync", "--once")
    assert once.code == 1 and once.err.startswith("ivr sync: no central configured")


async def test_the_daemon_relays_as_events_are_committed(empty_env: Env, center: Center) -> None:
    """``interval`` is long: the call's events arrive because the commit woke the relay."""
    env = empty_env
    (env.flows / "tiny.yaml").write_text(TINY_FLOW, encoding="utf-8")
    configure(env, center, interval=60)
    daemon = Daemon(load_config(str(env.config)))
    try:
        await daemon.start()
        await until(lambda: {"daemon.started", "flows.loaded"} <= {e["type"] for e in center.stored()}, 10)
        call = SimulatedCall(str(uuid.uuid4()), "+15550000001", "700", emit=lambda _line: None)
        await daemon.start_call(call)

        def acknowledged() -> bool:  # stored, and the answer read: the cursor is past the call's end
            ended = [e["seq"] for e in center.stored() if e["type"] == "call.ended"]
            return bool(ended) and daemon.relay.position.acked_seq >= ended[0]

        await until(acknowledged, 10)
        status = daemon.status()["sync"]
        assert status["central"] == center.url and status["last_error"] is None and status["batches"]["ok"] >= 2
        body = await scrape(daemon.status()["metrics"])
    finally:
        await daemon.shutdown(grace=1)
    calls = [e for e in center.stored() if e["call_id"] == call.call_id]
    assert [e["type"] for e in calls][0] == "call.started" and calls[-1]["type"] == "call.ended"
    families = {f.name: f for f in text_string_to_metric_families(body)}
    kinds = {n: families[n].type for n in families if n.startswith(("ivr_outbox", "ivr_sync"))}
    assert kinds == {"ivr_outbox_events": "gauge", "ivr_outbox_oldest_unsent_age_seconds": "gauge",
                     "ivr_sync_acked_seq": "gauge", "ivr_sync_batches": "counter", "ivr_sync_events_sent": "counter",
                     "ivr_sync_quarantined_events": "counter", "ivr_sync_gap_events": "counter",
                     "ivr_sync_last_success_timestamp_seconds": "gauge"}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert values[("ivr_sync_batches_total", (("result", "error"),))] == 0
    assert values[("ivr_sync_events_sent_total", ())] >= 5
    assert values[("ivr_sync_last_success_timestamp_seconds", ())] > time.time() - 60


async def scrape(address: str) -> str:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return raw.decode().partition("\r\n\r\n")[2]


async def test_events_of_a_box_killed_before_it_could_send_are_sent_by_sync_once(empty_env: Env,
                                                                                 center: Center) -> None:
    """The log is the outbox: a SIGKILL between committing a call and sending it loses nothing."""
    env = empty_env
    (env.flows / "tiny.yaml").write_text(TINY_FLOW, encoding="utf-8")
    configure(env, center)
    center.script.extend([Answer(status=503, headers={"Retry-After": "3600"})] * 20)  # the center is away
    log = (env.root / "daemon.log").open("w")
    daemon = await asyncio.create_subprocess_exec(sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run",
                                                  cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=log)
    try:
        sock = env.state / "ivr.sock"
        await until(lambda: sock.exists() or daemon.returncode is not None, 60)
        assert sock.exists(), (env.root / "daemon.log").read_text()
        code, out, err = await ivr(env, "simulate", "tiny", "--live")
        assert code == 0 and "outcome: hangup" in out, err
        await until(lambda: len(center.seen) >= 1, 20)  # its relay tried, and was told to come back in an hour
    finally:
        os.kill(daemon.pid, signal.SIGKILL)
        await daemon.wait()
        log.close()
    assert center.stored() == []
    center.script.clear()
    code, out, err = await ivr(env, "sync", "--once")
    assert code == 0, err
    logged = [e.id for e in iter_events(env.state / "ivr.db")]
    assert [e["id"] for e in center.stored()] == logged  # every event, once, in seq order
    assert {"daemon.started", "call.started", "call.ended"} <= {e["type"] for e in center.stored()}
    assert "daemon.stopped" not in {e["type"] for e in center.stored()}  # it was killed


def test_the_central_section_rules(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    path = tmp_path / "ivr.yaml"

    def load(text: str) -> object:
        path.write_text("site: {id: a}\n" + text, encoding="utf-8")
        return load_config(str(path)).central

    def problem(text: str) -> str:
        with pytest.raises(ConfigError) as err:
            load(text)
        return str(err.value)

    assert load("") is None
    c = load("central:\n  url: https://central.example.com/\n  token_file: token\n  batch: {max_events: 100}\n")
    assert c.url == "https://central.example.com" and c.token == "s3cret"  # type: ignore[attr-defined]
    assert c.batch_max_events == 100 and c.outbox_max_events == 1_000_000  # type: ignore[attr-defined]
    assert "s3cret" not in repr(c)
    assert load("central: {url: 'http://127.0.0.1:8080', token: t}\n").url == "http://127.0.0.1:8080"  # type: ignore[attr-defined]
    assert load("central: {url: 'http://[::1]:8080', token: t}\n") is not None
    assert problem("central:\n  url: http://central.example.com\n  token: t\n") == (
        f"{path}:3:8: url is plain http: the center is reached over https (TLS verified); http only to a "
        "loopback address")
    assert problem("central: {url: 'https://box:pw@central.example.com', token: t}\n") == (
        f"{path}:2:16: url takes no user, password, query or fragment (the token goes in token_file)")
    assert "pw" not in problem("central: {url: 'https://box:pw@central.example.com:99999', token: t}\n")
    assert problem("central:\n  url: https://c.example.com\n") == (
        f"{path}:3:3: central needs token_file: (or token:), the site's bearer token")
    assert problem("central: {url: 'https://c.example.com', token: t, token_file: token}\n").endswith(
        "give token_file or token, not both")
    token.chmod(0o644)
    assert problem("central: {url: 'https://c.example.com', token_file: token}\n").endswith(
        "is readable or writable by every user (mode 0644): chmod o-rw it")
    assert problem("central: {url: 'https://c.example.com', token: t, ca_file: nothing.pem}\n") == (
        f"{path}:2:60: cannot load ca_file {tmp_path / 'nothing.pem'}: No such file or directory")
    assert problem("central: {url: 'https://c.example.com', token: t, client_key: k.pem}\n").endswith(
        "client_key needs client_cert")
    assert problem("central: {url: 'ftp://c.example.com', token: t}\n").endswith("does not match '^https?://'")
