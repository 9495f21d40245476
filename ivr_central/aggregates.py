"""The dashboard's headline series as SQL aggregates over the fact rows (issue 14 items 3-5).

``ivr_central.kpi.report`` reads the rows of a period into Python, which is exact for every KPI but grows with
the traffic; these functions let PostgreSQL count (``count(*) FILTER (…)``, ``sum``) per site or group of sites
and per hour or day of a zone, and hand the counts to ``ivr.kpi.formulas`` — the one definition of each
formula — so a chart over 10⁷ events stays a few small result sets. Each SQL filter is the counting rule of the
``ivr.kpi.measures`` function named beside it; tests/central/test_kpi_agree.py holds them to ``report``'s
figures on the same events. Rows are plain frozen dataclasses; their methods return ``formulas.Measure``.

Buckets are the box's own (``ivr.kpi.buckets``: an hour starts where the zone's clock shows a full hour, so the
repeated hour of a DST change is two buckets keyed with their offsets; a day runs from local midnight): Python
lists their bounds and SQL only places each row between them (``width_bucket``), so no time-zone rule is
written twice and no row pays for a time-zone conversion. A bucket with nothing in it has no row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from ivr.kpi import buckets
from ivr.kpi import formulas as f
from ivr.kpi.measures import DEFAULT_SHORT_ABANDON_S, DEFAULT_SL_THRESHOLD_S, FCR_WINDOWS
from ivr.kpi.report import NO_KEY

BY = ("site", "group")
BUCKETS = ("hour", "day")


@dataclass(frozen=True)
class Slice:
    """Where a row belongs: ``key`` (a site, a group, or ``""`` for every site chosen) and the bucket (None:
    the whole period) with its key in the zone (``2026-11-01T01:00-05:00``, ``2026-11-01``)."""

    key: str
    bucket: str | None
    start: datetime | None  # UTC


def _key_sql(by: str | None, alias: str) -> tuple[str, str]:
    """(key expression, join) for ``by``."""
    if by is None:
        return "''", ""
    # byte order (COLLATE "C"): grouping sorts by it, and memcmp is what Python's sorted() of the keys does
    if by == "site":
        return f"{alias}.site_id COLLATE \"C\"", ""
    if by == "group":
        return (f"coalesce(nullif(s.grp, ''), '{NO_KEY}') COLLATE \"C\"",
                f" JOIN sites s ON s.site_id = {alias}.site_id")
    raise ValueError(f"by must be one of {', '.join(BY)} or None, not {by!r}")


def _bounds(bucket: str | None, since: datetime, until: datetime, zone: str) -> list[buckets.Bucket]:
    """The buckets of ``[since, until)``: the whole period as one, or the zone's hours or days."""
    if bucket is None:
        return [buckets.Bucket("", since, until)]
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)} or None, not {bucket!r}")
    return list((buckets.hours if bucket == "hour" else buckets.days)(since, until, zone))


def _bucket_sql(col: str) -> str:
    """The 1-based bucket of ``col`` among the bounds ``$4`` (every start, then the last end)."""
    return f"width_bucket({col}, $4::timestamptz[])"


def _slice(r: asyncpg.Record, bucket: str | None, bounds: Sequence[buckets.Bucket]) -> Slice:
    if bucket is None:
        return Slice(r["key"], None, None)
    b = bounds[r["bucket"] - 1]
    return Slice(r["key"], b.key, b.start)


def _counts(r: asyncpg.Record) -> dict[str, Any]:
    """A row's figures: every column but key and bucket, by name."""
    return {k: v for k, v in r.items() if k not in ("key", "bucket")}


