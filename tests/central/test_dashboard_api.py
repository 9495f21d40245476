"""The dashboard's API on a real PostgreSQL holding three sites' week: its figures are the reference KPI
report's (``ivr_central.kpi.reference_report``, the box's own ``ivr kpi`` code) for the same filters — one
site, a group, every site, by day and by hour — each CSV holds exactly the JSON's rows, viewers must sign
in (token, login cookie, SSO proxy header) and bad filters are a 400 that says what is wrong."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from yarl import URL

from ivr.kpi import buckets
from ivr_central import dashboard_data as data
from ivr_central import kpi, server
from ivr_central.config import CentralConfig, DashboardConfig, Viewer
from ivr_central.dashboard import COOKIE, CSP, add_dashboard, token_hash
from ivr_central.pgtemp import PgTemp, free_port
from tests.central.dash_app import NOW, TOKEN, Served, fleet_db, make_app, serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZONES = {"nyc-1": "America/New_York", "bos-1": "America/New_York", "den-1": "America/Denver"}


@pytest.fixture(scope="module")
def fleet_dsn(pg_server: PgTemp) -> str:
    """One database with the fleet's week (a third of its calls: enough for every KPI) for the whole module."""
    return asyncio.run(fleet_db(pg_server, scale=0.3))


@pytest.fixture
async def served(fleet_dsn: str) -> AsyncIterator[Served]:
    s = await serve(make_app(fleet_dsn, trusted_proxy_header="X-Forwarded-User", trusted_proxies=["10.9.8.0/24"]))
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    async with http.get(url, headers=AUTH, **kw) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def expected(fleet_dsn: str, sites: list[str], first: date, last: date, zone: str, by: str | None = None
                   ) -> dict[str, Any]:
    """The reference report's JSON for the view, computed here from the test's own reading of the period."""
    conn = await asyncpg.connect(fleet_dsn)
    try:
        regions = {r["region"] for r in await conn.fetch("SELECT region FROM sites WHERE site_id = ANY($1::text[])",
                                                          sites)}
        rep = await kpi.reference_report(conn, sites=sites, since=buckets.midnight(first, zone),
                                         until=buckets.midnight(last + timedelta(days=1), zone), now=NOW, zone=zone,
                                         region=regions.pop(), by=by)
    finally:
        await conn.close()
    return rep.to_json()


def figure(kpis: dict[str, Any], spec: data.Spec) -> tuple[Any, int]:
    if spec.source:
        v = kpis[spec.source[0]]["detail"][spec.source[1]]
        return v, v
    return kpis[spec.name]["value"], kpis[spec.name]["n"]


#: one unit in the last digit ``KpiReport.to_json`` keeps: the fact rows and the events may sum the same floats
#: in another order (93.55000000000001 against 93.55), and the rounding can then fall either side
LAST_DIGIT = {"share": 1e-4, "s": 0.1, "points": 0.1}


def agrees(got: tuple[Any, int], want: tuple[Any, int], spec: data.Spec) -> bool:
    """The dashboard's (value, n) is the reference's: n exactly, a count exactly, a value to its last digit."""
    (v, n), (w, m) = got, want
    if n != m or (v is None) != (w is None):
        return False
    if v is None or spec.unit == "calls":
        return bool(v == w)
    return abs(v - w) <= LAST_DIGIT[spec.unit] * 1.0001


def row_dict(t: dict[str, Any], row: list[Any]) -> dict[str, Any]:
    return dict(zip(t["columns"], row, strict=True))


VIEWS = [
    # (query, sites, first, last, zone): every site by default is read in UTC (their zones differ)
    ({}, ["bos-1", "den-1", "nyc-1"], date(2026, 3, 4), date(2026, 3, 10), "UTC"),
    ({"sites": "nyc-1", "since": "2026-03-03", "until": "2026-03-09"}, ["nyc-1"], date(2026, 3, 3),
     date(2026, 3, 9), "America/New_York"),
    ({"group": "east", "since": "2026-03-05", "until": "2026-03-08", "by": "hour"}, ["bos-1", "nyc-1"],
     date(2026, 3, 5), date(2026, 3, 8), "America/New_York"),
    ({"sites": "den-1,nyc-1", "since": "2026-03-03", "until": "2026-03-09", "zone": "America/Chicago"},
     ["den-1", "nyc-1"], date(2026, 3, 3), date(2026, 3, 9), "America/Chicago"),
]


