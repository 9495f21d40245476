"""Queue KPIs from queue_log rows (the PBX's own record), each figure worked by hand in the comments."""

from __future__ import annotations

from datetime import timedelta

from ivr.kpi import formulas as f
from ivr.kpi import measures as m
from ivr.kpi.facts import facts_from_events, visits_from_queue_log
from tests.kpi.log import Log, q, t

T0 = t("2026-12-01T15:00")


def s(sec: float):  # noqa: ANN202 - a time T0 + sec
    return T0 + timedelta(seconds=sec)


# Six callers into "support" (wait, how they left):
#   A  10 s, answered, talked 120 s, the caller hung up            (COMPLETECALLER 10|120|1)
#   B  30 s, answered, talked 60 s, blind-transferred by the agent (BLINDTRANSFER 2000|ctx|30|60|2)
#   C   3 s, hung up (a short abandon, < 5 s)                       (ABANDON 1|1|3)
#   D  45 s, hung up                                                (ABANDON 2|1|45)
#   E  50 s, pressed 1 to leave (for a callback)                    (EXITWITHKEY 1|1|1|50)
#   F  still waiting                                                (ENTERQUEUE only)
ROWS = [
    q(s(0), "A", "support", "ENTERQUEUE", "", "+12125550101", "1", ivr_call_id="ivr-a"),
    q(s(1), "B", "support", "ENTERQUEUE", "", "+12125550102", "2"),
    q(s(2), "C", "support", "ENTERQUEUE", "", "+12125550103", "3"),
    q(s(3), "D", "support", "ENTERQUEUE", "", "+12125550104", "3"),
    q(s(4), "E", "support", "ENTERQUEUE", "", "+12125550105", "3"),
    q(s(5), "C", "support", "ABANDON", "1", "1", "3"),
    q(s(6), "F", "support", "ENTERQUEUE", "", "+12125550106", "3"),
    q(s(10), "A", "support", "CONNECT", "10", "agent-leg-1", "2", agent="Alice"),
    q(s(10), "A", "support", "RINGNOANSWER", "15000", agent="Bob"),  # a member verb: no effect on the visit
    q(s(31), "B", "support", "CONNECT", "30", "agent-leg-2", "1", agent="Bob"),
    q(s(48), "D", "support", "ABANDON", "2", "1", "45"),
    q(s(54), "E", "support", "EXITWITHKEY", "1", "1", "1", "50"),
    q(s(91), "B", "support", "BLINDTRANSFER", "2000", "from-internal", "30", "60", "2", agent="Bob"),
    q(s(130), "A", "support", "COMPLETECALLER", "10", "120", "1", agent="Alice"),
]


def test_visits_are_read_from_the_rows() -> None:
    v = {x.callid: x for x in visits_from_queue_log(ROWS)}
    assert (v["A"].result, v["A"].wait, v["A"].talk, v["A"].agent, v["A"].ivr_call_id) == (
        "answered", 10, 120, "Alice", "ivr-a")
    assert (v["B"].result, v["B"].wait, v["B"].talk, v["B"].transferred) == ("answered", 30, 60, True)
    assert (v["C"].result, v["C"].wait) == ("abandoned", 3)
    assert (v["E"].result, v["E"].wait) == ("exit_key", 50)
    assert (v["F"].result, v["F"].wait, v["F"].entered_at) == ("waiting", None, s(6))


