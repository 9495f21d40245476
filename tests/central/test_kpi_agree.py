"""The central KPIs agree with the box's on the same events (issue 14 item 3): events go in through
``insert_batch`` in batches of every size (a batch twice, a call's start and end in different batches), the
fact rows are derived at ingest, and ``ivr_central.kpi.report`` (from the fact rows),
``ivr_central.kpi.reference_report`` (the box's ``build`` over PostgreSQL's events) and ``ivr.kpi.report.build``
over the original events give the same figures, KPI by KPI, value and n — in total and by day, hour, node, flow
and queue. Across sites one caller is one caller (first-call resolution counted once), and the dashboard's SQL
aggregates agree with ``report`` for the KPIs they cover, as do the dashboard's tables made from them."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.kpi import buckets
from ivr.kpi.facts import parse_time
from ivr.kpi.measures import Kpi
from ivr.kpi.report import KpiReport, build
from ivr_central import aggregates, db, kpi, store
from ivr_central.testing import SiteLog, batches, numbers, uuid7_at
from tests.kpi.log import Log
from tests.kpi.log import q as q_row
from tests.kpi.test_kpi_callbacks_report import callback_log, grouped_log
from tests.kpi.test_kpi_fcr import fcr_log
from tests.kpi.test_kpi_ivr import day_log
from tests.kpi.test_kpi_queue import ROWS
from tests.kpi.test_kpi_traffic import spring_log

NY = "America/New_York"
SEOUL = "Asia/Seoul"
BY = (None, "day", "hour", "node", "flow", "queue")


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(pg_dsn)
    await db.migrate(c)
    yield c
    await c.close()


async def add_site(conn: asyncpg.Connection, site: str, *, zone: str = NY, region: str = "US", grp: str = "") -> None:
    await conn.execute("INSERT INTO sites (site_id, zone, region, grp) VALUES ($1, $2, $3, $4)", site, zone, region,
                       grp)


async def ingest(conn: asyncpg.Connection, site: str, events: list[dict[str, Any]], rng: random.Random) -> int:
    """The events in random batches, one of them sent twice (the box never read the 2xx); returns the
    duplicates the store dropped."""
    dups = 0
    cut = list(batches(events, rng))
    again = rng.randrange(len(cut))
    for i, b in enumerate(cut):
        await store.insert_batch(conn, site, b)
        if i == again:
            dups += (await store.insert_batch(conn, site, b)).duplicates
    return dups


def with_ids(events: list[dict[str, Any]], site: str, seed: int = 0) -> list[dict[str, Any]]:
    """A hand-written log (tests/kpi) as a box would post it: ids, site, boot_id, mono_ns."""
    rng = random.Random(seed)
    return [{**e, "id": uuid7_at(parse_time(e["wall_time"]) or datetime.now(UTC), rng), "site": site,
             "boot_id": "b1", "mono_ns": e["seq"] * 1000} for e in events]


# -- comparing reports --------------------------------------------------------------------------------------------

def _close(a: Any, b: Any) -> bool:
    """Equal, floats up to summation order (SQL and Python add in different orders)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return bool(a == b)


def same_kpi(a: Kpi, b: Kpi, where: str) -> None:
    assert (a.name, a.n, a.unit, a.variant, a.provisional) == (b.name, b.n, b.unit, b.variant, b.provisional), where
    assert _close(a.value, b.value), f"{where}: {a.value} != {b.value}"
    assert _close(dict(a.detail), dict(b.detail)), f"{where}: {a.detail} != {b.detail}"


def same_kpis(a: Sequence[Kpi], b: Sequence[Kpi], where: str, skip: tuple[str, ...] = ()) -> None:
    assert [k.name for k in a] == [k.name for k in b], where
    for x, y in zip(a, b, strict=True):
        if not x.name.startswith(skip):
            same_kpi(x, y, f"{where} {x.name}")


