"""The callback dialer through Asterisk (dial via ami) against the test AMI peer (tests/ami/peer.py, the real
protocol on loopback): the Originate carries CALLBACK_ID and the queue (docs/asterisk, section 5); its
OriginateResponse decides the attempt; the dialplan's IvrCallbackDeclined means nobody pressed 1. After a
SIGKILL, attempts in flight are reconciled through CoreShowChannels: a callback channel still up is
connected (not dialled again); one that is gone is interrupted and retried only after the interval."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from ivr.daemon import control
from ivr.proto.ami import AmiMessage, event
from ivr.store.callbacks import CallbackStore, Consent
from ivr.store.eventlog import EventLog, read_events
from tests.ami.conftest import until
from tests.ami.peer import AmiPeer
from tests.conftest import Env


def ami_yaml(peer: AmiPeer, *, confirm: float = 2.0, intervals: str = "[1]") -> str:
    return (f"ami: {{host: 127.0.0.1, port: {peer.port}, username: ivr, secret: s3cret, ping_interval: 30,"
            " action_timeout: 2, queue_refresh_seconds: 60}\n"
            "callbacks: {region: US, clock: trust, poll_seconds: 0.2, max_concurrent: 2,"
            f" dial: {{via: ami, caller_id: '\"Acme\" <+15550100>', ring_timeout: 30, confirm_seconds: {confirm}}},"
            f" retry: {{intervals: {intervals}, max_attempts: 3, expiry: 3600}},"
            ' windows: [{start: "00:00", end: "24:00"}]}\n')


async def file(env: Env, number: str, queue: str = "support", call_id: str | None = None) -> str:
    now = datetime.now(UTC)
    async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
        r = await CallbackStore(log).request(queue=queue, number=number, zones=("America/New_York",),
                                             arrival_at=now, consent=Consent(at=now, number=number), now=now,
                                             call_id=call_id)
        return r.id


async def state(env: Env, rid: str) -> str:
    async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
        return (await CallbackStore(log).get(rid)).state


async def wait_state(env: Env, rid: str, states: tuple[str, ...], timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.2)):
        if await state(env, rid) in states:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{rid} never reached {states}: {await state(env, rid)}")


async def start(env: Env) -> asyncio.subprocess.Process:
    log = env.root / "daemon.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run",
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("a"))
    sock: Path = env.state / "ivr.sock"
    for _ in range(1200):  # bounded: a second or two with a warm prompt cache, ~30 s to render a cold one
        if sock.exists():
            try:
                st = await control(sock, {"cmd": "status"})
                if st.get("callbacks") and st.get("ami") == "connected":
                    return proc
            except OSError:
                pass
        await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError(log.read_text())


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    if proc.returncode is None:
        proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


def queue_join(channel: str, queue: str, position: int = 3) -> AmiMessage:
    """QueueCallerJoin as Asterisk sends it (tests/ami/fixtures/queue_events.txt)."""
    return event("QueueCallerJoin", {"Channel": channel, "Uniqueid": "1700000100.43", "CallerIDNum": "2125550123",
                                     "Queue": queue, "Position": str(position), "Count": str(position)})


def originates_for(peer: AmiPeer, rid: str) -> list[dict[str, str]]:
    out = []
    for a in peer.actions("Originate"):
        v = a.variables()
        if v.get("CALLBACK_ID") == rid:
            out.append({"Channel": a.get("Channel") or "", "Context": a.get("Context") or "",
                        "Exten": a.get("Exten") or "", **v})
    return out


async def test_originate_carries_the_callback_and_its_answer_decides(env: Env) -> None:
    peer = AmiPeer()
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_yaml(peer, intervals="[600]"))
    proc = await start(env)
    try:
        peer.originate_results = [("Success", "4"), ("Success", "4"), ("Failure", "5")]
        ok = await file(env, "+12125550123", call_id="ivr-call-7")
        await until(lambda: len(originates_for(peer, ok)) == 1, timeout=20, step=0.05)
        # the dialplan's [ivr-callback] heard 1 and queued the customer: Asterisk's own proof
        await peer.push(queue_join("Local/+12125550123@ivr-callback-dial-00000001;1", "support"))
        declined = await file(env, "+12125550124")
        await until(lambda: len(originates_for(peer, declined)) == 1, timeout=20, step=0.05)
        # the dialplan's [ivr-callback] heard no key 1 on the second one
        await peer.push(event("UserEvent", {"UserEvent": "IvrCallbackDeclined", "CallbackID": declined}))
        busy = await file(env, "+12125550125")
        await wait_state(env, ok, ("done",))
        await wait_state(env, declined, ("retry",))
        await wait_state(env, busy, ("retry",))
    finally:
        code = await stop(proc)
        await peer.stop()
    assert code == 0
    [o] = originates_for(peer, ok)
    assert o["Channel"] == "Local/+12125550123@ivr-callback-dial" and o["Context"] == "ivr-callback"
    assert o["IVR_QUEUE"] == "support" and o["CALLBACK_ATTEMPT"]
    # the customer's number is what the dialplan presents into the queue; the original arrival goes along
    assert o["CALLBACK_NUMBER"] == "+12125550123" and o["IVR_QUEUE_CALLERID"] == "+12125550123"
    assert o["CALLBACK_ARRIVAL"].isdigit()
    # the IVR call that asked for it (issue 13): the queue_log rows of the callback join to that call
    assert o["IVR_CALL_ID"] == "ivr-call-7"
    # its place in line: behind the two callers already waiting in support (fixtures/queuestatus.txt)
    assert o["IVR_QUEUE_POSITION"] == "3"
    [cid] = [a.get("CallerID") for a in peer.actions("Originate") if a.variables().get("CALLBACK_ID") == ok]
    assert cid == '"Acme" <+15550100>'
    evs = await read_events(env.state / "ivr.db")
    started = {e.data["request_id"]: e.data for e in evs if e.type == "callback.attempt.started"}
    assert started[ok]["channel"] == "Local/+12125550123@ivr-callback-dial"
    ended = {e.data["request_id"]: e.data for e in evs if e.type == "callback.attempt.ended"}
    assert ended[ok]["outcome"] == "connected" and ended[declined]["outcome"] == "connected"
    assert ended[busy]["outcome"] == "busy" and "action_id=" in ended[busy]["detail"]
    reasons = {e.data["request_id"]: e.data["reason"] for e in evs if e.type == "callback.state"
               and e.data["to"] == "retry"}
    assert reasons[declined] == "not-confirmed" and reasons[busy] == "busy"


async def test_restart_reconciles_attempts_in_flight_through_core_show_channels(env: Env) -> None:
    peer = AmiPeer()
    peer.silent = {"Originate"}  # Asterisk is still ringing the callees when the appliance dies
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_yaml(peer, intervals="[600]"))
    proc = await start(env)
    try:
        up = await file(env, "+12125550123")
        gone = await file(env, "+12125550124", queue="billing")  # a queue the PBX does not report
        await until(lambda: len(peer.actions("Originate")) == 2, timeout=20, step=0.05)
        assert await state(env, up) == "dialing" and await state(env, gone) == "dialing"
        # pacing: the PBX says one support agent is free (tests/ami/fixtures/queuestatus.txt), and one support
        # callback is already ringing, so a second support callback waits
        paced = await file(env, "+12125550125")
        await asyncio.sleep(1.0)
        assert originates_for(peer, paced) == [] and await state(env, paced) == "requested"
        st = await control(env.state / "ivr.sock", {"cmd": "status"})
        assert st["callbacks"]["waiting"] == {paced: "pacing"} and st["callbacks"]["active"] == 2
        await stop(proc, signal.SIGKILL)
        # the first callee answered meanwhile and is in the queue; the second call is gone
        channel = "Local/+12125550123@ivr-callback-dial-00000002;1"
        peer.channels = [{"Channel": channel, "ChannelStateDesc": "Up", "Context": "ivr-callback", "Exten": "s",
                          "Uniqueid": "1700000100.42", "Application": "Queue", "ApplicationData": "support"}]
        peer.variables[(channel, "CALLBACK_ID")] = up
        peer.silent = set()
        proc = await start(env)
        await wait_state(env, up, ("done",))
        await wait_state(env, gone, ("retry",))
        await asyncio.sleep(1.0)  # several dialer passes: neither is dialled again
    finally:
        await stop(proc)
        await peer.stop()
    assert len(originates_for(peer, up)) == 1 and len(originates_for(peer, gone)) == 1
    assert peer.actions("CoreShowChannels")
    evs = await read_events(env.state / "ivr.db")
    [rec] = [e.data for e in evs if e.type == "callback.reconciled"]
    assert sorted(rec["decided"].values()) == ["connected", "interrupted"] and rec["via"] == "ami"
    ended = {e.data["request_id"]: e.data for e in evs if e.type == "callback.attempt.ended"}
    assert ended[up]["outcome"] == "connected" and ended[gone]["outcome"] == "interrupted"


async def test_served_while_the_box_was_down_the_dialplans_mark_is_the_proof(env: Env) -> None:
    """The box dies with an attempt ringing; meanwhile the customer presses 1, waits, talks to an agent and
    hangs up, so at restart no channel is left to find. The sample dialplan marked the attempt in AstDB as the
    customer entered the queue (DB(ivr_callback/<attempt>)): DBGet finds it, the request is done and the
    customer is not called again. (Without the mark this was 'gone': interrupted, and dialled again.)"""
    peer = AmiPeer()
    peer.channels = []
    peer.silent = {"Originate"}  # ringing when the box dies
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_yaml(peer, intervals="[1]").replace("max_attempts: 3", "max_attempts: 3, after_interruption: 1"))
    proc = await start(env)
    try:
        served = await file(env, "+12125550123")
        unmarked = await file(env, "+12125550124", queue="billing")
        await until(lambda: len(peer.actions("Originate")) == 2, timeout=20, step=0.05)
        await stop(proc, signal.SIGKILL)
        [orig] = originates_for(peer, served)
        peer.astdb[("ivr_callback", orig["CALLBACK_ATTEMPT"])] = "1764720000"  # [ivr-queue] set it; call over
        peer.silent = set()
        proc = await start(env)
        await wait_state(env, served, ("done",))
        await wait_state(env, unmarked, ("retry", "dialing", "done"))
        await asyncio.sleep(2.0)  # several dialer passes
    finally:
        await stop(proc)
        await peer.stop()
    assert len(originates_for(peer, served)) == 1  # never called again
    assert len(originates_for(peer, unmarked)) == 2  # nothing proves it: interrupted, dialled again
    assert [a for a in peer.actions("DBGet") if a.get("Family") == "ivr_callback"]
    [(outcome, _detail)] = await attempts_of(env, served)
    assert outcome == "connected"
    evs = await read_events(env.state / "ivr.db")
    kept = [e.data for e in evs if e.type == "callback.kept" and e.data["request_id"] == served]
    assert len(kept) == 1


async def attempts_of(env: Env, rid: str) -> list[tuple[str | None, str]]:
    async with await EventLog.open(env.state / "ivr.db", "test-site") as log:
        return [(a.outcome, a.detail) for a in await CallbackStore(log).attempts(rid)]


async def test_a_link_drop_at_press_1_is_never_read_as_kept(env: Env) -> None:
    """Issue 12, defect 1: the PBX restarts while the customer is at "press 1". No IvrCallbackDeclined can
    arrive during the outage; that silence used to be read as "pressed 1" (done, kept). Now: after the link is
    back the channel is gone and nothing proves the queue, so the attempt is interrupted and retried."""
    peer = AmiPeer()
    peer.channels = []
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_yaml(peer, confirm=20, intervals="[600]").replace("max_attempts: 3", "max_attempts: 3,"
                                                                      " after_interruption: 1"))
    proc = await start(env)
    try:
        lost = await file(env, "+12125550123")
        await until(lambda: len(originates_for(peer, lost)) == 1, timeout=20, step=0.05)
        await asyncio.sleep(0.5)  # answered, the customer hears "press 1"
        await peer.restart()  # Asterisk restarts: the call is gone with it
        await wait_state(env, lost, ("retry", "dialing"), timeout=40)
        await until(lambda: len(originates_for(peer, lost)) == 2, timeout=40, step=0.1)  # called again
        await peer.push(queue_join("Local/+12125550123@ivr-callback-dial-00000002;1", "support"))
        await wait_state(env, lost, ("done",))
    finally:
        code = await stop(proc)
        await peer.stop()
    assert code == 0
    atts = await attempts_of(env, lost)
    assert atts[0][0] == "interrupted" and "nothing proves" in atts[0][1]
    assert atts[1][0] == "connected" and "joined queue support" in atts[1][1]
    evs = await read_events(env.state / "ivr.db")
    kept = [e.data for e in evs if e.type == "callback.kept" and e.data["request_id"] == lost]
    assert len(kept) == 1 and kept[0]["attempts"] == 2  # one record, for the attempt that reached the queue
    log_text = (env.root / "daemon.log").read_text()
    assert "Traceback" not in log_text and " ERROR " not in log_text


async def test_after_a_link_drop_the_queue_itself_is_the_proof(env: Env) -> None:
    """The join happened during the outage: after reconnect CoreShowChannels shows the customer's channel in
    app_queue, so the attempt is done, without dialling again."""
    peer = AmiPeer()
    peer.channels = []
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_yaml(peer, confirm=20, intervals="[600]"))
    proc = await start(env)
    try:
        rid = await file(env, "+12125550123")
        await until(lambda: len(originates_for(peer, rid)) == 1, timeout=20, step=0.05)
        channel = "Local/+12125550123@ivr-callback-dial-00000003;1"
        peer.channels = [{"Channel": channel, "ChannelStateDesc": "Up", "Context": "ivr-callback", "Exten": "s",
                          "Uniqueid": "1700000100.44", "Application": "Queue", "ApplicationData": "support"}]
        peer.variables[(channel, "CALLBACK_ID")] = rid
        peer.drop_all()  # a network blip, not a restart: the call lives on in Asterisk
        await wait_state(env, rid, ("done",), timeout=40)
    finally:
        code = await stop(proc)
        await peer.stop()
    assert code == 0
    assert len(originates_for(peer, rid)) == 1
    [(outcome, detail)] = await attempts_of(env, rid)
    assert outcome == "connected" and "found in queue support" in detail


async def test_while_the_link_is_down_nothing_is_dialled_and_no_attempt_is_charged(env: Env) -> None:
    """Issue 12, defect 2: AMI reconnecting: the dialer pauses (shown in ivr status) instead of starting
    Originates that time out and burn attempts."""
    peer = AmiPeer()
    await peer.start()
    port = peer.port
    with env.config.open("a") as f:
        f.write(ami_yaml(peer))
    proc = await start(env)
    try:
        await peer.stop()
        sock = env.state / "ivr.sock"
        for _ in range(100):  # bounded: the daemon notices the drop at once (the socket closes)
            st = await control(sock, {"cmd": "status"})
            if "AMI link" in (st["callbacks"]["paused"] or "") and st["ami"] != "connected":
                break  # (for a moment it may say the queue figures went stale: the drop is seen there first)
            await asyncio.sleep(0.1)
        assert st["ami"] != "connected" and "AMI" in st["callbacks"]["paused"]
        rid = await file(env, "+12125550123")
        await asyncio.sleep(3.0)  # many dialer passes
        assert await attempts_of(env, rid) == [] and await state(env, rid) == "requested"
        peer.port = port
        await peer.start()
        await until(lambda: len(originates_for(peer, rid)) == 1, timeout=60, step=0.1)
    finally:
        code = await stop(proc)
        await peer.stop()
    assert code == 0
    log_text = (env.root / "daemon.log").read_text()
    assert "Traceback" not in log_text


async def test_the_callers_data_reaches_the_agent_on_the_callback(env: Env, tmp_path: Path,
                                                                  prompt_cache: Path) -> None:
    """Issue 17 item 3: a caller keys their account and PIN, then takes a callback instead of waiting; the queue
    node's ``data: [account, pin]`` is filed with the request (the PIN sealed: ``privacy:`` is on) and the
    Originate of the callback carries both as ``Variable: __IVR_VAR_<NAME>=…``, as a Redirect's Setvar would;
    the PIN is in clear nowhere in the database file or its -wal."""
    from datetime import time

    from ivr.adapters.simulator import SimulatedCall, StatedWaits
    from ivr.callbacks.desk import Desk
    from ivr.callbacks.policy import CallbackPolicy, CallingWindow
    from ivr.config import Config
    from ivr.engine.runner import run_call
    from ivr.flowset import load_flowset
    from ivr.store.eventlog import CallRecorder
    from ivr.store.privacy import Sealer
    from tests.callbacks.test_cb_data import ACCOUNT as account
    from tests.callbacks.test_cb_data import CALLER as caller
    from tests.callbacks.test_cb_data import DATA_FLOW  # data: [account, pin]: names upper-cased for Asterisk
    from tests.callbacks.test_cb_data import PIN as pin
    flows = tmp_path / "data-flows"
    flows.mkdir()
    (flows / "acct.yaml").write_text(DATA_FLOW, encoding="utf-8")
    flowset = await load_flowset([flows], Config(site_id="test-site", state_dir=tmp_path / "sim",
                                                 prompt_cache_dir=prompt_cache))
    peer = AmiPeer()
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_yaml(peer, intervals="[600]"))
        f.write(f"privacy: {{pseudonym_key_file: {env.root / 'pseudonym.key'}}}\n")
    proc = await start(env)
    db = env.state / "ivr.db"
    try:
        peer.originate_results = [("Success", "4")]
        async with await EventLog.open(db, "test-site", sealer=Sealer(b"k" * 32)) as log:
            policy = CallbackPolicy(site_zone="America/New_York", windows=(CallingWindow(time(0, 0), time(0, 0)),))
            desk = Desk(CallbackStore(log), policy, StatedWaits({"support": 600}), region="US")
            call = SimulatedCall("ivr-call-data", caller, "", [f"{account}#", f"{pin}#", "1", "1"],
                                 emit=lambda _line: None)
            outcome = await run_call(call, flowset, CallRecorder(log, call.call_id), entry="acct", callbacks=desk)
            assert outcome.kind == "callback"
            rid = str(outcome.detail).split()[-1]
        await until(lambda: len(originates_for(peer, rid)) == 1, timeout=20, step=0.05)
        await peer.push(queue_join("Local/+12125550123@ivr-callback-dial-00000001;1", "support"))
        await wait_state(env, rid, ("done",))
    finally:
        code = await stop(proc)
        await peer.stop()
    assert code == 0
    [o] = originates_for(peer, rid)
    assert o["__IVR_VAR_ACCOUNT"] == account and o["__IVR_VAR_PIN"] == pin
    assert o["IVR_CALL_ID"] == "ivr-call-data"
    [raw] = [a for a in peer.actions("Originate") if a.variables().get("CALLBACK_ID") == rid]
    assert ("Variable", f"__IVR_VAR_ACCOUNT={account}") in raw.fields  # one Variable: line each
    for p in db.parent.glob(db.name + "*"):
        if p.is_file():
            assert pin.encode() not in p.read_bytes(), f"the PIN in clear in {p.name}"
