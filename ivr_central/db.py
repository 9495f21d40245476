"""The center's PostgreSQL: the forward-only migration runner and the monthly partitions of ``events``.

asyncpg, not psycopg 3: the collector is asyncio end to end, and asyncpg speaks PostgreSQL's binary protocol
with prepared statements and ``executemany`` pipelining, which is what ingesting thousands of small batches a
second needs (bench/central.py). Migrations are plain SQL files run in order, each in its own transaction,
recorded in ``schema_migrations`` — the same shape as the box's runner (ivr/store/eventlog.py), so one idea
serves both stores; a session-level advisory lock keeps two collectors starting at once from racing.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime
from importlib import resources

import asyncpg

log = logging.getLogger("ivr_central.db")

MIGRATION_LOCK = 0x1E1CE17A  # pg_advisory_lock key: "ivr central"
PARTITION_LOCK = 0x1E1CE17B


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every file in ivr_central/migrations, in order."""
    files = resources.files("ivr_central").joinpath("migrations")
    out = []
    for f in files.iterdir():
        if f.name.endswith(".sql"):
            out.append((int(f.name.split("_", 1)[0]), f.name, f.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply the migrations not yet recorded; returns the schema version now in force."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                           " version int PRIMARY KEY, name text NOT NULL,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        current = max(done, default=0)
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            log.info("central database migrated to version %d (%s)", version, name)
            current = max(current, version)
        return current
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


# -- partitions ---------------------------------------------------------------------------------------------------

def month_of(d: date | datetime) -> date:
    return date(d.year, d.month, 1)


def next_month(m: date) -> date:
    return date(m.year + (m.month == 12), m.month % 12 + 1, 1)


def uuid7_floor(t: datetime | date) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond ``t`` (a date: its UTC midnight): a partition bound."""
    if not isinstance(t, datetime):
        t = datetime(t.year, t.month, t.day, tzinfo=UTC)
    ms = int(t.timestamp() * 1000)
    return uuid.UUID(int=ms << 80)


def uuid7_time(u: uuid.UUID) -> datetime:
    """The time a UUIDv7 was made at (its first 48 bits: unix milliseconds)."""
    return datetime.fromtimestamp((u.int >> 80) / 1000, UTC)


def partition_name(m: date) -> str:
    return f"events_y{m.year:04d}m{m.month:02d}"


async def ensure_partitions(conn: asyncpg.Connection, months: set[date], known: set[date] | None = None) -> set[date]:
    """Create the monthly partitions of ``events`` that ``months`` need; returns every month now present.
    ``known``: months this process already saw exist (skips the catalogue look-up)."""
    known = set(known or ())
    wanted = {month_of(m) for m in months} - known
    if not wanted:
        return known
    rows = await conn.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "WHERE i.inhparent = 'events'::regclass")
    present = {r["relname"] for r in rows}
    missing = sorted(m for m in wanted if partition_name(m) not in present)
    if missing:
        await conn.execute("SELECT pg_advisory_lock($1)", PARTITION_LOCK)
        try:
            for m in missing:
                lo, hi = uuid7_floor(m), uuid7_floor(next_month(m))
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {partition_name(m)} PARTITION OF events "
                                   f"FOR VALUES FROM ('{lo}') TO ('{hi}')")
                log.info("events partition %s created", partition_name(m))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", PARTITION_LOCK)
    return known | wanted
