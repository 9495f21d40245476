"""Boxes with ``privacy:`` on and the center (issue 17): the events reach PostgreSQL with the caller and the values
sealed, and first-call resolution still finds one caller across two sites from the pseudonym ``caller_ref`` —
when both boxes share the pseudonym key file — without the center ever storing a number."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ivr.store.eventlog import EventLog, iter_events
from ivr.store.privacy import Sealer
from ivr_central import db, kpi, store

CALLER = "+12015550123"


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(pg_dsn)
    await db.migrate(c)
    yield c
    await c.close()


async def box_log(path: Path, site: str, key: bytes, calls: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A box's log with ``privacy:`` on: each call with a collected account number; the events as the relay
    sends them (as stored)."""
    log = await EventLog.open(path, site, "America/New_York", sealer=Sealer(key))
    try:
        for call_id, caller in calls:
            await log.begin_call(call_id=call_id, channel="sip", caller=caller, dialed="100", flow="main",
                                 version="v1")
            await log.append("collect.value", call_id, node="account", var="account", value="4075312",
                             flow="main", flow_version="v1")
            await log.end_call(call_id=call_id, outcome="hangup", detail="", path=["account"],
                               variables={"account": "4075312"})
    finally:
        await log.close()
    return [json.loads(e.to_json()) for e in iter_events(path, opened=False)]


async def test_sealed_events_at_the_center_and_one_caller_across_sites(conn: asyncpg.Connection,
                                                                        tmp_path: Path) -> None:
    for site in ("nyc", "nj"):
        await conn.execute("INSERT INTO sites (site_id, zone, region, grp) VALUES ($1, $2, 'US', '')", site,
                           "America/New_York")
    shared = b"organisation-pseudonym-key-0123456789"
    a = await box_log(tmp_path / "a.db", "nyc", shared, [("a1", CALLER), ("a2", "+13125550000")])
    b = await box_log(tmp_path / "b.db", "nj", shared, [("b1", "(201) 555-0123")])
    await store.insert_batch(conn, "nyc", a)
    await store.insert_batch(conn, "nj", b)
    # nothing the center stored holds the number or the account in clear
    stored = await conn.fetch("SELECT payload::text AS d FROM events")
    facts = await conn.fetch("SELECT call_id, caller, caller_e164 FROM call_facts ORDER BY call_id")
    text = " ".join(r["d"] for r in stored) + repr([tuple(r) for r in facts])
    assert "2015550123" not in text and "4075312" not in text
    assert text.count("sealed:v1:") >= 6  # each call's caller and account, there but unreadable
    refs = {r["call_id"]: r["caller_e164"] for r in facts}
    assert refs["a1"] == refs["b1"] and refs["a1"].startswith("ref:") and refs["a2"] != refs["a1"]
    t0 = datetime.now(UTC) - timedelta(hours=1)
    kw: dict[str, Any] = {"since": t0, "until": t0 + timedelta(days=1), "now": t0 + timedelta(days=9),
                          "zone": "America/New_York", "region": "US"}
    both = await kpi.report(conn, sites=["nyc", "nj"], **kw)
    # a1 was repeated at the other site (b1): 2 of 3 resolved first time, as with clear numbers
    assert (round(both.get("fcr_24h").value, 4), both.get("fcr_24h").n) == (0.6667, 3)
