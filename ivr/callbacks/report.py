"""Honest numbers over a period (issue 7, item 6): how many callbacks were asked for and how they ended, how
often the quoted wait was kept, and how wrong the estimated wait was against the wait that followed.

Pure: rows in, a ``Report`` out. The rows are the ``callback_requests`` of the period (their final state) and
the ``callback.kept`` records the dialer writes when a callback is done or expires (quoted range, time from
the original arrival to the first dial and to the agent). ``ivr callbacks report`` reads them from the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

WAITING = ("requested", "retry")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (a value that occurred, no interpolation between two callers' waits)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


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


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def build_report(requests: Iterable[Mapping[str, Any]], kept: Iterable[Mapping[str, Any]]) -> Report:
    """``requests``: rows with ``id`` and ``state``; ``kept``: ``callback.kept`` records (``request_id``,
    ``quoted_low``, ``quoted_high``, ``time_to_dial``, ``time_to_agent``, ``kept``). Records of requests not in
    ``requests`` are ignored (another period or queue); a request's last record counts."""
    states: dict[str, str] = {str(r["id"]): str(r["state"]) for r in requests}
    last: dict[str, Mapping[str, Any]] = {}
    for k in kept:
        rid = str(k.get("request_id", ""))
        if rid in states:
            last[rid] = k
    count = {s: sum(1 for v in states.values() if v == s) for s in ("done", "expired", "cancelled")}
    promised = [k for k in last.values() if isinstance(k.get("kept"), bool)]
    n_kept = sum(1 for k in promised if k["kept"])
    errors: list[float] = []
    inside = 0
    for k in last.values():
        low, high, actual = _num(k.get("quoted_low")), _num(k.get("quoted_high")), _num(k.get("time_to_agent"))
        if low is None or high is None or actual is None:
            continue
        errors.append(actual - (low + high) / 2)
        inside += low <= actual <= high
    dial = [v for k in last.values() if (v := _num(k.get("time_to_dial"))) is not None]
    agent = [v for k in last.values() if (v := _num(k.get("time_to_agent"))) is not None]

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 1) if xs else None

    return Report(
        requests=len(states), done=count["done"], expired=count["expired"], cancelled=count["cancelled"],
        in_progress=len(states) - sum(count.values()),
        promises=len(promised), kept=n_kept, kept_rate=round(n_kept / len(promised), 3) if promised else None,
        ewt_samples=len(errors), ewt_mae=mean([abs(e) for e in errors]), ewt_bias=mean(errors),
        ewt_in_range=round(inside / len(errors), 3) if errors else None,
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
