"""KPI facts derived from each batch at ingest (issue 14 item 3), in the batch's transaction.

For every IVR call, PBX caller (queue_log ``callid``) and callback request the new events touch, all of that
entity's events of the site are read back — the batch's own rows are visible in its transaction — in ``seq``
order and rebuilt by the box's own ``ivr.kpi.facts`` (never a second reading of event fields), then written
as typed rows (migration 0002, docs/central-kpi.md). Rebuilding the whole entity makes the rows independent
of how the events were cut into batches, of a batch sent twice and of a call's start and end arriving apart.

One read for the batch (every touched entity at once), one write per table: ingest speed matters.
The mapping between facts and rows (both ways) lives here too, so the columns are named in one module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from ivr.kpi import measures
from ivr.kpi.facts import (
    CallbackRequestFacts,
    CallFacts,
    LookupFacts,
    QueueVisit,
    SurveyAnswer,
    facts_from_events,
    number,
    parse_time,
    visits_from_queue_log,
)

#: the events a callback request is rebuilt from (ivr.kpi.facts.facts_from_events reads these by request_id)
REQUEST_TYPES = ("callback.requested", "callback.state", "callback.attempt.ended", "callback.updated")
KEPT_TYPE = "callback.kept"

_READ = f"""
SELECT e.seq, e.wall_time, e.type, e.call_id, e.payload, s.region FROM events e
LEFT JOIN sites s ON s.site_id = e.site_id
WHERE e.site_id = $1 AND (e.call_id = ANY($2::text[])
    OR (e.type = 'queue.log' AND e.payload ->> 'callid' = ANY($3::text[]))
    OR (e.type IN ({", ".join(f"'{t}'" for t in (*REQUEST_TYPES, KEPT_TYPE))})
        AND e.payload ->> 'request_id' = ANY($4::text[])))
