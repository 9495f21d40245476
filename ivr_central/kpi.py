"""KPIs across sites, from the center's PostgreSQL (issue 14 item 3).

``reference_report`` is the definition the center is held to: the site's events read back from PostgreSQL
and handed to the box's own ``ivr.kpi.report.build`` — the same code as ``ivr kpi`` on the box, so for one
site on the same events the two agree by construction, and for several sites first-call resolution sees a
caller's calls at every site (the callers' numbers are normalised by ``region``). It reads every event of the
sites chosen, which is right but not fast; the dashboard's queries are held to agree with it
(tests/central/test_kpi_agree.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ivr.kpi.report import KpiReport, build


async def site_ids(conn: asyncpg.Connection, *, group: str | None = None) -> list[str]:
    if group:
        rows = await conn.fetch("SELECT site_id FROM sites WHERE grp = $1 ORDER BY site_id", group)
    else:
        rows = await conn.fetch("SELECT site_id FROM sites ORDER BY site_id")
    return [r["site_id"] for r in rows]


async def events_of(conn: asyncpg.Connection, sites: Sequence[str], *, before: datetime) -> list[dict[str, Any]]:
    """The sites' events up to ``before`` in the shape ``ivr events --json`` gives (each site in seq order)."""
    rows = await conn.fetch(
        "SELECT site_id, event_id, seq, wall_time, type, call_id, boot_id, mono_ns, payload FROM events "
        "WHERE site_id = ANY($1::text[]) AND wall_time < $2 ORDER BY site_id, seq", list(sites), before)
    return [{"seq": r["seq"], "id": str(r["event_id"]), "site": r["site_id"], "boot_id": r["boot_id"],
             "wall_time": r["wall_time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "mono_ns": r["mono_ns"],
             "call_id": r["call_id"], "type": r["type"], "data": json.loads(r["payload"])} for r in rows]


async def reference_report(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime,
                           until: datetime | None = None, now: datetime, zone: str, region: str = "US",
                           by: str | None = None) -> KpiReport:
    """Every KPI of ``[since, until)`` over ``sites`` together, as ``ivr kpi`` computes them."""
    events = await events_of(conn, sites, before=now)
    return build(events, zone=zone, since=since, until=until, by=by, now=now, region=region)
