"""The central KPIs at scale: load synthetic sites' events through ``insert_batch`` (facts derived at ingest),
then time ``ivr_central.kpi.report``, the dashboard's SQL aggregates (``--mode queries``) and the dashboard's
API functions, ``ivr_central.dashboard_data`` (``--mode dashboard``). Prints figures, asserts nothing.

    .venv/bin/python bench/central_kpi.py [--sites 1000] [--events 1000000] [--workers 2] [--runs 5]
                                          [--mode all|queries|dashboard] [--dsn postgresql://…] [--skip-load]
                                          (default: a throwaway PostgreSQL in /tmp)

One busy day (the synthetic mix of ivr_central.testing: self service, queue visits, callbacks, surveys,
repeat callers) spread over ``--sites`` sites of America/New_York, posted as 100-event batches by ``--workers``
connections. Query times are p50 / p95 over ``--runs`` runs (with few runs p95 is close to the max).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.kpi import buckets  # noqa: E402
from ivr_central import aggregates, db, kpi, store  # noqa: E402
from ivr_central import dashboard_data as dash  # noqa: E402
from ivr_central.pgtemp import PgTemp  # noqa: E402
from ivr_central.testing import SiteLog, numbers  # noqa: E402

ZONE = "America/New_York"
DAY = datetime(2026, 12, 1).date()
EVENTS_PER_CALL = 8.8  # the synthetic mix's average per call (queue_log rows, callback events and legs included)


async def load(dsn: str, sites: int, events: int, workers: int, batch: int) -> tuple[int, int, float, list[float]]:
    """(events, batches, seconds, batch latencies in ms) of loading ``events`` over ``sites`` sites."""
    start = buckets.midnight(DAY, ZONE)
    end = start + timedelta(days=1)
    calls_per_site = max(1, round(events / EVENTS_PER_CALL / sites))
    shared = numbers(random.Random(0), 5000)  # callers who call more than one site
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        await conn.executemany("INSERT INTO sites (site_id, zone, grp) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                               [(f"site{i:04d}", ZONE, f"g{i % 10}") for i in range(sites)])
    finally:
        await conn.close()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(sites):
        queue.put_nowait(i)
    totals = {"events": 0, "batches": 0}
    latencies: list[float] = []

    async def worker() -> None:
        conn = await asyncpg.connect(dsn)
        months: set[Any] = set()
        try:
            while not queue.empty():
                i = queue.get_nowait()
                rng = random.Random(i)
                site = f"site{i:04d}"
                log = SiteLog(site, rng, start=start, end=end, callers=rng.sample(shared, 400))
                ev = log.calls(calls_per_site).pbx_only(max(1, calls_per_site // 30)).events()
                for j in range(0, len(ev), batch):
                    t = time.perf_counter()
                    await store.insert_batch(conn, site, ev[j:j + batch], known_months=months)
                    latencies.append((time.perf_counter() - t) * 1000)
                    totals["batches"] += 1
                totals["events"] += len(ev)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())
    return totals["events"], totals["batches"], time.perf_counter() - t0, latencies


async def timed(runs: int, fn: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """(p50, p95) in ms of ``runs`` calls, and the last result."""
    times = []
    out = None
    for _ in range(runs):
        t = time.perf_counter()
        out = await fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], out


async def queries(dsn: str, sites: int, runs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        all_sites = [f"site{i:04d}" for i in range(sites)]
        since = buckets.midnight(DAY, ZONE)
        until = since + timedelta(days=1)
        now = until + timedelta(hours=1)
        sizes = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM call_facts) AS calls, "
            "(SELECT count(*) FROM queue_visit_facts) AS visits, (SELECT count(*) FROM callback_facts) AS requests, "
            "pg_database_size(current_database()) AS bytes, "
            "(SELECT sum(pg_total_relation_size(c)) FROM unnest(ARRAY['call_facts', 'queue_visit_facts', "
            "'callback_facts', 'callback_kept_facts']::regclass[]) AS c) AS fact_bytes")
        print(f"rows: {sizes['events']} events, {sizes['calls']} calls, {sizes['visits']} queue visits, "
              f"{sizes['requests']} callback requests; database {sizes['bytes'] / 2**20:.0f} MiB, "
              f"fact tables {sizes['fact_bytes'] / 2**20:.0f} MiB")
        one = all_sites[:1]
        ten = all_sites[:10]
        agg: dict[str, Any] = {"since": since, "until": until, "zone": ZONE}
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("report, 1 site, totals", lambda: kpi.report(conn, sites=one, since=since, until=until, now=now,
                                                          zone=ZONE)),
            ("report, 1 site, by hour", lambda: kpi.report(conn, sites=one, since=since, until=until, now=now,
                                                           zone=ZONE, by="hour")),
            ("report, 10 sites, by site", lambda: kpi.report(conn, sites=ten, since=since, until=until, now=now,
                                                             zone=ZONE, by="site")),
            ("report, all sites, totals", lambda: kpi.report(conn, sites=all_sites, since=since, until=until,
                                                             now=now, zone=ZONE)),
            ("report, all sites, by site", lambda: kpi.report(conn, sites=all_sites, since=since, until=until,
                                                              now=now, zone=ZONE, by="site")),
            ("reference_report, 1 site", lambda: kpi.reference_report(conn, sites=one, since=since, until=until,
                                                                      now=now, zone=ZONE)),
            ("queue_series, all sites, by hour", lambda: aggregates.queue_series(conn, sites=all_sites,
                                                                                 bucket="hour", **agg)),
            ("queue_series, by site", lambda: aggregates.queue_series(conn, sites=all_sites, by="site", **agg)),
            ("queue_series, by site and hour", lambda: aggregates.queue_series(conn, sites=all_sites, by="site",
                                                                               bucket="hour", **agg)),
            ("ivr_series, all sites, by hour", lambda: aggregates.ivr_series(conn, sites=all_sites, bucket="hour",
                                                                             **agg)),
            ("ivr_series, by site", lambda: aggregates.ivr_series(conn, sites=all_sites, by="site", **agg)),
            ("ivr_abandon_by_node, all sites", lambda: aggregates.ivr_abandon_by_node(conn, sites=all_sites,
                                                                                      **agg)),
            ("callback_series, by site", lambda: aggregates.callback_series(conn, sites=all_sites, by="site",
                                                                            **agg)),
            ("survey_series, all sites, by hour", lambda: aggregates.survey_series(conn, sites=all_sites,
                                                                                   bucket="hour", **agg)),
            ("fcr_series, all sites, by hour", lambda: aggregates.fcr_series(conn, sites=all_sites, now=now,
                                                                             bucket="hour", **agg)),
            ("fcr_series, by site", lambda: aggregates.fcr_series(conn, sites=all_sites, now=now, by="site",
                                                                  **agg)),
            ("heat_map, all sites", lambda: aggregates.heat_map(conn, sites=all_sites, **agg)),
            ("queue_series, 1 site, by hour", lambda: aggregates.queue_series(conn, sites=one, bucket="hour",
                                                                              **agg)),
        ]
        print(f"\n{'query':<40} {'p50 ms':>9} {'p95 ms':>9}")
        for name, fn in cases:
            p50, p95, _ = await timed(runs, fn)
            print(f"{name:<40} {p50:>9.1f} {p95:>9.1f}", flush=True)
    finally:
        await conn.close()


async def dashboard(dsn: str, sites: int, runs: int) -> None:
    """Each table of the dashboard's API (what one page view asks for) as the HTTP handler computes it, from the
    query string to the JSON text: the week to ``DAY`` (the default view; the traffic is that day's), every site
    and one site, by day and by hour."""
    import json

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        known = await dash.load_sites(conn)
        now = buckets.midnight(DAY, ZONE) + timedelta(days=1, hours=1)
        targets = dash.Targets()
        tables: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
            "summary": lambda f: dash.summary(conn, f, now=now, targets=targets),
            "series": lambda f: dash.series(conn, f, now=now), "heatmap": lambda f: dash.heatmap(conn, f, now=now),
            "exits": lambda f: dash.exits(conn, f, now=now), "sites": lambda f: dash.sites_table(conn, f, now=now)}
        first = DAY - timedelta(days=dash.DEFAULT_DAYS - 1)
        print(f"\ndashboard API, {first} to {DAY} ({ZONE}), {runs} runs{'':<9} {'p50 ms':>9} {'p95 ms':>9} {'rows':>6}")
        for who, chosen in (("all sites", ""), ("1 site", "site0000")):
            for by in ("day", "hour"):
                query = {"since": first.isoformat(), "until": DAY.isoformat(), "by": by, "zone": ZONE}
                if chosen:
                    query["sites"] = chosen
                for name, fn in tables.items():
                    async def one(fn: Callable[..., Awaitable[dict[str, Any]]] = fn,
                                  query: dict[str, str] = query) -> int:
                        t = await fn(dash.parse_filters(query, known, now=now))
                        json.dumps(t)
                        return len(t["rows"])
                    p50, p95, n = await timed(runs, one)
                    label = f"{name}, {who}, by {by}"
                    print(f"{label:<48} {p50:>9.1f} {p95:>9.1f} {n:>6}", flush=True)
        # one page view: the five tables asked for at once, each on its own pooled connection (as the page does)
        pool = await asyncpg.create_pool(dsn, min_size=5, max_size=5)
        try:
            for who, chosen in (("all sites", ""), ("1 site", "site0000")):
                query = {"since": first.isoformat(), "until": DAY.isoformat(), "zone": ZONE}
                if chosen:
                    query["sites"] = chosen
                f = dash.parse_filters(query, known, now=now)

                async def table(name: str, f: dash.Filters = f) -> None:
                    async with pool.acquire() as c:
                        t = await {"summary": lambda: dash.summary(c, f, now=now, targets=targets),
                                   "series": lambda: dash.series(c, f, now=now),
                                   "heatmap": lambda: dash.heatmap(c, f, now=now),
                                   "exits": lambda: dash.exits(c, f, now=now),
                                   "sites": lambda: dash.sites_table(c, f, now=now)}[name]()
                        json.dumps(t)

                async def page() -> None:
                    await asyncio.gather(*(table(name) for name in tables))
                p50, p95, _ = await timed(runs, page)
                print(f"{'page (5 tables at once), ' + who + ', by day':<48} {p50:>9.1f} {p95:>9.1f}", flush=True)
        finally:
            await pool.close()
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    if args.dsn:
        dsn = args.dsn
        pg = None
    else:
        root = Path(tempfile.mkdtemp(prefix="central-kpi-"))
        pg = PgTemp(root, settings={"shared_buffers": "1GB", "work_mem": "64MB", "max_wal_size": "4GB",
                                    "synchronous_commit": "off"})
        pg.start()
        dsn = pg.create_db("bench")
    try:
        if not args.skip_load:
            n, b, secs, lat = await load(dsn, args.sites, args.events, args.workers, args.batch)
            lat.sort()
            print(f"loaded {n} events in {b} batches over {args.sites} sites in {secs:.0f} s: "
                  f"{n / secs:.0f} events/s, {b / secs:.0f} batches/s; batch latency p50 "
                  f"{statistics.median(lat):.1f} ms, p99 {lat[int(0.99 * (len(lat) - 1))]:.1f} ms "
                  f"({args.workers} connections, facts derived in each batch's transaction)", flush=True)
        if args.mode in ("all", "queries"):
            await queries(dsn, args.sites, args.runs)
        if args.mode in ("all", "dashboard"):
            await dashboard(dsn, args.sites, args.runs)
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=1000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--dsn", default="", help="an existing database (else a throwaway PostgreSQL)")
    p.add_argument("--skip-load", action="store_true", help="query what --dsn holds already")
    p.add_argument("--mode", choices=("all", "queries", "dashboard"), default="all",
                   help="queries: report() and the aggregates; dashboard: the dashboard API's tables")
    asyncio.run(main(p.parse_args()))
