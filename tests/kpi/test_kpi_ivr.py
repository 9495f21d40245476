"""IVR KPIs from the event log: how calls left the IVR, containment, transfers, abandon by node, time to
queue, CSAT/NPS. Today's event fields and the KPI-complete ones (issue 13 item 1) are both read."""

from __future__ import annotations

from datetime import timedelta

from ivr.kpi import measures as m
from ivr.kpi.facts import facts_from_events
from ivr.kpi.report import build
from tests.kpi.log import Log, t

T0 = t("2026-12-01T15:00")


def day_log() -> Log:
    """Nine calls a minute apart; seven count (one is a callback leg, one simulated)."""
    log = Log()
    at = [T0 + timedelta(minutes=i) for i in range(9)]
    # c1 self-served: the flow said goodbye
    # (each of c1, c2, c6, c7 looks something up; the callback leg and the simulation too, not counted)
    log.call("c1", at[0], 40, "hangup", path=("greet", "main_menu", "goodbye"), detail="goodbye", between=(
        (0.2, "http.lookup", {"node": "main_menu", "lookup": "crm", "host": "crm.test", "outcome": "ok",
                              "latency_ms": 120}),))
    # c2 the caller hung up in the main menu
    log.call("c2", at[1], 12, "caller_hangup", path=("greet", "main_menu"), between=(
        (0.2, "http.lookup", {"node": "main_menu", "lookup": "", "host": "rx.test", "outcome": "circuit_open",
                              "latency_ms": 1}),))
    # c3 queued after 30 s: transfer.progress at 30 s, transfer ok
    log.call("c3", at[2], 31, "queued", path=("greet", "main_menu", "support"), detail="support", between=(
        (30.0, "transfer.progress", {"node": "support", "stage": "referred", "kind": "queue",
                                     "destination": "support"}),
        (30.5, "transfer", {"node": "support", "kind": "queue", "destination": "support", "ok": True}),
    ))
    # c4 today's shape of a failed transfer: transfer ok false, then the failure target says goodbye
    log.call("c4", at[3], 50, "hangup", path=("greet", "main_menu", "operator", "goodbye"), detail="goodbye",
             between=((20.0, "transfer", {"node": "operator", "kind": "extension", "destination": "2000",
                                          "ok": False, "detail": "486 Busy"}),))
    # c5 the new outcome transfer_failed
    log.call("c5", at[4], 25, "transfer_failed", path=("greet", "main_menu", "operator"), detail="operator")
    # c6 marked resolved (the new mark event, qualified node), then the caller hung up on the goodbye
    log.call("c6", at[5], 60, "caller_hangup", path=("greet", "billing", "billing.online", "goodbye"),
             detail="goodbye", between=((0.3, "http.lookup", {"node": "billing", "lookup": "crm", "outcome": "ok",
                                                             "latency_ms": 80}),
                                        (0.35, "mark", {"node": "billing.online", "mark": "resolved",
                                                        "flow": "billing"}),))
    # c7 hung up in the billing sub-flow's collect; collect.no_input names the node bare (today's field)
    log.call("c7", at[6], 20, "caller_hangup", path=("greet", "billing", "billing.account"), detail="account",
             between=((0.3, "http.lookup", {"node": "billing", "lookup": "crm", "outcome": "timeout",
                                            "latency_ms": 2000}),
                      (0.35, "collect.no_input", {"node": "account", "count": 1, "max": 3}),))
    # c8 a SIP callback's customer leg: outbound, not an IVR call
    log.call("c8", at[7], 30, "transferred", path=("press1", "to_queue"), between=(
        (0.05, "callback.leg", {"request_id": "r1", "attempt_id": "a1"}),
        (0.1, "http.lookup", {"node": "press1", "lookup": "crm", "outcome": "error", "latency_ms": 9}),))
    # c9 a simulation
    log.call("c9", at[8], 5, "hangup", channel="simulator", between=(
        (0.1, "http.lookup", {"node": "greet", "lookup": "crm", "outcome": "timeout", "latency_ms": 2000}),))
    return log


