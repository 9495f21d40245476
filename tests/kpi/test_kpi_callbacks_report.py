"""The callback funnel and its honesty from the event log, and the report grouped by flow, queue and node
(queue_log rows joined to their IVR call by ``ivr_call_id``)."""

from __future__ import annotations

from datetime import timedelta

from ivr.kpi.report import build
from tests.kpi.log import Log, iso, q, t

T0 = t("2026-12-01T15:00")
M = timedelta(minutes=1)
NY = "America/New_York"


def offer(offered: bool) -> tuple[float, str, dict]:
    return (0.15, "queue.offer", {"node": "support", "queue": "support", "offered": offered})


def callback_log() -> Log:
    log = Log()
    acc = (0.16, "callback.offer.accepted", {"node": "support", "queue": "support"})
    # k1 offered, accepted, filed r1; k2 offered, declined; k3 not offered (wait unknown); k4 filed r2
    log.call("k1", T0, 60, "callback", path=("support",), between=(
        offer(True), acc, (0.17, "callback.confirmed", {"node": "support", "queue": "support", "request_id": "r1"})))
    log.call("k2", T0 + M, 60, "queued", path=("support",), between=(
        offer(True), (0.16, "callback.offer.declined", {"node": "support", "queue": "support", "key": "2"})))
    log.call("k3", T0 + 2 * M, 60, "queued", path=("support",), between=(offer(False),))
    log.call("k4", T0 + 3 * M, 60, "callback", path=("support",), between=(
        offer(True), acc, (0.17, "callback.confirmed", {"node": "support", "queue": "support", "request_id": "r2"})))

    def req(rid: str, call: str | None, at: float) -> None:
        log.add(T0 + at * M, call, "callback.requested", request_id=rid, queue="support", at=iso(T0 + at * M))

    def attempt(rid: str, n: int, outcome: str, at: float) -> None:
        log.add(T0 + at * M, None, "callback.attempt.ended", request_id=rid, n=n, outcome=outcome)

    def state(rid: str, to: str, at: float) -> None:
        log.add(T0 + at * M, None, "callback.state", request_id=rid, queue="support", to=to)

    def kept(rid: str, low: float, high: float, agent: float | None, ok: bool, at: float) -> None:
        log.add(T0 + at * M, None, "callback.kept", request_id=rid, queue="support", quoted_low=low,
                quoted_high=high, time_to_agent=agent, kept=ok, arrival_at="2026-12-01T15:00:00Z")

    # r1: the box cut its first attempt, the second connected; agent 420 s after arrival, quoted 300-480
    req("r1", "k1", 1)
    attempt("r1", 1, "interrupted", 5)
    attempt("r1", 2, "connected", 7)
    state("r1", "done", 7)
    kept("r1", 300, 480, 420, True, 7)
    # r2: no answer twice, expired: a broken promise with no wait to compare
    req("r2", "k4", 4)
    attempt("r2", 1, "no-answer", 8)
    attempt("r2", 2, "no-answer", 20)
    state("r2", "expired", 60)
    kept("r2", 120, 240, None, False, 60)
    # r3: asked for in the PBX queue (no IVR call here), connected at once but late: 300 s against 60-120
    req("r3", None, 10)
    attempt("r3", 1, "connected", 14)
    state("r3", "done", 14)
    kept("r3", 60, 120, 300, False, 14)
    return log


def test_callback_funnel_and_honesty() -> None:
    r = build(callback_log().events, zone=NY, since=T0, until=T0 + timedelta(hours=3), now=T0 + timedelta(days=1))

    def v(name: str) -> tuple[float | None, int]:
        return r.get(name).value, r.get(name).n

    assert v("callback_offered") == (0.75, 4)  # k1, k2, k4 of the 4 offer decisions
    assert v("callback_accepted") == (2 / 3, 3)  # k1, k4 of 3 offered
    assert v("callback_filed") == (2, 2)
    assert v("callback_completed") == (2 / 3, 3)  # r1, r3 done; r2 expired
    # first attempt that rang the phone: r1's second (connected), r2's first (no answer), r3's first (connected)
    assert v("callback_first_attempt_connect") == (2 / 3, 3)
    assert v("callback_promise_kept") == (1 / 3, 3)  # r1 of r1, r2, r3
    assert v("callback_asa") == (360.0, 2)  # (420 + 300) / 2
    # errors: r1 420 - 390 = +30, r3 300 - 90 = +210 -> MAE 120, bias +120
    assert v("ewt_mae") == (120.0, 2) and v("ewt_bias") == (120.0, 2)


def test_callback_records_from_elsewhere_replace_the_logs() -> None:
    kept = [{"request_id": "r1", "queue": "support", "quoted_low": 300, "quoted_high": 480, "time_to_agent": 480,
             "kept": True, "arrival_at": "2026-12-01T15:00:00Z"}]
    r = build(callback_log().events, [], kept, zone=NY, since=T0, until=T0 + timedelta(hours=3),
              now=T0 + timedelta(days=1))
    assert r.get("ewt_mae").value == 90.0 and r.get("callback_promise_kept").value == 1.0