async def _fetch(conn: asyncpg.Connection, sql: str, sites: Sequence[str], since: datetime, until: datetime,
                 bounds: Sequence[buckets.Bucket], *extra: Any) -> list[asyncpg.Record]:
    edges = [b.start for b in bounds] + [bounds[-1].end] if bounds else [since, until]
    args = (sorted(set(sites)), since, until, edges, *extra)
    if conn.is_in_transaction():  # the caller's transaction, the caller's settings
        return list(await conn.fetch(sql, *args))
    async with conn.transaction(readonly=True):
        # JIT compiling these plans (their row estimates reach its thresholds at a thousand sites) costs seconds
        # on a 2-core box and wins nothing on queries that run in a fraction of one (bench/central_kpi.py)
        await conn.execute("SET LOCAL jit = off")
        return list(await conn.fetch(sql, *args))


def _frame(table: str, alias: str, col: str, by: str | None, where: str = "") -> tuple[str, str]:
    """(SELECT head, FROM … WHERE … GROUP BY tail) of one series: $1 sites, $2 since, $3 until, $4 bounds."""
    key, join = _key_sql(by, alias)
    head = f"SELECT {key} AS key, {_bucket_sql(f'{alias}.{col}')} AS bucket"
    tail = (f" FROM {table} {alias}{join} WHERE {alias}.site_id = ANY($1::text[]) AND {alias}.{col} >= $2 "
            f"AND {alias}.{col} < $3{where} GROUP BY 1, 2 ORDER BY 1, 2")
    return head, tail


# -- the PBX queue -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueRow:
    """Queue visits that entered in the slice (``measures.queue_counts``, ``asa``, ``queue_wait``,
    ``talk_time``, ``service_level``, ``abandonment_rate``)."""

    at: Slice
    offered: int
    answered: int
    abandoned: int
    short_abandoned: int  # abandoned with wait < short_abandon_s
    exited: int
    waiting: int
    answered_within: int  # answered with wait <= threshold_s
    abandoned_after: int  # abandoned with wait > threshold_s (or unknown)
    answered_wait_sum: float
    answered_wait_n: int
    ended_wait_sum: float
    ended_wait_n: int
    ended_wait_max: float | None
    talk_sum: float
    talk_n: int
    transferred: int  # answered, ended and transferred by the agent
    completed: int  # answered and ended
    threshold_s: float
    short_abandon_s: float

    @property
    def ended(self) -> int:
        return self.offered - self.waiting

    def service_level(self, variant: str = f.SL_ANSWERED_ABANDONED) -> f.Measure:
        return f.service_level(self.answered_within, self.answered, self.abandoned_after, variant,
                               offered=self.ended, short_abandoned=self.short_abandoned)

    def asa(self) -> f.Measure:
        return f.mean(self.answered_wait_sum, self.answered_wait_n)

    def abandonment_rate(self, variant: str = f.ABANDON_NO_SHORT) -> f.Measure:
        return f.abandonment_rate(self.abandoned, self.ended, self.short_abandoned, variant)

    def average_queue_wait(self) -> f.Measure:
        return f.mean(self.ended_wait_sum, self.ended_wait_n)

    def longest_queue_wait(self) -> f.Measure:
        return f.Measure(self.ended_wait_max, self.ended_wait_n)

    def average_talk_time(self) -> f.Measure:
        return f.handle_time(self.talk_sum, self.talk_n)[1]

    def agent_transfer_rate(self) -> f.Measure:
        return f.ratio(self.transferred, self.completed)


