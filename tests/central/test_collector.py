"""The collector over real HTTPS on loopback against a real PostgreSQL, with aiohttp's client as the box:
each batch committed whole or refused whole, each event stored once, each refusal naming its lines."""

from __future__ import annotations

import json
import ssl
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
import trustme

from ivr_central import db, sites
from ivr_central.server import CentralService
from tests.central.conftest import Pki, collector_config
from tests.central.helpers import bomb, events, gz, headers, ndjson


async def add_site(pg: asyncpg.Connection, site: str) -> str:
    await db.migrate(pg)
    return await sites.add_site(pg, site, zone="America/New_York")


async def post(session: aiohttp.ClientSession, url: str, site: str, token: str, evs: list[dict[str, Any]], *,
               body: bytes | None = None, encoding: str = "gzip", head_seq: int | None = None,
               extra: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    raw = ndjson(evs)
    data = body if body is not None else (gz(raw) if encoding == "gzip" else raw)
    h = headers(site, token, evs, raw, head_seq=head_seq, encoding=encoding) | (extra or {})
    async with session.post(f"{url}/v1/events", data=data, headers=h) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else {}), dict(resp.headers)


async def count(pg: asyncpg.Connection, site: str | None = None) -> int:
    if site is None:
        return int(await pg.fetchval("SELECT count(*) FROM events"))
    return int(await pg.fetchval("SELECT count(*) FROM events WHERE site_id = $1", site))


def client(pki: Pki) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context()))


async def test_a_good_batch_is_committed_and_the_same_batch_again_adds_nothing(
        collector: CentralService, pg: asyncpg.Connection, pki: Pki) -> None:
    token = await add_site(pg, "s1")
    evs = events("s1", 1, 50)
    async with client(pki) as s:
        status, doc, _ = await post(s, collector.url, "s1", token, evs, head_seq=80)
        assert (status, doc) == (200, {"acked_seq": 50, "inserted": 50, "duplicates": 0})
        status, doc, _ = await post(s, collector.url, "s1", token, evs, head_seq=80)
        assert (status, doc) == (200, {"acked_seq": 50, "inserted": 0, "duplicates": 50})
    assert await count(pg) == 50
    row = await pg.fetchrow("SELECT * FROM events WHERE site_id = 's1' AND seq = 7")
    e = evs[6]
    assert row["event_id"] == uuid.UUID(e["id"]) and row["type"] == e["type"] and row["call_id"] == e["call_id"]
    assert row["boot_id"] == e["boot_id"] and row["mono_ns"] == e["mono_ns"]
    assert row["wall_time"].isoformat().replace("+00:00", "Z") == e["wall_time"]
    assert json.loads(row["payload"]) == e["data"]
    assert await pg.fetchval("SELECT payload->>'note' FROM events WHERE seq = 7") == "ça va"  # real jsonb
    state = await pg.fetchrow("SELECT * FROM site_state WHERE site_id = 's1'")
    assert (state["acked_seq"], state["head_seq"], state["batches"], state["events"], state["duplicates"]) == \
        (50, 80, 2, 50, 50)


async def test_a_missing_unknown_or_disabled_token_is_401_and_writes_nothing(
        collector: CentralService, pg: asyncpg.Connection, pki: Pki) -> None:
    token = await add_site(pg, "s1")
    evs = events("s1", 1, 5)
    async with client(pki) as s:
        status, doc, h = await post(s, collector.url, "s1", "not-the-token", evs)
        assert status == 401 and h.get("WWW-Authenticate") == "Bearer"
        async with s.post(f"{collector.url}/v1/events", data=gz(ndjson(evs))) as resp:
            assert resp.status == 401
        await sites.disable(pg, "s1")
        status, _, _ = await post(s, collector.url, "s1", token, evs)
        assert status == 401
    assert await count(pg) == 0
    assert await pg.fetchval("SELECT count(*) FROM rejects") == 0  # nobody to record it against


