"""The KPIs over facts: each function counts what it needs from ``CallFacts`` / ``QueueVisit`` / callback
records and hands the counts to ``ivr.kpi.formulas``. Every result is a ``Kpi`` naming its formula's
variant and carrying its sample size. Pure: "now", the period and the zone are passed in.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

import phonenumbers

from ivr.kpi import buckets
from ivr.kpi import formulas as f
from ivr.kpi.facts import CallbackRequestFacts, CallFacts, LookupFacts, QueueVisit, number

DEFAULT_SHORT_ABANDON_S = 5.0
DEFAULT_SL_THRESHOLD_S = 20.0
FCR_WINDOWS: tuple[tuple[str, timedelta], ...] = (("24h", timedelta(hours=24)), ("72h", timedelta(hours=72)),
                                                  ("7d", timedelta(days=7)))


@dataclass(frozen=True)
class Kpi:
    name: str
    value: float | None
    n: int  # the sample the value is taken over (a ratio's denominator, a mean's count)
    unit: str  # calls, lookups (counts), s, ms, share (0-1), points, erlang, calls/h
    variant: str  # the formula, in words
    provisional: bool = False  # the figure can still change (a window not yet over)
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["detail"] = dict(self.detail)
        return d


def _kpi(name: str, m: f.Measure, unit: str, variant: str, **detail: Any) -> Kpi:
    return Kpi(name, m.value, m.n, unit, variant, detail=detail)


def _count(name: str, k: int, variant: str, n: int | None = None) -> Kpi:
    """A count; its n is the population it was counted in (the calls, the queue entries), itself by default."""
    return Kpi(name, float(k), k if n is None else n, "calls", variant)


# -- the PBX queue (queue_log) -------------------------------------------------------------------------------

def _short(v: QueueVisit, short_abandon_s: float) -> bool:
    return v.result == "abandoned" and v.wait is not None and v.wait < short_abandon_s


def queue_counts(visits: Sequence[QueueVisit], short_abandon_s: float = DEFAULT_SHORT_ABANDON_S) -> list[Kpi]:
    """Offered = queue entries; answered = CONNECT; abandoned = ABANDON (the caller hung up while waiting);
    short abandoned = abandoned after less than ``short_abandon_s``; exited = left by timeout, key or an
    empty queue (not abandoned: the PBX sent them on); waiting = no end yet."""
    by = {r: sum(1 for v in visits if v.result == r) for r in ("answered", "abandoned", "waiting")}
    exited = sum(1 for v in visits if v.result in ("timeout", "exit_key", "exit_empty"))
    short = sum(1 for v in visits if _short(v, short_abandon_s))
    return [
        _count("offered", len(visits), "queue entries (ENTERQUEUE)"),
        _count("answered", by["answered"], "answered by an agent (CONNECT)", len(visits)),
        _count("abandoned", by["abandoned"], "caller hung up in the queue (ABANDON), short ones included", len(visits)),
        _count("short_abandoned", short, f"abandoned after less than {short_abandon_s:g} s", len(visits)),
        _count("exited", exited, "left by timeout, key or empty queue (EXITWITH*, EXITEMPTY)", len(visits)),
        _count("waiting", by["waiting"], "no end seen yet", len(visits)),
    ]


def asa(visits: Sequence[QueueVisit]) -> Kpi:
    """ASA = sum of hold time of answered calls / answered calls (only answered contacts count)."""
    waits = [v.wait for v in visits if v.result == "answered" and v.wait is not None]
    return _kpi("asa", f.mean(sum(waits), len(waits)), "s", "hold time to CONNECT / answered")


def queue_wait(visits: Sequence[QueueVisit]) -> list[Kpi]:
    """Average and longest queue wait over every visit that ended (answered: hold time to the answer;
    abandoned / exited: the wait before leaving). Visits still waiting are not counted."""
    waits = [v.wait for v in visits if v.result != "waiting" and v.wait is not None]
    return [_kpi("average_queue_wait", f.mean_of(waits), "s", "wait of every ended queue visit / visits"),
            _kpi("longest_queue_wait", f.maximum(waits), "s", "max wait of an ended queue visit")]


def talk_time(visits: Sequence[QueueVisit]) -> Kpi:
    """queue_log's calltime (bridge to hang-up: talk plus any hold by the agent) averaged over completed
    calls. queue_log has no wrap-up, so this is "average talk time", not AHT (``formulas.handle_time``)."""
    talks = [v.talk for v in visits if v.result == "answered" and v.talk is not None]
    name, m = f.handle_time(sum(talks), len(talks), hold_total=None, wrap_total=None)
    return _kpi(name, m, "s", "(talk + hold) / completed calls; wrap-up unknown, so not AHT")


def service_level(visits: Sequence[QueueVisit], threshold_s: float = DEFAULT_SL_THRESHOLD_S,
                  variant: str = f.SL_ANSWERED_ABANDONED,
                  short_abandon_s: float = DEFAULT_SHORT_ABANDON_S) -> Kpi:
    """Service level with threshold T by ``variant`` (``formulas.SL_VARIANTS``): answered within T means a
    hold time <= T; abandoned after T a wait > T."""
    answered = [v for v in visits if v.result == "answered"]
    within = sum(1 for v in answered if v.wait is not None and v.wait <= threshold_s)
    ab_after = sum(1 for v in visits if v.result == "abandoned" and (v.wait is None or v.wait > threshold_s))
    ended = [v for v in visits if v.result != "waiting"]
    short = sum(1 for v in visits if _short(v, short_abandon_s))
    m = f.service_level(within, len(answered), ab_after, variant, offered=len(ended), short_abandoned=short)
    label = f.SL_VARIANTS[variant].format(t=f"{threshold_s:g}", s=f"{short_abandon_s:g}")
    return _kpi("service_level", m, "share", label, threshold_s=threshold_s, variant_id=variant)


def abandonment_rate(visits: Sequence[QueueVisit], short_abandon_s: float = DEFAULT_SHORT_ABANDON_S,
                     variant: str = f.ABANDON_NO_SHORT) -> Kpi:
    """Abandonment rate over ended queue visits by ``variant`` (``formulas.ABANDON_VARIANTS``)."""
    ended = [v for v in visits if v.result != "waiting"]
    ab = sum(1 for v in ended if v.result == "abandoned")
    short = sum(1 for v in ended if _short(v, short_abandon_s))
    m = f.abandonment_rate(ab, len(ended), short, variant)
    return _kpi("abandonment_rate", m, "share", f.ABANDON_VARIANTS[variant].format(s=f"{short_abandon_s:g}"),
                short_abandon_s=short_abandon_s, variant_id=variant)


def agent_transfer_rate(visits: Sequence[QueueVisit]) -> Kpi:
    """Answered queue calls the agent transferred on (BLINDTRANSFER / ATTENDEDTRANSFER) / answered calls."""
    answered = [v for v in visits if v.result == "answered" and v.ended_at is not None]
    return _kpi("agent_transfer_rate", f.ratio(sum(1 for v in answered if v.transferred), len(answered)), "share",
                "transferred by the agent / completed answered calls")


# -- the IVR (event log) -------------------------------------------------------------------------------------

def _ended(calls: Sequence[CallFacts]) -> list[CallFacts]:
    return [c for c in calls if c.outcome is not None]


def ivr_counts(calls: Sequence[CallFacts]) -> list[Kpi]:
    """Calls into the IVR and how they left it (``CallFacts.disposition``)."""
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.disposition] = counts.get(c.disposition, 0) + 1
    out = [_count("ivr_calls", len(calls), "calls started (call.started)")]
    for d, what in (("self_served", "the flow ended the call (outcome hangup), no mark"),
                    ("resolved", "the flow marked the task done"),
                    ("transferred", "handed to the PBX, a queue or an extension"),
                    ("transfer_failed", "a handoff failed and the call ended in the IVR"),
                    ("abandoned", "the caller hung up in the IVR (caller_hangup)"),
                    ("callback", "a callback was filed"),
                    ("other", "error, failed, max_length, rtp_timeout, session_expired, no_ack, shutdown, "
                              "interrupted"),
                    ("open", "no call.ended yet")):
        out.append(_count(f"ivr_{d}", counts.get(d, 0), what, len(calls)))
    return out


CONTAINMENT_SELF_SERVED = "self-served"
CONTAINMENT_RESOLVED = "resolved"


def containment(calls: Sequence[CallFacts], variant: str = CONTAINMENT_SELF_SERVED) -> Kpi:
    """IVR containment over ended calls. ``self-served``: (self served + resolved) / ended calls, i.e. the
    flow ended the call without an agent, a callback, a failed handoff or the caller hanging up;
    ``resolved``: calls the flow marked resolved / ended calls (needs the mark in the flows)."""
    ended = _ended(calls)
    if variant == CONTAINMENT_SELF_SERVED:
        k = sum(1 for c in ended if c.disposition in ("self_served", "resolved"))
        return _kpi("containment", f.ratio(k, len(ended)), "share", "(self-served + resolved) / ended IVR calls",
                    variant_id=variant)
    if variant == CONTAINMENT_RESOLVED:
        k = sum(1 for c in ended if c.disposition == "resolved")
        return _kpi("containment_resolved", f.ratio(k, len(ended)), "share", "resolved / ended IVR calls",
                    variant_id=variant)
    raise ValueError(f"unknown containment variant {variant!r}")


def transfer_rate(calls: Sequence[CallFacts]) -> list[Kpi]:
    """IVR transfer rate = calls handed on (transferred / queued) / ended calls; transfer failure rate =
    calls with a failed handoff / calls that tried one."""
    ended = _ended(calls)
    moved = sum(1 for c in ended if c.disposition == "transferred")
    tried = [c for c in ended if c.handoff is not None or c.transfer_failed or c.outcome == "transfer_failed"]
    failed = sum(1 for c in tried if c.transfer_failed or c.outcome == "transfer_failed")
    return [_kpi("transfer_rate", f.ratio(moved, len(ended)), "share", "handed to the PBX / ended IVR calls"),
            _kpi("transfer_failure_rate", f.ratio(failed, len(tried)), "share",
                 "calls with a failed handoff / calls that tried one")]


def ivr_abandon_by_node(calls: Sequence[CallFacts]) -> dict[str, Kpi]:
    """Per node: callers who hung up there (outcome caller_hangup, the last node of the path) / calls that
    entered the node. Nodes qualified ``flow.node``."""
    entered: dict[str, int] = {}
    left: dict[str, int] = {}
    for c in _ended(calls):
        for node in set(c.path):
            entered[node] = entered.get(node, 0) + 1
        if c.disposition == "abandoned" and c.last_node:
            left[c.last_node] = left.get(c.last_node, 0) + 1
            entered.setdefault(c.last_node, 1)
    return {node: Kpi("ivr_abandon_rate", *_rn(left.get(node, 0), entered[node]), "share",
                      "caller hung up at the node / calls that entered it", detail={"abandoned": left.get(node, 0)})
            for node in sorted(entered)}


def _rn(part: int, whole: int) -> tuple[float | None, int]:
    m = f.ratio(part, whole)
    return m.value, m.n


def time_to_queue(calls: Sequence[CallFacts]) -> list[Kpi]:
    """Seconds from call.started to the queue handoff (the first successful ``transfer.progress`` or
    ``transfer`` to a queue): the IVR's part of the caller's wait."""
    xs = [(c.queued_at - c.started_at).total_seconds() for c in calls if c.queued_at is not None]
    return [_kpi("time_to_queue", f.mean_of(xs), "s", "call start to queue handoff, mean over queued calls"),
            _kpi("longest_time_to_queue", f.maximum(xs), "s", "call start to queue handoff, max")]


# -- first-call resolution -----------------------------------------------------------------------------------

ANONYMOUS = frozenset({"", "anonymous", "unknown", "restricted", "private", "unavailable", "withheld"})


@lru_cache(maxsize=65536)
def normalise_number(raw: str, region: str) -> str | None:
    """A caller ID as E.164 (libphonenumber, national numbers read in ``region``), or None for a withheld,
    anonymous or unusable one (``sip:`` / ``tel:`` and ``@host`` are stripped first). A caller pseudonym
    (``ref:...``, written with privacy on: made from the E.164 number already) is its own identity."""
    s = raw.strip()
    if s.startswith("ref:"):
        return s
    for scheme in ("sip:", "sips:", "tel:"):
        if s.lower().startswith(scheme):
            s = s[len(scheme):]
    s = s.split("@", 1)[0].split(";", 1)[0].strip()
    if s.lower() in ANONYMOUS:
        return None
    try:
        p = phonenumbers.parse(s, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(p):
        return None
    return phonenumbers.format_number(p, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class CallerIndex:
    """Every call's start by normalised number (built once: a report asks it for every group)."""

    region: str
    starts: Mapping[str, list[datetime]]
    numbers: Mapping[str, str]  # call_id -> E.164

    @classmethod
    def of(cls, history: Iterable[CallFacts], region: str) -> CallerIndex:
        """Every number read in ``region``."""
        return cls.of_numbers(((h.call_id, h.started_at, normalise_number(h.caller, region)) for h in history),
                              region)

    @classmethod
    def of_numbers(cls, history: Iterable[tuple[str, datetime, str | None]], region: str) -> CallerIndex:
        """From (call id, start, number) with numbers normalised already (the central store reads each
        site's callers in that site's region at ingest, so one caller is one number across sites); None:
        withheld."""
        starts: dict[str, list[datetime]] = {}
        ids: dict[str, str] = {}
        for call_id, started_at, num in history:
            if num is not None:
                starts.setdefault(num, []).append(started_at)
                ids[call_id] = num
        for lst in starts.values():
            lst.sort()
        return cls(region, starts, ids)


