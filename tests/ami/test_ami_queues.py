"""Pure tests of ivr.pbx: queue snapshots from the documented transcripts, live events, queue_log lines."""

from __future__ import annotations

from ivr.pbx.queue_log import QueueLogMapper
from ivr.pbx.queues import DeviceState, QueueState
from ivr.proto.ami import AmiEvent, event
from tests.ami.peer import transcript

NOW = 1700000400.0


def status_events() -> list[AmiEvent]:
    msgs = transcript("queuestatus.txt", "queuestatus", ActionID="1")
    return [m for m in msgs[1:-1] if isinstance(m, AmiEvent)]


def live_events() -> list[AmiEvent]:
    return [m for m in transcript("queue_events.txt", "events") if isinstance(m, AmiEvent)]


def fresh() -> QueueState:
    state = QueueState()
    state.apply_status(status_events(), NOW)
    return state


def test_snapshot_matches_the_queuestatus_transcript() -> None:
    q = fresh().snapshot("support")
    assert q is not None
    assert (q.strategy, q.calls, q.holdtime, q.talktime, q.completed, q.abandoned) == ("ringall", 2, 99, 180, 540, 51)
    assert q.service_level_perf == 50.4
    assert [(c.position, c.uniqueid, c.caller_id_num) for c in q.callers] == [
        (1, "1700000000.17", "8012317154"),
        (2, "1700000000.21", "2125550100"),
    ]
    assert q.callers[0].wait(NOW) == 377 and q.longest_wait(NOW + 3) == 380
    assert [(m.name, m.status, m.paused, m.in_call) for m in q.members] == [
        ("Alice", DeviceState.NOT_INUSE, False, False),
        ("Bob", DeviceState.INUSE, False, True),
        ("Carol", DeviceState.NOT_INUSE, True, False),
        ("Dave", DeviceState.UNAVAILABLE, False, False),
    ]
    assert q.member("PJSIP/203") is not None and q.member("PJSIP/203").paused_reason == "lunch"  # type: ignore[union-attr]
    assert (q.logged_in, q.available) == (3, 1)
    sales = fresh().snapshot("sales")
    assert sales is not None and (sales.logged_in, sales.available, sales.waiting) == (1, 1, 0)


def test_summary_agrees_and_fills_counts_for_unknown_queues() -> None:
    state = fresh()
    msgs = transcript("queuesummary.txt", "queuesummary", ActionID="2")
    state.apply_summary([m for m in msgs if isinstance(m, AmiEvent)], NOW)
    q = state.snapshot("support")
    assert q is not None and (q.summary_logged_in, q.summary_available, q.summary_longest_hold) == (3, 1, 377)
    assert (q.logged_in, q.available) == (3, 1)  # members known: computed from them, and they agree
    only = QueueState()
    only.apply_summary([m for m in msgs if isinstance(m, AmiEvent)], NOW)
    s = only.snapshot("support")
    assert s is not None and (s.logged_in, s.available, s.calls) == (3, 1, 2)


def test_live_events_keep_the_snapshot_current() -> None:
    state = fresh()
    seen = []
    for ev in live_events():
        state.apply(ev, NOW)
        q = state.snapshot("support")
        assert q is not None
        seen.append((ev.name, [c.uniqueid for c in q.callers]))
        if ev.name == "QueueCallerJoin":
            assert [c.position for c in q.callers] == [1, 2, 3] and q.calls == 3
        if ev.name == "AgentConnect":
            assert q.member("PJSIP/201").in_call  # type: ignore[union-attr]
            assert q.available == 0
    q = state.snapshot("support")
    assert q is not None
    assert q.callers == () and q.calls == 0
    assert q.member("PJSIP/201").calls_taken == 26  # type: ignore[union-attr]
    assert (q.logged_in, q.available) == (3, 2)  # Alice and Bob free, Carol paused, Dave unavailable
    assert q.abandoned == 52 and q.completed == 541


def test_events_are_idempotent_across_a_refresh() -> None:
    once = fresh()
    for ev in live_events():
        once.apply(ev, NOW)
    twice = fresh()
    for ev in live_events() + live_events():
        twice.apply(ev, NOW)
    a, b = once.snapshot("support"), twice.snapshot("support")
    assert a is not None and b is not None
    assert (a.callers, a.members, a.logged_in, a.available) == (b.callers, b.members, b.logged_in, b.available)


