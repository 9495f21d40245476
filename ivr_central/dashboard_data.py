"""The dashboard's figures (issue 14 item 4): filters in, plain JSON-ready tables out.

This is the only module of the dashboard that reads PostgreSQL. Every figure is counted in SQL over the fact
rows by ``ivr_central.aggregates`` (the counting rules of ``ivr.kpi.measures``, the arithmetic of
``ivr.kpi.formulas``), so a view of the whole fleet is a few small result sets; tests/central/test_kpi_agree.py
holds those counts to ``ivr_central.kpi.report``'s figures and tests/central/test_dashboard_api.py holds the
tables to ``kpi.reference_report`` (the box's own ``ivr kpi`` code over the events). The HTTP side
(ivr_central.dashboard) never computes a figure: it shows these tables as charts and writes the same rows as
CSV, so a download is exactly what the page showed.

Every table has the same shape: ``{"table", "filters", "columns", "units", "rows", ...}``; ``rows`` are lists
in ``columns`` order, values as ``KpiReport.to_json`` rounds them (shares 0-1, seconds, NPS points), ``None``
where there is nothing to measure; every value column ``k`` has its sample size beside it as ``k_n``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from ivr.kpi import buckets, formulas
from ivr.kpi.measures import DEFAULT_SHORT_ABANDON_S, DEFAULT_SL_THRESHOLD_S
from ivr.kpi.report import json_value
from ivr_central import aggregates as agg

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
#
# Every figure the dashboard shows is a count or a sum PostgreSQL takes over the fact rows (ivr_central.aggregates:
# the counting rules of ivr.kpi.measures, held to ``kpi.report``'s figures by tests/central/test_kpi_agree.py) fed
# to ivr.kpi.formulas, and rounded as ``KpiReport.to_json`` rounds. ``kpi.report`` (every fact row of the period
# into Python) stays the reference and the tool for what the dashboard does not show (first-call resolution,
# traffic, by flow / node / queue): at 10^6 events over 1,000 sites it takes ~10 s for the fleet, the aggregates
# a fraction of that (docs/central-dashboard.md, "Speed"). No dashboard figure needs it, so none reads it.

@dataclass(frozen=True)
class _Counts:
    """The aggregate rows of one slice (the period, a bucket or a site); None: nothing counted there."""

    queue: agg.QueueRow | None = None
    ivr: agg.IvrRow | None = None
    callbacks: agg.CallbackRow | None = None
    surveys: agg.SurveyRow | None = None

    def measures(self) -> dict[str, formulas.Measure]:
        """Every dashboard KPI as a ``Measure`` (value unrounded, n), as ``kpi.report`` has it: a count's n is
        the population it was counted in (answered / abandoned: the queue entries), a ratio's its denominator."""
        q, i = self.queue or _EMPTY_QUEUE, self.ivr or _EMPTY_IVR
        cb, sv = self.callbacks or _EMPTY_CALLBACKS, self.surveys or _EMPTY_SURVEYS
        return {
            "offered": _count(q.offered, q.offered),
            "answered": _count(q.answered, q.offered),
            "abandoned": _count(q.abandoned, q.offered),
            "abandonment_rate": q.abandonment_rate(),
            "service_level": q.service_level(),
            "asa": q.asa(),
            "ivr_calls": _count(i.calls, i.calls),
            "containment": i.containment(),
            "callback_requests": _count(cb.requested, cb.requested),  # callback_completed's detail "requests"
            "callback_completed": cb.completed(),
            "callback_promise_kept": cb.promise_kept(),
            "ewt_mae": cb.ewt_mae(),
            "ewt_bias": cb.ewt_bias(),
            "csat": sv.csat(),
            "nps": sv.nps(),
        }


def _count(k: int, n: int) -> formulas.Measure:
    return formulas.Measure(float(k), n)


def _empty(cls: type[Any], **kw: Any) -> Any:
    """A row of ``cls`` with nothing counted (every count and sum 0)."""
    zero = {fl.name: 0 for fl in fields(cls) if fl.name != "at"}
    return cls(at=agg.Slice("", None, None), **{**zero, **kw})


_EMPTY_QUEUE: agg.QueueRow = _empty(agg.QueueRow, ended_wait_max=None, threshold_s=DEFAULT_SL_THRESHOLD_S,
                                    short_abandon_s=DEFAULT_SHORT_ABANDON_S)
_EMPTY_IVR: agg.IvrRow = _empty(agg.IvrRow)
_EMPTY_CALLBACKS = agg.CallbackRow(agg.Slice("", None, None))
_EMPTY_SURVEYS: agg.SurveyRow = _empty(agg.SurveyRow)


def _end(f: Filters, now: datetime) -> datetime:
    """Where the period's figures stop: its end, or now (the rest has not happened; ``kpi.report`` alike)."""
    return min(f.until, now)


