"""PostgreSQL going away under the collector: 503 with Retry-After and one log line, no traceback per request,
and ingest resuming by itself when it is back — every event ending up stored exactly once. Each test has a
PostgreSQL of its own (the session's is shared and must not be stopped)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ivr_central import db, sites
from ivr_central.pgtemp import PgTemp
from ivr_central.server import CentralService
from tests.central.conftest import Pki, collector_config
from tests.central.helpers import events, gz, headers, ndjson


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[PgTemp]:
    pg = PgTemp(tmp_path / "pg")
    pg.start()
    yield pg
    pg.stop()


async def send(s: aiohttp.ClientSession, url: str, token: str, evs: list[dict[str, Any]]) -> tuple[int, Any, Any]:
    raw = ndjson(evs)
    async with s.post(f"{url}/v1/events", data=gz(raw),
                      headers=headers("s1", token, evs, raw, head_seq=evs[-1]["seq"])) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def send_until_acked(s: aiohttp.ClientSession, url: str, token: str, evs: list[dict[str, Any]],
                           deadline: float) -> int:
    """The box's loop in small: resend until a 200 names the batch's last seq (bounded by ``deadline``)."""
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        tries += 1
        try:
            status, doc, _ = await send(s, url, token, evs)
            if status == 200:
                assert doc["acked_seq"] == evs[-1]["seq"]
                return tries
            assert status == 503, (status, doc)
        except aiohttp.ClientError:
            pass
        assert loop.time() < deadline, "never acknowledged"
        await asyncio.sleep(0.1)


async def test_postgres_stopped_is_503_with_retry_after_and_ingest_resumes_when_it_is_back(
        own_pg: PgTemp, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ivr_central")
    dsn = own_pg.create_db("central")
    conn = await asyncpg.connect(dsn)
    await db.migrate(conn)
    token = await sites.add_site(conn, "s1")
    await conn.close()
    service = CentralService(collector_config(dsn, pki))
    await service.start()
    try:
        await service.wait_ready()
        url = service.url
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as s:
            assert (await send(s, url, token, events("s1", 1, 10)))[0] == 200
            await asyncio.to_thread(own_pg.stop)
            for first in (11, 21, 31):
                status, doc, retry_after = await send(s, url, token, events("s1", first, 10))
                assert status == 503 and retry_after is not None and int(retry_after) > 0, doc
            async with s.get(f"{url}/readyz") as r:
                assert r.status == 503
            async with s.get(f"{url}/healthz") as r:
                assert r.status == 200  # alive: nothing to restart
            async with s.get(f"{url}/metrics") as r:
                assert "ivr_central_database_up 0.0" in await r.text()
            await asyncio.to_thread(own_pg.start)
            status, doc, _ = await send(s, url, token, events("s1", 11, 10))  # the very next batch
            assert (status, doc["acked_seq"]) == (200, 20)
            async with s.get(f"{url}/readyz") as r:
                assert r.status == 200
    finally:
        await service.stop()
    ours = [r for r in caplog.records if r.name.startswith("ivr_central")]
    assert not [r for r in ours if r.exc_info], "a traceback was logged"
    down = [r for r in ours if r.levelno == logging.WARNING and "PostgreSQL unavailable" in r.getMessage()]
    assert len(down) == 1, [r.getMessage() for r in down]
    assert any("PostgreSQL reachable again" in r.getMessage() for r in ours)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") == 20
    finally:
        await conn.close()


async def test_postgres_restarted_during_a_stream_of_batches_leaves_every_event_once(
        own_pg: PgTemp, pki: Pki) -> None:
    dsn = own_pg.create_db("central")
    conn = await asyncpg.connect(dsn)
    await db.migrate(conn)
    token = await sites.add_site(conn, "s1")
    await conn.close()
    service = CentralService(collector_config(dsn, pki))
    await service.start()
    batches = [events("s1", 1 + 25 * i, 25) for i in range(40)]
    try:
        await service.wait_ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        retried = acked = 0

        async def box() -> None:
            nonlocal retried, acked
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as s:
                for evs in batches:
                    retried += await send_until_acked(s, service.url, token, evs, deadline) - 1
                    acked += 1

        sender = asyncio.create_task(box())
        while acked < 10:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        await asyncio.to_thread(own_pg.restart, "immediate")  # a crash: recovery at start
        await asyncio.wait_for(sender, 120)
        assert retried > 0 and acked == 40  # the restart did land mid-stream
    finally:
        await service.stop()
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT seq FROM events WHERE site_id = 's1' ORDER BY seq")
        assert [r["seq"] for r in rows] == list(range(1, 1001))
        assert await conn.fetchval("SELECT acked_seq FROM site_state WHERE site_id = 's1'") == 1000
    finally:
        await conn.close()
