"""Calls per hour, peak concurrent calls, busy hour and Erlangs by the site's hours and days: a call over
midnight, the 23-hour and 25-hour days of America/New_York (2026-03-08, 2026-11-01), and no calls at all."""

from __future__ import annotations

from datetime import timedelta

from ivr.kpi.report import build
from tests.kpi.log import Log, t

NY = "America/New_York"
MIN = timedelta(minutes=1)


def spring_log() -> Log:
    log = Log()
    # m1 over midnight: 2026-03-07 23:50 EST (04:50Z) to 03-08 00:20 EST (05:20Z), 30 min
    log.call("m1", t("2026-03-08T04:50"), 30 * 60, "hangup")
    # m2 over the change: 01:30 EST (06:30Z) to 03:30 EDT (07:30Z): 60 real minutes
    log.call("m2", t("2026-03-08T06:30"), 60 * 60, "hangup")
    # m3, m4 overlap in the 10:00 EDT hour (14:00Z): 14:00-14:30Z and 14:10-14:55Z
    log.call("m3", t("2026-03-08T14:00"), 30 * 60, "hangup")
    log.call("m4", t("2026-03-08T14:10"), 45 * 60, "hangup")
    return log


def test_spring_forward_day_has_23_hours_and_midnight_splits_a_call() -> None:
    # 2026-03-07 00:00 EST = 05:00Z to 2026-03-09 00:00 EDT = 04:00Z
    r = build(spring_log().events, zone=NY, since=t("2026-03-07T05:00"), until=t("2026-03-09T04:00"),
              now=t("2026-03-10T00:00"), by="day")
    assert [g.key for g in r.groups] == ["2026-03-07", "2026-03-08"]
    d7, d8 = r.groups
    # 03-07: m1 started there; 10 of its minutes (04:50-05:00Z) fall in it: 600 / 86400 s
    assert (d7.get("ivr_calls").value, d7.get("erlangs").value, d7.get("erlangs").n) == (1, 600 / 86400, 1)
    # 03-08 is 23 h = 82800 s: m2, m3, m4 started there (3 / 23 calls per hour), and its traffic is m1's last
    # 20 min + 60 + 30 + 45 min = 1200 + 3600 + 1800 + 2700 = 9300 s
    assert d8.get("ivr_calls").value == 3
    assert d8.get("calls_per_hour").value == 3 / 23
    assert (d8.get("erlangs").value, d8.get("erlangs").n) == (9300 / 82800, 4)
    # peak: m3 and m4 together from 10:10 EDT
    peak = d8.get("peak_concurrent_calls")
    assert (peak.value, peak.detail["at"]) == (2, "2026-03-08T10:10:00-04:00")
    # busy hour: 10:00 EDT carries 30 + 45 = 75 min = 1.25 E
    bh = d8.get("busy_hour_erlangs")
    assert (bh.value, bh.detail["hour"], bh.detail["calls"]) == (1.25, "2026-03-08T10:00-04:00", 2)
    # the whole period: 4 calls over 47 h
    assert r.get("calls_per_hour").value == 4 / 47 and r.get("busy_hour_erlangs").detail["hour"] == bh.detail["hour"]


def test_spring_forward_hours_skip_two_oclock() -> None:
    r = build(spring_log().events, zone=NY, since=t("2026-03-08T05:00"), until=t("2026-03-09T04:00"),
              now=t("2026-03-10T00:00"), by="hour")
    keys = [g.key for g in r.groups]
    assert len(keys) == 23 and keys[:4] == ["2026-03-08T00:00-05:00", "2026-03-08T01:00-05:00",
                                             "2026-03-08T03:00-04:00", "2026-03-08T04:00-04:00"]
    # m2 runs 30 min in 01:00 EST and 30 min in 03:00 EDT: 0.5 E each, started in the first
    h1, h3 = r.group("2026-03-08T01:00-05:00"), r.group("2026-03-08T03:00-04:00")
    assert (h1.get("erlangs").value, h1.get("ivr_calls").value) == (0.5, 1)
    assert (h3.get("erlangs").value, h3.get("ivr_calls").value) == (0.5, 0)
    # an hour with no calls: zero traffic, nothing to average
    h5 = r.group("2026-03-08T05:00-04:00")
    assert h5.get("erlangs").value == 0.0 and h5.get("erlangs").n == 0 and h5.get("asa").value is None


def test_fall_back_day_has_25_hours_and_two_one_oclocks() -> None:
    log = Log()
    # n1 at 01:30 EDT (05:30Z) for 20 min; n2 at 01:10 EST (06:10Z) for 40 min: both within their 01:00
    log.call("n1", t("2026-11-01T05:30"), 20 * 60, "hangup")
    log.call("n2", t("2026-11-01T06:10"), 40 * 60, "hangup")
    since, until, now = t("2026-11-01T04:00"), t("2026-11-02T05:00"), t("2026-11-03T00:00")
    day = build(log.events, zone=NY, since=since, until=until, now=now, by="day")
    (d,) = day.groups
    # 25 h = 90000 s; 1200 + 2400 s of calls -> 0.04 E; 2 calls / 25 h = 0.08 per hour
    assert (d.key, d.get("erlangs").value, d.get("calls_per_hour").value) == ("2026-11-01", 0.04, 0.08)
    hours = build(log.events, zone=NY, since=since, until=until, now=now, by="hour")
    assert len(hours.groups) == 25
    first, second = hours.group("2026-11-01T01:00-04:00"), hours.group("2026-11-01T01:00-05:00")
    assert (first.get("ivr_calls").value, first.get("erlangs").value) == (1, 1200 / 3600)
    assert (second.get("ivr_calls").value, second.get("erlangs").value) == (1, 2400 / 3600)
    # the busy hour is the second 01:00 (40 min), told apart by its offset
    assert hours.get("busy_hour_erlangs").detail["hour"] == "2026-11-01T01:00-05:00"


def test_back_to_back_calls_do_not_overlap_and_a_running_call_runs_until_now() -> None:
    log = Log()
    log.call("p1", t("2026-12-01T15:00"), 600, "hangup")
    log.call("p2", t("2026-12-01T15:10"), 600, "hangup")  # starts the instant p1 ends
    log.call("p3", t("2026-12-01T15:30"), None, None)  # still on the line at now = 15:45
    r = build(log.events, zone=NY, since=t("2026-12-01T15:00"), until=t("2026-12-01T16:00"), now=t("2026-12-01T15:45"))
    assert r.get("peak_concurrent_calls").value == 1
    # up to now (45 min): 600 + 600 + 900 s of calls / 2700 s
    assert r.get("erlangs").value == 2100 / 2700 and r.get("calls_per_hour").value == 4.0


def test_no_calls_at_all() -> None:
    r = build([], zone=NY, since=t("2026-12-01T05:00"), until=t("2026-12-02T05:00"), now=t("2026-12-03T00:00"))
    for k in r.totals:
        assert k.n == 0, k
        assert k.value is None or k.value == 0, k
    assert r.get("busy_hour_erlangs").detail["hour"] is None
    assert r.to_json()["totals"]["asa"] == {"value": None, "n": 0, "unit": "s", "provisional": False, "detail": {},
                                            "variant": "hold time to CONNECT / answered"}
    assert build([], zone=NY, since=t("2026-12-01T05:00"), now=t("2026-12-02T05:00"), by="day").groups[0].key \
        == "2026-12-01"
