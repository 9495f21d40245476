"""Hours and days of the site's zone as UTC intervals, DST-correct (zoneinfo).

A bucket is a half-open UTC interval ``[start, end)`` with a key in the site's zone. An hour key carries
its offset, so the hour repeated when clocks go back is two buckets (``2026-11-01T01:00-04:00`` and
``2026-11-01T01:00-05:00``) and the hour skipped when they go forward is none; a day is midnight to
midnight of the site's calendar, 23 or 25 hours long on a change day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Bucket:
    key: str
    start: datetime  # UTC
    end: datetime  # UTC, exclusive

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def holds(self, t: datetime) -> bool:
        return self.start <= t < self.end


def as_zone(zone: str | tzinfo) -> tzinfo:
    return ZoneInfo(zone) if isinstance(zone, str) else zone


def hour_of(t: datetime, zone: str | tzinfo) -> Bucket:
    """The site's clock hour that holds instant ``t``."""
    tz = as_zone(zone)
    local = t.astimezone(tz)
    # back in real time to where the local clock showed the full hour: one real hour from there, so the
    # keys of a repeated hour differ by their offset (in a zone whose offset moves by half an hour, Lord
    # Howe, the hour after the change is keyed by the minute it starts at)
    start = t.astimezone(UTC) - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    return Bucket(start.astimezone(tz).isoformat(timespec="minutes"), start, start + timedelta(hours=1))


def midnight(d: date, zone: str | tzinfo) -> datetime:
    """The first instant of local date ``d`` in UTC."""
    return datetime.combine(d, time(0), as_zone(zone)).astimezone(UTC)


def day_of(t: datetime, zone: str | tzinfo) -> Bucket:
    """The site's calendar day that holds instant ``t`` (its real length: 23, 24 or 25 hours)."""
    d = t.astimezone(as_zone(zone)).date()
    return Bucket(d.isoformat(), midnight(d, zone), midnight(d + timedelta(days=1), zone))


def hours(since: datetime, until: datetime, zone: str | tzinfo) -> Iterator[Bucket]:
    """Every local hour that overlaps ``[since, until)``, in order (also the hours with no calls)."""
    t = since
    while t < until:
        b = hour_of(t, zone)
        yield b
        t = b.end


def days(since: datetime, until: datetime, zone: str | tzinfo) -> Iterator[Bucket]:
    """Every local day that overlaps ``[since, until)``, in order."""
    t = since
    while t < until:
        b = day_of(t, zone)
        yield b
        t = b.end


def overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> float:
    """Seconds that ``[a0, a1)`` and ``[b0, b1)`` share."""
    return max(0.0, (min(a1, b1) - max(a0, b0)).total_seconds())
