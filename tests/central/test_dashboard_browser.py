"""The dashboard in a real browser: Debian's headless Chromium, driven over the DevTools protocol, signs in,
loads the page from a test collector over three sites' week in PostgreSQL, and draws every chart; the tiles
show the API's figures; filters chosen by clicking change them to what the API gives for those filters; the
CSV links return the tables' figures; nothing is fetched from another origin and the CSP holds. The
screenshots (``dashboard.png`` and the others) are left in the test's temporary directory: the CI artifact."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr_central import dashboard_data as data
from ivr_central.pgtemp import PgTemp
from tests.central.cdp import Browser, chromium
from tests.central.dash_app import TOKEN, Served, fleet_db, make_app, serve

pytestmark = pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")

AUTH = {"Authorization": f"Bearer {TOKEN}"}
READY = "document.body && document.body.dataset.ready === '1'"
EMPTY_SHA256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # the hash of an empty inline style

#: each panel's chart and the Plotly trace elements that show it was drawn with data
PANELS = {
    "chart-traffic": "g.trace.bars", "chart-sl": "g.trace.scatter", "chart-asa": "g.trace.bars",
    "chart-containment": "g.trace.scatter", "chart-exits": "g.trace.bars", "chart-callbacks": "g.trace.bars",
    "chart-ewt": "g.trace.scatter", "chart-csat": "g.trace.scatter", "chart-nps": "g.trace.scatter",
    "chart-heatmap": "g.hm", "chart-sites": "g.trace.bars",
}
TILES = ["offered", "answered", "abandoned", "service_level", "asa", "containment", "callback_requests",
         "callback_completed", "callback_promise_kept", "ewt_mae", "csat", "nps"]


@pytest.fixture(scope="module")
def fleet_dsn(pg_server: PgTemp) -> str:
    return asyncio.run(fleet_db(pg_server))


@pytest.fixture
async def served(fleet_dsn: str) -> AsyncIterator[Served]:
    s = await serve(make_app(fleet_dsn))
    yield s
    await s.close()


async def api(served: Served, table: str, **query: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"{served.url}/dashboard/api/{table}", headers=AUTH,
                                                         params=query) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def shown_number(text: str) -> float:
    """The number a tile shows: ``1,573``, ``71.7 %``, ``14.4 s``, ``+4.7``."""
    return float(re.sub(r"[^0-9.\-]", "", text.replace("\u2212", "-")))


async def check_tiles(b: Browser, summary: dict[str, Any]) -> None:
    tiles = await b.eval("[...document.querySelectorAll('.tile')].map(t => ({kpi: t.dataset.kpi, "
                         "value: t.dataset.value, n: t.dataset.n, "
                         "shown: t.querySelector('.tile-value').textContent, "
                         "n_shown: t.querySelector('.tile-n').textContent}))")
    assert [t["kpi"] for t in tiles] == TILES
    rows = {r[0]: dict(zip(summary["columns"], r, strict=True)) for r in summary["rows"]}
    for t in tiles:
        want = rows[t["kpi"]]
        assert want["value"] is not None, f"{t['kpi']}: the view should have data"
        assert float(t["value"]) == want["value"] and int(t["n"]) == want["n"], t
        scale = 100 if want["unit"] == "share" else 1
        assert abs(shown_number(t["shown"]) - want["value"] * scale) <= 0.051, t
        assert t["n_shown"] == f"n = {want['n']:,}", t


async def check_charts(b: Browser) -> dict[str, Any]:
    """Every panel drew its chart: Plotly's SVG with the traces' elements in it; their titles have units."""
    drawn = await b.eval("Object.fromEntries([...document.querySelectorAll('.chart')].map(c => [c.id, {"
                         "svg: c.querySelectorAll('.main-svg').length, traces: (c.data || []).length, "
                         "nodata: !!c.querySelector('.nodata'), "
                         "title: c.closest('section').querySelector('h2').textContent}]))")
    assert set(drawn) == set(PANELS)
    for chart, selector in PANELS.items():
        d = drawn[chart]
        assert d["svg"] >= 1 and d["traces"] >= 1 and not d["nodata"], (chart, d)
        assert await b.eval(f"document.querySelectorAll('#{chart} {selector}').length") >= 1, (chart, selector)
        assert re.search(r"\(.+\)", d["title"]), f"{chart}: the title names its unit: {d['title']}"
    return drawn


async def csp_reports_are_harmless(b: Browser) -> None:
    """The only inline styles the page's CSP blocked are empty style attributes (d3 clearing them) and the
    stylesheet MapLibre (map traces, unused here) injects when plotly.min.js loads: nothing the page uses."""
    maplibre = await b.eval(
        "Promise.all([...document.querySelectorAll('style')].filter(s => s.textContent.includes('.maplibregl'))"
        ".map(async s => btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest('SHA-256', "
        "new TextEncoder().encode(s.textContent)))))))")
    allowed = {EMPTY_SHA256, *maplibre}
    blocked = [e["text"] for e in b.log if e["source"] == "security"]
    for text in blocked:
        m = re.search(r"'sha256-([A-Za-z0-9+/=]+)'", text)
        assert "style-src" in text and m and m.group(1) in allowed, text
    assert not [e for e in b.log if e["source"] == "exception" or (e["source"] == "console" and e["level"] == "error")]


async def sign_in(b: Browser, served: Served, path: str = "/dashboard/") -> None:
    await b.goto(served.url + path)
    assert await b.eval("location.pathname") == "/dashboard/login"
    await b.eval(f"document.getElementById('token').value = {json.dumps(TOKEN)}")
    await b.click_to_load("form button[type=submit]")
    assert await b.eval("location.pathname + location.search") == path
    await b.wait_for(READY, 90)


async def test_dashboard_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    async with Browser.launch(tmp_path) as b:
        await sign_in(b, served)
        assert not await b.eval("document.body.dataset.error || ''")

        # every site (the default view): the tiles are the API's figures, every chart is drawn
        summary = await api(served, "summary")
        await check_tiles(b, summary)
        await check_charts(b)
        view = await b.eval("document.getElementById('view').textContent")
        assert view.startswith("All sites (3)") and "UTC" in view and "by day" in view
        shot = await b.screenshot(tmp_path / "dashboard.png")
        print(f"screenshot: {shot}")

        # the traffic chart's points are the series table's
        series = await api(served, "series")
        traces = await b.eval("document.getElementById('chart-traffic').data.map(t => [t.name, t.y])")
        assert traces[0] == ["Answered", [r[series["columns"].index("answered")] for r in series["rows"]]]
        assert traces[1] == ["Abandoned", [r[series["columns"].index("abandoned")] for r in series["rows"]]]
        heat = await b.eval("document.getElementById('chart-heatmap').data[0].z")
        assert heat == [r[1:25] for r in (await api(served, "heatmap"))["rows"]]

        # rank the sites by ASA with the select: the table follows the API's order, the URL keeps it
        await b.eval("(() => { const s = document.getElementById('rank'); s.value = 'asa'; "
                     "s.dispatchEvent(new Event('change')); })()")
        await b.wait_for("document.getElementById('rank-label').textContent.startsWith('asa')", 30)
        await b.wait_for(READY, 60)
        order = await b.eval("[...document.querySelectorAll('#sites-table tbody tr')].map(r => r.dataset.site)")
        ranked = await api(served, "sites", rank="asa")
        assert order == [r[0] for r in ranked["rows"]]
        assert "rank=asa" in await b.eval("location.search")

        # the CSV link of the sites table, fetched by the page itself: the API's figures
        text = await b.eval("fetch(document.querySelector('a.csv[data-table=sites]').href).then(r => r.text())")
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ranked["columns"]
        for cells, values in zip(rows[1:], ranked["rows"], strict=True):
            assert [("" if v is None else str(v)) for v in values] == cells

        # choose one site, other dates and by hour by clicking through the filter form
        await b.eval("(() => { for (const o of document.getElementById('sites').options) o.selected = "
                     "o.value === 'nyc-1'; document.getElementById('since').value = '2026-03-06'; "
                     "document.getElementById('until').value = '2026-03-09'; "
                     "document.querySelector('input[name=by][value=hour]').checked = true; })()")
        await b.click_to_load("#apply")
        await b.wait_for(READY, 90)
        search = await b.eval("location.search")
        for part in ("sites=nyc-1", "since=2026-03-06", "until=2026-03-09", "by=hour", "rank=asa"):
            assert part in search, search
        one = await api(served, "summary", sites="nyc-1", since="2026-03-06", until="2026-03-09", by="hour")
        assert one["filters"]["zone"] == "America/New_York"  # one site: its own zone
        assert one["rows"] != summary["rows"]
        await check_tiles(b, one)  # every KPI for one site
        await check_charts(b)
        view = await b.eval("document.getElementById('view').textContent")
        assert view.startswith("New York") and "America/New_York" in view and "by hour" in view
        hours = await b.eval("document.getElementById('chart-sl').data[0].x.length")
        assert hours == 4 * 24 - 1  # 6-9 March in New York: the 8th had 23 hours
        await b.screenshot(tmp_path / "dashboard-nyc-1-by-hour.png")

        # the heat map's measure: calls into the IVR instead of queue entries
        await b.eval("(() => { const s = document.getElementById('heat'); s.value = 'ivr_calls'; "
                     "s.dispatchEvent(new Event('change')); })()")
        await b.wait_for("location.search.includes('heat=ivr_calls')", 30)
        await b.wait_for(READY, 60)
        ivr = await api(served, "heatmap", sites="nyc-1", since="2026-03-06", until="2026-03-09", heat="ivr_calls")
        assert await b.eval("document.getElementById('chart-heatmap').data[0].z") == [r[1:25] for r in ivr["rows"]]

        # a period with no calls: "no data" in every panel instead of empty charts
        await b.goto(f"{served.url}/dashboard/?since=2025-01-01&until=2025-01-07")
        await b.wait_for(READY, 90)
        empty = await b.eval("[...document.querySelectorAll('.chart')].filter(c => c.querySelector('.nodata'))"
                             ".map(c => c.id)")
        assert sorted(empty) == sorted(PANELS)
        assert await b.eval("[...document.querySelectorAll('.tile')].filter(t => t.dataset.kpi !== 'offered' "
                            "&& t.dataset.kpi !== 'answered' && t.dataset.kpi !== 'abandoned' "
                            "&& t.dataset.kpi !== 'callback_requests').every(t => t.textContent.includes('no data'))")
        await b.screenshot(tmp_path / "dashboard-no-data.png")

        # a bad filter in a shared URL: the reason on the page
        await b.goto(f"{served.url}/dashboard/?sites=atlantis")
        await b.wait_for(READY, 30)
        assert "unknown site 'atlantis'" in await b.eval("document.getElementById('error').textContent")

        # nothing from another origin; what the CSP blocked is nothing the page uses
        foreign = [u for u in b.requests if not u.startswith((served.url + "/", "data:", "about:"))]
        assert not foreign, foreign
        await csp_reports_are_harmless(b)


async def test_one_site_and_every_site_show_every_kpi(served: Served, tmp_path: Path) -> None:
    """Done when: the dashboard shows every KPI for one site and for all sites (a group, too)."""
    async with Browser.launch(tmp_path) as b:
        await sign_in(b, served, "/dashboard/?sites=den-1&since=2026-03-03&until=2026-03-09")
        for query in ({"sites": "den-1", "since": "2026-03-03", "until": "2026-03-09"},
                      {"since": "2026-03-03", "until": "2026-03-09"},
                      {"group": "east", "since": "2026-03-03", "until": "2026-03-09", "zone": "America/New_York"}):
            path = "/dashboard/?" + "&".join(f"{k}={v}" for k, v in query.items())
            await b.goto(served.url + path)
            await b.wait_for(READY, 90)
            assert not await b.eval("document.body.dataset.error || ''")
            await check_tiles(b, await api(served, "summary", **query))
            await check_charts(b)
            names = [s.label for s in data.KPIS]
            table_head = await b.eval("[...document.querySelectorAll('#sites-table thead th')].map(t => t.textContent)")
            assert table_head[3:] == names
        await b.screenshot(tmp_path / "dashboard-east.png")
        await csp_reports_are_harmless(b)