def test_join_at_a_position_pushes_the_others_back() -> None:
    state = fresh()
    state.apply(event("QueueCallerJoin", {"Queue": "support", "Uniqueid": "cb-1", "Position": 1, "Count": 3}), NOW)
    q = state.snapshot("support")
    assert q is not None
    assert [(c.position, c.uniqueid) for c in q.callers] == [
        (1, "cb-1"),
        (2, "1700000000.17"),
        (3, "1700000000.21"),
    ]
    state.apply(event("QueueCallerLeave", {"Queue": "support", "Uniqueid": "1700000000.17", "Count": 2}), NOW)
    q = state.snapshot("support")
    assert q is not None and [(c.position, c.uniqueid) for c in q.callers] == [(1, "cb-1"), (2, "1700000000.21")]


def test_a_full_refresh_drops_removed_queues() -> None:
    state = fresh()
    state.apply_status([e for e in status_events() if e.get("Queue") == "sales"], NOW)
    assert set(state.snapshots()) == {"sales"}


def test_queue_log_lines_map_one_to_one() -> None:
    mapper = QueueLogMapper()
    lines = [entry.line() for ev in live_events() for entry in mapper.map(ev, NOW)]
    assert lines == [
        "1700000400|1700000000.30|support|NONE|ENTERQUEUE||3035550111",
        "1700000404|1700000000.17|support|Alice|CONNECT|380|1700000400.50|3",
        "1700000410|1700000000.21|support|NONE|ABANDON|1|2|60",
        "1700000436|1700000000.30|support|Bob|RINGNOANSWER|15000",
        # joined before we were watching: its original position is unknown, left empty
        "1700000499|1700000000.17|support|Alice|COMPLETECALLER|380|95|",
        "1700000500|1700000000.30|support|NONE|EXITWITHKEY|1|1|3|100",
    ]


def test_queue_log_record_has_the_realtime_table_columns() -> None:
    mapper = QueueLogMapper()
    (entry,) = mapper.map(live_events()[0], NOW)
    assert entry.as_record() == {
        "time": 1700000400.0,
        "callid": "1700000000.30",
        "queuename": "support",
        "agent": "NONE",
        "event": "ENTERQUEUE",
        "data1": "",
        "data2": "3035550111",
        "data3": "",
        "data4": "",
        "data5": "",
    }


def test_other_verbs() -> None:
    m = QueueLogMapper()
    join = event("QueueCallerJoin", {"Queue": "q", "Uniqueid": "u1", "Position": 2, "CallerIDNum": "1"})
    m.map(join, 100.0)
    agent_done = event(
        "AgentComplete",
        {"Queue": "q", "Uniqueid": "u1", "MemberName": "A", "HoldTime": 5, "TalkTime": 9, "Reason": "agent"},
    )
    assert m.map(agent_done, 200.0)[0].line() == "200|u1|q|A|COMPLETEAGENT|5|9|2"
    m.map(join, 100.0)
    transfer = event("AgentComplete", {"Queue": "q", "Uniqueid": "u1", "MemberName": "A", "Reason": "transfer"})
    assert m.map(transfer, 200.0)[0].event == "TRANSFER"
    m.map(join, 100.0)
    timeout = event(
        "UserEvent", {"UserEvent": "IvrQueueExit", "Queue": "q", "Uniqueid": "u1", "Reason": "EXITWITHTIMEOUT"}
    )
    assert m.map(timeout, 400.0)[0].line() == "400|u1|q|NONE|EXITWITHTIMEOUT|2|2|300"
    pause = event("QueueMemberPause", {"Queue": "q", "MemberName": "A", "Paused": "1", "PausedReason": "lunch"})
    assert m.map(pause, 1.0)[0].line() == "1|NONE|q|A|PAUSE|lunch"
    assert m.map(event("UserEvent", {"UserEvent": "Other"}), 1.0) == []
    assert m.map(event("Newchannel", {"Channel": "x"}), 1.0) == []