ORDER BY e.seq
"""

#: each fact table's columns after site_id, with their types (migration 0002); array columns travel as jsonb
CALL_COLUMNS = (("call_id", "text"), ("first_seq", "bigint"), ("started_at", "timestamptz"),
                ("ended_at", "timestamptz"), ("channel", "text"), ("caller", "text"), ("caller_e164", "text"),
                ("dialed", "text"), ("flow", "text"), ("flow_version", "text"), ("zone", "text"),
                ("outcome", "text"), ("detail", "text"), ("disposition", "text"), ("resolved", "boolean"),
                ("transfer_failed", "boolean"), ("handoff", "text"), ("queue", "text"), ("queued_at", "timestamptz"),
                ("time_to_queue", "float8"), ("offer_decided", "boolean"), ("callback_offered", "boolean"),
                ("callback_accepted", "boolean"), ("callback_request_id", "text"), ("callback_leg", "boolean"),
                ("path", "text[]"), ("entry_node", "text"), ("last_node", "text"), ("survey_scale", "text[]"),
                ("survey_value", "int[]"), ("survey_node", "text[]"), ("survey_flow", "text[]"),
                ("lookup_name", "text[]"), ("lookup_outcome", "text[]"), ("lookup_latency_ms", "float8[]"))
VISIT_COLUMNS = (("callid", "text"), ("n", "int"), ("queue", "text"), ("entered_at", "timestamptz"),
                 ("ended_at", "timestamptz"), ("at", "timestamptz"), ("result", "text"), ("wait", "float8"),
                 ("talk", "float8"), ("agent", "text"), ("transferred", "boolean"), ("ivr_call_id", "text"))
REQUEST_COLUMNS = (("request_id", "text"), ("queue", "text"), ("call_id", "text"), ("requested_at", "timestamptz"),
                   ("state", "text"), ("first_attempt_outcome", "text"), ("attempts", "int"),
                   ("kept_records", "int"), ("kept", "boolean"), ("quoted_low", "float8"),
                   ("quoted_high", "float8"), ("time_to_agent", "float8"), ("ewt_error", "float8"))
KEPT_COLUMNS = (("request_id", "text"), ("n", "int"), ("last", "boolean"), ("queue", "text"),
                ("arrival_at", "timestamptz"), ("quoted_low", "float8"), ("quoted_high", "float8"),
                ("time_to_agent", "float8"), ("kept", "boolean"), ("ewt_error", "float8"), ("in_range", "boolean"),
                ("record", "jsonb"))
_TABLES = (("call_facts", CALL_COLUMNS, ("call_id",)), ("queue_visit_facts", VISIT_COLUMNS, ("callid", "n")),
           ("callback_facts", REQUEST_COLUMNS, ("request_id",)), ("callback_kept_facts", KEPT_COLUMNS,
                                                                 ("request_id", "n")))


def _write_sql() -> str:
    """One statement for every fact row of a batch: an upsert per table from ``unnest`` of one array per
    column ($1 the site), and the trims of entities rebuilt shorter than before (rows arriving out of time
    order can merge two visits). Data-modifying CTEs all run, on disjoint rows; one round trip."""
    ctes = []
    i = 2
    for table, cols, key in _TABLES:
        params, exprs = [], []
        for name, type_ in cols:
            if type_.endswith("[]"):  # an array per row: unnest would flatten it, so it travels as jsonb
                params.append(f"${i}::jsonb[]")
                elem = "e" if type_ == "text[]" else f"e::{type_[:-2]}"
                exprs.append(f"ARRAY(SELECT {elem} FROM jsonb_array_elements_text(x.{name}) WITH ORDINALITY "
                             f"AS a(e, o) ORDER BY o)")
            else:
                params.append(f"${i}::{type_}[]")
                exprs.append(f"x.{name}")
            i += 1
        names = [n for n, _ in cols]
        sets = ", ".join(f"{n} = excluded.{n}" for n in names if n not in key)
        ctes.append(f"w_{table} AS (INSERT INTO {table} (site_id, {', '.join(names)}) "
                    f"SELECT $1, {', '.join(exprs)} FROM unnest({', '.join(params)}) AS x({', '.join(names)}) "
                    f"ON CONFLICT (site_id, {', '.join(key)}) DO UPDATE SET {sets}, derived_at = now())")
    for name, table, col in (("trim_visits", "queue_visit_facts", "callid"),
                             ("trim_kept", "callback_kept_facts", "request_id")):
        ctes.append(f"{name} AS (DELETE FROM {table} f USING unnest(${i}::text[], ${i + 1}::int[]) AS k(id, n) "
                    f"WHERE f.site_id = $1 AND f.{col} = k.id AND f.n >= k.n)")
        i += 2
    return "WITH " + ",\n".join(ctes) + "\nSELECT 1"


_WRITE = _write_sql()


def _columns(rows: Sequence[tuple[Any, ...]], cols: Sequence[tuple[str, str]]) -> list[list[Any]]:
    """Rows (site_id first) as one list per column; array columns as JSON text."""
    out: list[list[Any]] = [[] for _ in cols]
    for row in rows:
        for j, ((_, type_), v) in enumerate(zip(cols, row[1:], strict=True)):
            out[j].append(json.dumps(v) if type_.endswith("[]") else v)
    return out


# -- which entities a batch touches ------------------------------------------------------------------------------

def touched(events: Iterable[Mapping[str, Any]]) -> tuple[set[str], set[str], set[str]]:
    """(call ids, queue_log callids, request ids) the events belong to: the routing keys only, the same
    ones ``facts_from_events`` sorts events by; what the events say is read when the entity is rebuilt."""
    calls: set[str] = set()
    callids: set[str] = set()
    requests: set[str] = set()
    for e in events:
        type_ = str(e.get("type") or "")
        data = e.get("data") or {}
        if type_ == "queue.log":
            callid = str(data.get("callid") or "")
            if callid and callid != "NONE":
                callids.add(callid)
        elif type_ in (*REQUEST_TYPES, KEPT_TYPE) and data.get("request_id"):
            requests.add(str(data["request_id"]))
        if e.get("call_id"):
            calls.add(str(e["call_id"]))
    return calls, callids, requests


# -- facts → rows (pure) ----------------------------------------------------------------------------------------

def call_row(site_id: str, c: CallFacts, first_seq: int, region: str) -> tuple[Any, ...]:
    """A ``call_facts`` row; the caller read in the site's ``region`` (FCR across sites)."""
    ttq = (c.queued_at - c.started_at).total_seconds() if c.queued_at is not None else None
    return (site_id, c.call_id, first_seq, c.started_at, c.ended_at, c.channel, c.caller,
            measures.normalise_number(c.caller, region), c.dialed, c.flow, c.flow_version, c.zone, c.outcome,
            c.detail, c.disposition, c.resolved, c.transfer_failed, c.handoff, c.queue, c.queued_at, ttq,
            c.offer_decided, c.callback_offered, c.callback_accepted, c.callback_request_id, c.callback_leg,
            list(c.path), c.path[0] if c.path else None, c.last_node, [a.scale for a in c.surveys],
            [a.value for a in c.surveys], [a.node for a in c.surveys], [a.flow for a in c.surveys],
            [x.name for x in c.lookups], [x.outcome for x in c.lookups], [x.latency_ms for x in c.lookups])


