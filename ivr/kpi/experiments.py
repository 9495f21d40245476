"""A/B experiments (the flow's ``split`` node): each variant's containment, IVR abandonment, time to queue and
CSAT with its sample size and a confidence interval, and its difference from the control with one, so an
admin can tell a real change from noise. Pure: call facts in, comparisons out.

The control is the variant whose name sorts first (``A``, ``control``…: name them so). Shares use the
Wilson score interval (honest at small n and near 0 or 1); differences of shares and of means the normal
approximation with unpooled variances (Welch), which wants some 30 answers a side before it means much —
each figure carries its n so a reader can see that. A difference is called significant when its interval
excludes 0. Only ended calls count (an open call has no outcome yet).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ivr.kpi.facts import CallFacts

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Figure:
    """One variant's value of one metric, with its interval; None where there is nothing to measure."""

    value: float | None
    n: int
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str  # share or s
    variant: str
    figure: Figure
    diff: Figure | None  # against the control; None for the control itself
    significant: bool | None  # None: the control, or too little to say

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "unit": self.unit, "variant": self.variant,
                "value": _r(self.figure.value), "n": self.figure.n, "low": _r(self.figure.low),
                "high": _r(self.figure.high),
                "diff": None if self.diff is None else {"value": _r(self.diff.value), "low": _r(self.diff.low),
                                                        "high": _r(self.diff.high)},
                "significant": self.significant}


@dataclass(frozen=True)
class Experiment:
    name: str
    control: str
    calls: dict[str, int]  # variant → ended calls
    rows: tuple[Row, ...]
    confidence: float = CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": self.name, "control": self.control, "confidence": self.confidence,
                "calls": dict(self.calls), "rows": [r.as_dict() for r in self.rows]}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _z(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Figure:
    """A share k/n with its Wilson score interval."""
    if n == 0:
        return Figure(None, 0, None, None)
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the ends, not a rounding error off
    high = 1.0 if k == n else min(1.0, centre + half)
    return Figure(p, n, low, high)


def mean_interval(xs: Sequence[float], confidence: float = CONFIDENCE) -> Figure:
    if not xs:
        return Figure(None, 0, None, None)
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return Figure(m, 1, None, None)
    half = _z(confidence) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Figure(m, len(xs), m - half, m + half)


def _share_diff(a: tuple[int, int], b: tuple[int, int], confidence: float) -> Figure | None:
    (ka, na), (kb, nb) = a, b
    if na == 0 or nb == 0:
        return None
    pa, pb = ka / na, kb / nb
    half = _z(confidence) * math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    d = pb - pa
    return Figure(d, nb, d - half, d + half)


def _mean_diff(a: Sequence[float], b: Sequence[float], confidence: float) -> Figure | None:
    if len(a) < 2 or len(b) < 2:
        return None
    d = statistics.fmean(b) - statistics.fmean(a)
    half = _z(confidence) * math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return Figure(d, len(b), d - half, d + half)


def _significant(diff: Figure | None) -> bool | None:
    if diff is None or diff.low is None or diff.high is None:
        return None
    return diff.low > 0 or diff.high < 0


Share = Callable[[Sequence[CallFacts]], tuple[int, int]]


def _containment(calls: Sequence[CallFacts]) -> tuple[int, int]:
    return sum(1 for c in calls if c.disposition in ("self_served", "resolved")), len(calls)


def _abandoned(calls: Sequence[CallFacts]) -> tuple[int, int]:
    return sum(1 for c in calls if c.disposition == "abandoned"), len(calls)


def _csat(calls: Sequence[CallFacts]) -> tuple[int, int]:
    answers = [a.value for c in calls for a in c.surveys if a.scale == "csat"]
    return sum(1 for v in answers if v >= 4), len(answers)


SHARES: tuple[tuple[str, Share], ...] = (
    ("containment", _containment),  # (self-served + resolved) / ended calls
    ("ivr_abandon_rate", _abandoned),  # hung up in the IVR / ended calls
    ("csat", _csat),  # answers 4-5 / CSAT answers
)


def _time_to_queue(calls: Sequence[CallFacts]) -> list[float]:
    return [(c.queued_at - c.started_at).total_seconds() for c in calls if c.queued_at is not None]


def compare(calls: Sequence[CallFacts], confidence: float = CONFIDENCE) -> list[Experiment]:
    """Every experiment the ended ``calls`` took part in, its variants against the control."""
    by_exp: dict[str, dict[str, list[CallFacts]]] = {}
    for c in calls:
        if c.ended_at is None:
            continue
        for tag in c.variants:
            exp, _, variant = tag.partition("=")
            by_exp.setdefault(exp, {}).setdefault(variant, []).append(c)
    out = []
    for exp in sorted(by_exp):
        groups = by_exp[exp]
        names = sorted(groups)
        control = names[0]
        rows: list[Row] = []
        for metric, share in SHARES:
            base = share(groups[control])
            for v in names:
                k, n = share(groups[v])
                diff = None if v == control else _share_diff(base, (k, n), confidence)
                rows.append(Row(metric, "share", v, wilson(k, n, confidence), diff,
                                None if v == control else _significant(diff)))
        base_t = _time_to_queue(groups[control])
        for v in names:
            xs = _time_to_queue(groups[v])
            diff = None if v == control else _mean_diff(base_t, xs, confidence)
            rows.append(Row("time_to_queue", "s", v, mean_interval(xs, confidence), diff,
                            None if v == control else _significant(diff)))
        out.append(Experiment(exp, control, {v: len(groups[v]) for v in names}, tuple(rows), confidence))
    return out


def render(experiments: Sequence[Experiment]) -> list[str]:
    """Lines for ``ivr kpi --by variant``: per experiment, each metric by variant with its interval and the
    difference from the control."""
    lines: list[str] = []
    for e in experiments:
        calls = ", ".join(f"{v} {n}" for v, n in e.calls.items())
        lines += ["", f"experiment {e.name}: control {e.control}; ended calls {calls}; "
                      f"{e.confidence:.0%} intervals"]
        for r in e.rows:
            lines.append((f"  {r.metric:<18} {r.variant:<10} {_fmt(r.figure, r.unit):<28} n={r.figure.n:<6}"
                          + ("" if r.variant == e.control else _fmt_diff(r))).rstrip())
    return lines


def _num(x: float, unit: str) -> str:
    return f"{x * 100:.1f}%" if unit == "share" else f"{x:.1f} s"


def _fmt(f: Figure, unit: str) -> str:
    if f.value is None:
        return "-"
    if f.low is None or f.high is None:
        return _num(f.value, unit)
    return f"{_num(f.value, unit)} [{_num(f.low, unit)}, {_num(f.high, unit)}]"


def _fmt_diff(r: Row) -> str:
    d = r.diff
    if d is None or d.value is None or d.low is None or d.high is None:
        return " vs control: too few to compare"
    sign = "+" if d.value >= 0 else ""
    if r.unit == "share":
        text = f"{sign}{d.value * 100:.1f} points [{d.low * 100:.1f}, {d.high * 100:.1f}]"
    else:
        text = f"{sign}{d.value:.1f} s [{d.low:.1f}, {d.high:.1f}]"
    return f" vs control: {text}" + (" significant" if r.significant else " not significant")
