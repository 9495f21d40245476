"""The center's schema on a real PostgreSQL: migrations apply once, partitions by UUIDv7 month take the
events of their month, and (site_id, event_id) refuses a second copy."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import asyncpg
import uuid6

from ivr_central import db


async def test_migrations_apply_once_and_partitions_hold_their_month(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        v = await db.migrate(conn)
        assert v == max(m[0] for m in db.migrations())
        assert await db.migrate(conn) == v  # a second start changes nothing
        await conn.execute("INSERT INTO sites (site_id) VALUES ('s1')")
        eid = uuid6.uuid7()
        month = db.month_of(db.uuid7_time(eid))
        await db.ensure_partitions(conn, {month})
        row = ("s1", eid, 1, datetime.now(UTC), "call.started", "c1", "b", 1, json.dumps({}))
        sql = ("INSERT INTO events (site_id, event_id, seq, wall_time, type, call_id, boot_id, mono_ns, payload) "
               "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (site_id, event_id) DO NOTHING")
        assert await conn.execute(sql, *row) == "INSERT 0 1"
        assert await conn.execute(sql, *row) == "INSERT 0 0"
        part = await conn.fetchval("SELECT tableoid::regclass::text FROM events WHERE event_id = $1", eid)
        assert part == db.partition_name(month)
        # an event of a month with no partition yet is refused, not lost into a default partition
        old = db.uuid7_floor(date(2020, 1, 15))
        try:
            await conn.execute(sql, "s1", old, 2, datetime(2020, 1, 15, tzinfo=UTC), "x", None, "b", 1, "{}")
            raise AssertionError("an event without its partition was accepted")
        except asyncpg.PostgresError as exc:
            assert "no partition" in str(exc)
        await db.ensure_partitions(conn, {date(2020, 1, 1)})
        assert await conn.execute(sql, "s1", old, 2, datetime(2020, 1, 15, tzinfo=UTC), "x", None, "b", 1,
                                  "{}") == "INSERT 0 1"
    finally:
        await conn.close()