def same_report(a: KpiReport, b: KpiReport, where: str = "") -> None:
    assert (a.since, a.until, a.now, a.by) == (b.since, b.until, b.now, b.by)
    same_kpis(a.totals, b.totals, f"{where} totals")
    assert [g.key for g in a.groups] == [g.key for g in b.groups], where
    for ga, gb in zip(a.groups, b.groups, strict=True):
        same_kpis(ga.kpis, gb.kpis, f"{where} {a.by} {ga.key}")
    assert a.abandon_by_node.keys() == b.abandon_by_node.keys(), where
    for node, k in a.abandon_by_node.items():
        same_kpi(k, b.abandon_by_node[node], f"{where} node {node}")


async def three_ways(conn: asyncpg.Connection, events: list[dict[str, Any]], site: str, *, since: datetime,
                     until: datetime | None, now: datetime, zone: str = NY, region: str = "US",
                     by_all: Sequence[str | None] = BY) -> KpiReport:
    """report() == reference_report() == build() over the original events, for each grouping."""
    first: KpiReport | None = None
    for by in by_all:
        kw: dict[str, Any] = {"since": since, "until": until, "now": now, "zone": zone, "region": region, "by": by}
        box = build(events, **kw)
        ref = await kpi.reference_report(conn, sites=[site], **kw)
        got = await kpi.report(conn, sites=[site], **kw)
        same_report(ref, box, f"reference by {by}")
        same_report(got, box, f"report by {by}")
        first = first or got
    assert first is not None
    return first


# -- one site --------------------------------------------------------------------------------------------------------

def dst_site(seed: int, site: str = "nyc", calls: int = 500) -> tuple[list[dict[str, Any]], datetime, datetime]:
    """Four days of a New York site over the fall-back night (2026-11-01 has 25 hours), with calls over
    midnight, repeat callers, PBX-only callers, an orphan callback record and calls still open at the end."""
    rng = random.Random(seed)
    start, end = datetime(2026, 10, 30, 4, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC)
    log = SiteLog(site, rng, start=start, end=end, callers=numbers(rng, 60)).calls(calls).pbx_only(15)
    for midnight in (datetime(2026, 10, 31, 4, tzinfo=UTC), datetime(2026, 11, 1, 4, tzinfo=UTC)):  # EDT
        log.call(midnight - timedelta(seconds=20), scenario="self_served")  # over local midnight
    log.call(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), scenario="queued")  # 01:30 EDT
    log.call(datetime(2026, 11, 1, 6, 30, tzinfo=UTC), scenario="queued")  # 01:30 EST, the repeated hour
    log.call(end - timedelta(seconds=20), scenario="self_served")  # still open at the end
    log.orphan_kept(start + timedelta(days=1))
    log.tl.add(end - timedelta(seconds=2), None, "queue.log", time=(end - timedelta(seconds=2)).timestamp(),
               callid="1793000000.1", queuename="support", agent="NONE", event="ENTERQUEUE", data1="",
               data2="+12125550100", data3="1", data4="", data5="")  # still waiting at the end
    return log.events(), start, end


async def test_one_site_agrees_kpi_by_kpi_in_total_and_by_day_hour_node_flow_queue(
        conn: asyncpg.Connection) -> None:
    events, start, end = dst_site(1)
    await add_site(conn, "nyc")
    assert await ingest(conn, "nyc", events, random.Random(2)) > 0
    since = buckets.midnight(datetime(2026, 10, 31).date(), NY)
    until = buckets.midnight(datetime(2026, 11, 3).date(), NY)
    r = await three_ways(conn, events, "nyc", since=since, until=until, now=end + timedelta(days=8))
    # the data is what the test claims: every disposition, queue results and callbacks are there
    assert r.get("ivr_calls").value and r.get("ivr_calls").value > 200
    for name in ("ivr_self_served", "ivr_resolved", "ivr_transferred", "ivr_abandoned", "ivr_callback",
                 "ivr_transfer_failed", "ivr_other", "answered", "abandoned", "short_abandoned", "exited",
                 "callback_filed"):
        assert r.get(name).value, name
    for name in ("csat", "nps", "ewt_mae", "callback_first_attempt_connect", "fcr_24h", "agent_transfer_rate"):
        assert r.get(name).n > 0, name
    day = await kpi.report(conn, sites=["nyc"], since=since, until=until, now=end + timedelta(days=8), zone=NY,
                           by="hour")
    assert "2026-11-01T01:00-04:00" in [g.key for g in day.groups] and "2026-11-01T01:00-05:00" in [
        g.key for g in day.groups]