def fcr_counts(calls: Sequence[CallFacts], history: Iterable[CallFacts] | CallerIndex, window: timedelta, *,
               now: datetime, region: str) -> tuple[int, int, int, int]:
    """(resolved first time, calls counted, anonymous left out, windows still open at ``now``).

    A call counts when its caller ID normalises to E.164; it was resolved first time when no other call from
    that number (in ``history``, which should reach up to ``now``) started in ``(start, start + window]``.
    A call without a repeat whose window ends after ``now`` is counted as resolved for now, and open."""
    index = history if isinstance(history, CallerIndex) else CallerIndex.of(history, region)
    resolved = counted = anonymous = still_open = 0
    for c in calls:
        num = index.numbers.get(c.call_id) or normalise_number(c.caller, region)
        if num is None:
            anonymous += 1
            continue
        counted += 1
        lst = index.starts.get(num, [])
        i = bisect_right(lst, c.started_at)  # the first start after this call's
        if i < len(lst) and lst[i] <= c.started_at + window:
            continue
        resolved += 1
        if c.started_at + window > now:
            still_open += 1
    return resolved, counted, anonymous, still_open


def first_call_resolution(calls: Sequence[CallFacts], history: Iterable[CallFacts] | CallerIndex, *, now: datetime,
                          region: str,
                          windows: Sequence[tuple[str, timedelta]] = FCR_WINDOWS) -> list[Kpi]:
    """FCR by repeat caller = calls with no repeat from the same number within the window / calls with a
    usable number (E.164 in ``region``; anonymous left out). A window that reaches past ``now`` is
    provisional: a repeat may still come."""
    hist = history if isinstance(history, CallerIndex) else CallerIndex.of(history, region)
    out = []
    for label, w in windows:
        res, n, anon, still_open = fcr_counts(calls, hist, w, now=now, region=region)
        m = f.ratio(res, n)
        out.append(Kpi(f"fcr_{label}", m.value, m.n, "share",
                       f"no repeat call from the number within {label} / calls with a usable number",
                       provisional=still_open > 0, detail={"anonymous": anon, "open_windows": still_open}))
    return out


