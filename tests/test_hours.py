"""Business hours as a pure function of the instant: weekly ranges, midnight, DST, holidays, overrides."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from ivr.flows.hours import HoursState, Schedule, decide, parse_days, parse_range

NY = ZoneInfo("America/New_York")


def schedule(**kw: object) -> Schedule:
    weekly = {d: (parse_range("09:00-17:00"),) for d in parse_days("mon-fri")}
    weekly[parse_days("fri")[0]] += (parse_range("22:00-02:00"),)
    return Schedule("s", NY, weekly, **kw)  # type: ignore[arg-type]


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def test_weekly_range_edges() -> None:
    s = schedule()
    assert decide(s, local("2026-12-01T08:59")).state is HoursState.CLOSED
    assert decide(s, local("2026-12-01T09:00")).state is HoursState.OPEN
    assert decide(s, local("2026-12-01T16:59")).state is HoursState.OPEN
    assert decide(s, local("2026-12-01T17:00")).state is HoursState.CLOSED


def test_range_past_midnight_belongs_to_the_day_it_starts() -> None:
    s = schedule()
    assert decide(s, local("2026-12-04T23:30")).reason == "weekly fri 22:00-02:00"
    assert decide(s, local("2026-12-05T01:59")).state is HoursState.OPEN  # Saturday 01:59
    assert decide(s, local("2026-12-05T02:00")).state is HoursState.CLOSED
    assert decide(s, local("2026-12-06T01:00")).state is HoursState.CLOSED  # no Saturday night range


def test_wall_clock_hours_survive_daylight_saving() -> None:
    s = schedule()
    # 09:30 New York is 14:30 UTC in winter and 13:30 UTC in summer: both open.
    assert decide(s, datetime(2026, 12, 1, 14, 30, tzinfo=UTC)).state is HoursState.OPEN
    assert decide(s, datetime(2026, 7, 1, 13, 30, tzinfo=UTC)).state is HoursState.OPEN
    assert decide(s, datetime(2026, 7, 1, 12, 30, tzinfo=UTC)).state is HoursState.CLOSED
    # The Monday after the spring change (2026-03-08) opens at 09:00 local = 13:00 UTC.
    assert decide(s, datetime(2026, 3, 9, 13, 0, tzinfo=UTC)).state is HoursState.OPEN
    assert decide(s, datetime(2026, 3, 9, 12, 59, tzinfo=UTC)).state is HoursState.CLOSED


def test_holiday_override_and_emergency_precedence() -> None:
    s = schedule(holidays={date(2026, 12, 25): "Christmas"},
                 overrides={date(2026, 12, 24): (parse_range("09:00-12:00"),), date(2026, 12, 26): ()})
    assert decide(s, local("2026-12-25T10:00")).state is HoursState.HOLIDAY
    assert decide(s, local("2026-12-25T10:00")).reason == "holiday Christmas"
    assert decide(s, local("2026-12-24T11:00")).reason == "override 2026-12-24 09:00-12:00"
    assert decide(s, local("2026-12-24T13:00")).state is HoursState.CLOSED
    assert decide(s, local("2026-12-01T10:00"), emergency_closed=True).reason == "emergency switch"


def test_day_specs() -> None:
    assert parse_days("mon-fri") == [0, 1, 2, 3, 4]
    assert parse_days("fri-mon") == [4, 5, 6, 0]
    assert parse_days("sat, sun") == [5, 6]
    assert parse_range("00:00-24:00").end_minutes == 1440
