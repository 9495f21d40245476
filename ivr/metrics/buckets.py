"""A cumulative histogram cheap enough for the 5 ms media tick: fixed upper bounds, no lock, no labels.

prometheus_client's Histogram takes a lock per observation and lives in a registry; these are plain
attributes of the object that measures (one per media engine, event log, speech service), observed and read
on the daemon's one event-loop thread, and turned into a Prometheus histogram only when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable


class Buckets:
    """Counts of observations ``<= bound`` for each upper bound (and above the last), their sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), the last bound +inf: Prometheus' ``le`` buckets."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


LATENESS_BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08)
"""Media tick lateness, seconds: a phase tick is 5 ms apart, a frame 20 ms; past 60 ms ticks are skipped."""
COMMIT_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Event-log group commit (BEGIN to COMMIT with fsync), seconds."""
LOOP_LAG_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Event-loop lag, seconds: past 20 ms every call's RTP is late."""
RECOGNITION_BOUNDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""End of speech (the turn's ``end()``) to the recogniser's final result, seconds."""