# -- surveys -------------------------------------------------------------------------------------------------

def survey_scores(calls: Sequence[CallFacts]) -> list[Kpi]:
    """CSAT = answers 4-5 / answers on the 1-5 scale; NPS = %9-10 - %0-6 of answers on 0-10 (points)."""
    cs = [a.value for c in calls for a in c.surveys if a.scale == "csat"]
    ns = [a.value for c in calls for a in c.surveys if a.scale == "nps"]
    promoters, detractors = sum(1 for v in ns if v >= 9), sum(1 for v in ns if v <= 6)
    return [_kpi("csat", f.csat(sum(1 for v in cs if v >= 4), len(cs)), "share", "answers 4-5 / answers (1-5)"),
            _kpi("nps", f.nps(promoters, detractors, len(ns)), "points", "%9-10 - %0-6 of answers (0-10)",
                 promoters=promoters, detractors=detractors)]


# -- data look-ups (the flows' http nodes) ----------------------------------------------------------------------

def lookup_kpis(calls: Sequence[CallFacts]) -> list[Kpi]:
    """Look-ups made, the share that failed (every outcome but ``ok``: the caller went to the node's failure
    or timeout branch), and the caller's wait for an answer (p50, p95; retries and the breaker's fast
    refusals included: what callers felt, not what the back end took). Failures by outcome in ``detail``."""
    return _lookup_figures([x for c in calls for x in c.lookups])


