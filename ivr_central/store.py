"""Writing a site's batch into PostgreSQL: all of it or none of it, each event once.

One transaction per batch: the events (``INSERT … SELECT FROM unnest(…) ON CONFLICT (site_id, event_id) DO
NOTHING``: one round trip, and a batch sent twice — the box never read our 2xx — adds nothing the second
time), the KPI facts derived from them (ivr_central.facts) and the site's delivery state. The caller has
validated the events (ivr_central.validate) and authenticated the site.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from ivr.kpi.facts import parse_time
from ivr_central import db, facts

_INSERT = """
INSERT INTO events (site_id, event_id, seq, wall_time, type, call_id, boot_id, mono_ns, payload)
SELECT $1, e.id, e.seq, e.wall_time, e.type, e.call_id, e.boot_id, e.mono_ns, e.payload
FROM unnest($2::uuid[], $3::bigint[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::bigint[],
            $9::jsonb[]) AS e(id, seq, wall_time, type, call_id, boot_id, mono_ns, payload)
ON CONFLICT (site_id, event_id) DO NOTHING
RETURNING event_id
"""

_STATE = """
INSERT INTO site_state AS s (site_id, acked_seq, head_seq, last_batch_at, last_event_at, batches, events, duplicates)
VALUES ($1, $2, $3, now(), $4, 1, $5, $6)
ON CONFLICT (site_id) DO UPDATE SET
    acked_seq = greatest(s.acked_seq, excluded.acked_seq),
    head_seq = coalesce(excluded.head_seq, s.head_seq),
    last_batch_at = now(),
    last_event_at = greatest(s.last_event_at, excluded.last_event_at),
    batches = s.batches + 1,
    events = s.events + excluded.events,
    duplicates = s.duplicates + excluded.duplicates
"""


@dataclass(frozen=True)
class Stored:
    acked_seq: int
    inserted: int
    duplicates: int


def _wall_time(e: dict[str, Any]) -> datetime:
    t = parse_time(e["wall_time"])
    if t is None:
        raise ValueError(f"seq {e.get('seq')}: wall_time {e.get('wall_time')!r} is not a time")
    return t


async def insert_batch(conn: asyncpg.Connection, site_id: str, events: Sequence[dict[str, Any]], *,
                       head_seq: int | None = None, known_months: set[date] | None = None) -> Stored:
    """Commit one batch (events in the ``ivr events --json`` shape, validated) for ``site_id``.
    ``known_months``: partitions this process knows exist (updated in place)."""
    ids = [uuid.UUID(str(e["id"])) for e in events]
    months = {db.month_of(db.uuid7_time(u)) for u in ids}
    present = await db.ensure_partitions(conn, months, known_months)
    if known_months is not None:
        known_months |= present
    async with conn.transaction():
        rows = await conn.fetch(
            _INSERT, site_id, ids, [int(e["seq"]) for e in events], [_wall_time(e) for e in events],
            [str(e["type"]) for e in events], [e.get("call_id") for e in events],
            [str(e["boot_id"]) for e in events], [int(e["mono_ns"]) for e in events],
            [json.dumps(e.get("data") or {}, separators=(",", ":")) for e in events])
        new = {r["event_id"] for r in rows}
        fresh = [e for e, u in zip(events, ids, strict=True) if u in new]
        if fresh:
            await facts.derive(conn, site_id, fresh)
        acked = max((int(e["seq"]) for e in events), default=0)
        newest = max((_wall_time(e) for e in events), default=None)
        await conn.execute(_STATE, site_id, acked, head_seq, newest, len(fresh), len(events) - len(fresh))
    return Stored(acked_seq=acked, inserted=len(fresh), duplicates=len(events) - len(fresh))
