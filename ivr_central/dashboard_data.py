"""The dashboard's figures (issue 14 item 4): filters in, plain JSON-ready tables out.

This is the only module of the dashboard that reads PostgreSQL. Every figure comes from a ``KpiReport``
made by ``_report`` — today ``ivr_central.kpi.reference_report`` (the box's own ``ivr kpi`` code over the
events read back: right by construction, not fast); when the fact tables and their SQL aggregates land,
``_report`` is the one place that changes. The HTTP side (ivr_central.dashboard) never computes a figure:
it shows these tables as charts and writes the same rows as CSV, so a download is exactly what the page
showed.

Every table has the same shape: ``{"table", "filters", "columns", "units", "rows", ...}``; ``rows`` are lists
in ``columns`` order, values as ``KpiReport.to_json`` rounds them (shares 0-1, seconds, NPS points), ``None``
where there is nothing to measure; every value column ``k`` has its sample size beside it as ``k_n``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from ivr.kpi import buckets
from ivr_central import kpi

BY = ("day", "hour")
MAX_DAYS = 366  # a year by day
MAX_HOUR_DAYS = 31  # by hour: 744 points is the most a chart can show readably
DEFAULT_DAYS = 7
HEAT_MEASURES = ("offered", "ivr_calls")


@dataclass(frozen=True)
class Spec:
    """A KPI as the dashboard shows it. ``better``: which way is good (``high``/``low``), for ranking and
    colouring; None for volumes. ``source``: the report figure it is read from, when that is a KPI's
    ``detail`` entry rather than a KPI (``(kpi, detail key)``)."""

    name: str
    label: str
    unit: str
    better: str | None = None
    source: tuple[str, str] | None = None


#: Every KPI the dashboard shows, in tile order (names as docs/kpi.md).
KPIS: tuple[Spec, ...] = (
    Spec("offered", "Offered", "calls"),
    Spec("answered", "Answered", "calls", "high"),
    Spec("abandoned", "Abandoned", "calls", "low"),
    Spec("abandonment_rate", "Abandonment rate", "share", "low"),
    Spec("service_level", "Service level", "share", "high"),
    Spec("asa", "ASA", "s", "low"),
    Spec("ivr_calls", "IVR calls", "calls"),
    Spec("containment", "IVR containment", "share", "high"),
    Spec("callback_requests", "Callbacks requested", "calls", None, ("callback_completed", "requests")),
    Spec("callback_completed", "Callbacks completed", "share", "high"),
    Spec("callback_promise_kept", "Callback promise kept", "share", "high"),
    Spec("ewt_mae", "EWT error (mean abs.)", "s", "low"),
    Spec("ewt_bias", "EWT bias", "s"),
    Spec("csat", "CSAT", "share", "high"),
    Spec("nps", "NPS", "points", "high"),
)
SPECS = {s.name: s for s in KPIS}


@dataclass(frozen=True)
class Targets:
    """The target lines drawn on the service level and ASA charts (the SL threshold T itself is the KPI's
    own, ``Params.sl_threshold_s``: the chart names it from the figure's detail)."""

    service_level: float = 0.80
    asa_s: float = 20.0

    def as_dict(self) -> dict[str, float]:
        return {"service_level": self.service_level, "asa": self.asa_s}


class FilterError(ValueError):
    """A filter the dashboard cannot honour; its text is shown to the user (HTTP 400)."""


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    group: str
    zone: str
    region: str

    def as_dict(self) -> dict[str, str]:
        return {"site_id": self.site_id, "name": self.name or self.site_id, "group": self.group,
                "zone": self.zone}


async def load_sites(conn: asyncpg.Connection) -> list[Site]:
    rows = await conn.fetch("SELECT site_id, name, grp, zone, region FROM sites ORDER BY site_id")
    return [Site(r["site_id"], r["name"], r["grp"], r["zone"], r["region"]) for r in rows]


@dataclass(frozen=True)
class Filters:
    """What a view shows: the sites, local days ``first``..``last`` (both included) of ``zone``, buckets."""

    sites: tuple[Site, ...]
    chosen: tuple[str, ...]  # the sites named in the request ('' : all of them or the group's)
    group: str | None
    first: date
    last: date
    zone: str
    by: str
    rank: str = "offered"
    heat: str = "offered"
    today: date | None = None  # the zone's date "now" (the quick ranges end there)

    @property
    def since(self) -> datetime:
        return buckets.midnight(self.first, self.zone)

    @property
    def until(self) -> datetime:
        return buckets.midnight(self.last + timedelta(days=1), self.zone)

    @property
    def site_ids(self) -> list[str]:
        return [s.site_id for s in self.sites]

    @property
    def region(self) -> str:
        """The numbering region for reading caller IDs (FCR): the sites' own when they share one."""
        regions = {s.region for s in self.sites}
        return regions.pop() if len(regions) == 1 else "US"

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.first.isoformat(), "until": self.last.isoformat(), "sites": list(self.chosen),
                "group": self.group or "", "zone": self.zone, "by": self.by, "rank": self.rank,
                "heat": self.heat, "site_ids": self.site_ids,
                "today": self.today.isoformat() if self.today else None}