async def test_open_calls_and_windows_still_open_at_now(conn: asyncpg.Connection) -> None:
    events, start, end = dst_site(3, calls=250)
    await add_site(conn, "nyc")
    await ingest(conn, "nyc", events, random.Random(4))
    now = parse_time(events[-1]["wall_time"]) + timedelta(seconds=1)  # type: ignore[operator]
    r = await three_ways(conn, events, "nyc", since=now - timedelta(days=2), until=None, now=now,
                         by_all=(None, "hour", "queue"))
    assert r.get("ivr_open").value and r.get("waiting").value
    assert r.get("fcr_7d").provisional and r.get("fcr_7d").detail["open_windows"] > 0


@pytest.mark.parametrize("name, log", [("callbacks", callback_log), ("grouped", grouped_log), ("fcr", fcr_log),
                                       ("ivr", day_log), ("spring", spring_log)])
async def test_the_box_kpi_tests_logs_agree(conn: asyncpg.Connection, name: str, log: Any) -> None:
    events = with_ids(log().events, name)
    await add_site(conn, name)
    await ingest(conn, name, events, random.Random(5))
    times = [parse_time(e["wall_time"]) for e in events]
    first, last = min(t for t in times if t), max(t for t in times if t)
    since = buckets.day_of(first, NY).start
    until = buckets.day_of(last, NY).end
    await three_ways(conn, events, name, since=since, until=until, now=until + timedelta(days=8))
    # and with "now" just after the last event: open windows, provisional figures
    await three_ways(conn, events, name, since=since, until=None, now=last + timedelta(seconds=1),
                     by_all=(None, "day", "flow"))


async def test_queue_log_only(conn: asyncpg.Connection) -> None:
    log = Log()
    for row in ROWS:
        log.add(parse_time(row["time"]) or datetime.now(UTC), None, "queue.log", **row)
    events = with_ids(log.events, "pbx")
    await add_site(conn, "pbx")
    await ingest(conn, "pbx", events, random.Random(6))
    t0 = parse_time(ROWS[0]["time"]) or datetime.now(UTC)
    r = await three_ways(conn, events, "pbx", since=t0 - timedelta(hours=1), until=t0 + timedelta(hours=1),
                         now=t0 + timedelta(hours=2))
    assert (r.get("offered").value, r.get("answered").value, r.get("short_abandoned").value) == (6, 2, 1)


# -- ingest: batches, duplicates, a call's start and end apart --------------------------------------------------------

async def fact_rows(conn: asyncpg.Connection, site: str) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table, key in (("call_facts", "call_id"), ("queue_visit_facts", "callid, n"),
                       ("callback_facts", "request_id"), ("callback_kept_facts", "request_id, n")):
        rows = await conn.fetch(f"SELECT * FROM {table} WHERE site_id = $1 ORDER BY {key}", site)
        out[table] = [tuple(v for k, v in r.items() if k not in ("site_id", "derived_at")) for r in rows]
    return out