def lookups_by_name(calls: Sequence[CallFacts]) -> dict[str, list[Kpi]]:
    """``lookup_kpis`` per look-up (the config's name, else the host): which back end fails or is slow."""
    by_name: dict[str, list[LookupFacts]] = {}
    for c in calls:
        for x in c.lookups:
            by_name.setdefault(x.name, []).append(x)
    return {name: _lookup_figures(by_name[name]) for name in sorted(by_name)}


def _lookup_figures(done: Sequence[LookupFacts]) -> list[Kpi]:
    failed = Counter(x.outcome or "unknown" for x in done if x.outcome != "ok")
    waits = [x.latency_ms for x in done if x.latency_ms is not None]
    return [Kpi("lookups", float(len(done)), len(done), "lookups", "http node requests (retries in one)"),
            _kpi("lookup_failure_rate", f.ratio(sum(failed.values()), len(done)), "share",
                 "look-ups not ok (timeout, circuit open, error, bad answer) / look-ups",
                 **dict(sorted(failed.items()))),
            Kpi("lookup_wait_p50", f.percentile(waits, 50), len(waits), "ms", "caller's wait for a look-up, median"),
            Kpi("lookup_wait_p95", f.percentile(waits, 95), len(waits), "ms", "caller's wait for a look-up, 95th pct")]