@pytest.mark.parametrize("view", range(len(VIEWS)))
async def test_figures_are_the_reference_reports(view: int, served: Served, http: aiohttp.ClientSession,
                                                 fleet_dsn: str) -> None:
    query, sites, first, last, zone = VIEWS[view]
    by = query.get("by", "day")
    api = f"{served.url}/dashboard/api"

    summary = await get_json(http, f"{api}/summary", params=query)
    f = summary["filters"]
    assert (f["site_ids"], f["since"], f["until"], f["zone"], f["by"]) == (sites, first.isoformat(),
                                                                           last.isoformat(), zone, by)
    ref = await expected(fleet_dsn, sites, first, last, zone)
    assert ref["totals"]["offered"]["value"] > 0 and ref["totals"]["csat"]["n"] > 0  # the view has data
    rows = {r[0]: row_dict(summary, r) for r in summary["rows"]}
    assert list(rows) == [s.name for s in data.KPIS]
    for spec in data.KPIS:
        assert agrees((rows[spec.name]["value"], rows[spec.name]["n"]), figure(ref["totals"], spec), spec), spec.name

    # exits: the report's IVR abandon by node
    exits = await get_json(http, f"{api}/exits", params=query)
    got = {r[0]: r[1:] for r in exits["rows"]}
    assert got == {node: [k["detail"]["abandoned"], k["n"], k["value"]]
                   for node, k in ref["ivr_abandon_by_node"].items()}
    assert [r[1] for r in exits["rows"]] == sorted((r[1] for r in exits["rows"]), reverse=True)

    # series: one row per day or hour, each KPI as the report's group has it
    series = await get_json(http, f"{api}/series", params=query)
    ref_by = await expected(fleet_dsn, sites, first, last, zone, by=by)
    assert [r[0] for r in series["rows"]] == [g["key"] for g in ref_by["groups"]]
    if by == "hour":
        assert len(series["rows"]) == 4 * 24 - 1  # 2026-03-08 had no 02:00 in New York
    for r, g in zip(series["rows"], ref_by["groups"], strict=True):
        d = row_dict(series, r)
        for spec in data.KPIS:
            assert agrees((d[spec.name], d[f"{spec.name}_n"]), figure(g["kpis"], spec), spec), (g["key"], spec.name)

    # heat map: offered by local day and hour, from the report by hour
    heat = await get_json(http, f"{api}/heatmap", params=query)
    ref_h = ref_by if by == "hour" else await expected(fleet_dsn, sites, first, last, zone, by="hour")
    cells: dict[tuple[str, int], int] = {}
    for g in ref_h["groups"]:
        k = (g["key"][:10], int(g["key"][11:13]))
        cells[k] = cells.get(k, 0) + g["kpis"]["offered"]["value"]
    assert sum(r[-1] for r in heat["rows"]) == ref["totals"]["offered"]["value"]
    for r in heat["rows"]:
        for h in range(24):
            assert r[1 + h] == cells.get((r[0], h)), (r[0], h)

    # sites: each site on its own, ranked by offered (most first)
    table = await get_json(http, f"{api}/sites", params=query)
    assert sorted(r[0] for r in table["rows"]) == sites
    offered = [r[table["columns"].index("offered")] for r in table["rows"]]
    assert offered == sorted(offered, reverse=True)
    for r in table["rows"]:
        d = row_dict(table, r)
        one = await expected(fleet_dsn, [d["site_id"]], first, last, zone)
        for spec in data.KPIS:
            assert agrees((d[spec.name], d[f"{spec.name}_n"]), figure(one["totals"], spec), spec), (d["site_id"],
                                                                                                    spec.name)


async def test_sites_ranked_by_the_kpi_chosen(served: Served, http: aiohttp.ClientSession) -> None:
    api = f"{served.url}/dashboard/api/sites"
    for rank, better in (("asa", "low"), ("service_level", "high"), ("nps", "high"), ("ewt_mae", "low")):
        t = await get_json(http, api, params={"rank": rank, "since": "2026-03-03", "until": "2026-03-09"})
        vs = [r[t["columns"].index(rank)] for r in t["rows"]]
        assert None not in vs and (t["rank"], t["better"]) == (rank, better)
        assert vs == sorted(vs, reverse=better == "high"), rank