async def test_facts_do_not_depend_on_how_the_log_was_cut(conn: asyncpg.Connection) -> None:
    events, _, _ = dst_site(7, calls=120)
    for site in ("one", "many", "whole"):
        await add_site(conn, site)
    started = next(e for e in events if e["type"] == "call.started" and e["data"]["channel"] == "sip")
    cid = started["call_id"]
    # a call's start in a batch of its own: the call is open until its end arrives in a later batch
    i = events.index(started)
    await store.insert_batch(conn, "one", events[:i + 1])
    row = await conn.fetchrow("SELECT disposition, ended_at, path FROM call_facts WHERE site_id = 'one' "
                              "AND call_id = $1", cid)
    assert row is not None and (row["disposition"], row["ended_at"], row["path"]) == ("open", None, [])
    for e in events[i + 1:]:  # then one event per batch, every tenth sent twice
        await store.insert_batch(conn, "one", [e])
        if e["seq"] % 10 == 0:
            assert (await store.insert_batch(conn, "one", [e])).duplicates == 1
    row = await conn.fetchrow("SELECT disposition, ended_at FROM call_facts WHERE site_id = 'one' AND call_id = $1",
                              cid)
    assert row is not None and row["disposition"] != "open" and row["ended_at"] is not None
    await ingest(conn, "many", events, random.Random(8))
    await store.insert_batch(conn, "whole", events)
    whole = await fact_rows(conn, "whole")
    assert all(whole.values())
    assert await fact_rows(conn, "one") == whole
    assert await fact_rows(conn, "many") == whole


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), calls=st.integers(1, 60), sizes=st.lists(st.integers(1, 40), min_size=1,
                                                                                  max_size=4))
def test_any_log_cut_any_way_agrees(pg_dsn: str, seed: int, calls: int, sizes: list[int]) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await db.migrate(conn)
            site = f"h{seed}-{calls}-{len(sizes)}"
            rng = random.Random(seed)
            start = datetime(2026, 3, 7, 12, tzinfo=UTC)  # over the spring-forward night
            log = SiteLog(site, rng, start=start, end=start + timedelta(days=1), callers=numbers(rng, 8))
            events = log.calls(calls).pbx_only(2).events()
            if await conn.fetchval("SELECT count(*) FROM sites WHERE site_id = $1", site):
                return  # hypothesis replayed an example
            await add_site(conn, site)
            for b in batches(events, rng, tuple(sizes)):
                await store.insert_batch(conn, site, b)
            await three_ways(conn, events, site, since=start, until=start + timedelta(hours=20),
                             now=start + timedelta(days=9), by_all=(None, "hour", "node"))
        finally:
            await conn.close()

    asyncio.run(body())


# -- across sites ----------------------------------------------------------------------------------------------------

async def test_one_caller_at_two_sites_is_one_caller(conn: asyncpg.Connection) -> None:
    """A caller in Seoul calls site a with +82 and, two hours later, site b, whose PBX gives the national
    format: one caller, so the first call was not resolved first time — counted once across the sites."""
    await add_site(conn, "seoul-a", zone=SEOUL, region="KR", grp="korea")
    await add_site(conn, "seoul-b", zone=SEOUL, region="KR", grp="korea")
    t0 = datetime(2026, 12, 1, 1, tzinfo=UTC)
    a, b = Log(), Log()
    a.call("a1", t0, 60, "hangup", caller="+82 10-1234-5678")
    a.call("a2", t0 + timedelta(hours=1), 60, "hangup", caller="+821099990000")
    b.call("b1", t0 + timedelta(hours=2), 60, "hangup", caller="010-1234-5678")
    ea, eb = with_ids(a.events, "seoul-a", 1), with_ids(b.events, "seoul-b", 2)
    await store.insert_batch(conn, "seoul-a", ea)
    await store.insert_batch(conn, "seoul-b", eb)
    numbers_ = await conn.fetch("SELECT call_id, caller_e164 FROM call_facts ORDER BY call_id")
    assert [(r["call_id"], r["caller_e164"]) for r in numbers_] == [
        ("a1", "+821012345678"), ("a2", "+821099990000"), ("b1", "+821012345678")]
    kw: dict[str, Any] = {"since": t0, "until": t0 + timedelta(days=1), "now": t0 + timedelta(days=9),
                          "zone": SEOUL, "region": "KR"}
    both = await kpi.report(conn, sites=["seoul-a", "seoul-b"], **kw)
    # a1 repeated at b; a2 and b1 not: 2 of 3 resolved first time
    assert (both.get("fcr_24h").value, both.get("fcr_24h").n) == (2 / 3, 3)
    same_report(both, await kpi.reference_report(conn, sites=["seoul-a", "seoul-b"], **kw), "two sites")
    # each site alone does not see the other's call: a1 looks resolved
    assert (await kpi.report(conn, sites=["seoul-a"], **kw)).get("fcr_24h").value == 1.0
    # by site, the repeat is still seen across sites
    by_site = await kpi.report(conn, sites=["seoul-a", "seoul-b"], by="site", **kw)
    assert [g.key for g in by_site.groups] == ["seoul-a", "seoul-b"]
    assert by_site.group("seoul-a").get("fcr_24h").value == 0.5 and by_site.group("seoul-b").get("fcr_24h").value == 1
    by_group = await kpi.report(conn, sites=["seoul-a", "seoul-b"], by="group", **kw)
    assert [g.key for g in by_group.groups] == ["korea"]
    same_kpis(by_group.group("korea").kpis, both.totals, "group korea")


