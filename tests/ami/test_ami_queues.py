"""Pure tests of ivr.pbx: queue snapshots from the documented transcripts, live events, queue_log lines."""

from __future__ import annotations

import pytest

from ivr.pbx.queue_log import QueueLogEntry, QueueLogMapper
from ivr.pbx.queues import DeviceState, QueueState
from ivr.proto.ami import AmiEvent, event
from tests.ami.peer import load_sections, transcript

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


def asterisk_lines(section: str) -> list[tuple[str, dict[str, str]]]:
    """queue_log.txt: Asterisk's own lines, each with the fields AMI cannot supply (``;ami FIELD=VALUE``)."""
    out = []
    for raw in load_sections("queue_log.txt")[section].strip().splitlines():
        line, _, note = raw.partition("  ;ami ")
        out.append((line, dict(kv.split("=", 1) for kv in note.split()) if note else {}))
    return out


def realtime_columns(line: str) -> dict[str, str]:
    """A queue_log line as logger.c stores it in the realtime table: five columns, then the data split at
    ``|`` into data1..data5 (AST_NONSTANDARD_APP_ARGS into five: data5 keeps the rest)."""
    time_, callid, queuename, agent, event, data = line.split("|", 5)
    parts = data.split("|", 4)
    cols = {"time": time_, "callid": callid, "queuename": queuename, "agent": agent, "event": event}
    cols.update({f"data{i + 1}": parts[i] if i < len(parts) else "" for i in range(5)})
    return cols


def mapped(section: str) -> list[QueueLogEntry]:
    """The mapping's entries for one section of queue_events.txt ("more" follows "events" on one link)."""
    mapper = QueueLogMapper()
    entries = [entry for ev in live_events() for entry in mapper.map(ev, NOW)]
    if section == "events":
        return entries
    more = [m for m in transcript("queue_events.txt", section) if isinstance(m, AmiEvent)]
    return [entry for ev in more for entry in mapper.map(ev, NOW)]


@pytest.mark.parametrize("section", ["events", "more"])
def test_queue_log_matches_asterisks_own_lines_field_by_field(section: str) -> None:
    """Defect 6 of issue #12: the lines are compared with those app_queue.c writes for the same calls."""
    expected = asterisk_lines(section)
    got = mapped(section)
    assert [e.event for e in got] == [realtime_columns(line)["event"] for line, _ in expected]
    for entry, (line, unknowable) in zip(got, expected, strict=True):
        want = realtime_columns(line) | unknowable
        have = {k: str(int(v)) if k == "time" else str(v) for k, v in entry.as_record().items()}
        assert have == want, line
        if not unknowable:
            assert entry.line() == line


def test_realtime_data5_keeps_the_rest_of_a_long_data_list() -> None:
    m = QueueLogMapper()
    m.map(event("QueueCallerJoin", {"Queue": "q", "Uniqueid": "u1", "Position": 2}), 100.0)
    link = event("AttendedTransfer", {"Result": "Success", "TransfereeUniqueid": "u1", "DestType": "Link",
                                      "LocalOneChannel": "Local/x@c-1;1", "LocalTwoChannel": "Local/x@c-1;2"})
    assert m.map(link, 150.0) == []
    done = event("AgentComplete", {"Queue": "q", "Uniqueid": "u1", "MemberName": "A", "HoldTime": 5, "TalkTime": 9,
                                   "Reason": "transfer"})
    (entry,) = m.map(done, 200.0)
    assert entry.line() == "200|u1|q|A|ATTENDEDTRANSFER|LINK|Local/x@c-1;1|Local/x@c-1;2|5|9|2"
    rec = entry.as_record()
    assert (rec["data1"], rec["data4"], rec["data5"]) == ("LINK", "5", "9|2")


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
        "data3": "3",
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
    # no BlindTransfer/AttendedTransfer event seen: Asterisk 12+ has no plain TRANSFER any more
    assert m.map(transfer, 200.0)[0].line() == "200|u1|q|A|BLINDTRANSFER|||||2"
    m.map(join, 100.0)
    timeout = event(
        "UserEvent", {"UserEvent": "IvrQueueExit", "Queue": "q", "Uniqueid": "u1", "Reason": "EXITWITHTIMEOUT"}
    )
    assert m.map(timeout, 400.0)[0].line() == "400|u1|q|NONE|EXITWITHTIMEOUT|2|2|300"
    pause = event("QueueMemberPause", {"Queue": "q", "MemberName": "A", "Paused": "1", "PausedReason": "lunch"})
    assert m.map(pause, 1.0)[0].line() == "1|NONE|q|A|PAUSE|lunch"
    assert m.map(event("UserEvent", {"UserEvent": "Other"}), 1.0) == []
    assert m.map(event("Newchannel", {"Channel": "x"}), 1.0) == []