def parse_csv(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def same(cell: str, v: Any) -> bool:
    """A CSV cell holds the JSON value: numbers written as JSON writes them, None as nothing."""
    if v is None:
        return cell == ""
    if isinstance(v, bool):
        return cell == ("true" if v else "false")
    if isinstance(v, (int, float)):
        return cell == str(v) and float(cell) == v
    return cell == str(v)


@pytest.mark.parametrize("table", sorted(data.TABLES))
async def test_each_csv_holds_the_json_rows(table: str, served: Served, http: aiohttp.ClientSession) -> None:
    for query in ({}, {"sites": "bos-1", "by": "hour", "since": "2026-03-08", "until": "2026-03-09"}):
        url = f"{served.url}/dashboard/api/{table}"
        t = await get_json(http, url, params=query)
        async with http.get(f"{url}.csv", headers=AUTH, params=query) as r:
            assert r.status == 200
            assert r.content_type == "text/csv"
            assert re.fullmatch(rf'attachment; filename="{table}_\d{{4}}-\d\d-\d\d_\d{{4}}-\d\d-\d\d\.csv"',
                                r.headers["Content-Disposition"])
            head, rows = parse_csv(await r.text())
        assert head == t["columns"]
        assert len(rows) == len(t["rows"]) > 0
        for cells, values in zip(rows, t["rows"], strict=True):
            assert all(same(c, v) for c, v in zip(cells, values, strict=True)), (cells, values)


async def test_viewers_must_sign_in(served: Served, http: aiohttp.ClientSession) -> None:
    base = f"{served.url}/dashboard"
    # nobody: the API says 401, the page sends to the login form
    async with http.get(f"{base}/api/summary") as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.get(f"{base}/?sites=nyc-1", allow_redirects=False) as r:
        assert r.status == 302
        to = URL(r.headers["Location"])
        assert (to.path, to.query["next"]) == ("/dashboard/login", "/dashboard/?sites=nyc-1")
    # a wrong token, another scheme: 401
    for auth in ("Bearer not-the-token", f"Basic {TOKEN}", "Bearer "):
        async with http.get(f"{base}/api/summary", headers={"Authorization": auth}) as r:
            assert r.status == 401, auth
    async with http.get(f"{base}/", headers={"Authorization": "Bearer wrong"}, allow_redirects=False) as r:
        assert r.status == 401
    # the right token
    async with http.get(f"{base}/api/meta", headers=AUTH) as r:
        assert r.status == 200 and (await r.json())["viewer"] == {"name": "manager", "via": "token"}
    async with http.get(f"{base}/", headers=AUTH) as r:
        assert r.status == 200 and "<title>Contact center dashboard</title>" in await r.text()

    # the login form: a wrong token is refused, the right one gives an HttpOnly SameSite=Strict cookie
    async with http.post(f"{base}/login", data={"token": "nope", "next": "/dashboard/"}) as r:
        assert r.status == 401 and "not a viewer token" in await r.text()
    async with http.post(f"{base}/login", data={"token": TOKEN, "next": "/dashboard/?sites=den-1"},
                         allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/dashboard/?sites=den-1"
        cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/dashboard" in cookie
    async with http.get(f"{base}/api/meta") as r:
        assert r.status == 200 and (await r.json())["viewer"] == {"name": "manager", "via": "session"}
    # no open redirect after signing in
    async with http.post(f"{base}/login", data={"token": TOKEN, "next": "https://evil.example/"},
                         allow_redirects=False) as r:
        assert r.headers["Location"] == "/dashboard/"
    # a forged or altered cookie is nobody
    value = http.cookie_jar.filter_cookies(URL(served.url + "/dashboard/"))[COOKIE].value
    body, sig = value.split(".")
    async with aiohttp.ClientSession() as other:
        for forged in (body + "." + sig[::-1], body[:-2] + "x" + body[-1] + "." + sig, "x.y", ""):
            async with other.get(f"{base}/api/summary", headers={"Cookie": f"{COOKIE}={forged}"}) as r:
                assert r.status == 401, forged
    # signing out clears it
    async with http.post(f"{base}/logout", allow_redirects=False) as r:
        assert r.status == 303
    async with http.get(f"{base}/api/summary") as r:
        assert r.status == 401


async def test_sso_proxy_header_only_from_the_proxy(fleet_dsn: str) -> None:
    async with aiohttp.ClientSession() as http:
        # the header from an address that is not the proxy's: ignored
        s = await serve(make_app(fleet_dsn, trusted_proxy_header="X-Forwarded-User", trusted_proxies=["10.9.8.7"]))
        try:
            async with http.get(f"{s.url}/dashboard/api/meta", headers={"X-Forwarded-User": "alice"}) as r:
                assert r.status == 401
        finally:
            await s.close()
        # the proxy on loopback: its user is the viewer
        s = await serve(make_app(fleet_dsn, trusted_proxy_header="X-Forwarded-User", trusted_proxies=["127.0.0.1"]))
        try:
            async with http.get(f"{s.url}/dashboard/api/meta", headers={"X-Forwarded-User": "alice@center"}) as r:
                assert r.status == 200 and (await r.json())["viewer"] == {"name": "alice@center", "via": "proxy"}
            async with http.get(f"{s.url}/dashboard/api/meta") as r:  # the proxy let someone through unnamed
                assert r.status == 401
        finally:
            await s.close()


def test_tokens_are_configured_as_hashes(fleet_dsn: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        make_app(fleet_dsn, viewer_tokens=[TOKEN])
    with pytest.raises(ValueError, match="trusted_proxies"):
        make_app(fleet_dsn, trusted_proxy_header="X-Forwarded-User")
    make_app(fleet_dsn, viewer_tokens=[token_hash(TOKEN).upper()])


BAD = [
    ({"sites": "nyc-1,atlantis"}, "sites: unknown site 'atlantis'"),
    ({"group": "north"}, "group: unknown group 'north'"),
    ({"group": "west", "sites": "nyc-1"}, "sites: nyc-1 not in group 'west'"),
    ({"since": "2026-02-30"}, "since: '2026-02-30' is not a date (YYYY-MM-DD)"),
    ({"until": "yesterday"}, "until: 'yesterday' is not a date (YYYY-MM-DD)"),
    ({"since": "2026-03-09", "until": "2026-03-01"}, "since 2026-03-09 is after until 2026-03-01"),
    ({"since": "2024-01-01", "until": "2026-03-01"}, "791 days: at most 366 at a time"),
    ({"since": "2026-01-01", "until": "2026-03-01", "by": "hour"}, "60 days by hour: at most 31 days by hour"),
    ({"by": "week"}, "by: 'week' is not one of day, hour"),
    ({"zone": "Mars/Olympus"}, "zone: 'Mars/Olympus' is not an IANA time zone"),
    ({"zone": "../../etc/passwd"}, "zone: '../../etc/passwd' is not an IANA time zone"),
    ({"rank": "salary"}, "rank: 'salary' is not a KPI the dashboard shows"),
    ({"heat": "sales"}, "heat: 'sales' is not one of offered, ivr_calls"),
    ({"by": ["day", "hour"]}, "by: one value, not 2"),
    ({"sites": "x'); DROP TABLE events; --"}, "sites: unknown site"),
]


@pytest.mark.parametrize("table", ["summary", "series.csv"])
async def test_bad_filters_are_400_with_the_reason(table: str, served: Served, http: aiohttp.ClientSession) -> None:
    for query, message in BAD:
        params = [(k, x) for k, v in query.items() for x in (v if isinstance(v, list) else [v])]
        async with http.get(f"{served.url}/dashboard/api/{table}", headers=AUTH, params=params) as r:
            assert r.status == 400, query
            assert message in (await r.json())["error"], query
    async with http.get(f"{served.url}/dashboard/api/salaries", headers=AUTH) as r:
        assert r.status == 404


async def test_page_is_local_only_and_locked_down(served: Served, http: aiohttp.ClientSession) -> None:
    base = f"{served.url}/dashboard"
    async with http.get(f"{base}/", headers=AUTH) as r:
        page = await r.text()
        assert r.headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe" not in CSP
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Cache-Control"] == "no-store"
    # every script is a file of ours; nothing names another origin
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="static/plotly.min.js" defer>',
                                                   '<script src="static/dashboard.js" defer>']
    assert "<style" not in page and " style=" not in page  # no inline style
    assert not re.search(r"\son[a-z]+\s*=", page)  # no inline event handler
    for name in ("dashboard.js", "dashboard.css"):
        async with http.get(f"{base}/static/{name}") as r:  # public: no figures in them
            assert r.status == 200
            text = await r.text()
        assert not re.search(r"https?://", text), name
        assert "@import" not in text and "url(" not in text, name
    assert not re.search(r"https?://", page)
    # Plotly's bundle from the installed package, gzipped, cacheable
    async with http.get(f"{base}/static/plotly.min.js", headers={"Accept-Encoding": "gzip"}) as r:
        assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Content-Type"].startswith("text/javascript")
        etag = r.headers["ETag"]
        assert (await r.text()).lstrip().startswith("/**\n* plotly.js v")
    async with http.get(f"{base}/static/plotly.min.js", headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    async with http.get(f"{base}/static/..%2Fdashboard.py") as r:
        assert r.status == 404
    async with http.get(f"{base}/static/index.html") as r:
        assert r.status == 404
    # /dashboard without its slash
    async with http.get(base, allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/dashboard/"


def test_default_filters() -> None:
    sites = [data.Site("a", "A", "g1", "Europe/Paris", "FR"), data.Site("b", "B", "g1", "Europe/Paris", "FR"),
             data.Site("c", "C", "g2", "Asia/Tokyo", "JP")]
    # every site, zones differ: UTC; the last 7 days to today
    f = data.parse_filters({}, sites, now=NOW)
    assert (f.site_ids, f.zone, f.first, f.last, f.by) == (["a", "b", "c"], "UTC", date(2026, 3, 4),
                                                            date(2026, 3, 10), "day")
    # one site: its zone, and its today (21:00 in Tokyo is already the 10th; NOW is 12:00 UTC)
    f = data.parse_filters({"sites": "c"}, sites, now=NOW.replace(hour=23))
    assert (f.zone, f.last, f.region) == ("Asia/Tokyo", date(2026, 3, 11), "JP")
    # a group whose sites share a zone: that zone; until alone: the week to it
    f = data.parse_filters({"group": "g1", "until": "2026-02-01"}, sites, now=NOW)
    assert (f.site_ids, f.zone, f.first, f.last) == (["a", "b"], "Europe/Paris", date(2026, 1, 26), date(2026, 2, 1))
    assert f.since == buckets.midnight(date(2026, 1, 26), "Europe/Paris")
    with pytest.raises(data.FilterError, match="no site has reported yet"):
        data.parse_filters({}, [], now=NOW)


async def test_database_down_is_503_not_500(fleet_dsn: str) -> None:
    """No pool yet (the collector still connecting), or PostgreSQL refusing connections: 503 + Retry-After
    with the reason, which the page shows."""
    dead = await asyncpg.create_pool(f"postgresql://nobody@127.0.0.1:{free_port()}/none", min_size=0)
    pools: list[asyncpg.Pool | None] = [None, dead]
    app = web.Application()
    add_dashboard(app, get_pool=lambda request: pools[0], viewer_tokens={"manager": token_hash(TOKEN)})
    s = await serve(app)
    try:
        async with aiohttp.ClientSession() as http:
            for reason in ("not connected yet", "unavailable"):
                async with http.get(f"{s.url}/dashboard/api/summary", headers=AUTH) as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "10"
                    assert reason in (await r.json())["error"]
                pools.pop(0)
    finally:
        await s.close()
        await dead.close()
    with pytest.raises(ValueError, match="pool_key or get_pool"):
        add_dashboard(web.Application(), viewer_tokens=[])


async def test_mounted_on_the_collectors_app(fleet_dsn: str) -> None:
    """The collector's own app (ivr_central.server.make_app) mounts the dashboard beside ingest from its
    config (dashboard.viewers): the pool is the collector's, looked up per request; the collector's routes
    are untouched."""
    c = server.Collector(CentralConfig(dsn=fleet_dsn, dashboard=DashboardConfig(
        viewers=(Viewer("manager", token_hash(TOKEN)),))))
    await c.open_pool()
    app = server.make_app(c)
    s = await serve(app)
    try:
        async with aiohttp.ClientSession() as http:
            t = await get_json(http, f"{s.url}/dashboard/api/summary",
                               params={"sites": "nyc-1", "since": "2026-03-03", "until": "2026-03-09"})
            assert t["filters"]["site_ids"] == ["nyc-1"] and t["rows"][0][2] > 0
            async with http.get(f"{s.url}/healthz") as r:
                assert r.status == 200 and "Content-Security-Policy" not in r.headers  # the dashboard's only
            async with http.post(f"{s.url}/v1/events", data=b"") as r:
                assert r.status == 401  # ingest still wants a site's token
    finally:
        await s.close()
        assert c.pool is not None
        await c.pool.close()
        c.executor.shutdown()