@asynccontextmanager
async def _snapshot(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """One read-only snapshot for a table's queries (its figures agree with each other while boxes post), JIT
    off as ``aggregates`` has it (compiling these plans costs seconds on a small box and wins nothing)."""
    if conn.is_in_transaction():
        yield
        return
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL jit = off")
        yield


async def _counts(conn: asyncpg.Connection, f: Filters, *, now: datetime, by: str | None = None,
                  bucket: str | None = None) -> dict[tuple[str, str | None], _Counts]:
    """The aggregate rows of the filters' sites and period (to ``now``) by ``(key, bucket key)``: ``key`` the
    site (``by="site"``) or ``""``, the bucket key that of ``ivr.kpi.buckets`` (None: the whole period)."""
    a: dict[str, Any] = {"sites": f.site_ids, "since": f.since, "until": _end(f, now), "zone": f.zone, "by": by,
                         "bucket": bucket}
    parts: dict[tuple[str, str | None], dict[str, Any]] = {}
    for name, rows in (("queue", await agg.queue_series(conn, **a)), ("ivr", await agg.ivr_series(conn, **a)),
                       ("callbacks", await agg.callback_series(conn, **a)),
                       ("surveys", await agg.survey_series(conn, **a))):
        for r in rows:
            parts.setdefault((r.at.key, r.at.bucket), {})[name] = r
    return {k: _Counts(**v) for k, v in parts.items()}


def _buckets(f: Filters, now: datetime, by: str) -> list[buckets.Bucket]:
    """The period's hours or days up to now (those ``kpi.report`` has a group for, empty ones included)."""
    return list((buckets.hours if by == "hour" else buckets.days)(f.since, _end(f, now), f.zone))


def _kpi_columns(specs: Iterable[Spec]) -> tuple[list[str], list[str]]:
    cols: list[str] = []
    units: list[str] = []
    for s in specs:
        cols += [s.name, f"{s.name}_n"]
        units += [s.unit, "n"]
    return cols, units


def _kpi_cells(c: _Counts, specs: Iterable[Spec]) -> list[Any]:
    ms = c.measures()
    out: list[Any] = []
    for s in specs:
        out += [json_value(ms[s.name].value, s.unit), ms[s.name].n]
    return out


def _table(name: str, f: Filters, columns: list[str], units: list[str], rows: list[list[Any]],
           **extra: Any) -> dict[str, Any]:
    return {"table": name, "filters": f.as_dict(), "columns": columns, "units": units, "rows": rows, **extra}


async def summary(conn: asyncpg.Connection, f: Filters, *, now: datetime, targets: Targets) -> dict[str, Any]:
    """One row per KPI over the whole period: the tiles. None of them is provisional (only first-call
    resolution is, and the dashboard does not show it); the column stays for the page and the CSV."""
    async with _snapshot(conn):
        c = (await _counts(conn, f, now=now)).get(("", None), _Counts())
    ms = c.measures()
    rows = [[s.name, s.label, json_value(ms[s.name].value, s.unit), ms[s.name].n, s.unit, False] for s in KPIS]
    return _table("summary", f, ["kpi", "label", "value", "n", "unit", "provisional"],
                  ["", "", "", "n", "", ""], rows, targets=targets.as_dict(),
                  sl_threshold_s=(c.queue or _EMPTY_QUEUE).threshold_s,
                  now=now.astimezone(buckets.as_zone(f.zone)).isoformat())


async def series(conn: asyncpg.Connection, f: Filters, *, now: datetime) -> dict[str, Any]:
    """One row per day or hour of the period (the zone's, DST-correct; hours not yet come are left out)."""
    async with _snapshot(conn):
        per = await _counts(conn, f, now=now, bucket=f.by)
    cols, units = _kpi_columns(KPIS)
    rows = [[b.key, *_kpi_cells(per.get(("", b.key), _Counts()), KPIS)] for b in _buckets(f, now, f.by)]
    return _table("series", f, ["bucket", *cols], ["", *units], rows)


async def heatmap(conn: asyncpg.Connection, f: Filters, *, now: datetime) -> dict[str, Any]:
    """Calls by local day (rows) and hour of the day (columns 00-23): ``heat`` = queue entries (offered) or
    calls into the IVR. A repeated hour (clocks back) adds into its hour; an hour that did not exist (clocks
    forward) or has not come yet is None."""
    async with _snapshot(conn):
        cells = await agg.heat_map(conn, sites=f.site_ids, since=f.since, until=_end(f, now), zone=f.zone)
    tz = buckets.as_zone(f.zone)
    grid: dict[str, list[Any]] = {}
    for b in _buckets(f, now, "hour"):  # every hour of the clock the period had: 0 until counted
        local = b.start.astimezone(tz)
        grid.setdefault(local.date().isoformat(), [None] * 24)[local.hour] = 0
    for cell in cells:
        row = grid[cell.day.isoformat()]
        row[cell.hour] = (row[cell.hour] or 0) + (cell.offered if f.heat == "offered" else cell.calls)
    rows = [[day, *cells_, sum(c for c in cells_ if c is not None)] for day, cells_ in grid.items()]
    return _table("heatmap", f, ["day", *[f"{h:02d}" for h in range(24)], "total"],
                  ["", *["calls"] * 24, "calls"], rows, measure=f.heat)


async def exits(conn: asyncpg.Connection, f: Filters, *, now: datetime) -> dict[str, Any]:
    """Where callers leave the menu: per node, the callers who hung up there and the calls that entered it
    (``ivr_abandon_rate`` by node), most left first."""
    async with _snapshot(conn):
        nodes = await agg.ivr_abandon_by_node(conn, sites=f.site_ids, since=f.since, until=_end(f, now),
                                              zone=f.zone)
    nodes = sorted(nodes, key=lambda r: (-r.abandoned, -(r.abandon_rate().value or 0), r.node))
    rows = [[r.node, r.abandoned, r.entered, json_value(r.abandon_rate().value, "share")] for r in nodes]
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
    async with _snapshot(conn):
        per_site = await _counts(conn, f, now=now, by="site")
    rows = []
    for s in f.sites:
        c = per_site.get((s.site_id, None), _Counts())
        rows.append([s.site_id, s.name or s.site_id, s.group, *_kpi_cells(c, KPIS)])
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