def visit_rows(site_id: str, visits: Iterable[QueueVisit]) -> list[tuple[Any, ...]]:
    """``queue_visit_facts`` rows, each callid's visits numbered in the order they were built."""
    count: dict[str, int] = {}
    out = []
    for v in visits:
        n = count.get(v.callid, 0)
        count[v.callid] = n + 1
        out.append((site_id, v.callid, n, v.queue, v.entered_at, v.ended_at, v.at, v.result, v.wait, v.talk,
                    v.agent, v.transferred, v.ivr_call_id))
    return out


def _kept_columns(k: Mapping[str, Any]) -> tuple[Any, ...]:
    """(quoted_low, quoted_high, time_to_agent, kept, ewt_error, in_range) of a record, read as
    ``ivr.kpi.measures`` reads it (``number``, ``kept`` counted only when a bool, ``quote_error``)."""
    q = measures.quote_error(k)
    kept = k.get("kept")
    return (number(k.get("quoted_low")), number(k.get("quoted_high")), number(k.get("time_to_agent")),
            kept if isinstance(kept, bool) else None, q[0] if q else None, q[1] if q else None)


def request_row(site_id: str, r: CallbackRequestFacts, kept: Sequence[Mapping[str, Any]]) -> tuple[Any, ...]:
    """A ``callback_facts`` row with its last ``callback.kept`` record's figures (``kept``: its records)."""
    low, high, actual, ok, error, _ = _kept_columns(kept[-1]) if kept else (None,) * 6
    return (site_id, r.request_id, r.queue, r.call_id, r.requested_at, r.state, r.first_attempt_outcome,
            r.attempts, len(kept), ok, low, high, actual, error)