_QUEUE = """,
  count(*) AS offered,                                                         -- queue_counts
  count(*) FILTER (WHERE v.result = 'answered') AS answered,
  count(*) FILTER (WHERE v.result = 'abandoned') AS abandoned,
  count(*) FILTER (WHERE v.result = 'abandoned' AND v.wait < $5) AS short_abandoned,  -- measures._short
  count(*) FILTER (WHERE v.result IN ('timeout', 'exit_key', 'exit_empty')) AS exited,
  count(*) FILTER (WHERE v.result = 'waiting') AS waiting,
  count(*) FILTER (WHERE v.result = 'answered' AND v.wait <= $6) AS answered_within,          -- service_level
  count(*) FILTER (WHERE v.result = 'abandoned' AND (v.wait IS NULL OR v.wait > $6)) AS abandoned_after,
  coalesce(sum(v.wait) FILTER (WHERE v.result = 'answered'), 0) AS answered_wait_sum,         -- asa
  count(v.wait) FILTER (WHERE v.result = 'answered') AS answered_wait_n,
  coalesce(sum(v.wait) FILTER (WHERE v.result <> 'waiting'), 0) AS ended_wait_sum,            -- queue_wait
  count(v.wait) FILTER (WHERE v.result <> 'waiting') AS ended_wait_n,
  max(v.wait) FILTER (WHERE v.result <> 'waiting') AS ended_wait_max,
  coalesce(sum(v.talk) FILTER (WHERE v.result = 'answered'), 0) AS talk_sum,                  -- talk_time
  count(v.talk) FILTER (WHERE v.result = 'answered') AS talk_n,
  count(*) FILTER (WHERE v.result = 'answered' AND v.ended_at IS NOT NULL AND v.transferred) AS transferred,
  count(*) FILTER (WHERE v.result = 'answered' AND v.ended_at IS NOT NULL) AS completed      -- agent_transfer_rate
"""


async def queue_series(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime,
                       zone: str, by: str | None = None, bucket: str | None = None,
                       threshold_s: float = DEFAULT_SL_THRESHOLD_S,
                       short_abandon_s: float = DEFAULT_SHORT_ABANDON_S) -> list[QueueRow]:
    """Offered / answered / abandoned / short abandoned, service level and ASA, waits and talk time."""
    head, tail = _frame("queue_visit_facts", "v", "at", by)
    bounds = _bounds(bucket, since, until, zone)
    rows = await _fetch(conn, head + _QUEUE + tail, sites, since, until, bounds, short_abandon_s, threshold_s)
    return [QueueRow(_slice(r, bucket, bounds), **_counts(r), threshold_s=threshold_s,
                     short_abandon_s=short_abandon_s) for r in rows]


# -- the IVR -------------------------------------------------------------------------------------------------------

#: calls the KPIs count: never a callback's outbound leg, never a simulation (ivr.kpi.report.build)
_COUNTED = " AND NOT c.callback_leg AND c.channel <> 'simulator'"


@dataclass(frozen=True)
class IvrRow:
    """IVR calls that started in the slice, by disposition (``measures.ivr_counts``, ``containment``,
    ``transfer_rate``, ``time_to_queue``), and the callback funnel of those calls (``callback_kpis``)."""

    at: Slice
    calls: int
    ended: int
    self_served: int
    resolved: int
    transferred: int
    transfer_failed: int
    abandoned: int
    callback: int
    other: int
    open: int
    handoff_tried: int
    handoff_failed: int
    time_to_queue_sum: float
    time_to_queue_n: int
    offer_decided: int
    callback_offered: int
    callback_accepted: int
    callback_filed: int

    def containment(self) -> f.Measure:
        return f.ratio(self.self_served + self.resolved, self.ended)

    def containment_resolved(self) -> f.Measure:
        return f.ratio(self.resolved, self.ended)

    def transfer_rate(self) -> f.Measure:
        return f.ratio(self.transferred, self.ended)

    def transfer_failure_rate(self) -> f.Measure:
        return f.ratio(self.handoff_failed, self.handoff_tried)

    def time_to_queue(self) -> f.Measure:
        return f.mean(self.time_to_queue_sum, self.time_to_queue_n)

    def callback_offer_rate(self) -> f.Measure:
        return f.ratio(self.callback_offered, self.offer_decided)

    def callback_accept_rate(self) -> f.Measure:
        return f.ratio(self.callback_accepted, self.callback_offered)


