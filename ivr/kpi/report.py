"""Every KPI over a period, in total and by flow, queue, hour, day or node: what ``ivr kpi`` prints.

Pure: events (and optionally queue_log rows and ``callback.kept`` records from elsewhere) in, a
``KpiReport`` out; "now", the period, the site's zone and its numbering region are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from ivr.kpi import buckets
from ivr.kpi import formulas as f
from ivr.kpi import measures as m
from ivr.kpi.experiments import Experiment
from ivr.kpi.experiments import compare as compare_variants
from ivr.kpi.experiments import render as render_experiments
from ivr.kpi.facts import (
    CallbackRequestFacts,
    CallFacts,
    QueueVisit,
    facts_from_events,
    parse_time,
    visits_from_queue_log,
)
from ivr.kpi.measures import Kpi

GROUP_BY = ("flow", "queue", "hour", "day", "node")
#: the box's own grouping besides: a call's ``split`` variants (the central store does not keep them yet)
VARIANT_BY = "variant"
BOX_GROUP_BY = (*GROUP_BY, VARIANT_BY)
#: the central store's groupings besides (ivr_central.kpi.report): a box is one site
SITE_GROUP_BY = ("site", "group")
NO_KEY = "-"  # the group of records that have none (a call never queued, a queue visit with no IVR call)


@dataclass(frozen=True)
class Params:
    """The thresholds and variants a report uses (each named in its KPIs' ``variant``)."""

    short_abandon_s: float = m.DEFAULT_SHORT_ABANDON_S
    sl_threshold_s: float = m.DEFAULT_SL_THRESHOLD_S
    sl_variant: str = f.SL_ANSWERED_ABANDONED
    abandon_variant: str = f.ABANDON_NO_SHORT
    fcr_windows: tuple[tuple[str, timedelta], ...] = m.FCR_WINDOWS

    def as_dict(self) -> dict[str, Any]:
        return {"short_abandon_s": self.short_abandon_s, "sl_threshold_s": self.sl_threshold_s,
                "sl_variant": self.sl_variant, "abandon_variant": self.abandon_variant,
                "fcr_windows": [label for label, _ in self.fcr_windows]}


@dataclass(frozen=True)
class Group:
    key: str
    kpis: tuple[Kpi, ...]

    def get(self, name: str) -> Kpi:
        return _get(self.kpis, name)


@dataclass(frozen=True)
class KpiReport:
    since: datetime
    until: datetime
    now: datetime
    zone: str
    by: str | None
    params: Params
    totals: tuple[Kpi, ...]
    groups: tuple[Group, ...] = ()
    abandon_by_node: Mapping[str, Kpi] = field(default_factory=dict)
    lookups_by_name: Mapping[str, tuple[Kpi, ...]] = field(default_factory=dict)
    """The look-up KPIs per look-up (the config's name, else the host)."""
    experiments: tuple[Experiment, ...] = ()
    """``by="variant"``: each experiment's variants against its control, with intervals."""

    def get(self, name: str) -> Kpi:
        """A KPI of the totals by name (``KeyError`` if there is none)."""
        return _get(self.totals, name)

    def group(self, key: str) -> Group:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(key)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: times in the site's zone, each KPI with value, n, unit, variant, provisional."""
        tz = buckets.as_zone(self.zone)
        return {
            "since": self.since.astimezone(tz).isoformat(), "until": self.until.astimezone(tz).isoformat(),
            "now": self.now.astimezone(tz).isoformat(), "zone": self.zone, "by": self.by,
            "params": self.params.as_dict(),
            "totals": {k.name: _json(k) for k in self.totals},
            "ivr_abandon_by_node": {node: _json(k) for node, k in self.abandon_by_node.items()},
            "lookups_by_name": {name: {k.name: _json(k) for k in ks} for name, ks in self.lookups_by_name.items()},
            "groups": [{"key": g.key, "kpis": {k.name: _json(k) for k in g.kpis}} for g in self.groups],
            **({"experiments": [e.as_dict() for e in self.experiments]} if self.by == VARIANT_BY else {}),
        }

    def rows(self) -> list[dict[str, Any]]:
        """Table rows: one per (group, KPI) — group ``all`` for the totals — with the value formatted."""
        out = [_row("all", k) for k in self.totals]
        for g in self.groups:
            out += [_row(g.key, k) for k in g.kpis]
        return out

    def render(self) -> str:
        """A readable table (the conventions of ``ivr calls``: one line per figure, ``-`` where there is
        nothing to measure, every figure with its n)."""
        tz = buckets.as_zone(self.zone)
        head = (f"KPIs {self.since.astimezone(tz).isoformat(timespec='minutes')} to "
                f"{self.until.astimezone(tz).isoformat(timespec='minutes')} ({self.zone})")
        lines = [head]
        blocks: list[tuple[str, Sequence[Kpi]]] = [("all", self.totals)]
        blocks += [(f"{self.by} {g.key}", g.kpis) for g in self.groups]
        for title, kpis in blocks:
            lines.append("")
            lines.append(title)
            for k in kpis:
                r = _row(title, k)
                lines.append(f"  {k.name:<32} {r['value']:>12}  n={k.n:<6} {k.variant}"
                             + ("  (provisional)" if k.provisional else ""))
        if self.by == VARIANT_BY:
            lines += render_experiments(self.experiments) if self.experiments else [
                "", "no experiment: no call in the period passed a split node"]
        if self.by is None and self.abandon_by_node:
            lines += ["", "abandoned in the IVR, by node"]
            for node, k in self.abandon_by_node.items():
                lines.append(f"  {node:<32} {_fmt(k):>12}  n={k.n:<6} abandoned {k.detail.get('abandoned', 0)}")
        if self.by is None and self.lookups_by_name:
            lines += ["", "data look-ups, by look-up"]
            for name, ks in self.lookups_by_name.items():
                lines.append(f"  {name}: " + ", ".join(f"{k.name.removeprefix('lookup_')} {_fmt(k)}" for k in ks))
        return "\n".join(lines)


def _get(kpis: Sequence[Kpi], name: str) -> Kpi:
    for k in kpis:
        if k.name == name:
            return k
    raise KeyError(name)


_DIGITS = {"share": 4, "s": 1, "ms": 0, "erlang": 3, "points": 1, "calls/h": 2}
COUNT_UNITS = frozenset({"calls", "lookups"})


def json_value(value: float | None, unit: str) -> float | int | None:
    """A KPI's value as ``to_json`` writes it: counts as integers, the rest rounded by unit (shares to 4
    digits, seconds and NPS points to 1); None stays None. The central dashboard rounds its SQL figures with it."""
    if value is None:
        return None
    return int(value) if unit in COUNT_UNITS else round(value, _DIGITS.get(unit, 3))


def _json(k: Kpi) -> dict[str, Any]:
    d = k.as_dict()
    del d["name"]
    d["value"] = json_value(k.value, k.unit)
    return d


def _fmt(k: Kpi) -> str:
    v = k.value
    if v is None:
        return "-"
    if k.unit == "share":
        return f"{v * 100:.1f} %"
    if k.unit in COUNT_UNITS:
        return f"{int(v)}"
    if k.unit == "s":
        return f"{v:.1f} s"
    if k.unit == "ms":
        return f"{v:.0f} ms"
    if k.unit == "points":
        return f"{v:+.1f}"
    return f"{v:.2f} {k.unit}"


def _row(group: str, k: Kpi) -> dict[str, Any]:
    return {"group": group, "kpi": k.name, "value": _fmt(k), "n": k.n, "unit": k.unit, "variant": k.variant,
            "provisional": k.provisional}


# -- selection -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sel:
    """The records one set of KPIs is computed over."""

    started: list[CallFacts]  # calls that started in the window: counted
    present: list[CallFacts]  # calls on the box at some point of the window: traffic
    visits: list[QueueVisit]
    requests: list[CallbackRequestFacts]
    kept: list[Mapping[str, Any]]


def _kpis(sel: _Sel, *, history: m.CallerIndex, since: datetime, until: datetime, now: datetime,
          zone: str | tzinfo, region: str, p: Params) -> tuple[Kpi, ...]:
    calls, v = sel.started, sel.visits
    return (
        *m.ivr_counts(calls),
        m.containment(calls, m.CONTAINMENT_SELF_SERVED), m.containment(calls, m.CONTAINMENT_RESOLVED),
        *m.transfer_rate(calls),
        *m.time_to_queue(calls),
        *m.queue_counts(v, p.short_abandon_s),
        m.asa(v), *m.queue_wait(v), m.talk_time(v),
        m.service_level(v, p.sl_threshold_s, p.sl_variant, p.short_abandon_s),
        m.abandonment_rate(v, p.short_abandon_s, p.abandon_variant),
        m.agent_transfer_rate(v),
        *m.first_call_resolution(calls, history, now=now, region=region, windows=p.fcr_windows),
        *m.survey_scores(calls),
        *m.callback_kpis(calls, sel.requests, sel.kept),
        *m.lookup_kpis(calls),
        m.calls_per_hour(sel.present, since, until),
        m.peak_concurrent(sel.present, since, until, now, zone),
        m.traffic(sel.present, since, until, now),
        m.busy_hour(sel.present, since, until, now, zone),
    )


def _kept_time(k: Mapping[str, Any]) -> datetime | None:
    return parse_time(k.get("arrival_at"))


def _select(calls: Sequence[CallFacts], visits: Sequence[QueueVisit], requests: Sequence[CallbackRequestFacts],
            kept: Sequence[Mapping[str, Any]], since: datetime, until: datetime, now: datetime) -> _Sel:
    """The records of ``[since, until)``: calls by start (and, for traffic, every call on the box then),
    queue visits by entry, requests by when they were taken, ``callback.kept`` records by their request (else
    by the caller's arrival)."""
    started = [c for c in calls if since <= c.started_at < until]
    present = [c for c in calls if c.started_at < until and c.end_or(now) >= since]
    vs = [v for v in visits if v.at is not None and since <= v.at < until]
    known = {r.request_id: r for r in requests}
    rs = [r for r in requests if r.requested_at is not None and since <= r.requested_at < until]
    chosen = {r.request_id for r in rs}
    ks = []
    for k in kept:
        rid = str(k.get("request_id", ""))
        t = _kept_time(k)
        if rid in chosen or (rid not in known and t is not None and since <= t < until):
            ks.append(k)
    return _Sel(started, present, vs, rs, ks)


@dataclass(frozen=True)
class _Keys:
    """The groups each kind of record belongs to (a call is in every node of its path)."""

    call: Callable[[CallFacts], frozenset[str]]
    visit: Callable[[QueueVisit], frozenset[str]]
    request: Callable[[CallbackRequestFacts], frozenset[str]]
    kept: Callable[[Mapping[str, Any]], frozenset[str]]

    def split(self, sel: _Sel) -> list[tuple[str, _Sel]]:
        """The selection cut into one per key, keys sorted: a record goes to each of its keys in one pass
        over each list (not one pass per key: a report by site may have a thousand keys). The keys are those
        of the records counted; calls merely present (traffic) join the groups those made."""
        parts: dict[str, _Sel] = {}

        def part(key: str) -> _Sel:
            if key not in parts:
                parts[key] = _Sel([], [], [], [], [])
            return parts[key]

        for c in sel.started:
            for key in self.call(c):
                part(key).started.append(c)
        for v in sel.visits:
            for key in self.visit(v):
                part(key).visits.append(v)
        for r in sel.requests:
            for key in self.request(r):
                part(key).requests.append(r)
        for k in sel.kept:
            for key in self.kept(k):
                part(key).kept.append(k)
        for c in sel.present:
            for key in self.call(c):
                if key in parts:
                    parts[key].present.append(c)
        return sorted(parts.items())


def _keys(by: str, calls: Sequence[CallFacts], requests: Sequence[CallbackRequestFacts],
          site_groups: Mapping[str, str] | None = None) -> _Keys:
    """By flow: a call's entry flow, and for queue visits, requests and their records the flow of the IVR
    call they came from (``ivr_call_id``, the request's call); by queue: the queue each names; by node: every
    node of the call's path, and the call's nodes for what came from it; by site: the site each record was
    taken at; by group: that site's group (``site_groups``). Without a link: ``NO_KEY``."""
    none = frozenset({NO_KEY})
    if by in SITE_GROUP_BY:
        groups = site_groups or {}

        def of_site(site: str) -> frozenset[str]:
            key = site if by == "site" else groups.get(site, "")
            return frozenset({key or NO_KEY})

        return _Keys(lambda c: of_site(c.site), lambda v: of_site(v.site), lambda r: of_site(r.site),
                     lambda k: of_site(str(k.get("site") or "")))
    by_id = {c.call_id: c for c in calls}
    req_by_id = {r.request_id: r for r in requests}

    def of_call(c: CallFacts | None) -> frozenset[str]:
        if c is None:
            return none
        if by == "flow":
            return frozenset({c.flow or NO_KEY})
        if by == "node":
            return frozenset(c.path) or none
        if by == VARIANT_BY:
            return frozenset(c.variants) or none
        return frozenset({c.queue or NO_KEY})

    def of_request(r: CallbackRequestFacts | None) -> frozenset[str]:
        if by == "queue":
            return frozenset({(r.queue if r is not None else "") or NO_KEY})
        return of_call(by_id.get(r.call_id or "") if r is not None else None)

    def of_visit(v: QueueVisit) -> frozenset[str]:
        return frozenset({v.queue or NO_KEY}) if by == "queue" else of_call(by_id.get(v.ivr_call_id or ""))

    def of_kept(k: Mapping[str, Any]) -> frozenset[str]:
        r = req_by_id.get(str(k.get("request_id", "")))
        if by == "queue" and r is None:
            return frozenset({str(k.get("queue") or "") or NO_KEY})
        return of_request(r)

    return _Keys(of_call, of_visit, of_request, of_kept)


# -- build -----------------------------------------------------------------------------------------------------

def build(events: Iterable[Any], queue_rows: Iterable[Mapping[str, Any]] | None = None,
          kept_rows: Iterable[Mapping[str, Any]] | None = None, *, zone: str, since: datetime,
          until: datetime | None = None, by: str | None = None, now: datetime, region: str = "US",
          params: Params | None = None, include_simulated: bool = False) -> KpiReport:
    """Every KPI of ``[since, until)`` (``until`` defaults to ``now``; aware datetimes).

    ``events``: the event log in seq order (``Event`` objects or dicts), from before ``since`` up to
    ``now`` — calls after ``until`` are only looked at as repeat calls for FCR. ``queue_rows`` /
    ``kept_rows``: queue_log rows and ``callback.kept`` records from elsewhere; None takes the event log's
    own ``queue.log`` and ``callback.kept`` events. ``zone``: the site's IANA zone, for hours and days;
    ``region``: the site's ISO 3166 region, for reading caller IDs (FCR). ``by``: one of ``GROUP_BY``.
    Callback legs (outbound) never count as IVR calls; simulated calls (channel ``simulator``) only with
    ``include_simulated``."""
    if by is not None and by not in BOX_GROUP_BY:
        raise ValueError(f"--by must be one of {', '.join(BOX_GROUP_BY)}, not {by!r}")
    facts = facts_from_events(events)
    calls = [c for c in facts.calls if not c.callback_leg and (include_simulated or c.channel != "simulator")]
    visits = visits_from_queue_log(facts.queue_rows if queue_rows is None else queue_rows)
    kept = list(facts.kept if kept_rows is None else kept_rows)
    return build_from_facts(calls, visits, facts.requests, kept, zone=zone, since=since, until=until, by=by,
                            now=now, region=region, params=params)


def build_from_facts(calls: Sequence[CallFacts], visits: Sequence[QueueVisit],
                     requests: Sequence[CallbackRequestFacts], kept: Sequence[Mapping[str, Any]], *, zone: str,
                     since: datetime, until: datetime | None = None, by: str | None = None, now: datetime,
                     region: str = "US", params: Params | None = None, history: m.CallerIndex | None = None,
                     site_groups: Mapping[str, str] | None = None) -> KpiReport:
    """``build`` over records already extracted: where the box's ``build`` and the central store's report
    (ivr_central.kpi) meet, so both compute every KPI by the same code.

    ``calls``: the IVR calls to count (callback legs and simulations already left out), in seq order, up to
    ``now`` (repeats after ``until`` for FCR); ``visits``, ``requests``, ``kept``: the queue visits, callback
    requests and ``callback.kept`` records (the requests every ``kept`` record could name, so one of a
    request outside the period is not taken for an orphan). ``history``: the callers' index for FCR (default:
    ``calls``, numbers read in ``region``). ``by``: one of ``GROUP_BY`` or ``SITE_GROUP_BY`` (the facts'
    ``site``, and ``site_groups``: site → group)."""
    if by is not None and by not in (*BOX_GROUP_BY, *SITE_GROUP_BY):
        raise ValueError(f"by must be one of {', '.join((*BOX_GROUP_BY, *SITE_GROUP_BY))}, not {by!r}")
    p = params or Params()
    until = now if until is None else until
    end = min(until, now)  # rates and buckets run to now: the rest of the period has not happened
    tz = buckets.as_zone(zone)
    # FCR looks for repeats among every call given, whatever the group
    index = history if history is not None else m.CallerIndex.of(calls, region)
    common: dict[str, Any] = {"history": index, "now": now, "zone": tz, "region": region, "p": p}

    sel = _select(calls, visits, requests, kept, since, end, now)
    totals = _kpis(sel, since=since, until=end, **common)
    abandon = m.ivr_abandon_by_node(sel.started)
    groups: list[Group] = []
    if by in ("hour", "day"):
        for b in (buckets.hours if by == "hour" else buckets.days)(since, end, tz):
            lo, hi = max(b.start, since), min(b.end, end)
            groups.append(Group(b.key, _kpis(_select(calls, visits, requests, kept, lo, hi, now),
                                             since=lo, until=hi, **common)))
    elif by is not None:
        for key, part in _keys(by, calls, requests, site_groups).split(sel):
            g = _kpis(part, since=since, until=end, **common)
            if by == "node" and key in abandon:
                g = (*g, abandon[key])
            groups.append(Group(key, g))
    experiments = tuple(compare_variants(sel.started)) if by == VARIANT_BY else ()
    lookups = {name: tuple(ks) for name, ks in m.lookups_by_name(sel.started).items()}
    return KpiReport(since=since, until=until, now=now, zone=zone, by=by, params=p, totals=totals,
                     groups=tuple(groups), abandon_by_node=abandon, lookups_by_name=lookups,
                     experiments=experiments)


_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_SPAN_UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_when(text: str, *, zone: str, now: datetime) -> datetime:
    """``24h``, ``7d``, ``90m``, ``2w`` (that long before ``now``), or an ISO 8601 date or time; without an
    offset it is read in the site's ``zone`` (a date is its midnight there). ValueError with the reason."""
    m = _SPAN.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _SPAN_UNITS[m.group(2)])
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither a span (24h, 7d, 90m, 2w) nor an ISO 8601 date or time") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=buckets.as_zone(zone))