async def test_by_site_and_group_are_each_sites_own_figures(conn: asyncpg.Connection) -> None:
    await add_site(conn, "s1", grp="east")
    await add_site(conn, "s2", grp="east")
    await add_site(conn, "s3", grp="west")
    start, end = datetime(2026, 12, 1, 5, tzinfo=UTC), datetime(2026, 12, 2, 5, tzinfo=UTC)
    shared = numbers(random.Random(9), 20)
    per_site = {}
    for i, site in enumerate(("s1", "s2", "s3")):
        rng = random.Random(10 + i)
        per_site[site] = SiteLog(site, rng, start=start, end=end, callers=shared).calls(80).pbx_only(3).events()
        await ingest(conn, site, per_site[site], rng)
    kw: dict[str, Any] = {"since": start, "until": end, "now": end + timedelta(days=8), "zone": NY}
    by_site = await kpi.report(conn, sites=["s1", "s2", "s3"], by="site", **kw)
    assert [g.key for g in by_site.groups] == ["s1", "s2", "s3"]
    for site, events in per_site.items():
        alone = build(events, **kw)
        # every KPI of the site's own, but first-call resolution, which looks for repeats at all three
        same_kpis(by_site.group(site).kpis, alone.totals, f"site {site}", skip=("fcr_",))
    by_group = await kpi.report(conn, sites=["s1", "s2", "s3"], by="group", **kw)
    east = await kpi.report(conn, sites=["s1", "s2"], **kw)
    same_kpis(by_group.group("east").kpis, east.totals, "group east", skip=("fcr_",))
    everything = await kpi.report(conn, sites=["s1", "s2", "s3"], **kw)
    same_report(everything, await kpi.reference_report(conn, sites=["s1", "s2", "s3"], **kw), "three sites")


# -- the dashboard's aggregates ---------------------------------------------------------------------------------------

def _m(k: Kpi) -> tuple[float | None, int]:
    return k.value, k.n


def _eq(measure: Any, k: Kpi, where: str) -> None:
    assert measure.n == k.n and _close(measure.value, k.value), f"{where} {k.name}: {measure} != {_m(k)}"


