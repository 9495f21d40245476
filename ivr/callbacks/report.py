"""Honest numbers over a period (issue 7, item 6): how many callbacks were asked for and how they ended, how
often the quoted wait was kept, and how wrong the estimated wait was against the wait that followed.

Pure: rows in, a ``Report`` out. The rows are the ``callback_requests`` of the period (their final state) and
the ``callback.kept`` records the dialer writes when a callback is done or expires (quoted range, time from
the original arrival to the first dial and to the agent). ``ivr callbacks report`` reads them from the store.

The maths (last record per request, promise kept, EWT error, nearest-rank percentiles) is the KPIs' own
(``ivr.kpi.measures`` / ``ivr.kpi.formulas``), so ``ivr kpi`` and this report give the same figures; here
they are rounded for the operator (seconds to 0.1, shares to 0.001).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ivr.kpi.facts import number
from ivr.kpi.formulas import Measure, percentile
from ivr.kpi.measures import ewt_error, last_kept, promise_kept

__all__ = ["WAITING", "Report", "build_report", "percentile", "render"]

WAITING = ("requested", "retry")


@dataclass(frozen=True)
class Report:
    requests: int
    done: int
    expired: int
    cancelled: int
    in_progress: int
    promises: int  # finished callbacks that were quoted a wait
    kept: int
    kept_rate: float | None
    ewt_samples: int  # quoted and reached an agent: the wait that followed is known
    ewt_mae: float | None  # mean |actual - middle of the quote|, seconds
    ewt_bias: float | None  # mean (actual - middle): > 0 means the quotes were too short
    ewt_in_range: float | None  # share of actual waits inside [quoted_low, quoted_high]
    dial_p50: float | None  # original arrival -> first dial, seconds
    dial_p90: float | None
    agent_p50: float | None  # original arrival -> agent, seconds
    agent_p90: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _r(m: Measure, digits: int) -> float | None:
    return None if m.value is None else round(m.value, digits)


def build_report(requests: Iterable[Mapping[str, Any]], kept: Iterable[Mapping[str, Any]]) -> Report:
    """``requests``: rows with ``id`` and ``state``; ``kept``: ``callback.kept`` records (``request_id``,
    ``quoted_low``, ``quoted_high``, ``time_to_dial``, ``time_to_agent``, ``kept``). Records of requests not in
    ``requests`` are ignored (another period or queue); a request's last record counts."""
    states: dict[str, str] = {str(r["id"]): str(r["state"]) for r in requests}
    last = last_kept(kept, states)
    count = {s: sum(1 for v in states.values() if v == s) for s in ("done", "expired", "cancelled")}
    promised = promise_kept(last)
    e = ewt_error(last)
    dial = [v for k in last if (v := number(k.get("time_to_dial"))) is not None]
    agent = [v for k in last if (v := number(k.get("time_to_agent"))) is not None]
    return Report(
        requests=len(states), done=count["done"], expired=count["expired"], cancelled=count["cancelled"],
        in_progress=len(states) - sum(count.values()),
        promises=promised.n, kept=sum(1 for k in last if k.get("kept") is True), kept_rate=_r(promised, 3),
        ewt_samples=e.mae.n, ewt_mae=_r(e.mae, 1), ewt_bias=_r(e.bias, 1), ewt_in_range=_r(e.in_range, 3),
        dial_p50=percentile(dial, 50), dial_p90=percentile(dial, 90),
        agent_p50=percentile(agent, 50), agent_p90=percentile(agent, 90))


def _s(v: float | None, unit: str = " s") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def render(r: Report, heading: str) -> str:
    """The report as an operator reads it; '-' where there is nothing to measure yet."""
    return "\n".join([
        heading,
        f"requests          {r.requests}  (done {r.done}, expired {r.expired}, cancelled {r.cancelled},"
        f" in progress {r.in_progress})",
        f"promise kept      {r.kept} of {r.promises}  ({_pct(r.kept_rate)})",
        f"EWT error         MAE {_s(r.ewt_mae)}, bias {_s(r.ewt_bias)} (+ = quotes too short),"
        f" inside the quoted range {_pct(r.ewt_in_range)}  over {r.ewt_samples} callbacks",
        f"to first dial     p50 {_s(r.dial_p50)}, p90 {_s(r.dial_p90)}",
        f"to agent          p50 {_s(r.agent_p50)}, p90 {_s(r.agent_p90)}",
    ])