def _values(query: Mapping[str, Any], name: str) -> list[str]:
    """A parameter's values: repeated (``sites=a&sites=b``, an HTML multiple select) or comma separated."""
    getall = getattr(query, "getall", None)
    raw = getall(name, []) if getall is not None else ([query[name]] if name in query else [])
    out: list[str] = []
    for v in raw:
        out += [p.strip() for p in str(v).split(",") if p.strip()]
    return out


def _one(query: Mapping[str, Any], name: str) -> str | None:
    vs = _values(query, name)
    if len(vs) > 1:
        raise FilterError(f"{name}: one value, not {len(vs)}")
    return vs[0] if vs else None


def _day(text: str, name: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise FilterError(f"{name}: {text[:40]!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None


def _zone(text: str) -> str:
    try:
        if not re.fullmatch(r"[A-Za-z0-9_+\-/]{1,64}", text):
            raise ValueError
        ZoneInfo(text)
    except (ValueError, ZoneInfoNotFoundError):
        raise FilterError(f"zone: {text[:64]!r} is not an IANA time zone (e.g. Europe/Paris, UTC)") from None
    return text


def parse_filters(query: Mapping[str, Any], sites: Sequence[Site], *, now: datetime) -> Filters:
    """The filters of a request (``since``, ``until``: local dates, both included; ``sites``: comma list;
    ``group``; ``zone``; ``by``: day or hour; ``rank``: the KPI the sites table is ranked by; ``heat``:
    the heat map's measure), checked against the known ``sites``. Defaults: every site, the last 7 days to
    today in the zone, by day; the zone is the chosen sites' own when they share one, else UTC."""
    known = {s.site_id: s for s in sites}
    chosen = _values(query, "sites")
    for sid in chosen:
        if sid not in known:
            raise FilterError(f"sites: unknown site {sid[:64]!r}")
    chosen = list(dict.fromkeys(chosen))
    group = _one(query, "group")
    picked = [known[sid] for sid in chosen] if chosen else list(sites)
    if group:
        if not any(s.group == group for s in sites):
            raise FilterError(f"group: unknown group {group[:64]!r}")
        outside = [s.site_id for s in picked if s.group != group]
        if chosen and outside:
            raise FilterError(f"sites: {', '.join(outside)} not in group {group!r}")
        picked = [s for s in picked if s.group == group]
    if not picked:
        raise FilterError("sites: no site has reported yet")
    zone_text = _one(query, "zone")
    if zone_text:
        zone = _zone(zone_text)
    else:
        zones = {s.zone for s in picked}
        zone = zones.pop() if len(zones) == 1 else "UTC"
        _zone(zone)
    by = _one(query, "by") or "day"
    if by not in BY:
        raise FilterError(f"by: {by[:20]!r} is not one of {', '.join(BY)}")
    today = now.astimezone(ZoneInfo(zone)).date()
    until_text, since_text = _one(query, "until"), _one(query, "since")
    last = _day(until_text, "until") if until_text else None
    first = _day(since_text, "since") if since_text else None
    if last is None:
        last = max(today, first) if first is not None and first > today else today
    if first is None:
        first = last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise FilterError(f"since {first} is after until {last}")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise FilterError(f"{days} days: at most {MAX_DAYS} at a time")
    if by == "hour" and days > MAX_HOUR_DAYS:
        raise FilterError(f"{days} days by hour: at most {MAX_HOUR_DAYS} days by hour (choose by day)")
    rank = _one(query, "rank") or "offered"
    if rank not in SPECS:
        raise FilterError(f"rank: {rank[:40]!r} is not a KPI the dashboard shows")
    heat = _one(query, "heat") or "offered"
    if heat not in HEAT_MEASURES:
        raise FilterError(f"heat: {heat[:40]!r} is not one of {', '.join(HEAT_MEASURES)}")
    return Filters(tuple(picked), tuple(chosen), group or None, first, last, zone, by, rank, heat, today)


# -- the one source of figures -----------------------------------------------------------------------------------

async def _report(conn: asyncpg.Connection, f: Filters, *, now: datetime, sites: Sequence[str] | None = None,
                  by: str | None = None) -> dict[str, Any]:
    """``KpiReport.to_json()`` of the filters' period over ``sites`` (default: the filters' sites), from the
    fact rows (``ivr_central.kpi.report``; ``by="site"``: one group per site)."""
    r = await kpi.report(conn, sites=list(sites if sites is not None else f.site_ids), since=f.since,
                         until=f.until, now=now, zone=f.zone, region=f.region, by=by)
    return r.to_json()


def _figure(kpis: Mapping[str, Any], spec: Spec) -> tuple[Any, int, Mapping[str, Any]]:
    """(value, n, detail) of one KPI in a report's ``totals`` or group."""
    if spec.source is not None:
        name, key = spec.source
        k = kpis.get(name) or {}
        v = (k.get("detail") or {}).get(key)
        return v, int(v or 0), {}
    k = kpis.get(spec.name) or {}
    return k.get("value"), int(k.get("n") or 0), k.get("detail") or {}


def _kpi_columns(specs: Iterable[Spec]) -> tuple[list[str], list[str]]:
    cols: list[str] = []
    units: list[str] = []
    for s in specs:
        cols += [s.name, f"{s.name}_n"]
        units += [s.unit, "n"]
    return cols, units


def _kpi_cells(kpis: Mapping[str, Any], specs: Iterable[Spec]) -> list[Any]:
    out: list[Any] = []
    for s in specs:
        v, n, _ = _figure(kpis, s)
        out += [v, n]
    return out


def _table(name: str, f: Filters, columns: list[str], units: list[str], rows: list[list[Any]],
           **extra: Any) -> dict[str, Any]:
    return {"table": name, "filters": f.as_dict(), "columns": columns, "units": units, "rows": rows, **extra}


async def summary(conn: asyncpg.Connection, f: Filters, *, now: datetime, targets: Targets) -> dict[str, Any]:
    """One row per KPI over the whole period: the tiles."""
    rep = await _report(conn, f, now=now)
    rows = []
    sl_threshold = None
    for s in KPIS:
        v, n, detail = _figure(rep["totals"], s)
        if s.name == "service_level":
            sl_threshold = detail.get("threshold_s")
        provisional = bool((rep["totals"].get(s.name) or {}).get("provisional"))
        rows.append([s.name, s.label, v, n, s.unit, provisional])
    return _table("summary", f, ["kpi", "label", "value", "n", "unit", "provisional"],
                  ["", "", "", "n", "", ""], rows, targets=targets.as_dict(), sl_threshold_s=sl_threshold,
                  now=rep["now"])


async def series(conn: asyncpg.Connection, f: Filters, *, now: datetime) -> dict[str, Any]:
    """One row per day or hour of the period (the zone's, DST-correct; hours not yet come are left out)."""
    rep = await _report(conn, f, now=now, by=f.by)
    cols, units = _kpi_columns(KPIS)
    rows = [[g["key"], *_kpi_cells(g["kpis"], KPIS)] for g in rep["groups"]]
    return _table("series", f, ["bucket", *cols], ["", *units], rows)


async def heatmap(conn: asyncpg.Connection, f: Filters, *, now: datetime) -> dict[str, Any]:
    """Calls by local day (rows) and hour of the day (columns 00-23): ``heat`` = queue entries (offered) or
    calls into the IVR. A repeated hour (clocks back) adds into its hour; an hour that did not exist (clocks
    forward) or has not come yet is None."""
    rep = await _report(conn, f, now=now, by="hour")
    spec = SPECS[f.heat]
    grid: dict[str, list[Any]] = {}
    for g in rep["groups"]:
        day, hour = g["key"][:10], int(g["key"][11:13])
        row = grid.setdefault(day, [None] * 24)
        v, _, _ = _figure(g["kpis"], spec)
        row[hour] = (row[hour] or 0) + int(v or 0)
    rows = [[day, *cells, sum(c for c in cells if c is not None)] for day, cells in grid.items()]
    return _table("heatmap", f, ["day", *[f"{h:02d}" for h in range(24)], "total"],
                  ["", *["calls"] * 24, "calls"], rows, measure=f.heat)


async def exits(conn: asyncpg.Connection, f: Filters, *, now: datetime) -> dict[str, Any]:
    """Where callers leave the menu: per node, the callers who hung up there and the calls that entered it
    (``ivr_abandon_rate`` by node), most left first."""
    rep = await _report(conn, f, now=now)
    rows = []
    for node, k in rep["ivr_abandon_by_node"].items():
        rows.append([node, int((k.get("detail") or {}).get("abandoned", 0)), int(k["n"]), k["value"]])
    rows.sort(key=lambda r: (-r[1], -(r[3] or 0), r[0]))
    return _table("exits", f, ["node", "abandoned", "entered", "abandon_rate"], ["", "calls", "calls", "share"],
                  rows)


def _rank_key(spec: Spec) -> Any:
    def key(row: list[Any], i: int) -> tuple[int, float, str]:
        v = row[i]
        if v is None:
            return (1, 0.0, row[0])
        return (0, float(v) if spec.better == "low" else -float(v), row[0])
    return key


async def sites_table(conn: asyncpg.Connection, f: Filters, *, now: datetime) -> dict[str, Any]:
    """One row per site with every KPI over the period, ranked by ``rank`` (best first: high or low by the
    KPI; volumes largest first; no figure last) — each site on its own, in the filters' zone."""
    cols, units = _kpi_columns(KPIS)
    rep = await _report(conn, f, now=now, by="site")
    per_site = {g["key"]: g["kpis"] for g in rep["groups"]}
    empty = (await _report(conn, f, now=now, sites=[])).get("totals") if len(per_site) < len(f.sites) else {}
    rows = []
    for s in f.sites:
        kpis = per_site.get(s.site_id, empty) or {}
        rows.append([s.site_id, s.name or s.site_id, s.group, *_kpi_cells(kpis, KPIS)])
    columns = ["site_id", "name", "group", *cols]
    i = columns.index(f.rank)
    key = _rank_key(SPECS[f.rank])
    rows.sort(key=lambda r: key(r, i))
    return _table("sites", f, columns, ["", "", "", *units], rows, rank=f.rank,
                  better=SPECS[f.rank].better)


TABLES = {"summary", "series", "heatmap", "exits", "sites"}


def meta(sites: Sequence[Site], *, targets: Targets, now: datetime) -> dict[str, Any]:
    """What the page needs to draw its filters: every site, the groups, the KPIs with labels and units."""
    return {"sites": [s.as_dict() for s in sites], "groups": sorted({s.group for s in sites if s.group}),
            "kpis": [{"name": s.name, "label": s.label, "unit": s.unit, "better": s.better} for s in KPIS],
            "targets": targets.as_dict(), "by": list(BY), "heat": list(HEAT_MEASURES),
            "max_days": MAX_DAYS, "max_hour_days": MAX_HOUR_DAYS, "now": now.isoformat()}