async def test_aggregates_agree_with_report(conn: asyncpg.Connection) -> None:
    events, start, end = dst_site(11, site="agg", calls=400)
    await add_site(conn, "agg", grp="g1")
    await ingest(conn, "agg", events, random.Random(12))
    other = SiteLog("agg2", random.Random(13), start=start, end=end, callers=numbers(random.Random(14), 30))
    ev2 = other.calls(150).events()
    await add_site(conn, "agg2", grp="g1")
    await ingest(conn, "agg2", ev2, random.Random(15))
    since = buckets.midnight(datetime(2026, 10, 31).date(), NY)
    until = buckets.midnight(datetime(2026, 11, 3).date(), NY)
    now = end + timedelta(days=8)
    sites = ["agg", "agg2"]
    for bucket, by_site in ((None, None), ("day", "site"), ("hour", "site"), (None, "group"), ("hour", None)):
        kw: dict[str, Any] = {"sites": sites, "since": since, "until": until, "zone": NY}
        rows = {
            "queue": await aggregates.queue_series(conn, by=by_site, bucket=bucket, **kw),
            "ivr": await aggregates.ivr_series(conn, by=by_site, bucket=bucket, **kw),
            "callbacks": await aggregates.callback_series(conn, by=by_site, bucket=bucket, **kw),
            "surveys": await aggregates.survey_series(conn, by=by_site, bucket=bucket, **kw),
        }
        nodes = await aggregates.ivr_abandon_by_node(conn, by=by_site, bucket=bucket, **kw)
        assert all(rows.values()) and nodes
        reports: dict[tuple[str, str | None], Any] = {}
        keys = {"": sites} if by_site is None else {s: [s] for s in sites} if by_site == "site" else {"g1": sites}
        for key, chosen in keys.items():
            r = await kpi.report(conn, sites=chosen, since=since, until=until, now=now, zone=NY, by=bucket)
            reports[(key, None)] = r
            for g in r.groups:
                reports[(key, g.key)] = g
        where = f"bucket {bucket} by {by_site}"
        seen = set()
        for q in rows["queue"]:
            g = reports[(q.at.key, q.at.bucket)]
            seen.add((q.at.key, q.at.bucket))
            for name, value in (("offered", q.offered), ("answered", q.answered), ("abandoned", q.abandoned),
                                ("short_abandoned", q.short_abandoned), ("exited", q.exited),
                                ("waiting", q.waiting)):
                assert g.get(name).value == value, f"{where} {q.at} {name}"
            _eq(q.service_level(), g.get("service_level"), where)
            _eq(q.asa(), g.get("asa"), where)
            _eq(q.abandonment_rate(), g.get("abandonment_rate"), where)
            _eq(q.average_queue_wait(), g.get("average_queue_wait"), where)
            _eq(q.longest_queue_wait(), g.get("longest_queue_wait"), where)
            _eq(q.average_talk_time(), g.get("average_talk_time"), where)
            _eq(q.agent_transfer_rate(), g.get("agent_transfer_rate"), where)
        for i in rows["ivr"]:
            g = reports[(i.at.key, i.at.bucket)]
            seen.add((i.at.key, i.at.bucket))
            assert g.get("ivr_calls").value == i.calls
            for d in ("self_served", "resolved", "transferred", "transfer_failed", "abandoned", "callback", "other",
                      "open"):
                assert g.get(f"ivr_{d}").value == getattr(i, d), f"{where} {i.at} {d}"
            _eq(i.containment(), g.get("containment"), where)
            _eq(i.containment_resolved(), g.get("containment_resolved"), where)
            _eq(i.transfer_rate(), g.get("transfer_rate"), where)
            _eq(i.transfer_failure_rate(), g.get("transfer_failure_rate"), where)
            _eq(i.time_to_queue(), g.get("time_to_queue"), where)
            _eq(i.callback_offer_rate(), g.get("callback_offered"), where)
            _eq(i.callback_accept_rate(), g.get("callback_accepted"), where)
            assert g.get("callback_filed").value == i.callback_filed
        for c in rows["callbacks"]:
            g = reports[(c.at.key, c.at.bucket)]
            assert g.get("callback_completed").detail["requests"] == c.requested, f"{where} {c.at}"
            _eq(c.completed(), g.get("callback_completed"), where)
            _eq(c.first_attempt_connect(), g.get("callback_first_attempt_connect"), where)
            _eq(c.promise_kept(), g.get("callback_promise_kept"), where)
            _eq(c.callback_asa(), g.get("callback_asa"), where)
            _eq(c.ewt_mae(), g.get("ewt_mae"), where)
            _eq(c.ewt_bias(), g.get("ewt_bias"), where)
        for s in rows["surveys"]:
            g = reports[(s.at.key, s.at.bucket)]
            _eq(s.csat(), g.get("csat"), where)
            _eq(s.nps(), g.get("nps"), where)
        # a bucket the SQL has no row for is empty in the report too
        for (key, b), g in reports.items():
            if (key, b) not in seen and (b is not None or bucket is None):
                assert g.get("ivr_calls").value == 0 and g.get("offered").value == 0, f"{where} {key} {b}"
        if bucket is None:  # abandon by node over the whole period
            for key in keys:
                r = reports[(key, None)]
                mine = {n.node: n for n in nodes if n.at.key == key}
                assert mine.keys() == r.abandon_by_node.keys()
                for node, k in r.abandon_by_node.items():
                    _eq(mine[node].abandon_rate(), k, f"{where} node {node}")
                    assert mine[node].abandoned == k.detail["abandoned"]
    heat = await aggregates.heat_map(conn, sites=sites, since=since, until=until, zone=NY)
    r = await kpi.report(conn, sites=sites, since=since, until=until, now=now, zone=NY)
    assert sum(c.calls for c in heat) == r.get("ivr_calls").value
    assert sum(c.offered for c in heat) == r.get("offered").value
    # 2026-11-01 01:00 happened twice: one cell of the clock holds both hours' calls
    by_hour = await kpi.report(conn, sites=sites, since=since, until=until, now=now, zone=NY, by="hour")
    twice = sum(g.get("ivr_calls").value or 0 for g in by_hour.groups if g.key.startswith("2026-11-01T01:00"))
    cell = [c for c in heat if c.day.isoformat() == "2026-11-01" and c.hour == 1]
    assert twice and cell and cell[0].calls == twice