async def test_a_valid_token_for_another_site_is_403_and_another_sites_line_422(
        collector: CentralService, pg: asyncpg.Connection, pki: Pki) -> None:
    t1 = await add_site(pg, "s1")
    await sites.add_site(pg, "s2")
    async with client(pki) as s:
        status, doc, _ = await post(s, collector.url, "s2", t1, events("s2", 1, 3))  # claims to be s2
        assert status == 403 and "not site 's2'" in doc["error"]
        evs = events("s1", 1, 3)
        evs[2]["site"] = "s2"
        status, doc, _ = await post(s, collector.url, "s1", t1, evs)  # s1's token, one line of s2's
        assert status == 422 and doc["invalid"] == [{"line": 3, "seq": 3, "error": doc["invalid"][0]["error"]}]
    assert await count(pg) == 0
    assert [r["status"] for r in await pg.fetch("SELECT status FROM rejects WHERE site_id = 's1'")] == [403, 422]


def _break(kind: str, evs: list[dict[str, Any]]) -> None:
    e = evs[2]  # line 3, seq 3
    if kind == "bad uuid":
        e["id"] = "0190-nope"
    elif kind == "missing field":
        del e["boot_id"]
    elif kind == "uuid v4":
        e["id"] = str(uuid.uuid4())
    elif kind == "seq backwards":
        e["seq"] = 1


@pytest.mark.parametrize("kind", ["bad uuid", "missing field", "uuid v4", "seq backwards"])
async def test_one_malformed_line_refuses_the_whole_batch_naming_its_line_and_seq(
        collector: CentralService, pg: asyncpg.Connection, pki: Pki, kind: str) -> None:
    token = await add_site(pg, "s1")
    evs = events("s1", 1, 10)
    _break(kind, evs)
    async with client(pki) as s:
        status, doc, _ = await post(s, collector.url, "s1", token, evs, head_seq=10)
    assert status == 422, doc
    assert [(i["line"], i["seq"]) for i in doc["invalid"]] == [(3, 1 if kind == "seq backwards" else 3)]
    assert doc["invalid"][0]["error"]
    assert await count(pg) == 0  # nothing of the batch, not even the nine good lines
    assert await pg.fetchval("SELECT count(*) FROM site_state") == 0
    reject = await pg.fetchrow("SELECT * FROM rejects")
    assert reject["status"] == 422 and reject["idempotency_key"].startswith("s1:1-10:")
    assert "line 3" in reject["error"]


async def test_too_large_bodies_and_gzip_bombs_are_413_and_a_wrong_type_415(
        pg_dsn: str, pg: asyncpg.Connection, pki: Pki) -> None:
    from ivr_central.config import Limits

    token = await add_site(pg, "s1")
    limits = Limits(max_body_bytes=64 * 1024, max_decompressed_bytes=1 << 20, max_events=100)
    service = CentralService(collector_config(pg_dsn, pki, limits=limits))
    await service.start()
    try:
        await service.wait_ready()
        evs = events("s1", 1, 5)
        async with client(pki) as s:
            status, doc, _ = await post(s, service.url, "s1", token, evs, body=bomb(40 << 20))
            assert status == 413 and "max_decompressed_bytes" in doc["error"]
            status, doc, _ = await post(s, service.url, "s1", token, evs, body=b"x" * (200 * 1024),
                                        encoding="identity")
            assert status == 413 and "max_body_bytes" in doc["error"]
            status, doc, _ = await post(s, service.url, "s1", token, events("s1", 1, 101))
            assert status == 413 and "max_events" in doc["error"]
            status, doc, _ = await post(s, service.url, "s1", token, evs,
                                        extra={"Content-Type": "application/json"})
            assert status == 415
            status, doc, _ = await post(s, service.url, "s1", token, evs, body=b"\x1f\x8bnot gzip")
            assert status == 400
            status, doc, _ = await post(s, service.url, "s1", token, evs)  # the connection pool still works
            assert status == 200
    finally:
        await service.stop()
    assert await count(pg) == 5
    assert sorted(r["status"] for r in await pg.fetch("SELECT status FROM rejects")) == [400, 413, 413, 413, 415]


async def test_a_client_that_does_not_trust_the_collectors_ca_refuses_it(
        collector: CentralService, pg: asyncpg.Connection) -> None:
    token = await add_site(pg, "s1")
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=other)) as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await post(s, collector.url, "s1", token, events("s1", 1, 3))
    assert await count(pg) == 0


