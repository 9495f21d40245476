"""Callback policy: number rules (libphonenumber), windows in the callee's zones across DST, offers, retries."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from ivr.callbacks.ewt import EwtEstimate
from ivr.callbacks.policy import (
    CallingWindow,
    CapRules,
    NumberRules,
    OfferRules,
    RetryRules,
    check_caps,
    check_number,
    decide_offer,
    next_attempt,
    next_open,
    readback_groups,
    readback_text,
    window_open,
)

US = NumberRules(region="US")


@pytest.mark.parametrize(("raw", "reason"), [
    ("911", "emergency"), ("112", "emergency"), ("611", "short-code"), ("12", "invalid"),
    ("1-900-555-1234", "premium-rate"), ("+44 20 7946 0018", "international"), ("abc", "invalid"),
])
def test_refused_numbers(raw: str, reason: str) -> None:
    r = check_number(raw, US, "America/New_York")
    assert not r.ok and r.reason == reason


def test_normalised_to_e164_with_zone() -> None:
    for raw in ("(415) 555-2671", "1 415 555 2671", "+14155552671", "415.555.2671"):
        r = check_number(raw, US, "America/New_York")
        assert r.ok and r.e164 == "+14155552671" and r.zones == ("America/Los_Angeles",)


def test_international_allowed_lists_and_patterns() -> None:
    assert check_number("+44 20 7946 0018", NumberRules(region="US", allowed_countries=frozenset({44})), "UTC").ok
    gb = check_number("+44 20 7946 0018", NumberRules(region="US", allow_international=True), "UTC")
    assert gb.ok and gb.zones == ("Europe/London",)
    deny = NumberRules(region="US", deny_patterns=(r"^\+1415555",))
    assert check_number("4155552671", deny, "UTC").reason == "denied"
    allow = NumberRules(region="US", allow_patterns=(r"^\+1212",))
    assert check_number("4155552671", allow, "UTC").reason == "not-allowed"
    assert check_number("2125550123", allow, "UTC").ok


def test_unknown_zone_falls_back_to_site() -> None:
    r = check_number("+1 800 555 0123", NumberRules(region="US"), "America/Chicago")
    assert r.ok and len(r.zones) > 1  # toll-free: every North American zone (overlap rules apply)


def test_readback_groups() -> None:
    assert readback_text("+14155552671", "US") == "4 1 5, 5 5 5, 2 6 7 1"
    assert readback_groups("+442079460018", "GB") == ["020", "7946", "0018"]
    assert readback_groups("+442079460018", "US") == ["44", "20", "7946", "0018"]


def test_caps() -> None:
    rules = CapRules(per_number_per_day=2, per_site_per_hour=10)
    assert check_caps(0, 0, rules) is None
    assert check_caps(2, 0, rules) == "number-cap"
    assert check_caps(0, 10, rules) == "site-cap"


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


def test_window_in_callee_zone_survives_dst() -> None:
    ny = ("America/New_York",)
    # 2026-03-08: US clocks go forward. 08:00 EST = 13:00Z the day before, 08:00 EDT = 12:00Z that day.
    assert not window_open(utc(2026, 3, 7, 12, 30), ny)
    assert window_open(utc(2026, 3, 7, 13, 0), ny)
    assert window_open(utc(2026, 3, 8, 12, 0), ny)
    assert not window_open(utc(2026, 3, 8, 11, 59), ny)
    # closes at 21:00 local: 01:00Z (EDT) the next day
    assert window_open(utc(2026, 3, 9, 0, 59), ny) and not window_open(utc(2026, 3, 9, 1, 0), ny)
    # autumn: 2026-11-01 back to EST, 08:00 local = 13:00Z
    assert next_open(utc(2026, 11, 1, 5, 0), ny) == utc(2026, 11, 1, 13, 0)


def test_multi_zone_number_uses_the_overlap() -> None:
    zones = ("America/New_York", "America/Los_Angeles")
    # open 08:00 LA (15:00Z in summer) to 21:00 NY (01:00Z)
    assert not window_open(utc(2026, 7, 1, 14, 0), zones)
    assert window_open(utc(2026, 7, 1, 15, 0), zones)
    assert not window_open(utc(2026, 7, 2, 1, 0), zones)


def test_site_hours_also_apply() -> None:
    site = CallingWindow(time(9, 0), time(17, 0), zone="Europe/London", weekdays=frozenset(range(5)))
    zones = ("America/New_York",)
    windows = (CallingWindow(), site)
    # Wednesday 2026-07-01: NY 08:00 = 12:00Z; London 17:00 BST = 16:00Z
    assert window_open(utc(2026, 7, 1, 12, 0), zones, windows)
    assert not window_open(utc(2026, 7, 1, 16, 0), zones, windows)
    # Saturday: site closed; next opening is Monday 12:00Z
    assert next_open(utc(2026, 7, 4, 12, 0), zones, windows) == utc(2026, 7, 6, 12, 0)


def test_a_window_open_around_the_clock_does_not_close_at_midnight() -> None:
    """00:00–00:00 every day: a callback due a few minutes before midnight is offered (it was refused as
    "closes-before-dial" until 00:10 local, since each day's stretch ended at midnight), and so is one asked
    for from the PBX queue (the CI run at 23:45 New York time that found it)."""
    zones = ("America/New_York",)
    always = (CallingWindow(time(0, 0), time(0, 0)),)
    rules = OfferRules(threshold=300, dial_margin=600)
    before_midnight = utc(2026, 12, 4, 4, 45)  # 23:45 EST: dial at ~23:57, the margin runs past 00:00
    decision = decide_offer(est(600), before_midnight, zones, rules, always)
    assert decision.offer and decision.reason == "ok"
    assert window_open(before_midnight, zones, always)
    # a window that does end at midnight still closes there
    evening = (CallingWindow(time(8, 0), time(0, 0)),)
    assert decide_offer(est(600), before_midnight, zones, rules, evening).reason == "closes-before-dial"


def est(seconds: float) -> EwtEstimate:
    return EwtEstimate(seconds=seconds, low=seconds * 0.8, high=seconds * 1.2, method="hol-rate", basis=20)


def test_offer_decision() -> None:
    zones = ("America/New_York",)
    rules = OfferRules(threshold=300, dial_margin=600)
    noon = utc(2026, 7, 1, 16, 0)  # 12:00 New York
    assert decide_offer(est(600), noon, zones, rules).offer
    assert decide_offer(est(200), noon, zones, rules).reason == "below-threshold"
    assert decide_offer(EwtEstimate.unknown("thin-traffic"), noon, zones, rules).reason == "ewt-unknown"
    late = utc(2026, 7, 2, 0, 40)  # 20:40 New York: dial at ~20:52, window closes 21:00
    assert decide_offer(est(600), late, zones, rules).reason == "closes-before-dial"
    night = utc(2026, 7, 2, 4, 0)
    assert decide_offer(est(600), night, zones, rules).reason == "window-closed"


def test_next_attempt_rules() -> None:
    zones = ("America/New_York",)
    rules = RetryRules(intervals=(300, 900), max_attempts=3, expiry=4 * 3600)
    arrival = utc(2026, 7, 1, 16, 0)
    now = arrival + timedelta(minutes=20)
    d1 = next_attempt("no-answer", 1, arrival, now, zones, rules)
    assert d1.state == "retry" and d1.at == now + timedelta(seconds=300)
    d2 = next_attempt("busy", 2, arrival, now, zones, rules)
    assert d2.at == now + timedelta(seconds=900)
    assert next_attempt("busy", 3, arrival, now, zones, rules).state == "expired"
    assert next_attempt("invalid", 1, arrival, now, zones, rules).state == "expired"
    # the window closes at 21:00 local; the retry would land tomorrow, past the expiry
    eve = utc(2026, 7, 2, 0, 58)
    assert next_attempt("failed", 1, eve - timedelta(hours=1), eve, zones, rules).reason == "expiry"
    # with a long expiry it moves to the next morning's opening
    long = RetryRules(intervals=(300,), max_attempts=5, expiry=86400)
    d = next_attempt("failed", 1, eve - timedelta(hours=1), eve, zones, long)
    assert d.state == "retry" and d.at == utc(2026, 7, 2, 12, 0)
