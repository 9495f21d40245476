"""Business hours: is a schedule open at a given instant? Pure; the instant is passed in.

Weekly ranges are local wall-clock times in the schedule's IANA zone, so daylight-saving changes need no
edits. A range whose end is not after its start (``22:00-02:00``) runs past midnight into the next day.
Precedence, most specific first: the emergency switch, a date override, a holiday, the weekly ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class HoursState(Enum):
    OPEN = "open"
    CLOSED = "closed"
    HOLIDAY = "holiday"


@dataclass(frozen=True)
class TimeRange:
    start: time
    end_minutes: int  # minutes after the start day's midnight; may exceed 1440 (past midnight)

    @property
    def start_minutes(self) -> int:
        return self.start.hour * 60 + self.start.minute


@dataclass(frozen=True)
class Schedule:
    name: str
    timezone: ZoneInfo
    weekly: dict[int, tuple[TimeRange, ...]]  # weekday 0=Mon → ranges starting that day
    holidays: dict[date, str] = field(default_factory=dict)
    overrides: dict[date, tuple[TimeRange, ...]] = field(default_factory=dict)  # () = closed all day


@dataclass(frozen=True)
class HoursDecision:
    state: HoursState
    reason: str  # e.g. "weekly mon 08:00-18:00", "holiday Christmas", "override 2026-12-24", "emergency switch"


def parse_range(text: str) -> TimeRange:
    """``HH:MM-HH:MM`` → TimeRange; an end at or before the start means the next day."""
    a, b = text.split("-")
    sh, sm = (int(x) for x in a.split(":"))
    eh, em = (int(x) for x in b.split(":"))
    start_min, end_min = sh * 60 + sm, eh * 60 + em
    if end_min <= start_min:
        end_min += 24 * 60
    return TimeRange(time(sh, sm), end_min)


_RANGE_TEXT = re.compile(r"(\d{1,2}):(\d{1,2})-(\d{1,2}):(\d{1,2})")


def range_problem(value: object) -> str | None:
    """What is wrong with a time range that failed the schema's pattern, in the admin's terms."""
    text = str(value)
    m = _RANGE_TEXT.fullmatch(text.strip())
    if not m:
        return f"'{text}' is not a time range: write HH:MM-HH:MM, e.g. 09:00-17:00"
    sh, sm, eh, em = (int(g) for g in m.groups())
    for hour, minute, end in ((sh, sm, False), (eh, em, True)):
        if hour > 24 or (hour == 24 and not end):
            return f"'{text}' is not a time range: hour {hour} is not an hour (00-23; 24:00 only as an end)"
        if minute > 59:
            return f"'{text}' is not a time range: minute {minute} is not a minute (00-59)"
        if hour == 24 and minute:
            return f"'{text}' is not a time range: 24:{minute:02d} is past the end of the day (24:00 is the latest end)"
    return f"'{text}' is not a time range: write hours and minutes with two digits each, e.g. 09:00-17:00"


def date_problem(value: object) -> str | None:
    return f"'{value}' is not a date: write YYYY-MM-DD, e.g. 2026-12-25"


def parse_days(spec: str) -> list[int]:
    """``mon-fri``, ``sat,sun``, ``fri-mon`` (wraps) → weekday numbers; raises ValueError on a bad name."""
    days: list[int] = []
    for part in str(spec).lower().replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            i, j = DAYS.index(a), DAYS.index(b)
            k = i
            while True:
                days.append(k)
                if k == j:
                    break
                k = (k + 1) % 7
        else:
            days.append(DAYS.index(part))
    return days


def _ranges_for(schedule: Schedule, day: date) -> tuple[TimeRange, ...]:
    if day in schedule.overrides:
        return schedule.overrides[day]
    if day in schedule.holidays:
        return ()
    return schedule.weekly.get(day.weekday(), ())


def decide(schedule: Schedule, now: datetime, *, emergency_closed: bool = False) -> HoursDecision:
    """Open, closed or holiday at ``now`` (an aware datetime)."""
    if emergency_closed:
        return HoursDecision(HoursState.CLOSED, "emergency switch")
    local = now.astimezone(schedule.timezone)
    today = local.date()
    minute = local.hour * 60 + local.minute
    # A range that started yesterday and runs past midnight still counts today.
    for day, offset in ((today, 0), (today - timedelta(days=1), 24 * 60)):
        for r in _ranges_for(schedule, day):
            if r.start_minutes <= minute + offset < r.end_minutes:
                end = r.end_minutes % (24 * 60)
                label = f"{r.start:%H:%M}-{end // 60:02d}:{end % 60:02d}"
                if end == 0 and r.end_minutes == 24 * 60:
                    label = f"{r.start:%H:%M}-24:00"
                if day in schedule.overrides:
                    return HoursDecision(HoursState.OPEN, f"override {day.isoformat()} {label}")
                return HoursDecision(HoursState.OPEN, f"weekly {DAYS[day.weekday()]} {label}")
    if today in schedule.overrides:
        return HoursDecision(HoursState.CLOSED, f"override {today.isoformat()}")
    if today in schedule.holidays:
        return HoursDecision(HoursState.HOLIDAY, f"holiday {schedule.holidays[today]}")
    return HoursDecision(HoursState.CLOSED, "outside weekly hours")


def open_intervals(schedule: Schedule, start: datetime, days: int) -> list[tuple[datetime, datetime]]:
    """UTC intervals in which ``schedule`` is open, from ``start`` through ``days`` more local days, by the
    same precedence as :func:`decide` (override, holiday, weekly; a range that runs past midnight belongs
    to the day it starts). Sorted and merged, so a callback offer can intersect it with calling windows."""
    tz = schedule.timezone
    first = start.astimezone(tz).date() - timedelta(days=1)
    spans: list[tuple[datetime, datetime]] = []
    for i in range(days + 2):
        day = first + timedelta(days=i)
        for r in _ranges_for(schedule, day):
            end_day = day + timedelta(days=r.end_minutes // (24 * 60))
            end_min = r.end_minutes % (24 * 60)
            a = datetime.combine(day, r.start, tzinfo=tz).astimezone(UTC)
            b = datetime.combine(end_day, time(end_min // 60, end_min % 60), tzinfo=tz).astimezone(UTC)
            if b > a:
                spans.append((a, b))
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return [(a, b) for a, b in merged if b > start]