# -- traffic -------------------------------------------------------------------------------------------------

def _intervals(calls: Sequence[CallFacts], since: datetime, until: datetime, now: datetime
               ) -> list[tuple[datetime, datetime]]:
    """Each call's time on the box clipped to the period; a running call runs until ``now``."""
    out = []
    for c in calls:
        a, b = max(c.started_at, since), min(c.end_or(now), until)
        if a < b or (a == b and since <= c.started_at < until):
            out.append((a, b))
    return out


def calls_per_hour(calls: Sequence[CallFacts], since: datetime, until: datetime) -> Kpi:
    """Calls started in the period / its length in hours (real hours: a 25-hour day has 25)."""
    k = sum(1 for c in calls if since <= c.started_at < until)
    return _kpi("calls_per_hour", f.per_hour(k, (until - since).total_seconds()), "calls/h",
                "calls started / hours in the period")


def peak_concurrent(calls: Sequence[CallFacts], since: datetime, until: datetime, now: datetime,
                    zone: str | tzinfo) -> Kpi:
    """The most calls on the box at one instant (an end and a start at the same instant do not overlap)."""
    ivs = _intervals(calls, since, until, now)
    edges = sorted([(a, 1) for a, _ in ivs] + [(b, -1) for _, b in ivs], key=lambda e: (e[0], e[1]))
    best, cur, at = 0, 0, None
    for t, d in edges:
        cur += d
        if cur > best:
            best, at = cur, t
    return Kpi("peak_concurrent_calls", float(best), len(ivs), "calls", "max calls in progress at one instant",
               detail={"at": at.astimezone(buckets.as_zone(zone)).isoformat() if at else None})