def test_dispositions_containment_and_transfers() -> None:
    calls = [c for c in facts_from_events(day_log().events).calls if not c.callback_leg and c.channel != "simulator"]
    assert {c.call_id: c.disposition for c in calls} == {
        "c1": "self_served", "c2": "abandoned", "c3": "transferred", "c4": "transfer_failed",
        "c5": "transfer_failed", "c6": "resolved", "c7": "abandoned"}
    counts = {k.name: (k.value, k.n) for k in m.ivr_counts(calls)}
    assert counts["ivr_calls"] == (7, 7) and counts["ivr_abandoned"] == (2, 7) and counts["ivr_open"] == (0, 7)
    # self-served containment: c1 + c6 = 2 of 7 ended calls; resolved: c6 = 1 of 7
    assert (m.containment(calls).value, m.containment(calls).n) == (2 / 7, 7)
    assert m.containment(calls, m.CONTAINMENT_RESOLVED).value == 1 / 7
    # transfer rate: c3 of 7; failure rate: c4, c5 failed of the 3 that tried (c3, c4, c5)
    rate, failure = m.transfer_rate(calls)
    assert (rate.value, rate.n) == (1 / 7, 7) and (failure.value, failure.n) == (2 / 3, 3)


def test_abandon_in_ivr_by_node_with_qualified_names() -> None:
    calls = [c for c in facts_from_events(day_log().events).calls if not c.callback_leg and c.channel != "simulator"]
    by = m.ivr_abandon_by_node(calls)
    # main_menu: entered by c1..c5 (5), c2 hung up there -> 1/5
    assert (by["main_menu"].value, by["main_menu"].n, by["main_menu"].detail["abandoned"]) == (0.2, 5, 1)
    # billing.account (c7's detail says bare "account"; its path says where): entered by c7 only -> 1/1
    assert (by["billing.account"].value, by["billing.account"].n) == (1.0, 1)
    # c6 hung up on the goodbye after it was resolved: a resolved call, not an abandon
    assert by["goodbye"].value == 0.0 and by["goodbye"].n == 3
    assert "account" not in by


def test_time_to_queue() -> None:
    calls = facts_from_events(day_log().events).calls
    mean, longest = m.time_to_queue(calls)
    # only c3 reached a queue: transfer.progress 30 s after its start
    assert (mean.value, mean.n, longest.value) == (30.0, 1, 30.0)


def test_bare_node_names_are_qualified_by_the_node_entered() -> None:
    log = Log()
    # nodes are entered 0.1 s apart: survey 0.1, survey.csat 0.2, survey.nps 0.3
    log.call("s1", T0, 30, "hangup", path=("survey", "survey.csat", "survey.nps"), between=(
        (0.25, "survey.answer", {"node": "csat", "scale": "csat", "var": "csat", "value": 4}),
        (0.35, "survey.answer", {"node": "survey.nps", "scale": "nps", "var": "nps", "value": 10,
                                "flow": "survey", "flow_version": "v9"}),
    ))
    (c,) = facts_from_events(log.events).calls
    assert [(a.node, a.flow, a.scale, a.value) for a in c.surveys] == [
        ("survey.csat", "survey", "csat", 4), ("survey.nps", "survey", "nps", 10)]


def test_csat_and_nps() -> None:
    log = Log()
    # CSAT answers 5, 4, 3, 1 -> 2 of 4 satisfied = 0.5
    # NPS answers 10, 9, 8, 6, 0 -> promoters 2, detractors 2 -> 40 % - 40 % = 0 points; then 10 again: n = 6,
    # promoters 3 -> (3 - 2) / 6 = +16.7 points
    answers = [("csat", 5), ("csat", 4), ("csat", 3), ("csat", 1),
               ("nps", 10), ("nps", 9), ("nps", 8), ("nps", 6), ("nps", 0), ("nps", 10)]
    for i, (scale, v) in enumerate(answers):
        log.call(f"s{i}", T0 + timedelta(minutes=i), 30, "hangup", path=("survey.q",), between=(
            (1.0, "survey.answer", {"node": "survey.q", "scale": scale, "var": scale, "value": v}),))
    csat, nps = m.survey_scores(facts_from_events(log.events).calls)
    assert (csat.value, csat.n) == (0.5, 4)
    assert nps.n == 6 and nps.value is not None and round(nps.value, 1) == 16.7
    assert (nps.detail["promoters"], nps.detail["detractors"]) == (3, 2)