_IVR = """,
  count(*) AS calls,                                                            -- ivr_counts (disposition)
  count(*) FILTER (WHERE c.outcome IS NOT NULL) AS ended,                       -- measures._ended
  count(*) FILTER (WHERE c.disposition = 'self_served') AS self_served,
  count(*) FILTER (WHERE c.disposition = 'resolved') AS resolved,
  count(*) FILTER (WHERE c.disposition = 'transferred') AS transferred,
  count(*) FILTER (WHERE c.disposition = 'transfer_failed') AS transfer_failed,
  count(*) FILTER (WHERE c.disposition = 'abandoned') AS abandoned,
  count(*) FILTER (WHERE c.disposition = 'callback') AS callback,
  count(*) FILTER (WHERE c.disposition = 'other') AS other,
  count(*) FILTER (WHERE c.disposition = 'open') AS open,
  count(*) FILTER (WHERE c.outcome IS NOT NULL AND (c.handoff IS NOT NULL OR c.transfer_failed
                   OR c.outcome = 'transfer_failed')) AS handoff_tried,         -- transfer_rate
  count(*) FILTER (WHERE c.outcome IS NOT NULL AND (c.transfer_failed OR c.outcome = 'transfer_failed'))
      AS handoff_failed,
  coalesce(sum(c.time_to_queue), 0) AS time_to_queue_sum,                      -- time_to_queue
  count(c.time_to_queue) AS time_to_queue_n,
  count(*) FILTER (WHERE c.offer_decided) AS offer_decided,                     -- callback_kpis
  count(*) FILTER (WHERE c.offer_decided AND c.callback_offered) AS callback_offered,
  count(*) FILTER (WHERE c.offer_decided AND c.callback_offered AND c.callback_accepted) AS callback_accepted,
  count(*) FILTER (WHERE c.callback_request_id IS NOT NULL AND c.callback_request_id <> '') AS callback_filed
"""


async def ivr_series(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime,
                     zone: str, by: str | None = None, bucket: str | None = None) -> list[IvrRow]:
    """IVR calls and how they left, containment, transfers, time to queue, the callback offer funnel."""
    head, tail = _frame("call_facts", "c", "started_at", by, _COUNTED)
    bounds = _bounds(bucket, since, until, zone)
    rows = await _fetch(conn, head + _IVR + tail, sites, since, until, bounds)
    return [IvrRow(_slice(r, bucket, bounds), **_counts(r)) for r in rows]


@dataclass(frozen=True)
class NodeRow:
    """Where callers leave the menu (``measures.ivr_abandon_by_node``): ended calls that entered ``node``
    and those that hung up there (``caller_hangup``, the node their path ended at)."""

    at: Slice
    node: str
    entered: int
    abandoned: int

    def abandon_rate(self) -> f.Measure:
        return f.ratio(self.abandoned, self.entered)