def traffic(calls: Sequence[CallFacts], since: datetime, until: datetime, now: datetime) -> Kpi:
    """Carried traffic in Erlangs = call seconds on the box within the period / the period's seconds."""
    ivs = _intervals(calls, since, until, now)
    busy = sum((b - a).total_seconds() for a, b in ivs)
    return _kpi("erlangs", f.erlangs(busy, (until - since).total_seconds(), len(ivs)), "erlang",
                "call seconds in the period / seconds in the period")


def busy_hour(calls: Sequence[CallFacts], since: datetime, until: datetime, now: datetime,
              zone: str | tzinfo) -> Kpi:
    """The site's clock hour with the most carried traffic (Erlangs in that hour; ties: the earlier), over
    the hours of the period; a repeated hour on a DST day is two hours."""
    ivs = _intervals(calls, since, until, now)
    hours = list(buckets.hours(since, until, zone))
    starts = [h.start for h in hours]
    load = [0.0] * len(hours)
    for x, y in ivs:  # each call into the hours it spans (clipped to the period: inside these hours)
        i = bisect_right(starts, x) - 1
        while i < len(hours) and hours[i].start < y:
            load[i] += buckets.overlap(x, y, hours[i].start, hours[i].end)
            i += 1
    best: tuple[float, buckets.Bucket] | None = None
    for b, busy in zip(hours, load, strict=True):
        erl = busy / b.seconds
        if best is None or erl > best[0]:
            best = (erl, b)
    if best is None or best[0] == 0:
        return Kpi("busy_hour_erlangs", None, len(ivs), "erlang", "the clock hour with the most traffic",
                   detail={"hour": None, "calls": 0})
    erl, b = best
    started = sum(1 for c in calls if b.holds(c.started_at))
    return Kpi("busy_hour_erlangs", erl, len(ivs), "erlang", "the clock hour with the most traffic",
               detail={"hour": b.key, "calls": started})


# -- callbacks -----------------------------------------------------------------------------------------------

def last_kept(kept: Iterable[Mapping[str, Any]], request_ids: Iterable[str] | None = None
              ) -> list[Mapping[str, Any]]:
    """A request's last ``callback.kept`` record (a record is written on done and on every expiry);
    with ``request_ids``, only those requests' records."""
    wanted = set(request_ids) if request_ids is not None else None
    last: dict[str, Mapping[str, Any]] = {}
    for k in kept:
        rid = str(k.get("request_id", ""))
        if wanted is None or rid in wanted:
            last[rid] = k
    return list(last.values())


@dataclass(frozen=True)
class EwtError:
    mae: f.Measure
    bias: f.Measure
    in_range: f.Measure


def quote_error(k: Mapping[str, Any]) -> tuple[float, bool] | None:
    """(error, inside) of one ``callback.kept`` record quoted a range and connected: error = time_to_agent -
    middle of [quoted_low, quoted_high], inside = the actual wait fell in the range; None otherwise. The
    central store keeps both per record (ivr_central/facts.py) for its SQL."""
    low, high, actual = number(k.get("quoted_low")), number(k.get("quoted_high")), number(k.get("time_to_agent"))
    if low is None or high is None or actual is None:
        return None
    return actual - (low + high) / 2, low <= actual <= high


