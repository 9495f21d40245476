"""KPIs across sites, from the center's PostgreSQL (issue 14 item 3).

``report`` is what the center serves: every KPI of ``ivr kpi`` over the sites chosen, per site, per group of
sites or in total, computed from the typed fact rows ingest keeps (ivr_central/facts.py, migration 0002) by
the box's own ``ivr.kpi.report.build_from_facts``: SQL picks the rows of the period (and the later calls
first-call resolution looks at), the box's code counts them. docs/central-kpi.md.

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
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ivr.kpi import measures
from ivr.kpi.facts import CallbackRequestFacts, CallFacts, QueueVisit
from ivr.kpi.report import GROUP_BY, SITE_GROUP_BY, KpiReport, Params, build, build_from_facts
from ivr_central import facts as rows_of


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


# -- the report from the fact rows --------------------------------------------------------------------------------

# the calls of the period, and those that started before it and were still on the box in it (traffic)
_CALLS = f"""
SELECT {rows_of.CALL_READ} FROM call_facts
WHERE site_id = ANY($1::text[]) AND NOT callback_leg AND ($4 OR channel <> 'simulator') AND started_at < $3
  AND (started_at >= $2 OR coalesce(ended_at, $5) >= $2)
ORDER BY site_id, first_seq
"""
# later calls, looked at only as repeats (FCR): their number and start are all it needs
_REPEATS = """
SELECT call_id, started_at, caller_e164 FROM call_facts
WHERE site_id = ANY($1::text[]) AND NOT callback_leg AND ($4 OR channel <> 'simulator')
  AND started_at >= $2 AND started_at <= $3 AND started_at < $5 AND caller_e164 IS NOT NULL
"""
_LINKED_CALLS = f"""
SELECT {rows_of.CALL_READ} FROM call_facts
WHERE site_id = ANY($1::text[]) AND call_id = ANY($2::text[]) AND NOT callback_leg
  AND ($4 OR channel <> 'simulator') AND started_at < $3
ORDER BY site_id, first_seq
"""
_VISITS = """
SELECT * FROM queue_visit_facts WHERE site_id = ANY($1::text[]) AND at >= $2 AND at < $3
ORDER BY site_id, at, callid, n
"""
_REQUESTS = """
SELECT * FROM callback_facts WHERE site_id = ANY($1::text[]) AND requested_at >= $2 AND requested_at < $3
ORDER BY site_id, requested_at, request_id
"""
# a request's records follow it; a record whose request is unknown (at that site) counts by the caller's arrival
_KEPT = """
SELECT k.site_id, k.record FROM callback_kept_facts k
LEFT JOIN callback_facts r ON r.site_id = k.site_id AND r.request_id = k.request_id
WHERE k.site_id = ANY($1::text[])
  AND ((r.requested_at >= $2 AND r.requested_at < $3)
       OR (r.request_id IS NULL AND k.arrival_at >= $2 AND k.arrival_at < $3))
ORDER BY k.site_id, k.request_id, k.n
"""


async def report(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime | None = None,
                 now: datetime, zone: str, region: str = "US", by: str | None = None,
                 params: Params | None = None, include_simulated: bool = False) -> KpiReport:
    """Every KPI of ``[since, until)`` over ``sites`` from the fact rows: the figures ``reference_report``
    (and ``ivr kpi`` on one site) gives on the same events (tests/central/test_kpi_agree.py).

    ``by``: None, ``site``, ``group`` (``sites.grp``), ``day``, ``hour`` (of ``zone``), ``node``, ``flow`` or
    ``queue``. First-call resolution looks for repeats at every site chosen: one caller is one E.164 number
    whichever site took the call (each read in its site's region at ingest, ``call_facts.caller_e164``);
    ``region`` only reads a number ingest could not."""
    if by is not None and by not in (*GROUP_BY, *SITE_GROUP_BY):
        raise ValueError(f"by must be one of {', '.join((*GROUP_BY, *SITE_GROUP_BY))}, not {by!r}")
    p = params or Params()
    site_list = sorted(set(sites))
    end = min(now if until is None else until, now)
    horizon = end + max((w for _, w in p.fcr_windows), default=timedelta(0))
    if conn.is_in_transaction():
        facts = await _read(conn, site_list, since, end, horizon, now, by, include_simulated)
    else:  # one snapshot for every read, while ingest goes on; no JIT (bench/central_kpi.py: it only costs)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute("SET LOCAL jit = off")
            facts = await _read(conn, site_list, since, end, horizon, now, by, include_simulated)
    calls, visits, requests, kept, numbers, groups = facts
    return build_from_facts(calls, visits, requests, kept, zone=zone, since=since, until=until, by=by, now=now,
                            region=region, params=p, history=measures.CallerIndex.of_numbers(numbers, region),
                            site_groups=groups)


_Read = tuple[list[CallFacts], list[QueueVisit], list[CallbackRequestFacts], list[dict[str, Any]],
              list[tuple[str, datetime, str | None]], dict[str, str] | None]


async def _read(conn: asyncpg.Connection, site_list: list[str], since: datetime, end: datetime, horizon: datetime,
                now: datetime, by: str | None, include_simulated: bool) -> _Read:
    """The fact rows ``report`` needs, as the box's records."""
    call_rows = await conn.fetch(_CALLS, site_list, since, end, include_simulated, now)
    repeats = await conn.fetch(_REPEATS, site_list, end, horizon, include_simulated, now) if horizon > end else []
    visits = [rows_of.visit_of(r) for r in await conn.fetch(_VISITS, site_list, since, end)]
    requests = [rows_of.request_of(r) for r in await conn.fetch(_REQUESTS, site_list, since, end)]
    kept = [rows_of.kept_of(r) for r in await conn.fetch(_KEPT, site_list, since, end)]
    if by in ("flow", "node", "queue"):  # visits and requests are grouped through the IVR call they came from
        have = {r["call_id"] for r in call_rows}
        linked = {i for i in [*(v.ivr_call_id for v in visits), *(r.call_id for r in requests)] if i} - have
        if linked:
            call_rows = [*call_rows, *await conn.fetch(_LINKED_CALLS, site_list, sorted(linked), now,
                                                        include_simulated)]
    calls = [rows_of.call_of(r) for r in call_rows]
    numbers = [(r["call_id"], r["started_at"], r["caller_e164"]) for r in (*call_rows, *repeats)]
    groups = None
    if by == "group":
        groups = {r["site_id"]: r["grp"] for r in await conn.fetch(
            "SELECT site_id, grp FROM sites WHERE site_id = ANY($1::text[])", site_list)}
    return calls, visits, requests, kept, numbers, groups