def test_build_leaves_out_callback_legs_and_simulations_unless_asked() -> None:
    ev = day_log().events
    now = T0 + timedelta(hours=1)
    r = build(ev, zone="America/New_York", since=T0, now=now)
    assert r.get("ivr_calls").value == 7
    assert build(ev, zone="America/New_York", since=T0, now=now, include_simulated=True).get("ivr_calls").value == 8


def test_calls_still_running_and_store_events_after_the_end() -> None:
    log = Log()
    log.call("run", T0, None, None, path=("greet", "main_menu"))
    log.call("cb", T0, 60, "callback", path=("support",), between=(
        (1.0, "queue.offer", {"node": "support", "queue": "support", "offered": True}),
        (2.0, "callback.offer.accepted", {"node": "support", "queue": "support"}),
        (5.0, "callback.confirmed", {"node": "support", "queue": "support", "request_id": "r9"}),))
    # the store's callback events carry the filing call's id, long after it ended: not part of the call
    log.add(T0 + timedelta(hours=2), "cb", "callback.state", request_id="r9", queue="support", to="dialing")
    log.add(T0 + timedelta(hours=2), "cb", "transfer", node="x", kind="queue", destination="support", ok=False)
    calls = {c.call_id: c for c in facts_from_events(log.events).calls}
    assert calls["run"].disposition == "open" and calls["run"].ended_at is None
    assert calls["cb"].ended_at == T0 + timedelta(seconds=60) and not calls["cb"].transfer_failed
    assert calls["cb"].disposition == "callback" and calls["cb"].queue == "support"
    # an open call is not in containment's denominator
    assert m.containment(list(calls.values())).n == 1


def test_event_objects_from_the_store_read_like_dicts() -> None:
    from ivr.store.eventlog import Event

    objs = [Event(seq=e["seq"], id=str(e["seq"]), site="s", boot_id="b", wall_time=e["wall_time"], mono_ns=0,
                  call_id=e["call_id"], type=e["type"], data=e["data"]) for e in day_log().events]
    assert [c.disposition for c in facts_from_events(objs).calls] == \
        [c.disposition for c in facts_from_events(day_log().events).calls]
    assert len(facts_from_events(objs).calls) == 9


def test_lookups_failures_and_the_callers_wait() -> None:
    """Four look-ups by IVR calls (the callback leg's and the simulation's are not IVR calls): two failed
    (a timeout, an open circuit), the waits 1, 80, 120 and 2,000 ms; per look-up, the host stands in for a
    look-up with no name."""
    report = build(day_log().events, zone="UTC", since=T0 - timedelta(hours=1), now=T0 + timedelta(hours=1))
    assert (report.get("lookups").value, report.get("lookups").n) == (4, 4)
    failed = report.get("lookup_failure_rate")
    assert (failed.value, failed.n, dict(failed.detail)) == (0.5, 4, {"circuit_open": 1, "timeout": 1})
    assert (report.get("lookup_wait_p50").value, report.get("lookup_wait_p95").value) == (80, 2000)
    crm = {k.name: k.value for k in report.lookups_by_name["crm"]}
    assert crm == {"lookups": 3, "lookup_failure_rate": 1 / 3, "lookup_wait_p50": 120, "lookup_wait_p95": 2000}
    assert {k.name: k.value for k in report.lookups_by_name["rx.test"]}["lookup_failure_rate"] == 1.0
    text = report.render()
    assert "data look-ups, by look-up" in text and "crm: lookups 3, failure_rate 33.3 %, wait_p50 120 ms" in text
    js = report.to_json()
    assert js["totals"]["lookup_wait_p95"]["value"] == 2000 and js["lookups_by_name"]["crm"]["lookups"]["value"] == 3
