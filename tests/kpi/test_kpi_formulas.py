"""The arithmetic over counts (the one definition shared with the central store), worked by hand."""

from __future__ import annotations

import pytest

from ivr.kpi import formulas as f


def test_nothing_to_measure_is_none_with_n_zero_never_a_division_by_zero() -> None:
    assert f.ratio(0, 0) == f.Measure(None, 0)
    assert f.mean(0.0, 0) == f.Measure(None, 0)
    assert f.mean_of([]) == f.Measure(None, 0) and f.maximum([]) == f.Measure(None, 0)
    assert f.service_level(0, 0, 0) == f.Measure(None, 0)
    assert f.service_level(0, 0, 0, f.SL_OFFERED, offered=0) == f.Measure(None, 0)
    assert f.abandonment_rate(0, 0) == f.Measure(None, 0)
    assert f.abandonment_rate(2, 2, short_abandoned=2) == f.Measure(None, 0)  # only short abandons: nothing left
    assert f.csat(0, 0) == f.Measure(None, 0) and f.nps(0, 0, 0) == f.Measure(None, 0)
    assert f.erlangs(0.0, 0.0, 0) == f.Measure(None, 0) and f.per_hour(0, 0.0) == f.Measure(None, 0)
    assert f.ewt_error(0.0, 0.0, 0) == (f.Measure(None, 0), f.Measure(None, 0))


def test_service_level_variants() -> None:
    # 100 offered: 80 answered (70 within T), 15 abandoned (5 of them short, 12 after T), 5 exited.
    kw = {"offered": 100, "short_abandoned": 5}
    assert f.service_level(70, 80, 12, **kw) == f.Measure(70 / 92, 92)  # 70 / (80 + 12)
    assert f.service_level(70, 80, 12, f.SL_ANSWERED, **kw) == f.Measure(70 / 80, 80)
    assert f.service_level(70, 80, 12, f.SL_OFFERED, **kw) == f.Measure(0.7, 100)
    assert f.service_level(70, 80, 12, f.SL_OFFERED_NO_SHORT, **kw) == f.Measure(70 / 95, 95)  # 100 - 5
    with pytest.raises(ValueError, match="needs offered"):
        f.service_level(70, 80, 12, f.SL_OFFERED)
    with pytest.raises(ValueError, match="unknown service level"):
        f.service_level(1, 1, 0, "whatever")


def test_abandonment_rate_variants() -> None:
    # 100 offered, 15 abandoned of which 5 short: (15 - 5) / (100 - 5) = 10 / 95; all: 15 / 100
    assert f.abandonment_rate(15, 100, 5) == f.Measure(10 / 95, 95)
    assert f.abandonment_rate(15, 100, 5, f.ABANDON_ALL) == f.Measure(0.15, 100)
    with pytest.raises(ValueError):
        f.abandonment_rate(1, 2, 0, "nope")


def test_handle_time_says_whether_it_is_aht() -> None:
    # 3 calls, 600 s talk, 60 s hold: without wrap-up "average talk time" 220 s; with 90 s wrap-up AHT 250 s
    assert f.handle_time(600.0, 3, hold_total=60.0) == ("average_talk_time", f.Measure(220.0, 3))
    assert f.handle_time(600.0, 3, hold_total=60.0, wrap_total=90.0) == ("aht", f.Measure(250.0, 3))


def test_csat_nps_erlangs_ewt() -> None:
    assert f.csat(3, 4) == f.Measure(0.75, 4)
    # 10 answers: 5 promoters, 2 detractors -> 50 % - 20 % = +30 points
    assert f.nps(5, 2, 10) == f.Measure(30.0, 10)
    assert f.nps(0, 4, 4) == f.Measure(-100.0, 4)
    # 2 h of calls in a 25-hour day: 7200 / 90000 = 0.08 E
    assert f.erlangs(7200.0, 25 * 3600.0, 3) == f.Measure(0.08, 3)
    assert f.per_hour(46, 23 * 3600.0) == f.Measure(2.0, 46)
    # errors +30, -90: MAE 60, bias -30
    assert f.ewt_error(120.0, -60.0, 2) == (f.Measure(60.0, 2), f.Measure(-30.0, 2))


def test_percentile_is_nearest_rank() -> None:
    assert f.percentile([3.0, 1.0, 2.0], 50) == 2.0 and f.percentile([], 90) is None