def ewt_error(records: Iterable[Mapping[str, Any]]) -> EwtError:
    """Over records quoted a range and connected: error = time_to_agent - middle of [quoted_low,
    quoted_high]; MAE, bias and the share of actual waits inside the range."""
    errors: list[float] = []
    inside = 0
    for k in records:
        q = quote_error(k)
        if q is None:
            continue
        errors.append(q[0])
        inside += q[1]
    mae, bias = f.ewt_error(sum(abs(e) for e in errors), sum(errors), len(errors))
    return EwtError(mae, bias, f.ratio(inside, len(errors)))


def promise_kept(records: Iterable[Mapping[str, Any]]) -> f.Measure:
    """Promises kept / promises: records with a quote (``kept`` true or false; an expiry is a broken one)."""
    promised = [k for k in records if isinstance(k.get("kept"), bool)]
    return f.ratio(sum(1 for k in promised if k["kept"]), len(promised))


def callback_kpis(calls: Sequence[CallFacts], requests: Sequence[CallbackRequestFacts],
                  kept: Sequence[Mapping[str, Any]]) -> list[Kpi]:
    """The callback funnel and its honesty:

    - offered = calls offered a callback / calls where a queue node decided on an offer (``queue.offer``);
    - accepted = calls that accepted (pressed 1 or asked in the PBX queue) / offered;
    - filed = calls whose request was stored and confirmed to the caller;
    - completed = requests done / requests finished (done + expired; cancelled and in-progress left out);
    - first-attempt connect = requests whose first attempt that rang the phone (not interrupted by the box)
      was answered / requests with such an attempt;
    - promise kept = kept / quoted and finished (``callback.kept``); callback ASA = mean time from the
      original arrival to the agent (``time_to_agent``) over connected callbacks;
    - EWT error: MAE and bias of time_to_agent - middle of the quote, over quoted and connected callbacks.
    """
    decided = [c for c in calls if c.offer_decided]
    offered = [c for c in decided if c.callback_offered]
    accepted = [c for c in offered if c.callback_accepted]
    filed = sum(1 for c in calls if c.callback_request_id)
    done = sum(1 for r in requests if r.state == "done")
    finished = done + sum(1 for r in requests if r.state == "expired")
    first = [r for r in requests if r.first_attempt_outcome is not None]
    first_ok = sum(1 for r in first if r.first_attempt_outcome == "connected")
    records = last_kept(kept)
    to_agent = [t for k in records if (t := number(k.get("time_to_agent"))) is not None]
    e = ewt_error(records)
    return [
        _kpi("callback_offered", f.ratio(len(offered), len(decided)), "share",
             "calls offered a callback / calls at a queue node's offer decision", offered=len(offered)),
        _kpi("callback_accepted", f.ratio(len(accepted), len(offered)), "share", "accepted / offered",
             accepted=len(accepted)),
        _count("callback_filed", filed, "requests stored and confirmed to the caller", len(accepted)),
        _kpi("callback_completed", f.ratio(done, finished), "share", "done / (done + expired)", done=done,
             requests=len(requests)),
        _kpi("callback_first_attempt_connect", f.ratio(first_ok, len(first)), "share",
             "first attempt that rang the phone answered / requests with one"),
        _kpi("callback_promise_kept", promise_kept(records), "share",
             "agent within the quoted high end / quoted and finished (expired = broken)"),
        _kpi("callback_asa", f.mean_of(to_agent), "s", "original arrival to agent, mean over connected callbacks"),
        _kpi("ewt_mae", e.mae, "s", "mean |time to agent - middle of the quote|"),
        _kpi("ewt_bias", e.bias, "s", "mean (time to agent - middle of the quote); > 0: quotes too short"),
    ]