async def test_a_queue_visit_after_midnight_is_grouped_by_the_call_before_it(conn: asyncpg.Connection) -> None:
    """The IVR call ends at 23:59:59 and the PBX enters the caller at 00:00:01: by flow, node or queue the
    next day's visit still belongs to the call's flow (ivr_central.kpi fetches the calls visits link to)."""
    midnight = buckets.midnight(datetime(2026, 12, 2).date(), NY)
    log = Log()
    log.call("late", midnight - timedelta(seconds=10), 9, "queued", flow="sales", path=("hello", "sales_q"),
             between=((8.0, "transfer.progress", {"node": "sales_q", "stage": "referred", "kind": "queue",
                                                  "destination": "sales"}),))
    for row in (q_row(midnight + timedelta(seconds=1), "pbx-9", "sales", "ENTERQUEUE", "", "", "1", ivr_call_id="late"),
                q_row(midnight + timedelta(seconds=31), "pbx-9", "sales", "CONNECT", "30", "x", "1")):
        log.add(midnight + timedelta(seconds=1), None, "queue.log", **row)
    events = with_ids(log.events, "late")
    await add_site(conn, "late")
    await ingest(conn, "late", events, random.Random(16))
    r = await three_ways(conn, events, "late", since=midnight, until=midnight + timedelta(days=1),
                         now=midnight + timedelta(days=9), by_all=("flow", "node", "queue"))
    assert r.group("sales").get("offered").value == 1 and r.group("sales").get("ivr_calls").value == 0


async def test_fcr_in_sql_agrees_with_report_across_sites(conn: asyncpg.Connection) -> None:
    """``aggregates.fcr_series`` (one index probe per call for the caller's next call at any site chosen)
    against ``report``: in total, by hour, and by site (a site's row still sees repeats at the others)."""
    start, end = datetime(2026, 12, 1, 5, tzinfo=UTC), datetime(2026, 12, 4, 5, tzinfo=UTC)
    shared = numbers(random.Random(17), 200)
    for i, site in enumerate(("f1", "f2")):
        await add_site(conn, site)
        rng = random.Random(18 + i)
        await ingest(conn, site, SiteLog(site, rng, start=start, end=end, callers=shared).calls(150).events(), rng)
    sites = ["f1", "f2"]
    since, until = start, start + timedelta(days=1)
    for now in (end + timedelta(days=8), start + timedelta(days=2)):  # every window closed; some still open
        for by, bucket in ((None, None), (None, "hour"), ("site", None)):
            rows = await aggregates.fcr_series(conn, sites=sites, since=since, until=until, now=now, zone=NY, by=by,
                                               bucket=bucket)
            r = await kpi.report(conn, sites=sites, since=since, until=until, now=now, zone=NY, by=by or bucket)
            assert rows
            for fr in rows:
                g: Any = r if (by, bucket) == (None, None) else r.group(fr.at.bucket if bucket else fr.at.key)
                for label in ("24h", "72h", "7d"):
                    k = g.get(f"fcr_{label}")
                    _eq(fr.fcr(label), k, f"{now} by {by} {bucket} {fr.at}")
                    assert (fr.provisional(label), fr.anonymous) == (k.provisional, k.detail["anonymous"])
            if now < end:
                assert any(fr.provisional("7d") for fr in rows)


