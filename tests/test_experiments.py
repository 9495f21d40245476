"""Experiments (issue 17 item 7): a ``split`` node sends a stable share of callers to each variant, the call
records it, and ``ivr kpi --by variant`` compares the variants with sample sizes and confidence intervals."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from ivr.flows.model import Split
from ivr.kpi.experiments import wilson
from ivr.kpi.report import build
from tests.conftest import Env
from tests.kpi.log import Log, t

FLOW = """
flow: trial
numbers: ["702"]
languages: [en]
timezone: America/New_York
start: trial
prompts:
  a: "Menu A."
  b: "Menu B."
  bye: "Goodbye."
nodes:
  trial:
    split:
      experiment: menu-order
      variants:
        A: {share: 50, goto: menu_a}
        B: {share: 50, goto: menu_b}
  menu_a:
    play: a
    next: bye
  menu_b:
    play: b
    next: bye
  bye:
    hangup: bye
"""


def test_shares_hold_and_a_caller_keeps_their_variant() -> None:
    split = Split("menu-order", (("A", 20.0, "a"), ("B", 30.0, "b"), ("C", 50.0, "c")))
    callers = [f"1212555{i:04d}" for i in range(10_000)]
    chosen = [split.choose(c)[0] for c in callers]
    for name, share in (("A", 0.20), ("B", 0.30), ("C", 0.50)):
        assert abs(chosen.count(name) / len(callers) - share) < 0.02, (name, chosen.count(name))
    assert [split.choose(c)[0] for c in callers[:200]] == chosen[:200]  # stable
    other = Split("greeting", split.variants)  # another experiment shuffles on its own
    same = sum(1 for c, v in zip(callers, chosen, strict=True) if other.choose(c)[0] == v)
    assert 0.30 < same / len(callers) < 0.46  # independent: 0.2² + 0.3² + 0.5² = 0.38 agree by chance


@pytest.fixture
def trial(env: Env) -> Env:
    (env.flows / "trial.yaml").write_text(FLOW, encoding="utf-8")
    return env


def simulate(env: Env, caller: str) -> dict[str, Any]:
    r = env.ivr("simulate", "trial", "--caller", caller, "--json")
    assert r.code == 0, r.err
    return r.json()  # type: ignore[no-any-return]


def test_the_call_goes_to_its_variant_and_records_it(trial: Env) -> None:
    split = Split("menu-order", (("A", 50.0, "menu_a"), ("B", 50.0, "menu_b")))
    seen = set()
    for caller in ("+12125550101", "+12125550102", "+12125550103", "+12125550104", "+12125550105"):
        want, target = split.choose(caller.lstrip("+"))
        for _ in range(2):  # the same caller, the same menu
            r = simulate(trial, caller)
            assert r["path"][:2] == ["trial", target] and r["variables"]["variant_menu_order"] == want
        ev = trial.ivr("events", "--simulated", "--json", "--call", r["call_id"], "--type", "experiment.assigned")
        [assigned] = [json.loads(line)["data"] for line in ev.out.splitlines()]
        assert assigned["experiment"] == "menu-order" and assigned["variant"] == want
        assert assigned["basis"] == "caller"
        seen.add(want)
    assert seen == {"A", "B"}


def test_check_refuses_shares_that_do_not_add_up(trial: Env) -> None:
    (trial.flows / "trial.yaml").write_text(FLOW.replace("B: {share: 50", "B: {share: 40"), encoding="utf-8")
    r = trial.ivr("check", "--no-render")
    line = FLOW.splitlines().index("      variants:") + 1
    assert r.code == 1 and f"trial.yaml:{line}:" in r.out, r.out
    assert "the variants' shares add up to 90 (50 + 40), not 100" in r.out


def trial_log(n: int = 60) -> Log:
    """``n`` calls a side: A contains 30 %, B 60 %; B's queued callers get there 20 s sooner."""
    log = Log()
    start = t("2026-12-01T15:00")
    for i in range(2 * n):
        variant = "A" if i % 2 == 0 else "B"
        contained = (i // 2) % 10 < (3 if variant == "A" else 6)
        assigned = (0.15, "experiment.assigned", {"node": "trial", "experiment": "menu-order", "variant": variant,
                                                  "basis": "caller", "target": f"menu_{variant.lower()}"})
        at = start + timedelta(minutes=i)
        if contained:
            log.call(f"c{i}", at, 30, "hangup", caller=f"+1212555{i:04d}", path=("trial", "bye"), between=(assigned,))
        else:
            wait = (40.0 if variant == "A" else 20.0) + (i % 5)
            log.call(f"c{i}", at, wait + 1, "queued", caller=f"+1212555{i:04d}", path=("trial", "support"),
                     between=(assigned, (wait, "transfer.progress", {"node": "support", "stage": "referred",
                                                                      "kind": "queue", "destination": "support"})))
    return log


def test_kpi_by_variant_compares_with_intervals() -> None:
    log = trial_log()
    report = build(log.events, zone="America/New_York", since=t("2026-12-01T14:00"), by="variant",
                   now=t("2026-12-01T20:00"))
    assert [g.key for g in report.groups] == ["menu-order=A", "menu-order=B"]
    assert report.group("menu-order=A").get("containment").value == pytest.approx(0.3)
    assert report.group("menu-order=B").get("containment").value == pytest.approx(0.6)
    [exp] = report.experiments
    assert exp.control == "A" and exp.calls == {"A": 60, "B": 60}
    rows = {(r.metric, r.variant): r for r in exp.rows}
    a, b = rows[("containment", "A")], rows[("containment", "B")]
    assert (a.figure.n, b.figure.n) == (60, 60)
    assert a.figure == wilson(18, 60) and a.figure.low < 0.3 < a.figure.high
    assert b.diff is not None and b.diff.value == pytest.approx(0.3) and b.significant is True
    ttq = rows[("time_to_queue", "B")]
    assert ttq.diff is not None and ttq.diff.value == pytest.approx(-20.0, abs=1) and ttq.significant is True
    assert rows[("csat", "B")].figure.n == 0 and rows[("csat", "B")].significant is None  # no answers: no claim
    text = report.render()
    assert "experiment menu-order: control A; ended calls A 60, B 60; 95% intervals" in text
    assert "vs control: +30.0 points" in text and "significant" in text
    assert report.to_json()["experiments"][0]["rows"][0]["n"] == 60


def test_a_small_difference_on_few_calls_is_not_called_significant() -> None:
    log = Log()
    start = t("2026-12-01T15:00")
    for i, (variant, contained) in enumerate([("A", True), ("A", False), ("A", False), ("B", True), ("B", True),
                                              ("B", False)]):
        log.call(f"s{i}", start + timedelta(minutes=i), 10, "hangup" if contained else "caller_hangup",
                 caller=f"+1212555{i:04d}", path=("trial", "x"),
                 between=((0.15, "experiment.assigned", {"node": "trial", "experiment": "e", "variant": variant,
                                                         "basis": "caller", "target": "x"}),))
    report = build(log.events, zone="UTC", since=t("2026-12-01T14:00"), by="variant", now=t("2026-12-01T20:00"))
    rows = {(r.metric, r.variant): r for r in report.experiments[0].rows}
    assert rows[("containment", "B")].significant is False  # 2/3 vs 1/3 on three calls each


def test_wilson_interval_matches_the_textbook() -> None:
    # 18 of 60 at 95 %: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) = [0.1990, 0.4251] (Wilson 1927)
    f = wilson(18, 60)
    assert f.low == pytest.approx(0.1990, abs=1e-4) and f.high == pytest.approx(0.4251, abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(0, 0).value is None