def test_counts_asa_waits_talk_service_level_abandonment() -> None:
    v = visits_from_queue_log(ROWS)
    c = {k.name: (k.value, k.n) for k in m.queue_counts(v)}
    assert c == {"offered": (6, 6), "answered": (2, 6), "abandoned": (2, 6), "short_abandoned": (1, 6),
                 "exited": (1, 6), "waiting": (1, 6)}
    # ASA: (10 + 30) / 2 answered = 20 s
    assert (m.asa(v).value, m.asa(v).n) == (20.0, 2)
    # waits of the 5 ended visits: 10 + 30 + 3 + 45 + 50 = 138 -> 27.6 s; longest 50 s (F still waits)
    avg, longest = m.queue_wait(v)
    assert (avg.value, avg.n, longest.value, longest.n) == (27.6, 5, 50.0, 5)
    # talk: (120 + 60) / 2 = 90 s, and named for what it is: no wrap-up in queue_log
    tt = m.talk_time(v)
    assert (tt.name, tt.value, tt.n) == ("average_talk_time", 90.0, 2)
    # SL 20 s, default: answered within 20 s = A; / (answered 2 + abandoned after 20 s: D) = 1/3
    sl = m.service_level(v, 20)
    assert (sl.value, sl.n) == (1 / 3, 3) and sl.variant == "answered <= 20 s / (answered + abandoned > 20 s)"
    # over the 5 ended visits: 1/5; over answered: 1/2; offered less the one short abandon: 1/4
    assert (m.service_level(v, 20, f.SL_OFFERED).value, m.service_level(v, 20, f.SL_OFFERED).n) == (0.2, 5)
    assert m.service_level(v, 20, f.SL_ANSWERED).value == 0.5
    assert (m.service_level(v, 20, f.SL_OFFERED_NO_SHORT).value, m.service_level(v, 20, f.SL_OFFERED_NO_SHORT).n) \
        == (0.25, 4)
    # with T = 30 s, B (30 s) is within: 2 / (2 + D) = 2/3
    assert m.service_level(v, 30).value == 2 / 3
    # abandonment, short ones out: (2 - 1) / (5 - 1) = 0.25; all: 2 / 5
    ab = m.abandonment_rate(v)
    assert (ab.value, ab.n) == (0.25, 4) and "5 s" in ab.variant
    assert m.abandonment_rate(v, variant=f.ABANDON_ALL).value == 0.4
    # a 2 s threshold makes C (3 s) a real abandon: (2 - 0) / 5
    assert m.abandonment_rate(v, short_abandon_s=2).value == 0.4
    # the agent transferred B: 1 of 2 answered
    assert m.agent_transfer_rate(v).value == 0.5


def test_all_abandoned() -> None:
    # three callers hang up after 2, 30 and 60 s
    v = visits_from_queue_log([
        q(s(0), "X", "sales", "ENTERQUEUE", "", "1", "1"), q(s(2), "X", "sales", "ABANDON", "1", "1", "2"),
        q(s(0), "Y", "sales", "ENTERQUEUE", "", "2", "2"), q(s(30), "Y", "sales", "ABANDON", "1", "2", "30"),
        q(s(0), "Z", "sales", "ENTERQUEUE", "", "3", "3"), q(s(60), "Z", "sales", "ABANDON", "1", "3", "60"),
    ])
    assert (m.asa(v).value, m.asa(v).n) == (None, 0)
    assert (m.talk_time(v).value, m.talk_time(v).n) == (None, 0)
    # SL: 0 answered within / (0 answered + 2 abandoned after 20 s) = 0, over n = 2 (not None: callers were lost)
    assert (m.service_level(v).value, m.service_level(v).n) == (0.0, 2)
    # abandonment: (3 - 1 short) / (3 - 1) = 1.0
    assert m.abandonment_rate(v).value == 1.0
    assert m.queue_wait(v)[1].value == 60


def test_no_queue_calls_at_all() -> None:
    for k in [*m.queue_counts([]), m.asa([]), *m.queue_wait([]), m.talk_time([]), m.service_level([]),
              m.abandonment_rate([]), m.agent_transfer_rate([])]:
        assert k.n == 0 and (k.value is None or k.value == 0), k


def test_attended_transfer_and_realtime_data5() -> None:
    # ATTENDEDTRANSFER LINK|chan1|chan2|hold|calltime|origposition: data5 keeps "calltime|origposition"
    rows = [q(s(0), "L", "support", "ENTERQUEUE", "", "1", "1"),
            q(s(12), "L", "support", "CONNECT", "12", "x", "3"),
            q(s(100), "L", "support", "ATTENDEDTRANSFER", "LINK", "Local/a", "Local/b", "12", "88", "1")]
    assert rows[-1]["data5"] == "88|1"
    (v,) = visits_from_queue_log(rows)
    assert (v.result, v.wait, v.talk, v.transferred) == ("answered", 12, 88, True)


def test_a_visit_without_its_enterqueue_and_a_timeout() -> None:
    rows = [q(s(40), "M", "support", "CONNECT", "40", "x", "1"),
            q(s(70), "M", "support", "COMPLETEAGENT", "40", "30", "1"),
            q(s(0), "N", "support", "ENTERQUEUE", "", "1", "1"),
            q(s(300), "N", "support", "EXITWITHTIMEOUT", "1", "1", "")]  # no waittime: from the rows, 300 s
    v = {x.callid: x for x in visits_from_queue_log(rows)}
    assert (v["M"].result, v["M"].wait, v["M"].talk, v["M"].entered_at) == ("answered", 40, 30, None)
    assert (v["N"].result, v["N"].wait) == ("timeout", 300)


def test_queue_rows_come_from_queue_log_events() -> None:
    log = Log()
    for r in ROWS[:2]:
        log.add(T0, None, "queue.log", **r)
    assert len(facts_from_events(log.events).queue_rows) == 2