async def test_with_mtls_a_box_without_the_right_client_certificate_is_refused_in_the_handshake(
        pg_dsn: str, pg: asyncpg.Connection, pki: Pki, tmp_path: Any) -> None:
    token = await add_site(pg, "s1")
    sites_ca = trustme.CA()
    sites_ca.cert_pem.write_to_path(str(tmp_path / "sites-ca.pem"))
    service = CentralService(collector_config(pg_dsn, pki, tls=pki.tls(tmp_path / "sites-ca.pem")))
    await service.start()
    try:
        await service.wait_ready()

        def ctx(cert_from: trustme.CA | None, tls12: bool = False) -> ssl.SSLContext:
            c = pki.client_context()
            if tls12:  # TLS 1.2: the server's refusal arrives inside the handshake itself, so it can be read
                c.maximum_version = ssl.TLSVersion.TLSv1_2
            if cert_from is not None:
                cert_from.issue_cert("s1.sites.example").configure_cert(c)
            return c

        for who in (None, trustme.CA()):  # no certificate; one from another CA
            # TLS 1.3: the client finishes its half first and reads the refusal as a reset connection
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx(who))) as s:
                with pytest.raises(aiohttp.ClientError):
                    await post(s, service.url, "s1", token, events("s1", 1, 3))
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx(who, tls12=True))) as s:
                with pytest.raises(aiohttp.ClientConnectorError):  # the connect itself, not the request
                    await post(s, service.url, "s1", token, events("s1", 1, 3))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx(sites_ca))) as s:
            status, doc, _ = await post(s, service.url, "s1", token, events("s1", 1, 3))
            assert (status, doc["acked_seq"]) == (200, 3)
    finally:
        await service.stop()
    assert await count(pg) == 3


async def test_health_readiness_and_metrics_after_traffic(
        collector: CentralService, pg: asyncpg.Connection, pki: Pki) -> None:
    token = await add_site(pg, "s1")
    async with client(pki) as s:
        async with s.get(f"{collector.url}/healthz") as r:
            assert r.status == 200
        async with s.get(f"{collector.url}/readyz") as r:
            assert r.status == 200 and (await r.json())["ready"] is True
        evs = events("s1", 1, 20)
        await post(s, collector.url, "s1", token, evs[:10], head_seq=25)
        await post(s, collector.url, "s1", token, evs[:10], head_seq=25)  # all duplicates
        bad = events("s1", 11, 10)
        bad[0]["id"] = "nope"
        await post(s, collector.url, "s1", token, bad)
        await post(s, collector.url, "s1", "wrong", evs)
        async with s.get(f"{collector.url}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['ivr_central_batches_total{result="ok"}'] == 1
    assert values['ivr_central_batches_total{result="duplicate_only"}'] == 1
    assert values['ivr_central_batches_total{result="rejected"}'] == 1
    assert values['ivr_central_batches_total{result="unauthorized"}'] == 1
    assert values["ivr_central_events_inserted_total"] == 10
    assert values["ivr_central_duplicates_dropped_total"] == 10
    assert values['ivr_central_rejects_total{status="422"}'] == 1
    assert values["ivr_central_rejected_lines_total"] == 1
    assert values["ivr_central_batch_seconds_count"] == 2
    assert values['ivr_central_site_acked_seq{site="s1"}'] == 10
    assert values['ivr_central_site_lag_events{site="s1"}'] == 15
    assert 0 <= values['ivr_central_site_last_event_age_seconds{site="s1"}'] < 60
    assert values["ivr_central_database_up"] == 1


async def test_a_box_that_goes_away_mid_body_costs_no_traceback_and_writes_nothing(
        collector: CentralService, pg: asyncpg.Connection, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    caplog.set_level(logging.INFO)
    token = await add_site(pg, "s1")
    evs = events("s1", 1, 50)
    body = gz(ndjson(evs))
    host, port = collector.addresses[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=pki.client_context(),
                                                   server_hostname="127.0.0.1")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers("s1", token, evs, ndjson(evs)).items())
    writer.write(f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
                 + body[: len(body) // 2])
    await writer.drain()
    writer.close()  # gone, half the body sent
    async with client(pki) as s:
        for _ in range(100):
            async with s.get(f"{collector.url}/metrics") as r:
                if 'ivr_central_batches_total{result="incomplete"} 1.0' in await r.text():
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the cut body was never counted")
        status, doc, _ = await post(s, collector.url, "s1", token, evs)  # the resend
        assert (status, doc["inserted"]) == (200, 50)
    assert not [r for r in caplog.records if r.exc_info]
    assert await pg.fetchval("SELECT count(*) FROM rejects") == 0
