"""Two boxes and the center, end to end (issue 14, "done when"): real SIP calls (sipp) and simulated calls
(``ivr simulate --live``) on two running appliances reach the central PostgreSQL exactly once through every
fault — the collector SIGKILLed mid-stream, the collector's answer lost after it committed (a proxy cuts the
connection), PostgreSQL crash-restarted during ingest, a box SIGKILLed between writing a call and syncing
it, a box cut off from the center while a day's traffic piles up — and then ``ivr kpi`` on a box and the
center's KPIs for that site agree, and a caller who tried both sites counts once for first-call resolution.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ivr.store.eventlog import EventLog
from ivr_central import kpi as central_kpi
from ivr_central.pgtemp import PgTemp, free_port
from tests.central.proxy import AnswerDroppingProxy
from tests.conftest import Env, make_env
from tests.integration import scenarios
from tests.integration.appliance import start_appliance, stop_appliance, wait_for_call
from tests.integration.test_calls import keys_by, sipp

trustme = pytest.importorskip("trustme")
pytestmark = [
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed"),
]

REPO = Path(__file__).resolve().parents[2]
CALLER = "+15555550142"  # every sipp call's From (tests/integration/scenarios.py)
_UNVERIFIED = ssl._create_unverified_context()  # only to see the collector is up; the boxes verify


class Collector:
    """``ivr-central serve`` as a process of its own (so it can be SIGKILLed)."""

    def __init__(self, root: Path, dsn: str, *, tls: tuple[Path, Path] | None) -> None:
        self.root, self.port = root, free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "central.yaml"
        text = f"listen: 127.0.0.1:{self.port}\ndatabase: {dsn}\n"
        if tls:
            text += f"tls: {{cert: {tls[0]}, key: {tls[1]}}}\n"
        self.config.write_text(text)
        self.scheme = "https" if tls else "http"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ivr_central.cli", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=60, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    def start(self) -> None:
        with (self.root / "collector.log").open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ivr_central.cli", "--config", str(self.config),
                                          "serve"], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "collector.log").read_text()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5, context=_UNVERIFIED) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("collector did not start:\n" + (self.root / "collector.log").read_text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ProxyThread:
    """The answer-losing proxy on a loop of its own thread (the test's sipp calls block this one)."""

    def __init__(self, upstream_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = AnswerDroppingProxy("127.0.0.1", upstream_port)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    def drop_next_answers(self, n: int) -> None:
        self.loop.call_soon_threadsafe(self.proxy.drop_next_answers, n)

    def close(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def box(root: Path, prompt_cache: Path, site: str, central: str) -> Env:
    env = make_env(root, prompt_cache)
    text = env.config.read_text().replace("site: {id: test-site,", f"site: {{id: {site},")
    env.config.write_text(text + central)
    return env


def call(env: Env, port: int, keys: str) -> None:
    steps, te = keys_by("rfc2833", keys, env.root)
    sipp(scenarios.call("to the center", steps, telephone_event=te), port, env.root, service="500")
    wait_for_call(env)


def simulate_live(env: Env) -> None:
    r = env.ivr("simulate", "keys", "--live", "-i", "2")
    assert r.code == 0, r.err


def sync_status(env: Env) -> dict[str, Any]:
    r = env.ivr("sync", "status", "--json")
    assert r.code == 0, r.err
    return dict(r.json())


def wait_caught_up(env: Env, timeout: float = 120) -> dict[str, Any]:
    s: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = sync_status(env)
        if s["backlog"] == 0 and s["acked_seq"] == s["head_seq"]:
            return s
        time.sleep(0.5)
    raise AssertionError(f"{env.root.name} not caught up: {s}")


def box_events(env: Env) -> list[dict[str, Any]]:
    r = env.ivr("events", "--json")
    assert r.code == 0, r.err
    return [json.loads(line) for line in r.out.splitlines() if line.strip()]


async def center_rows(dsn: str, site: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch("SELECT event_id, seq, type FROM events WHERE site_id = $1", site))
    finally:
        await conn.close()


async def center_report(dsn: str, sites: list[str], since: datetime, until: datetime) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        report = getattr(central_kpi, "report", central_kpi.reference_report)
        r = await report(conn, sites=sites, since=since, until=until, now=now, zone="America/New_York")
        return dict(r.to_json())
    finally:
        await conn.close()


async def write_backlog(db: Path, site: str, calls: int) -> None:
    """A day's traffic written while the center is out of reach: whole calls, as the engine writes them."""
    log = await EventLog.open(db, site)
    try:
        for i in range(calls):
            cid = f"offline-{i}"
            await log.append("call.started", cid, channel="sip", caller=CALLER, dialed="500", flow="keys",
                             flow_version="v1", zone="America/New_York")
            await log.append("node.entered", cid, node="menu", kind="menu")
            await log.append("call.ended", cid, outcome="hangup", detail="two", path=["menu", "two"],
                             resolved=False)
    finally:
        await log.close()


def until(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def center(tmp_path: Path) -> Iterator[tuple[PgTemp, str, Collector, Collector, Path]]:
    pg = PgTemp(tmp_path / "pg")
    pg.start()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    tls = tmp_path / "tls"
    tls.mkdir()
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tls / "server.pem"))
    dsn = pg.create_db("central")
    secure = Collector(tmp_path / "collector-tls", dsn, tls=(tls / "server.pem", tls / "server.pem"))
    plain = Collector(tmp_path / "collector-plain", dsn, tls=None)  # behind the proxy, on loopback
    try:
        r = secure.cli("migrate")
        assert r.returncode == 0, r.stderr
        yield pg, dsn, secure, plain, tls / "ca.pem"
    finally:
        secure.stop()
        plain.stop()
        pg.stop()


def test_two_boxes_every_event_once_through_every_fault(
        request: pytest.FixtureRequest, tmp_path: Path, prompt_cache: Path,
        center: tuple[PgTemp, str, Collector, Collector, Path]) -> None:
    pg, dsn, secure, plain, ca = center
    for site in ("site-a", "site-b"):
        r = secure.cli("site", "add", site, "--zone", "America/New_York", "--region", "US",
                       "--token-file", str(tmp_path / f"{site}.token"))
        assert r.returncode == 0, r.stderr
    secure.start()
    plain.start()
    proxy = ProxyThread(plain.port)
    request.addfinalizer(proxy.close)
    a = box(tmp_path / "a", prompt_cache, "site-a",
            f"central: {{url: '{secure.url}', token_file: {tmp_path / 'site-a.token'}, ca_file: {ca}, "
            f"interval: 0.5}}\n")
    b = box(tmp_path / "b", prompt_cache, "site-b",
            f"central: {{url: 'http://127.0.0.1:{proxy.proxy.port}', token_file: {tmp_path / 'site-b.token'}, "
            f"interval: 0.5}}\n")
    a_proc, a_port, _ = start_appliance(a)
    b_proc, b_port, _ = start_appliance(b)
    started = datetime.now(UTC) - timedelta(minutes=1)
    try:
        # calls on both boxes, the collector SIGKILLed between them and started again
        call(a, a_port, "2")
        call(b, b_port, "2")
        secure.kill()
        simulate_live(a)
        call(a, a_port, "2")
        secure.start()
        # the center commits a batch of box B's and the box never hears so: sent again, stored once
        proxy.drop_next_answers(2)
        call(b, b_port, "2")
        simulate_live(b)
        until(lambda: proxy.proxy.dropped == 2, "the proxy to lose two answers")
        # PostgreSQL crash-restarted while both boxes deliver
        call(a, a_port, "2")
        pg.stop("immediate")
        call(b, b_port, "2")
        pg.start()
        # box A SIGKILLed with a call written and not yet sent (the center is away), then started again
        secure.stop()
        call(a, a_port, "2")
        a_proc.send_signal(signal.SIGKILL)
        a_proc.wait(10)
        secure.start()
        a_proc, a_port, _ = start_appliance(a)
        # box B cut off while a day's traffic piles up, then back
        plain.stop()
        asyncio.run(write_backlog(b.state / "ivr.db", "site-b", 300))
        call(b, b_port, "2")
        assert sync_status(b)["backlog"] > 900
        plain.start()
        sa, sb = wait_caught_up(a), wait_caught_up(b, timeout=300)
    finally:
        stop_appliance(a_proc)
        stop_appliance(b_proc)
    ended = datetime.now(UTC)

    for env in (a, b):
        # what the daemon wrote as it stopped (daemon.stopped) goes with its next start, or now:
        r = env.ivr("sync", "--once")
        assert r.code == 0 and "caught up" in r.out, r.out + r.err
    proxy.close()
    for env, site, status in ((a, "site-a", sa), (b, "site-b", sb)):
        events = box_events(env)
        rows = asyncio.run(center_rows(dsn, site))
        assert status["quarantined"] == 0 and status["gaps"] == [], status
        assert len(rows) == len(events), f"{site}: {len(rows)} at the center, {len(events)} on the box"
        assert {str(r["event_id"]) for r in rows} == {e["id"] for e in events}
        assert sorted(r["seq"] for r in rows) == [e["seq"] for e in events]
        assert sum(1 for e in events if e["type"] == "call.started") >= 5

    # the box's own figures and the center's for that site, on the same events
    since_text = started.astimezone(UTC).isoformat()
    until_text = ended.astimezone(UTC).isoformat()
    r = a.ivr("kpi", "--since", since_text, "--until", until_text, "--json")
    assert r.code == 0, r.err
    on_box = r.json()["totals"]
    at_center = asyncio.run(center_report(dsn, ["site-a"], started, ended))["totals"]
    assert on_box["ivr_calls"]["value"] >= 4
    assert on_box.keys() == at_center.keys()
    for name, mine in on_box.items():  # SQL and Python may add floats in another order: equal to 1e-9
        theirs = at_center[name]
        assert mine["n"] == theirs["n"], name
        assert (mine["value"] is None) == (theirs["value"] is None), name
        if mine["value"] is not None:
            assert math.isclose(mine["value"], theirs["value"], rel_tol=1e-9, abs_tol=1e-9), name

    # one caller at both sites: per site each box sees only its own calls; across sites, the repeat shows
    both = asyncio.run(center_report(dsn, ["site-a", "site-b"], started, ended))["totals"]
    each = [asyncio.run(center_report(dsn, [s], started, ended))["totals"] for s in ("site-a", "site-b")]
    assert both["ivr_calls"]["value"] == sum(t["ivr_calls"]["value"] for t in each)
    assert both["fcr_24h"]["n"] == sum(t["fcr_24h"]["n"] for t in each)
    # every call comes from the same number, so across sites only the very last one is not followed by a
    # repeat; each site alone has its own last call
    resolved_both = round(both["fcr_24h"]["value"] * both["fcr_24h"]["n"])
    resolved_each = sum(round(t["fcr_24h"]["value"] * t["fcr_24h"]["n"]) for t in each)
    assert resolved_both == 1 and resolved_each == 2


def test_the_real_collector_refuses_what_it_cannot_store_and_the_box_quarantines_just_that(
        tmp_path: Path, prompt_cache: Path, center: tuple[PgTemp, str, Collector, Collector, Path]) -> None:
    """A line PostgreSQL cannot store (a NUL in a string: SQLite keeps it, jsonb cannot) is a 422 at the
    center naming that line, nothing of its batch is written, the box quarantines that one event and delivers
    the rest; and a box that does not trust the center's certificate sends nothing and says why in one line."""
    _pg, dsn, secure, _plain, ca = center
    r = secure.cli("site", "add", "site-q", "--token-file", str(tmp_path / "q.token"))
    assert r.returncode == 0, r.stderr
    secure.start()
    env = box(tmp_path / "q", prompt_cache, "site-q",
              f"central: {{url: '{secure.url}', token_file: {tmp_path / 'q.token'}, ca_file: {ca}}}\n")

    async def write() -> int:
        log = await EventLog.open(env.state / "ivr.db", "site-q")
        try:
            for i in range(5):
                await log.append("note", None, n=i)
            bad = await log.append("note", None, text="a NUL \x00 here")
            for i in range(5):
                await log.append("note", None, n=10 + i)
            return bad
        finally:
            await log.close()

    bad_seq = asyncio.run(write())

    # a box with another CA: the TLS check fails, one line, nothing sent, nothing lost
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    wrong = env.config.read_text().replace(f"ca_file: {ca}", f"ca_file: {tmp_path / 'other-ca.pem'}")
    right = env.config.read_text()
    env.config.write_text(wrong)
    r = env.ivr("sync", "--once")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and "certificate" in r.err.lower(), r.err
    assert asyncio.run(center_rows(dsn, "site-q")) == []

    env.config.write_text(right)
    r = env.ivr("sync", "--once")
    assert r.code == 0 and "quarantined 1 event" in r.out, r.out + r.err
    status = sync_status(env)
    assert [q["seq"] for q in status["quarantine"]] == [bad_seq]
    assert status["quarantine"][0]["http_status"] == 422
    events = box_events(env)
    stored = {str(row["event_id"]) for row in asyncio.run(center_rows(dsn, "site-q"))}
    assert stored == {e["id"] for e in events if e["seq"] != bad_seq}

    async def rejects() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch("SELECT status, error FROM rejects WHERE site_id = 'site-q'"))
        finally:
            await conn.close()

    refused = asyncio.run(rejects())
    assert refused and all(row["status"] == 422 for row in refused)
