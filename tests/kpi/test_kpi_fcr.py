"""First-call resolution by repeat caller: numbers normalised to E.164 in the site's region, anonymous callers
left out, repeats after the period's end seen, and a window still open at "now" marked provisional."""

from __future__ import annotations

from datetime import timedelta

from ivr.kpi import measures as m
from ivr.kpi.facts import facts_from_events
from ivr.kpi.report import build
from tests.kpi.log import Log, t

D0 = t("2026-06-01T04:00")  # midnight in New York (EDT)
H = timedelta(hours=1)
DAY = timedelta(days=1)


def fcr_log() -> Log:
    log = Log()
    # a: called again 23 h later, the second time in national format: a repeat within 24 h
    log.call("a1", D0 + 10 * H, 60, "hangup", caller="+12125550101")
    log.call("a2", D0 + 33 * H, 60, "hangup", caller="(212) 555-0101")
    # b: again 25 h later: not within 24 h, within 72 h
    log.call("b1", D0 + 10 * H, 60, "hangup", caller="+12125550102")
    log.call("b2", D0 + 35 * H, 60, "hangup", caller="sip:+12125550102@10.0.0.5")
    # c: again 5 days later: only within 7 d
    log.call("c1", D0 + 10 * H, 60, "hangup", caller="2125550103")
    log.call("c2", D0 + 5 * DAY + 10 * H, 60, "hangup", caller="+1 212-555-0103")
    # f: again exactly 24 h later: "within 24 h" includes the end of the window
    log.call("f1", D0 + 12 * H, 60, "hangup", caller="+12125550104")
    log.call("f2", D0 + 36 * H, 60, "hangup", caller="+12125550104")
    # withheld or unusable caller IDs, twice from "anonymous": never a repeat, never counted
    log.call("d1", D0 + 11 * H, 60, "hangup", caller="anonymous")
    log.call("d2", D0 + 12 * H, 60, "hangup", caller="Anonymous")
    log.call("e1", D0 + 13 * H, 60, "hangup", caller="")
    log.call("x1", D0 + 14 * H, 60, "hangup", caller="100")  # an internal extension: not a usable number
    return log


def test_numbers_are_normalised_in_the_sites_region() -> None:
    assert m.normalise_number("(212) 555-0101", "US") == "+12125550101"
    assert m.normalise_number("sip:+12125550102@10.0.0.5;user=phone", "US") == "+12125550102"
    assert m.normalise_number("020 7946 0018", "GB") == "+442079460018"
    for withheld in ("", "anonymous", "Restricted", "unknown", "100", "not a number"):
        assert m.normalise_number(withheld, "US") is None


def test_repeat_callers_across_the_period_boundary() -> None:
    # period = the first day; the repeats (a2, b2, f2 on day 2, c2 on day 6) fall after it
    r = build(fcr_log().events, zone="America/New_York", since=D0, until=D0 + DAY, now=D0 + 10 * DAY, region="US")
    # counted: a1, b1, c1, f1 (4); left out: d1, d2, e1, x1 (4)
    # 24 h: a1 (23 h) and f1 (24 h) repeated -> b1, c1 resolved: 2/4
    # 72 h: a1, b1, f1 repeated -> 1/4;  7 d: all four repeated -> 0/4
    fcr = {w: r.get(f"fcr_{w}") for w in ("24h", "72h", "7d")}
    assert [(k.value, k.n) for k in fcr.values()] == [(0.5, 4), (0.25, 4), (0.0, 4)]
    assert all(not k.provisional and k.detail["anonymous"] == 4 for k in fcr.values())


def test_a_window_reaching_past_now_is_provisional() -> None:
    now = D0 + 2 * DAY
    ev = [e for e in fcr_log().events if e["wall_time"] <= now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")]  # the log at now
    r = build(ev, zone="America/New_York", since=D0, until=D0 + DAY, now=now, region="US")
    # 24 h: every window closed by day 1 12:00 < now: final, still 2/4
    assert (r.get("fcr_24h").value, r.get("fcr_24h").provisional) == (0.5, False)
    # 72 h: c1's window (to day 3 10:00) is still open and c2 has not happened: 1/4 for now, provisional
    k72 = r.get("fcr_72h")
    assert (k72.value, k72.provisional, k72.detail["open_windows"]) == (0.25, True, 1)
    # 7 d: c1 open as well: 1/4 so far
    assert (r.get("fcr_7d").value, r.get("fcr_7d").provisional) == (0.25, True)


def test_counts_directly_over_facts() -> None:
    calls = facts_from_events(fcr_log().events).calls
    day1 = [c for c in calls if c.started_at < D0 + DAY]
    assert m.fcr_counts(day1, calls, timedelta(hours=24), now=D0 + 10 * DAY, region="US") == (2, 4, 4, 0)
    none = m.first_call_resolution([], calls, now=D0, region="US")
    assert all(k.value is None and k.n == 0 and not k.provisional for k in none)
