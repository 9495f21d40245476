"""The asyncio AMI adapter (asterisk-ami underneath) against the test AMI peer over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from ivr.adapters.ami import AmiAdapter, OriginateOutcome, QueueMonitor
from ivr.adapters.ami_link import AmiConnectionLost, AmiError, AmiTimeout, backoff_delay
from ivr.pbx.queue_log import QueueLogEntry
from ivr.proto.ami import AmiEvent, event
from tests.ami.conftest import settings_for, until
from tests.ami.peer import AmiPeer, transcript


async def started(peer: AmiPeer, **over: object) -> AmiAdapter:
    adapter = AmiAdapter(settings_for(peer, **over), rng=random.Random(1))
    await adapter.start()
    return adapter


@pytest.mark.parametrize("auth", ["md5", "plain"])
async def test_login_and_subscribe(peer: AmiPeer, auth: str) -> None:
    ami = await started(peer, auth=auth)
    try:
        await ami.wait_connected(5)
        names = [a.name for a in peer.received]
        assert names == (["Challenge", "Login", "Events"] if auth == "md5" else ["Login", "Events"])
        login = peer.actions("Login")[0]
        if auth == "md5":
            assert login.get("Secret") is None and login.get("AuthType") == "MD5"
        assert peer.actions("Events")[0].get("EventMask") == "call,agent,user"
        assert ami.version == "5.0.2"
        await ami.ping()
    finally:
        await ami.close()


async def test_reader_is_asterisk_ami_thread_and_close_ends_it(peer: AmiPeer) -> None:
    ami = await started(peer)
    await ami.wait_connected(5)
    assert any(t.name.startswith("ami-reader-127.0.0.1") for t in threading.enumerate())
    await ami.close()
    await until(lambda: not any(t.name.startswith("ami-reader-") for t in threading.enumerate()))


async def test_wrong_secret_keeps_retrying_and_actions_time_out(peer: AmiPeer) -> None:
    ami = await started(peer, secret="wrong", action_timeout=0.3)
    try:
        await until(lambda: len(peer.actions("Login")) >= 2)
        assert not ami.connected and peer.logins == 0
        with pytest.raises(AmiTimeout, match="not connected"):
            await ami.ping()
    finally:
        await ami.close()


async def test_response_error_is_a_typed_error(ami: AmiAdapter, peer: AmiPeer) -> None:
    peer.errors["Redirect"] = "No such channel"
    with pytest.raises(AmiError) as info:
        await ami.redirect("PJSIP/gone-0001", "ivr-queue", "support")
    assert info.value.action == "Redirect"
    assert info.value.response is not None and info.value.response.message == "No such channel"
    await ami.ping()  # the link is fine


async def test_action_timeout_leaves_the_link_up(peer: AmiPeer) -> None:
    peer.silent.add("Getvar")
    ami = await started(peer, action_timeout=0.3)
    try:
        await ami.wait_connected(5)
        with pytest.raises(AmiTimeout):
            await ami.getvar("X")
        assert ami.connected
        await ami.ping()
    finally:
        await ami.close()


async def test_list_with_unrelated_events_interleaved(ami: AmiAdapter, peer: AmiPeer) -> None:
    stream = ami.events()
    peer.interleave = [event("Newchannel", {"Channel": "PJSIP/9-1"}), event("VarSet", {"Variable": "X"})]
    items = await ami.queue_status()
    assert [e.name for e in items].count("QueueMember") == 5 and len(items) == 9
    got = [await asyncio.wait_for(stream.get(), 2) for _ in range(2)]
    assert [e.name for e in got if e is not None] == ["Newchannel", "VarSet"]
    stream.close()


async def test_several_actions_in_flight_answered_out_of_order(ami: AmiAdapter, peer: AmiPeer) -> None:
    for name in ("A", "B", "C"):
        await ami.setvar(name, f"value-{name}")
    peer.reorder = 4
    results = await asyncio.gather(ami.getvar("A"), ami.getvar("B"), ami.getvar("C"), ami.core_show_channels())
    assert results[:3] == ["value-A", "value-B", "value-C"]
    assert [c.channel for c in results[3]] == ["PJSIP/trunk-00000011", "Local/5551234@ivr-callback-00000002;1"]


async def test_drop_in_the_middle_of_a_list_fails_that_action_then_recovers(ami: AmiAdapter, peer: AmiPeer) -> None:
    peer.drop_mid_list_after = 3
    with pytest.raises(AmiConnectionLost) as info:
        await ami.queue_status()
    assert info.value.action == "QueueStatus" and len(info.value.events) == 3
    await ami.wait_connected(5)
    assert len(await ami.queue_status()) == 9
    assert ami.logins == 2


async def test_restart_reconnects_relogs_and_resubscribes(ami: AmiAdapter, peer: AmiPeer) -> None:
    hooks = []

    async def on_connect() -> None:
        hooks.append(ami.logins)

    ami.add_connect_hook(on_connect)
    await peer.restart()
    await until(lambda: ami.logins == 2 and ami.connected)
    assert len(peer.actions("Login")) == 2 and len(peer.actions("Events")) == 2
    await until(lambda: hooks == [2])
    await ami.ping()


async def test_unanswered_ping_drops_and_reconnects(peer: AmiPeer) -> None:
    peer.silent.add("Ping")
    ami = await started(peer, ping_interval=0.05, action_timeout=0.3)
    try:
        await until(lambda: ami.logins >= 2)
        assert len(peer.actions("Ping")) >= 1
    finally:
        await ami.close()


async def test_actions_issued_while_down_wait_for_the_link(ami: AmiAdapter, peer: AmiPeer) -> None:
    await peer.stop()
    await until(lambda: not ami.connected)
    pending = asyncio.ensure_future(ami.getvar("X"))
    await asyncio.sleep(0)
    await peer.start()
    assert await asyncio.wait_for(pending, 5) is None


@pytest.mark.parametrize(
    "response,reason,outcome",
    [
        ("Success", "4", OriginateOutcome.ANSWERED),
        ("Failure", "5", OriginateOutcome.BUSY),
        ("Failure", "3", OriginateOutcome.NO_ANSWER),
        ("Failure", "8", OriginateOutcome.CONGESTION),
        ("Failure", "0", OriginateOutcome.FAILED),
        ("Failure", "1", OriginateOutcome.FAILED),
    ],
)
async def test_originate_outcomes_and_variables(
    ami: AmiAdapter, peer: AmiPeer, response: str, reason: str, outcome: OriginateOutcome
) -> None:
    peer.originate_results.append((response, reason))
    stream = ami.events()
    result = await ami.originate(
        "Local/5551234@ivr-callback",
        context="ivr-callback",
        exten="s",
        caller_id="Support <5550000>",
        ring_timeout=1.0,
        variables={"CALLBACK_ID": "cb-42", "QUEUE_PRIO": "7"},
    )
    assert result.outcome is outcome and result.reason == int(reason)
    sent = peer.actions("Originate")[0]
    assert sent.get("Async") == "true" and sent.get("Timeout") == "1000"
    assert sent.variables() == {"CALLBACK_ID": "cb-42", "QUEUE_PRIO": "7"}
    got = await asyncio.wait_for(stream.get(), 2)  # the unrelated event went to subscribers, not the action
    assert got is not None and got.name == "Newchannel"
    stream.close()


async def test_redirect_hangup_setvar_getvar(ami: AmiAdapter, peer: AmiPeer) -> None:
    await ami.redirect("PJSIP/trunk-00000011", "ivr-queue", "support", 1)
    assert peer.actions("Redirect")[0].get("Context") == "ivr-queue"
    await ami.setvar("CALLBACK_ID", "cb-1", channel="PJSIP/trunk-00000011")
    assert await ami.getvar("CALLBACK_ID", channel="PJSIP/trunk-00000011") == "cb-1"
    assert await ami.getvar("UNSET") is None
    await ami.hangup("PJSIP/trunk-00000011", cause=16)
    assert peer.actions("Hangup")[0].get("Cause") == "16"


async def test_queue_monitor_keeps_the_snapshot_through_events_and_a_restart(ami: AmiAdapter, peer: AmiPeer) -> None:
    entries: list[QueueLogEntry] = []

    async def sink(entry: QueueLogEntry) -> None:
        entries.append(entry)

    monitor = QueueMonitor(ami, refresh_interval=60.0, sink=sink, clock=lambda: 1700000400.0)
    runner = asyncio.create_task(monitor.run())
    try:
        # a new monitor fetches a snapshot at its first turn
        await until(lambda: monitor.refreshes == 1)
        q = monitor.state.snapshot("support")
        assert q is not None and (q.waiting, q.logged_in, q.available) == (2, 3, 1)

        live = [m for m in transcript("queue_events.txt", "events") if isinstance(m, AmiEvent)]
        await peer.push(*live)
        await until(lambda: len(entries) == 6)
        q = monitor.state.snapshot("support")
        assert q is not None and (q.waiting, q.logged_in, q.available) == (0, 3, 2)
        assert [e.event for e in entries] == [
            "ENTERQUEUE",
            "CONNECT",
            "ABANDON",
            "RINGNOANSWER",
            "COMPLETECALLER",
            "EXITWITHKEY",
        ]

        await peer.restart()  # Asterisk came back: the snapshot is fetched again (the transcript's state)
        await until(lambda: monitor.refreshes == 2)
        q = monitor.state.snapshot("support")
        assert q is not None and (q.waiting, q.logged_in, q.available) == (2, 3, 1)
    finally:
        runner.cancel()
        await asyncio.wait({runner}, timeout=2)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    for attempt, base in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0), (500, 30.0)]:
        for _ in range(50):
            d = backoff_delay(attempt, 0.5, 30.0, rng)
            assert base / 2 <= d <= base


async def test_queue_log_over_the_link_is_what_asterisk_writes(ami: AmiAdapter, peer: AmiPeer) -> None:
    """The monitor's sink gets, from the live AMI events, the queue_log lines app_queue writes: RINGCANCELED
    for a ring the caller cut short, one ABANDON per hang-up and none for a queue timeout."""
    from tests.ami.test_ami_queues import asterisk_lines, realtime_columns

    entries: list[QueueLogEntry] = []

    async def sink(entry: QueueLogEntry) -> None:
        entries.append(entry)

    monitor = QueueMonitor(ami, refresh_interval=60.0, sink=sink, clock=lambda: 1700000400.0)
    runner = asyncio.create_task(monitor.run())
    try:
        await until(lambda: monitor.refreshes == 1)
        expected = asterisk_lines("events") + asterisk_lines("more")
        for section in ("events", "more"):
            await peer.push(*[m for m in transcript("queue_events.txt", section) if isinstance(m, AmiEvent)])
        # a last event whose line marks the end: whatever the pushed events stand for came before it
        await peer.push(event("QueueMemberPause", {"Queue": "support", "MemberName": "End", "Paused": "1"}))
        await until(lambda: bool(entries) and entries[-1].agent == "End")
        for entry, (line, unknowable) in zip(entries[:-1], expected, strict=True):
            have = {k: str(int(v)) if k == "time" else str(v) for k, v in entry.as_record().items()}
            assert have == realtime_columns(line) | unknowable, line
    finally:
        runner.cancel()
        await asyncio.wait({runner}, timeout=2)


async def test_queue_log_rows_name_the_ivr_call_the_caller_came_from(ami: AmiAdapter, peer: AmiPeer) -> None:
    """Issue 13: a caller the IVR handed to the PBX carries IVR_CALL_ID; its queue_log rows carry ivr_call_id,
    learnt from the event's ChanVariable (manager.conf channelvars) or, without it, by Getvar at the join.
    The AMI Redirect sets the variable first, so a redirected caller is joined too."""
    from ivr.adapters.transfer import TransferContext, Transferer
    from ivr.config import TransferConfig
    from ivr.engine.call import TransferTarget

    entries: list[QueueLogEntry] = []

    async def sink(entry: QueueLogEntry) -> None:
        entries.append(entry)

    class Leg:  # the caller's SIP leg as the transfer sees it: Asterisk names its channel in a header
        source = ("127.0.0.1", 5060)

        def __init__(self) -> None:
            self.ended = asyncio.Event()

        def header(self, name: str) -> str | None:
            return "PJSIP/trunk-0000002c" if name == "X-IVR-Caller-Channel" else None

    class Call:
        call_id = "ivr-redirected"
        leg = Leg()

    def join(channel: str, uid: str, **more: str) -> AmiEvent:
        return event("QueueCallerJoin", {"Channel": channel, "Uniqueid": uid, "CallerIDNum": "3035550111",
                                         "Queue": "support", "Position": "1", "Count": "1", **more})

    monitor = QueueMonitor(ami, refresh_interval=60.0, sink=sink, clock=lambda: 1700000400.0)
    runner = asyncio.create_task(monitor.run())
    try:
        await until(lambda: monitor.refreshes == 1)
        # transfer.mode ami: Setvar IVR_CALL_ID, then Redirect; Asterisk then ends our leg (BYE)
        transferer = Transferer(TransferContext(TransferConfig(mode="ami"), None, None, ami))
        moving = asyncio.create_task(transferer.transfer(Call(), TransferTarget("queue", "support")))  # type: ignore[arg-type]
        await until(lambda: bool(peer.actions("Redirect")))
        Call.leg.ended.set()
        assert (await moving).ok
        assert [a.name.lower() for a in peer.received if a.name.lower() in ("setvar", "redirect")] == ["setvar",
                                                                                                       "redirect"]
        await peer.push(
            join("PJSIP/trunk-0000002a", "1700000000.40", ChanVariable="IVR_CALL_ID=ivr-from-event"),
            join("PJSIP/trunk-0000002b", "1700000000.41", ChanVariable="IVR_CALL_ID="),  # not one of ours
            join("PJSIP/trunk-0000002c", "1700000000.42"),  # no channelvars: the monitor asks the channel
            event("AgentConnect", {"Queue": "support", "Uniqueid": "1700000000.40", "MemberName": "Alice",
                                   "HoldTime": "12", "RingTime": "3", "DestUniqueid": "1700000000.50"}),
        )
        await until(lambda: len(entries) == 4)
    finally:
        runner.cancel()
        await asyncio.wait({runner}, timeout=2)
    by_caller = {(e.callid, e.event): e for e in entries}
    assert by_caller[("1700000000.40", "ENTERQUEUE")].ivr_call_id == "ivr-from-event"
    assert by_caller[("1700000000.40", "CONNECT")].as_record()["ivr_call_id"] == "ivr-from-event"
    assert "ivr_call_id" not in by_caller[("1700000000.41", "ENTERQUEUE")].as_record()
    assert by_caller[("1700000000.42", "ENTERQUEUE")].ivr_call_id == "ivr-redirected"
    assert [a.get("Channel") for a in peer.actions("Getvar")] == ["PJSIP/trunk-0000002c"]  # only where needed
    assert "ivr-redirected" not in by_caller[("1700000000.42", "ENTERQUEUE")].line()  # Asterisk's file as is