def kept_rows(site_id: str, request_id: str, kept: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """``callback_kept_facts`` rows of one request, in order; the last one is the one the KPIs count."""
    return [(site_id, request_id, n, n == len(kept) - 1, str(k.get("queue") or ""), parse_time(k.get("arrival_at")),
             *_kept_columns(k), json.dumps(dict(k), separators=(",", ":")))
            for n, k in enumerate(kept)]


# -- rows → facts (pure): what the report reads back ------------------------------------------------------------

#: the call_facts columns ``call_of`` reads (and FCR's ``caller_e164``): what the report selects
CALL_READ = ("site_id, call_id, started_at, ended_at, channel, caller, caller_e164, dialed, flow, flow_version, zone, "
             "outcome, detail, resolved, transfer_failed, handoff, queue, queued_at, offer_decided, callback_offered, "
             "callback_accepted, callback_request_id, callback_leg, path, survey_scale, survey_value, survey_node, "
             "survey_flow, lookup_name, lookup_outcome, lookup_latency_ms")


def call_of(r: Mapping[str, Any]) -> CallFacts:
    surveys = tuple(SurveyAnswer(s, v, n, f) for s, v, n, f in zip(
        r["survey_scale"], r["survey_value"], r["survey_node"], r["survey_flow"], strict=True))
    lookups = tuple(LookupFacts(n, o, ms) for n, o, ms in zip(
        r["lookup_name"], r["lookup_outcome"], r["lookup_latency_ms"], strict=True))
    return CallFacts(
        call_id=r["call_id"], started_at=r["started_at"], ended_at=r["ended_at"], channel=r["channel"],
        caller=r["caller"], dialed=r["dialed"], flow=r["flow"], flow_version=r["flow_version"], zone=r["zone"],
        outcome=r["outcome"], detail=r["detail"], path=tuple(r["path"]), resolved=r["resolved"],
        transfer_failed=r["transfer_failed"], handoff=r["handoff"], queue=r["queue"], queued_at=r["queued_at"],
        offer_decided=r["offer_decided"], callback_offered=r["callback_offered"],
        callback_accepted=r["callback_accepted"], callback_request_id=r["callback_request_id"],
        callback_leg=r["callback_leg"], surveys=surveys, lookups=lookups, site=r["site_id"])


def visit_of(r: Mapping[str, Any]) -> QueueVisit:
    return QueueVisit(callid=r["callid"], queue=r["queue"], entered_at=r["entered_at"], ended_at=r["ended_at"],
                      result=r["result"], wait=r["wait"], talk=r["talk"], agent=r["agent"],
                      transferred=r["transferred"], ivr_call_id=r["ivr_call_id"], site=r["site_id"])


def request_of(r: Mapping[str, Any]) -> CallbackRequestFacts:
    return CallbackRequestFacts(request_id=r["request_id"], queue=r["queue"], call_id=r["call_id"],
                                requested_at=r["requested_at"], state=r["state"],
                                first_attempt_outcome=r["first_attempt_outcome"], attempts=r["attempts"],
                                site=r["site_id"])


def kept_of(r: Mapping[str, Any]) -> dict[str, Any]:
    """The record as the box wrote it, with the site it came from (for grouping by site)."""
    return {**json.loads(r["record"]), "site": r["site_id"]}


# -- derive -----------------------------------------------------------------------------------------------------

def _event(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"seq": r["seq"], "wall_time": r["wall_time"], "type": r["type"], "call_id": r["call_id"],
            "data": json.loads(r["payload"])}


def rebuild(site_id: str, region: str, events: Sequence[Mapping[str, Any]], calls: set[str], callids: set[str],
            requests: set[str]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]],
                                         list[tuple[Any, ...]], list[tuple[str, int]], list[tuple[str, int]]]:
    """The rows of the touched entities from all their events (in seq order): (calls, visits, requests,
    kept records, visits per callid, records per request). Pure. An entity another one's read brought along
    (a request's events carry the filing call's id) is left out: only its own read has all of its events."""
    facts = facts_from_events(events)
    first_seq: dict[str, int] = {}
    for e in events:
        if e["call_id"] is not None:
            first_seq.setdefault(str(e["call_id"]), int(e["seq"]))
    call_rows = [call_row(site_id, c, first_seq[c.call_id], region) for c in facts.calls if c.call_id in calls]
    visits = [v for v in visits_from_queue_log(facts.queue_rows) if v.callid in callids]
    v_rows = visit_rows(site_id, visits)
    v_count: dict[str, int] = dict.fromkeys(callids, 0)
    for v in visits:
        v_count[v.callid] += 1
    kept_by: dict[str, list[Mapping[str, Any]]] = {}
    for k in facts.kept:
        rid = str(k.get("request_id", ""))
        if rid in requests:
            kept_by.setdefault(rid, []).append(k)
    r_rows = [request_row(site_id, r, kept_by.get(r.request_id, ())) for r in facts.requests
              if r.request_id in requests]
    k_rows = [row for rid, ks in kept_by.items() for row in kept_rows(site_id, rid, ks)]
    return (call_rows, v_rows, r_rows, k_rows, sorted(v_count.items()),
            sorted((rid, len(kept_by.get(rid, ()))) for rid in requests))


async def derive(conn: asyncpg.Connection, site_id: str, events: Sequence[dict[str, Any]]) -> None:
    """Update the typed fact tables for what ``events`` (the batch's new events) touched. Runs inside the
    batch's transaction (ivr_central.store.insert_batch): the facts commit with their events or not at all."""
    calls, callids, requests = touched(events)
    if not (calls or callids or requests):
        return
    rows = await conn.fetch(_READ, site_id, sorted(calls), sorted(callids), sorted(requests))
    if not rows:
        return
    c_rows, v_rows, r_rows, k_rows, v_count, k_count = rebuild(
        site_id, rows[0]["region"] or "US", [_event(r) for r in rows], calls, callids, requests)
    args: list[Any] = []
    for table_rows, (_, cols, _) in zip((c_rows, v_rows, r_rows, k_rows), _TABLES, strict=True):
        args += _columns(table_rows, cols)
    for counts in (v_count, k_count):
        args += [[k for k, _ in counts], [n for _, n in counts]]
    await conn.execute(_WRITE, site_id, *args)