_NODES = """
SELECT key, bucket, node, sum(entered)::bigint AS entered, sum(abandoned)::bigint AS abandoned FROM (
  SELECT key, bucket, node, count(*) AS entered, 0 AS abandoned FROM (
    -- set-returning functions in the select list stream (in FROM they fill a tuplestore per call)
    SELECT {key} AS key, {bucket} AS bucket, c.path, unnest(c.path) COLLATE "C" AS node,
           generate_subscripts(c.path, 1) AS i
    FROM call_facts c{join} WHERE {where}) p
  WHERE array_position(p.path, p.node) = p.i  -- each node once per call: its first place
  GROUP BY 1, 2, 3
  UNION ALL
  SELECT {key}, {bucket}, c.last_node COLLATE "C", 0, count(*) FROM call_facts c{join}
  WHERE {where} AND c.disposition = 'abandoned' AND coalesce(c.last_node, '') <> ''
  GROUP BY 1, 2, 3
) x GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
_NODES_WHERE = ("c.site_id = ANY($1::text[]) AND c.started_at >= $2 AND c.started_at < $3 AND c.outcome IS NOT NULL"
                + _COUNTED)


async def ivr_abandon_by_node(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime,
                              zone: str, by: str | None = None, bucket: str | None = None) -> list[NodeRow]:
    """Per node (qualified ``flow.node``): entered and abandoned there. A node known only as the end of a
    path-less call counts as entered once (the box's ``setdefault(node, 1)``)."""
    key, join = _key_sql(by, "c")
    sql = _NODES.format(key=key, join=join, bucket=_bucket_sql("c.started_at"), where=_NODES_WHERE)
    bounds = _bounds(bucket, since, until, zone)
    rows = await _fetch(conn, sql, sites, since, until, bounds)
    return [NodeRow(_slice(r, bucket, bounds), r["node"], r["entered"] or (1 if r["abandoned"] else 0),
                    r["abandoned"]) for r in rows]


# -- callbacks -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CallbackRow:
    """Callback requests taken in the slice and the last ``callback.kept`` record of each
    (``measures.callback_kpis``, ``promise_kept``, ``ewt_error``)."""

    at: Slice
    requested: int = 0
    done: int = 0
    expired: int = 0
    first_attempts: int = 0  # requests whose first attempt rang the phone
    first_connected: int = 0
    records: int = 0
    promised: int = 0  # records with a quote (kept true or false)
    kept: int = 0
    to_agent_sum: float = 0.0
    to_agent_n: int = 0
    ewt_abs_sum: float = 0.0
    ewt_sum: float = 0.0
    ewt_n: int = 0
    in_range: int = 0

    def completed(self) -> f.Measure:
        return f.ratio(self.done, self.done + self.expired)

    def first_attempt_connect(self) -> f.Measure:
        return f.ratio(self.first_connected, self.first_attempts)

    def promise_kept(self) -> f.Measure:
        return f.ratio(self.kept, self.promised)

    def callback_asa(self) -> f.Measure:
        return f.mean(self.to_agent_sum, self.to_agent_n)

    def ewt_mae(self) -> f.Measure:
        return f.ewt_error(self.ewt_abs_sum, self.ewt_sum, self.ewt_n)[0]

    def ewt_bias(self) -> f.Measure:
        return f.ewt_error(self.ewt_abs_sum, self.ewt_sum, self.ewt_n)[1]

    def ewt_in_range(self) -> f.Measure:
        return f.ratio(self.in_range, self.ewt_n)


_REQUESTS = """,
  count(*) AS requested,
  count(*) FILTER (WHERE r.state = 'done') AS done,                             -- callback_completed
  count(*) FILTER (WHERE r.state = 'expired') AS expired,
  count(*) FILTER (WHERE r.first_attempt_outcome IS NOT NULL) AS first_attempts,
  count(*) FILTER (WHERE r.first_attempt_outcome = 'connected') AS first_connected
"""
# a request's last record counts (measures.last_kept); it follows its request into the slice, and a record
# whose request is unknown at that site counts by the caller's arrival (ivr.kpi.report._select)
_KEPT = """
SELECT {key} AS key, {bucket} AS bucket,
  count(*) AS records,
  count(k.kept) AS promised,                                                    -- promise_kept
  count(*) FILTER (WHERE k.kept) AS kept,
  coalesce(sum(k.time_to_agent), 0) AS to_agent_sum,                            -- callback_asa
  count(k.time_to_agent) AS to_agent_n,
  coalesce(sum(abs(k.ewt_error)), 0) AS ewt_abs_sum,                            -- ewt_error (quote_error)
  coalesce(sum(k.ewt_error), 0) AS ewt_sum,
  count(k.ewt_error) AS ewt_n,
  count(*) FILTER (WHERE k.in_range) AS in_range
FROM callback_kept_facts k{join}
LEFT JOIN callback_facts r ON r.site_id = k.site_id AND r.request_id = k.request_id
WHERE k.site_id = ANY($1::text[]) AND k.last
  AND ((r.requested_at >= $2 AND r.requested_at < $3)
       OR (r.request_id IS NULL AND k.arrival_at >= $2 AND k.arrival_at < $3))
GROUP BY 1, 2 ORDER BY 1, 2
"""


async def callback_series(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime,
                          zone: str, by: str | None = None, bucket: str | None = None) -> list[CallbackRow]:
    """Callbacks requested, completed, first-attempt connect, promises kept, callback ASA and EWT error."""
    head, tail = _frame("callback_facts", "r", "requested_at", by)
    bounds = _bounds(bucket, since, until, zone)
    req = await _fetch(conn, head + _REQUESTS + tail, sites, since, until, bounds)
    key, join = _key_sql(by, "k")
    kept = await _fetch(conn, _KEPT.format(key=key, join=join,
                                           bucket=_bucket_sql("coalesce(r.requested_at, k.arrival_at)")),
                        sites, since, until, bounds)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in [*req, *kept]:
        d = out.setdefault((r["key"], r["bucket"]), {"at": _slice(r, bucket, bounds)})
        d.update(_counts(r))
    return [CallbackRow(**out[k]) for k in sorted(out)]


# -- surveys -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SurveyRow:
    """Survey answers of the calls that started in the slice (``measures.survey_scores``)."""

    at: Slice
    csat_n: int
    csat_satisfied: int  # 4-5 on 1-5
    nps_n: int
    promoters: int  # 9-10
    detractors: int  # 0-6

    def csat(self) -> f.Measure:
        return f.csat(self.csat_satisfied, self.csat_n)

    def nps(self) -> f.Measure:
        return f.nps(self.promoters, self.detractors, self.nps_n)


_SURVEYS = """,
  count(*) FILTER (WHERE a.scale = 'csat') AS csat_n,
  count(*) FILTER (WHERE a.scale = 'csat' AND a.value >= 4) AS csat_satisfied,
  count(*) FILTER (WHERE a.scale = 'nps') AS nps_n,
  count(*) FILTER (WHERE a.scale = 'nps' AND a.value >= 9) AS promoters,
  count(*) FILTER (WHERE a.scale = 'nps' AND a.value <= 6) AS detractors
"""


async def survey_series(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime,
                        zone: str, by: str | None = None, bucket: str | None = None) -> list[SurveyRow]:
    """CSAT and NPS with their n; answers count with their call's start."""
    key, join = _key_sql(by, "c")
    sql = (f"SELECT {key} AS key, {_bucket_sql('c.started_at')} AS bucket{_SURVEYS}"
           f" FROM call_facts c CROSS JOIN LATERAL unnest(c.survey_scale, c.survey_value) AS a(scale, value){join}"
           f" WHERE c.site_id = ANY($1::text[]) AND c.started_at >= $2 AND c.started_at < $3{_COUNTED}"
           f" GROUP BY 1, 2 ORDER BY 1, 2")
    bounds = _bounds(bucket, since, until, zone)
    rows = await _fetch(conn, sql, sites, since, until, bounds)
    return [SurveyRow(_slice(r, bucket, bounds), **_counts(r)) for r in rows]


# -- first-call resolution across sites -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FcrRow:
    """Calls of the slice by repeat caller (``measures.fcr_counts``): a call with a usable number is resolved
    first time within W when no call from that number, at any site chosen, started in ``(start, start + W]``
    (up to ``now``); ``open``: resolved so far but the window reaches past ``now`` (provisional)."""

    at: Slice
    counted: int  # calls with a usable number (caller_e164)
    anonymous: int
    resolved: Mapping[str, int]  # window label -> resolved first time
    open: Mapping[str, int]  # window label -> windows still open at now

    def fcr(self, label: str) -> f.Measure:
        return f.ratio(self.resolved[label], self.counted)

    def provisional(self, label: str) -> bool:
        return self.open[label] > 0


_FCR = """
SELECT {key} AS key, {bucket} AS bucket,
  count(*) FILTER (WHERE c.caller_e164 IS NOT NULL) AS counted,
  count(*) FILTER (WHERE c.caller_e164 IS NULL) AS anonymous{windows}
FROM call_facts c{join}
LEFT JOIN LATERAL (  -- the next call from the number at any site chosen: bisect_right in measures.fcr_counts
  SELECT min(h.started_at) AS next FROM call_facts h
  WHERE h.caller_e164 = c.caller_e164 AND h.started_at > c.started_at AND h.started_at < $5
    AND h.site_id = ANY($1::text[]) AND NOT h.callback_leg AND h.channel <> 'simulator') n ON true
WHERE c.site_id = ANY($1::text[]) AND c.started_at >= $2 AND c.started_at < $3{counted}
GROUP BY 1, 2 ORDER BY 1, 2
"""


async def fcr_series(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime,
                     now: datetime, zone: str, by: str | None = None, bucket: str | None = None,
                     windows: Sequence[tuple[str, timedelta]] = FCR_WINDOWS) -> list[FcrRow]:
    """First-call resolution within each window, the same caller (``call_facts.caller_e164``, read in its
    site's region) at any of ``sites`` counted once: one index probe per call."""
    key, join = _key_sql(by, "c")
    cols = []
    for i, (label, _) in enumerate(windows):
        w = f"${6 + i}::interval"
        resolved = f"c.caller_e164 IS NOT NULL AND (n.next IS NULL OR n.next > c.started_at + {w})"
        cols.append(f",\n  count(*) FILTER (WHERE {resolved}) AS \"resolved {label}\"")
        cols.append(f",\n  count(*) FILTER (WHERE {resolved} AND c.started_at + {w} > $5) AS \"open {label}\"")
    sql = _FCR.format(key=key, join=join, bucket=_bucket_sql("c.started_at"), windows="".join(cols),
                      counted=_COUNTED)
    bounds = _bounds(bucket, since, until, zone)
    rows = await _fetch(conn, sql, sites, since, until, bounds, now, *(w for _, w in windows))
    return [FcrRow(_slice(r, bucket, bounds), r["counted"], r["anonymous"],
                   {label: r[f"resolved {label}"] for label, _ in windows},
                   {label: r[f"open {label}"] for label, _ in windows}) for r in rows]


# -- the day × hour heat map ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeatCell:
    """One cell of the heat map: a local date and clock hour (0-23) of the zone; the repeated hour of a DST
    change is one cell (a heat map shows the clock, not the bucket)."""

    key: str
    day: date
    hour: int
    calls: int  # IVR calls started
    offered: int  # queue entries


_HEAT = """
SELECT key, bucket, sum(calls)::bigint AS calls, sum(offered)::bigint AS offered FROM (
  SELECT {ckey} AS key, width_bucket(c.started_at, $4::timestamptz[]) AS bucket, count(*) AS calls, 0 AS offered
  FROM call_facts c{cjoin}
  WHERE c.site_id = ANY($1::text[]) AND c.started_at >= $2 AND c.started_at < $3{counted} GROUP BY 1, 2
  UNION ALL
  SELECT {vkey}, width_bucket(v.at, $4::timestamptz[]), 0, count(*)
  FROM queue_visit_facts v{vjoin}
  WHERE v.site_id = ANY($1::text[]) AND v.at >= $2 AND v.at < $3 GROUP BY 1, 2
) x GROUP BY 1, 2 ORDER BY 1, 2
"""


async def heat_map(conn: asyncpg.Connection, *, sites: Sequence[str], since: datetime, until: datetime, zone: str,
                   by: str | None = None) -> list[HeatCell]:
    """Traffic per local day and clock hour: IVR calls started and queue entries (counted per hour bucket,
    then laid on the clock)."""
    ckey, cjoin = _key_sql(by, "c")
    vkey, vjoin = _key_sql(by, "v")
    sql = _HEAT.format(ckey=ckey, cjoin=cjoin, vkey=vkey, vjoin=vjoin, counted=_COUNTED)
    bounds = _bounds("hour", since, until, zone)
    tz = buckets.as_zone(zone)
    cells: dict[tuple[str, date, int], list[int]] = {}
    for r in await _fetch(conn, sql, sites, since, until, bounds):
        local = bounds[r["bucket"] - 1].start.astimezone(tz)
        cell = cells.setdefault((r["key"], local.date(), local.hour), [0, 0])
        cell[0] += r["calls"]
        cell[1] += r["offered"]
    return [HeatCell(k, d, h, calls, offered) for (k, d, h), (calls, offered) in sorted(cells.items())]