async def test_dashboard_tables_are_reports_over_the_fall_back_night(conn: asyncpg.Connection) -> None:
    """The dashboard's tables (ivr_central.dashboard_data, every figure from the aggregates) are ``report()``'s
    figures over the fall-back night — the repeated hour two series rows and one heat map cell — with ``now``
    inside the period (hours not yet come are left out, the figures stop at now)."""
    from ivr_central import dashboard_data as dash
    from tests.central.test_dashboard_api import agrees, figure

    events, _, _ = dst_site(21, site="dash", calls=300)
    await add_site(conn, "dash", grp="g1")
    await ingest(conn, "dash", events, random.Random(22))
    known = await dash.load_sites(conn)
    now = datetime(2026, 11, 2, 15, 10, tzinfo=UTC)
    for by in ("day", "hour"):
        f = dash.parse_filters({"sites": "dash", "since": "2026-10-31", "until": "2026-11-03", "by": by}, known,
                               now=now)
        kw: dict[str, Any] = {"sites": ["dash"], "since": f.since, "until": f.until, "now": now, "zone": NY}
        total = (await kpi.report(conn, **kw)).to_json()
        groups = (await kpi.report(conn, by=by, **kw)).to_json()["groups"]
        summary = await dash.summary(conn, f, now=now, targets=dash.Targets())
        site_row = (await dash.sites_table(conn, f, now=now))["rows"][0]
        series = await dash.series(conn, f, now=now)
        assert [r[0] for r in series["rows"]] == [g["key"] for g in groups]
        if by == "hour":
            assert sum(1 for r in series["rows"] if r[0].startswith("2026-11-01T01:00")) == 2
        for spec in dash.KPIS:
            want = figure(total["totals"], spec)
            tile = next(r for r in summary["rows"] if r[0] == spec.name)
            assert agrees((tile[2], tile[3]), want, spec), (by, spec.name)
            i = dash.KPIS.index(spec) * 2 + 3
            assert agrees((site_row[i], site_row[i + 1]), want, spec), (by, spec.name)
            for r, g in zip(series["rows"], groups, strict=True):
                j = dash.KPIS.index(spec) * 2 + 1
                assert agrees((r[j], r[j + 1]), figure(g["kpis"], spec), spec), (g["key"], spec.name)
        exits = await dash.exits(conn, f, now=now)
        assert {r[0]: r[1:] for r in exits["rows"]} == {
            node: [k["detail"]["abandoned"], k["n"], k["value"]] for node, k in total["ivr_abandon_by_node"].items()}
        if by == "hour":
            heat = await dash.heatmap(conn, f, now=now)
            cells: dict[tuple[str, int], int] = {}
            for g in groups:
                k = (g["key"][:10], int(g["key"][11:13]))
                cells[k] = cells.get(k, 0) + g["kpis"]["offered"]["value"]
            assert [r[0] for r in heat["rows"]] == ["2026-10-31", "2026-11-01", "2026-11-02"]
            for r in heat["rows"]:
                for h in range(24):
                    assert r[1 + h] == cells.get((r[0], h)), (r[0], h)
            assert heat["rows"][-1][1 + 11] is None  # 11:00 on 2 November has not come yet at now
