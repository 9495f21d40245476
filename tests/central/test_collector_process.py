"""``ivr-central serve`` as its own process, the way it runs: SIGKILLed mid-stream and restarted (a box
resending what was not acknowledged ends with every event once), SIGTERM with a batch in flight (it commits,
then exit 0), and a port already taken (one line naming the address, exit 1)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from ivr_central import db, sites
from ivr_central.pgtemp import free_port
from tests.central.conftest import Pki
from tests.central.helpers import events, gz, headers, ndjson

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, dsn: str, pki: Pki, port: int) -> Path:
    path.write_text(f"listen: 127.0.0.1:{port}\n"
                    f"database: {dsn}\n"
                    f"tls: {{cert: {pki.cert}, key: {pki.key}}}\n"
                    "shutdown_seconds: 20\n")
    return path


class Proc:
    """One ``ivr-central serve`` process; its stderr goes to a file the test can read."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("IVR_CENTRAL_DSN", None)
        with open(self.log, "ab") as err:
            self.p = subprocess.Popen([sys.executable, "-m", "ivr_central.cli", "--config", str(self.config), "serve"],
                                      stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)

    def wait(self, timeout: float = 30) -> int:
        assert self.p is not None
        return self.p.wait(timeout)

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)


async def migrated_site(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        return await sites.add_site(conn, "s1")
    finally:
        await conn.close()


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.p is not None and proc.p.poll() is None, proc.log.read_text()
        try:
            async with session.get(f"{url}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"not ready:\n{proc.log.read_text()}")


async def post(s: aiohttp.ClientSession, url: str, token: str, evs: list[dict[str, Any]]) -> tuple[int, Any]:
    raw = ndjson(evs)
    async with s.post(f"{url}/v1/events", data=gz(raw),
                      headers=headers("s1", token, evs, raw, head_seq=evs[-1]["seq"])) as r:
        return r.status, await r.json()


async def test_sigkill_mid_stream_and_restart_leaves_every_event_exactly_once(
        pg_dsn: str, pki: Pki, tmp_path: Path) -> None:
    token = await migrated_site(pg_dsn)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    proc = Proc(write_config(tmp_path / "central.yaml", pg_dsn, pki, port), tmp_path / "serve.log")
    batches = [events("s1", 1 + 100 * i, 100) for i in range(60)]
    rng = random.Random(14)
    kills = 0
    proc.start()
    try:
        connector = aiohttp.TCPConnector(ssl=pki.client_context(), force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as s:
            await wait_ready(s, url, proc)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 240
            acked = 0  # the box's cursor: batches before it are acknowledged

            async def box() -> None:
                nonlocal acked
                while acked < len(batches):
                    assert loop.time() < deadline, "the box never caught up"
                    try:
                        status, doc = await post(s, url, token, batches[acked])
                    except (aiohttp.ClientError, TimeoutError):
                        await asyncio.sleep(0.05)
                        continue
                    if status == 200 and doc["acked_seq"] == batches[acked][-1]["seq"]:
                        acked += 1
                    else:
                        assert status == 503, (status, doc)
                        await asyncio.sleep(0.05)

            sender = asyncio.create_task(box())
            for at in (10, 30):  # twice, each at a random moment: most likely with a batch in flight
                while acked < at:
                    assert loop.time() < deadline
                    await asyncio.sleep(0.005)
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                proc.kill()
                kills += 1
                proc.start()
            await asyncio.wait_for(sender, 240)
    finally:
        proc.kill()
    assert kills == 2
    conn = await asyncpg.connect(pg_dsn)
    try:
        seqs = [r["seq"] for r in await conn.fetch("SELECT seq FROM events WHERE site_id = 's1' ORDER BY seq")]
        assert seqs == list(range(1, 6001))
        assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM events") == 6000
        assert await conn.fetchval("SELECT acked_seq FROM site_state WHERE site_id = 's1'") == 6000
    finally:
        await conn.close()


async def test_sigterm_lets_the_batch_in_flight_commit_then_exits_0(pg_dsn: str, pki: Pki, tmp_path: Path) -> None:
    token = await migrated_site(pg_dsn)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    proc = Proc(write_config(tmp_path / "central.yaml", pg_dsn, pki, port), tmp_path / "serve.log")
    proc.start()
    holder = await asyncpg.connect(pg_dsn)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as s:
            await wait_ready(s, url, proc)
            assert (await post(s, url, token, events("s1", 1, 10)))[0] == 200
            # hold the site's state row: the next batch's transaction waits on it, in flight
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM site_state WHERE site_id = 's1' FOR UPDATE")
            second = asyncio.create_task(post(s, url, token, events("s1", 11, 10)))
            watcher = await asyncpg.connect(pg_dsn)
            try:
                for _ in range(200):
                    waiting = await watcher.fetchval("SELECT count(*) FROM pg_stat_activity "
                                                     "WHERE wait_event_type = 'Lock' AND datname = current_database()")
                    if waiting:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the second batch never reached PostgreSQL")
            finally:
                await watcher.close()
            assert proc.p is not None
            proc.p.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            assert proc.p.poll() is None, "it exited with a batch in flight"
            with socket.socket() as probe:  # no new connections while it drains
                assert probe.connect_ex(("127.0.0.1", port)) != 0
            await tx.rollback()
            status, doc = await asyncio.wait_for(second, 20)
            assert (status, doc["acked_seq"]) == (200, 20)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        await holder.close()
        proc.kill()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") == 20
    finally:
        await conn.close()
    assert "Traceback" not in proc.log.read_text()


def test_a_port_already_taken_is_one_line_naming_the_address_and_exit_1(
        pg_dsn: str, pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = Proc(write_config(tmp_path / "central.yaml", pg_dsn, pki, port), tmp_path / "serve.log")
        proc.start()
        try:
            assert proc.wait(30) == 1
        finally:
            proc.kill()
    lines = [line for line in proc.log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