def grouped_log() -> Log:
    log = Log()
    # two flows; g1 (main) and g2 (sales) queued; the PBX's rows name the IVR call that sent each caller
    log.call("g1", T0, 30, "queued", flow="main", path=("greet", "main_menu", "support"), between=(
        (0.35, "transfer", {"node": "support", "kind": "queue", "destination": "support", "ok": True}),))
    log.call("g2", T0 + M, 30, "queued", flow="sales", path=("hello", "sales_q"), between=(
        (0.25, "transfer", {"node": "sales_q", "kind": "queue", "destination": "sales", "ok": True}),))
    log.call("g3", T0 + 2 * M, 10, "caller_hangup", flow="main", path=("greet", "main_menu"))
    rows = [
        q(T0 + 30 * timedelta(seconds=1), "pbx-1", "support", "ENTERQUEUE", "", "", "1", ivr_call_id="g1"),
        q(T0 + 45 * timedelta(seconds=1), "pbx-1", "support", "CONNECT", "15", "x", "2"),
        q(T0 + M + 30 * timedelta(seconds=1), "pbx-2", "sales", "ENTERQUEUE", "", "", "1", ivr_call_id="g2"),
        q(T0 + M + 90 * timedelta(seconds=1), "pbx-2", "sales", "ABANDON", "1", "1", "60"),
        q(T0 + 5 * M, "pbx-3", "support", "ENTERQUEUE", "", "", "1"),  # straight into the PBX, no IVR call
        q(T0 + 5 * M + 40 * timedelta(seconds=1), "pbx-3", "support", "CONNECT", "40", "x", "2"),
    ]
    for row in rows:
        log.add(T0, None, "queue.log", **row)
    return log


def test_by_flow_joins_queue_rows_to_their_ivr_call() -> None:
    r = build(grouped_log().events, zone=NY, since=T0, until=T0 + timedelta(hours=1), now=T0 + timedelta(hours=2),
              by="flow")
    assert [g.key for g in r.groups] == ["-", "main", "sales"]
    main, sales, unlinked = r.group("main"), r.group("sales"), r.group("-")
    assert (main.get("ivr_calls").value, main.get("offered").value, main.get("asa").value) == (2, 1, 15.0)
    assert (sales.get("ivr_calls").value, sales.get("abandoned").value, sales.get("asa").n) == (1, 1, 0)
    assert (unlinked.get("ivr_calls").value, unlinked.get("offered").value, unlinked.get("asa").value) == (0, 1, 40.0)
    # totals: ASA (15 + 40) / 2; SL 20 s: pbx-1 within / (2 answered + pbx-2 abandoned after 20 s) = 1/3
    assert r.get("asa").value == 27.5 and r.get("service_level").value == 1 / 3


def test_by_queue_and_by_node() -> None:
    ev = grouped_log().events
    kw = {"zone": NY, "since": T0, "until": T0 + timedelta(hours=1), "now": T0 + timedelta(hours=2)}
    by_queue = build(ev, by="queue", **kw)
    assert [g.key for g in by_queue.groups] == ["-", "sales", "support"]
    support = by_queue.group("support")
    # g1 handed to support; its queue has 2 entries (g1's and one straight from the PBX)
    assert (support.get("ivr_calls").value, support.get("offered").value, support.get("answered").value) == (1, 2, 2)
    assert by_queue.group("-").get("ivr_calls").value == 1  # g3 never reached a queue
    by_node = build(ev, by="node", **kw)
    menu = by_node.group("main_menu")
    # g1 and g3 went through main_menu; g3 hung up there: 1/2; g1's queue visit follows it
    assert (menu.get("ivr_calls").value, menu.get("ivr_abandon_rate").value, menu.get("offered").value) == (2, 0.5, 1)
    assert by_node.abandon_by_node["main_menu"].value == 0.5


def test_json_and_rows_for_the_cli() -> None:
    r = build(grouped_log().events, zone=NY, since=T0, until=T0 + timedelta(hours=1), now=T0 + timedelta(hours=2),
              by="flow")
    j = r.to_json()
    assert j["since"] == "2026-12-01T10:00:00-05:00" and j["zone"] == NY and j["by"] == "flow"
    assert j["totals"]["asa"]["value"] == 27.5 and j["totals"]["service_level"]["value"] == 0.3333
    assert j["groups"][1]["key"] == "main" and j["groups"][1]["kpis"]["ivr_calls"]["value"] == 2
    rows = r.rows()
    assert {"group": "all", "kpi": "asa", "value": "27.5 s", "n": 2, "unit": "s",
            "variant": "hold time to CONNECT / answered", "provisional": False} in rows
    text = r.render()
    assert "flow main" in text and "service_level" in text and "33.3 %" in text
