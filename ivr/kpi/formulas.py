"""The KPI arithmetic: small pure functions over counts and durations.

This is the one definition of each formula. The box feeds it counts taken from its event log
(``ivr.kpi.measures``); the central store (a later issue) can feed it the same counts from SQL
(``count(*) FILTER (WHERE ...)``, ``sum(wait)``) and get the same figures. Nothing here knows about events.

Every result is a ``Measure``: the value (``None`` when there is nothing to measure, never a division by
zero) and ``n``, the sample size the value is taken over (the denominator of a ratio, the count of a mean).
Ratios are fractions (0.8, not 80 %); NPS is in points (-100 … 100).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    value: float | None
    n: int


def ratio(part: float, whole: int) -> Measure:
    """part / whole; None over an empty sample."""
    return Measure(part / whole if whole > 0 else None, max(whole, 0))


def mean(total: float, n: int) -> Measure:
    """total / n (a mean from a SQL ``sum`` and ``count``); None when n = 0."""
    return Measure(total / n if n > 0 else None, max(n, 0))


def mean_of(values: Iterable[float]) -> Measure:
    xs = list(values)
    return mean(sum(xs), len(xs))


def maximum(values: Iterable[float]) -> Measure:
    xs = list(values)
    return Measure(max(xs) if xs else None, len(xs))


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (a value that occurred, no interpolation between two callers' waits)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# -- service level -------------------------------------------------------------------------------------------

#: answered within T / (answered + abandoned after T): short abandons (< T) count nowhere. The default.
SL_ANSWERED_ABANDONED = "answered+abandoned-after"
#: answered within T / offered (every queue entry, abandons and exits included): the strictest.
SL_OFFERED = "offered"
#: answered within T / answered: ignores abandons altogether (flatters a queue that loses callers).
SL_ANSWERED = "answered"
#: answered within T / (offered - short abandons): offered, with abandons under the short-abandon threshold
#: taken out (Amazon Connect / Genesys style).
SL_OFFERED_NO_SHORT = "offered-short-abandons-excluded"
SL_VARIANTS = {
    SL_ANSWERED_ABANDONED: "answered <= {t} s / (answered + abandoned > {t} s)",
    SL_OFFERED: "answered <= {t} s / offered",
    SL_ANSWERED: "answered <= {t} s / answered",
    SL_OFFERED_NO_SHORT: "answered <= {t} s / (offered - abandoned < {s} s)",
}


def service_level(answered_within: int, answered: int, abandoned_after: int, variant: str = SL_ANSWERED_ABANDONED,
                  *, offered: int | None = None, short_abandoned: int | None = None) -> Measure:
    """Service level = answered within T over a denominator named by ``variant`` (``SL_VARIANTS``).
    ``abandoned_after`` counts abandons that waited longer than T; ``offered`` and ``short_abandoned`` are
    needed by the offered variants only."""
    if variant not in SL_VARIANTS:
        raise ValueError(f"unknown service level variant {variant!r}; known: {', '.join(SL_VARIANTS)}")
    if variant == SL_ANSWERED_ABANDONED:
        return ratio(answered_within, answered + abandoned_after)
    if variant == SL_ANSWERED:
        return ratio(answered_within, answered)
    if offered is None:
        raise ValueError(f"service level variant {variant!r} needs offered")
    if variant == SL_OFFERED:
        return ratio(answered_within, offered)
    return ratio(answered_within, offered - (short_abandoned or 0))


# -- abandonment ---------------------------------------------------------------------------------------------

#: (abandoned - short abandons) / (offered - short abandons): a caller who hung up within a few seconds
#: (a wrong number, a misdial) is not a caller the queue lost. The default.
ABANDON_NO_SHORT = "short-abandons-excluded"
#: abandoned / offered, every abandon counted.
ABANDON_ALL = "all"
ABANDON_VARIANTS = {
    ABANDON_NO_SHORT: "(abandoned - abandoned < {s} s) / (offered - abandoned < {s} s)",
    ABANDON_ALL: "abandoned / offered",
}


def abandonment_rate(abandoned: int, offered: int, short_abandoned: int = 0,
                     variant: str = ABANDON_NO_SHORT) -> Measure:
    """Abandonment rate by ``variant`` (``ABANDON_VARIANTS``); ``short_abandoned`` is part of ``abandoned``."""
    if variant == ABANDON_ALL:
        return ratio(abandoned, offered)
    if variant == ABANDON_NO_SHORT:
        return ratio(abandoned - short_abandoned, offered - short_abandoned)
    raise ValueError(f"unknown abandonment variant {variant!r}; known: {', '.join(ABANDON_VARIANTS)}")


# -- handle time ---------------------------------------------------------------------------------------------

def handle_time(talk_total: float, n: int, hold_total: float | None = None,
                wrap_total: float | None = None) -> tuple[str, Measure]:
    """AHT = (talk + hold + wrap-up) / n. Without wrap-up data it is not AHT but "average talk time"
    ((talk + hold) / n), and the name returned says which: ``aht`` or ``average_talk_time``."""
    total = talk_total + (hold_total or 0.0)
    if wrap_total is None:
        return "average_talk_time", mean(total, n)
    return "aht", mean(total + wrap_total, n)


# -- surveys -------------------------------------------------------------------------------------------------

def csat(satisfied: int, answers: int) -> Measure:
    """CSAT = answers of 4 or 5 (on 1-5) / answers."""
    return ratio(satisfied, answers)


def nps(promoters: int, detractors: int, answers: int) -> Measure:
    """NPS = 100 * (promoters (9-10) - detractors (0-6)) / answers, in points from -100 to 100."""
    return Measure(100.0 * (promoters - detractors) / answers if answers > 0 else None, max(answers, 0))


# -- traffic -------------------------------------------------------------------------------------------------

def erlangs(busy_seconds: float, period_seconds: float, n: int) -> Measure:
    """Carried traffic A = busy time / period length (both in seconds; a 23- or 25-hour day is its real
    length). ``n``: the calls that made up the busy time."""
    return Measure(busy_seconds / period_seconds if period_seconds > 0 else None, max(n, 0))


def per_hour(count: int, period_seconds: float) -> Measure:
    """A count per hour of the period (its real length)."""
    return Measure(count * 3600.0 / period_seconds if period_seconds > 0 else None, max(count, 0))


# -- estimated wait ------------------------------------------------------------------------------------------

def ewt_error(abs_error_total: float, error_total: float, n: int) -> tuple[Measure, Measure]:
    """EWT error over n callers, error = actual wait - middle of the quoted range: MAE = mean |error|,
    bias = mean error (> 0: the quotes were too short)."""
    return mean(abs_error_total, n), mean(error_total, n)
