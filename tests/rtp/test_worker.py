"""The media worker process (ivr.rtp.worker) driven through its daemon-side engine (ivr.rtp.remote), over real
UDP on loopback: prompts, keys, the caller's audio, a bridge's audio, cancel, close, and the worker's death.

Every wait is bounded; nothing here asserts timing (figures: bench/load.py, bench/README.md "Both cores").
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.proto.dtmf import telephone_event_frames
from ivr.rtp import control
from ivr.rtp.media import PCM_SILENCE
from ivr.rtp.packet import RtpSender
from ivr.rtp.remote import START_TIMEOUT, RemoteMediaEngine, RemoteRtpSession
from ivr.rtp.session import MediaError, PortsExhaustedError, SessionClosedError
from ivr.rtp.worker import PromptFrames
from tests.rtp.test_session import ULAW_SILENCE, audio_packets, dtmf_ulaw, frames_of, prompt
from tests.rtp.udp_peer import Peer, free_port_range, open_peer, wait_until

TE_PT = 101
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def worker() -> AsyncIterator[RemoteMediaEngine]:
    base = free_port_range(16)
    eng = RemoteMediaEngine("127.0.0.1", base, base + 15, rtcp_interval=0.5)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


@pytest.fixture
async def two_workers() -> AsyncIterator[RemoteMediaEngine]:
    base = free_port_range(16)
    eng = RemoteMediaEngine("127.0.0.1", base, base + 15, rtcp_interval=0.5, workers=2)
    await eng.start()
    try:
        await both_up(eng)
        yield eng
    finally:
        await eng.stop()


async def both_up(engine: RemoteMediaEngine) -> list[int]:
    """Both workers' pids, once both said READY (the first call waits only for the first)."""
    await wait_until(lambda: all(engine.stats["worker_pids"]), timeout=START_TIMEOUT, what="both workers' READY")
    pids: list[int] = engine.stats["worker_pids"]
    return pids


async def session_to(engine: RemoteMediaEngine, peer: Peer, *, te: int | None = None,
                     beside: RemoteRtpSession | None = None) -> RemoteRtpSession:
    session = await engine.open_session(call_id="test", beside=beside)
    session.configure(remote=peer.addr, payload_type=0, telephone_event_pt=te)
    return session


def heard(peer: Peer) -> list[int]:
    """The first byte of each frame the peer got that is not comfort silence."""
    return [p.payload[0] for p in peer.packets() if p.payload != ULAW_SILENCE]


# -- the wire format (pure) -----------------------------------------------------------------------


def test_records_round_trip_and_split_into_bounded_messages() -> None:
    big = bytes(range(256)) * 200  # 51,200 bytes: one PLAY chunk
    records = [("play", 1, 7, 400, big), ("dtmf", 2, "start", "5", "rfc4733"), ("more", 1, 7, big)]
    messages = control.pack(records)
    assert all(len(m) <= control.MAX_MESSAGE for m in messages)
    assert len(messages) == 2  # two chunks do not fit one message
    assert [r for m in messages for r in control.unpack(m)] == records


@pytest.mark.parametrize("garbage", [b"\x00\x00\x00\x09abc", b"\x00\x00", b"\x00\x00\x00\x03abc",
                                     control.pack([(1, 2)])[0]])
def test_a_message_that_is_not_ours_is_a_control_error(garbage: bytes) -> None:
    with pytest.raises(control.ControlError):
        control.unpack(garbage)


def test_a_prompt_in_chunks_has_its_length_from_the_start() -> None:
    step = control.PLAY_CHUNK_FRAMES
    frames = [bytes([k % 250]) * 160 for k in range(step + 5)]
    blob = PromptFrames(len(frames), b"".join(frames[:step]), b"\xff" * 160)
    assert len(blob) == step + 5
    assert blob[step - 1] == frames[step - 1]
    assert blob[step] == b"\xff" * 160  # not here yet: silence, not an early end
    blob.extend(b"".join(frames[step:]))
    assert [blob[k] for k in range(len(blob))] == frames
    assert list(blob) == frames


# -- the config ---------------------------------------------------------------------------------


def test_media_workers_is_a_count_of_one_or_more(tmp_path: Path) -> None:
    from ivr.config import load_config
    from ivr.errors import ConfigError

    path = tmp_path / "ivr.yaml"
    path.write_text("sip:\n  listen: 127.0.0.1:5060\n", encoding="utf-8")
    assert load_config(str(path)).sip.media_workers == 1
    path.write_text("sip:\n  media_workers: 2\n", encoding="utf-8")
    assert load_config(str(path)).sip.media_workers == 2
    for bad, why in (("0", "0 is less than the minimum of 1"), ('"x"', "expected integer, got str 'x'"),
                     ("1.5", "expected integer")):
        path.write_text(f"sip:\n  media_workers: {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_config(str(path))
        assert f"{path}:2:18: sip/media_workers: {why}" in str(err.value), str(err.value)


# -- media through the worker --------------------------------------------------------------------


async def test_prompts_leave_from_the_worker_in_order_and_play_returns_after_the_last(
        worker: RemoteMediaEngine, peer: Peer) -> None:
    session = await session_to(worker, peer)
    assert worker.pid is not None and worker.pid != os.getpid()
    await wait_until(lambda: len(peer.received) >= 3, what="comfort silence from the worker")
    await session.play(prompt(0x10, 10))
    await session.play(prompt(0x40, 7))
    await wait_until(lambda: len(peer.received) >= 5, what="more RTP")
    payloads = [p.payload for p in peer.packets()]
    ours = [p[0] for p in payloads if p != ULAW_SILENCE]
    assert ours == [0x10 + k for k in range(10)] + [0x40 + k for k in range(7)]
    marked = [p.payload[0] for p in peer.packets() if p.marker]
    assert 0x10 in marked and 0x40 in marked  # each prompt starts a talkspurt
    await session.close()
    assert session.stats["sent"] >= 17 and session.closed
    with pytest.raises(SessionClosedError):
        await session.play(prompt(0x60, 2))


async def test_a_prompt_longer_than_one_message_is_played_whole(worker: RemoteMediaEngine, peer: Peer) -> None:
    session = await session_to(worker, peer)
    frames = [bytes([0x01 + k % 0x7D]) * 160 for k in range(control.PLAY_CHUNK_FRAMES + 30)]
    played = asyncio.ensure_future(session.play(frames))
    # the first chunk and the second are both in the worker long before the first has played out
    await wait_until(lambda: sum(1 for p in peer.packets() if p.payload != ULAW_SILENCE) >= 5, what="first frames")
    played.cancel()
    with pytest.raises(asyncio.CancelledError):
        await played
    sent = sum(1 for p in peer.packets() if p.payload != ULAW_SILENCE)
    await asyncio.sleep(0.2)
    assert sum(1 for p in peer.packets() if p.payload != ULAW_SILENCE) <= sent + 2, "cancel did not stop the prompt"
    assert peer.packets()[-1].payload == ULAW_SILENCE  # comfort silence goes on
    await session.close()


async def test_keys_and_the_callers_audio_reach_the_call(worker: RemoteMediaEngine, peer: Peer) -> None:
    session = await session_to(worker, peer, te=TE_PT)
    dtmf: list[tuple[str, str, str]] = []
    audio: list[bytes] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    session.on_audio = audio.append
    assert session.last_received is None
    sender = RtpSender(ssrc=0x1234, payload_type=0, sequence_number=100, timestamp=1000)
    datagrams = audio_packets(sender, [ULAW_SILENCE] * 10)
    event_ts = sender.timestamp
    for ev in telephone_event_frames("7", 800, end_repeats=3):
        datagrams.append(sender.send_at(ev.payload, event_ts, marker=ev.marker, payload_type=TE_PT).serialize())
    sender.skip(960)
    datagrams += audio_packets(sender, [ULAW_SILENCE] * 15)
    await peer.send_paced(datagrams, ("127.0.0.1", session.local_port), interval=0.01)
    await wait_until(lambda: len(dtmf) >= 2, what="the key from the worker")
    assert dtmf == [("start", "7", "rfc4733"), ("end", "7", "rfc4733")]
    await wait_until(lambda: len(audio) >= 10, what="decoded audio from the worker")
    assert all(frame == PCM_SILENCE for frame in audio)
    await wait_until(lambda: session.last_received is not None, what="when the caller was last heard")
    heard = session.last_received
    assert heard is not None and abs(asyncio.get_running_loop().time() - heard) < 5.0
    session.on_audio = None
    count = len(audio)
    await peer.send_paced(audio_packets(sender, [ULAW_SILENCE] * 10), ("127.0.0.1", session.local_port))
    await asyncio.sleep(0.1)
    assert len(audio) == count  # no listener: the worker stops sending the audio
    await session.close()


async def test_in_band_keys_are_heard_in_the_worker(worker: RemoteMediaEngine, peer: Peer) -> None:
    session = await session_to(worker, peer)  # no telephone-event: the in-band detector listens
    dtmf: list[tuple[str, str, str]] = []
    session.on_dtmf = lambda kind, digit, source: dtmf.append((kind, digit, source))
    sender = RtpSender(ssrc=0x77, payload_type=0, sequence_number=100, timestamp=5000)
    tone = frames_of(dtmf_ulaw((852.0, 1477.0), 100))  # "9"
    datagrams = audio_packets(sender, [ULAW_SILENCE] * 5 + tone + [ULAW_SILENCE] * 10)
    await peer.send_paced(datagrams, ("127.0.0.1", session.local_port))
    await wait_until(lambda: ("end", "9", "inband") in dtmf, what="the in-band key")
    await session.close()


async def bridge_relays_the_callers_voice(a: RemoteRtpSession, b: RemoteRtpSession, caller: Peer,
                                          agent: Peer) -> None:
    """Bridge caller session ``a`` with agent session ``b`` (A-law agent, µ-law caller): the caller's speech
    reaches the agent through the worker's relay."""
    from ivr.rtp.bridge import MediaBridge

    b.configure(remote=agent.addr, payload_type=8, telephone_event_pt=None)
    bridge = MediaBridge(a, b, digit_to_a=lambda d: None, digit_to_b=lambda d: None)
    bridge.start()
    speech = [bytes([0x20 + k]) * 160 for k in range(20)]  # µ-law, not silence
    sender = RtpSender(ssrc=0x55, payload_type=0, sequence_number=10, timestamp=0)
    await caller.send_paced(audio_packets(sender, speech), ("127.0.0.1", a.local_port))
    await wait_until(lambda: sum(1 for p in agent.packets() if p.payload != b"\xd5" * 160) >= 10,
                     what="the caller's voice at the agent")
    await bridge.stop()
    assert bridge.stats["to_b"] >= 10


async def test_a_bridge_relays_audio_inside_the_worker(worker: RemoteMediaEngine) -> None:
    caller, agent = await open_peer(), await open_peer()
    try:
        a = await session_to(worker, caller)
        b = await worker.open_session(call_id="agent")
        await bridge_relays_the_callers_voice(a, b, caller, agent)
        assert all(p.payload_type == 8 for p in agent.packets())
        await a.close()
        await b.close()
    finally:
        caller.close()
        agent.close()


async def test_closing_frees_the_port_pair_for_the_next_call() -> None:
    base = free_port_range(4)
    eng = RemoteMediaEngine("127.0.0.1", base, base + 3)  # room for two pairs
    await eng.start()
    try:
        first, second = await eng.open_session(), await eng.open_session()
        with pytest.raises(PortsExhaustedError):
            await eng.open_session()
        port = first.local_port
        await first.close()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))  # the worker closed it before close() returned
        probe.close()
        third = await eng.open_session()
        assert third.local_port == port
        assert eng.stats["sessions"] == 2
        await second.close()
        await third.close()
    finally:
        await eng.stop()


async def test_the_worker_runs_its_tick_at_a_higher_priority_than_the_daemon(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Under load the scheduler should run the media's 20 ms tick first: the worker asks for ``priority`` nice
    levels above ours; where it may not (no root, CAP_SYS_NICE or RLIMIT_NICE) it stays and says at which."""
    base = free_port_range(2)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    eng = RemoteMediaEngine("127.0.0.1", base, base + 1, priority=4)
    caplog.set_level(logging.INFO)  # the worker logs at the daemon's level
    await eng.start()
    try:
        session = await eng.open_session()  # waits for the worker's READY
        assert eng.pid is not None
        theirs = os.getpriority(os.PRIO_PROCESS, eng.pid)
        await session.close()
    finally:
        await eng.stop()
    said = capfd.readouterr().err  # the worker's log lines go to the daemon's stderr
    soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    if os.geteuid() == 0 or soft == resource.RLIM_INFINITY or ours - 4 >= 20 - soft:
        assert theirs == max(-20, ours - 4)
        assert f"media worker at nice {theirs}" in said, said
    else:
        assert theirs == ours
        assert f"media worker stays at nice {ours}" in said, said


async def test_a_worker_that_dies_ends_its_calls_media_and_the_next_call_gets_a_new_one(
        worker: RemoteMediaEngine, peer: Peer, caplog: pytest.LogCaptureFixture) -> None:
    session = await session_to(worker, peer)
    playing = asyncio.ensure_future(session.play(prompt(0x10, 200)))
    await wait_until(lambda: any(p.payload[0] == 0x10 for p in peer.packets()), what="the prompt started")
    old = worker.pid
    assert old is not None
    with caplog.at_level(logging.ERROR, logger="ivr.rtp.remote"):
        os.kill(old, signal.SIGKILL)
        with pytest.raises(SessionClosedError):
            async with asyncio.timeout(5):
                await playing
    assert [r for r in caplog.records if r.levelno >= logging.ERROR and "media worker" in r.getMessage()]
    assert session.closed
    again = await session_to(worker, peer)  # waits for the new worker
    assert worker.pid not in (None, old) and worker.restarts == 1
    peer.received.clear()
    await again.play(prompt(0x50, 3))
    assert [p.payload[0] for p in peer.packets() if p.payload != ULAW_SILENCE] == [0x50, 0x51, 0x52]
    await again.close()
    await session.close()  # closing a session of the dead worker is quiet


# -- more than one worker (sip.media_workers) ------------------------------------------------------


async def test_sessions_are_spread_over_the_workers_and_each_plays_its_prompt(
        two_workers: RemoteMediaEngine) -> None:
    pids = await both_up(two_workers)
    assert len(set(pids)) == 2 and os.getpid() not in pids
    peers = [await open_peer() for _ in range(4)]
    try:
        sessions = [await session_to(two_workers, p) for p in peers]
        assert Counter(s.worker_pid for s in sessions) == {pids[0]: 2, pids[1]: 2}  # the fewest calls first
        stats = two_workers.stats
        assert stats["sessions"] == 4 and stats["worker_pid"] == pids[0] == two_workers.pid
        await asyncio.gather(*(s.play(prompt(0x10 + 0x20 * k, 8)) for k, s in enumerate(sessions)))
        for k, p in enumerate(peers):
            await wait_until(lambda p=p: len(heard(p)) >= 8, what=f"peer {k}'s prompt")
            assert heard(p) == [0x10 + 0x20 * k + n for n in range(8)]
        await wait_until(lambda: two_workers.stats["packets_sent"] >= 32, what="both workers' statistics")
        assert two_workers.lateness.count > 0
        for s in sessions:
            await s.close()
        assert two_workers.stats["sessions"] == 0
    finally:
        for p in peers:
            p.close()


async def test_a_session_opened_beside_another_shares_its_worker_and_their_bridge_relays_audio(
        two_workers: RemoteMediaEngine) -> None:
    caller, agent, other = await open_peer(), await open_peer(), await open_peer()
    try:
        a = await session_to(two_workers, caller)
        b = await two_workers.open_session(call_id="agent", beside=a)  # the other worker has fewer calls
        assert b.worker_pid == a.worker_pid
        c = await session_to(two_workers, other)
        assert c.worker_pid != a.worker_pid
        with pytest.raises(MediaError, match="inside one worker"):
            a.relay_audio(c)
        await bridge_relays_the_callers_voice(a, b, caller, agent)
        for s in (a, b, c):
            await s.close()
        with pytest.raises(SessionClosedError):  # a caller whose media is gone cannot be bridged
            await two_workers.open_session(call_id="agent", beside=a)
    finally:
        for p in (caller, agent, other):
            p.close()


async def test_a_dead_worker_loses_only_its_calls_and_is_replaced(
        two_workers: RemoteMediaEngine, caplog: pytest.LogCaptureFixture) -> None:
    pids = await both_up(two_workers)
    peers = [await open_peer() for _ in range(4)]
    try:
        sessions = [await session_to(two_workers, p) for p in peers]
        victim = sessions[0].worker_pid
        assert victim is not None
        doomed = [k for k, s in enumerate(sessions) if s.worker_pid == victim]
        spared = [k for k in range(4) if k not in doomed]
        assert len(doomed) == len(spared) == 2
        playing = [asyncio.ensure_future(s.play(prompt(0x10, 100))) for s in sessions]  # 2 s each
        await wait_until(lambda: all(heard(p) for p in peers), what="the prompts started")
        with caplog.at_level(logging.ERROR, logger="ivr.rtp.remote"):
            os.kill(victim, signal.SIGKILL)
            for k in doomed:
                with pytest.raises(SessionClosedError):
                    async with asyncio.timeout(5):
                        await playing[k]
                assert sessions[k].closed
            async with asyncio.timeout(10):
                await asyncio.gather(*(playing[k] for k in spared))  # the other worker's prompts play to the end
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [f"media worker pid={victim} exited: 2 calls lost their media; starting a new one"], errors
        for k in spared:
            await wait_until(lambda k=k: len(heard(peers[k])) >= 100, what=f"the end of peer {k}'s prompt")
            assert not sessions[k].closed and heard(peers[k]) == [0x10 + n for n in range(100)]
        await wait_until(lambda: two_workers.restarts == 1 and all(two_workers.stats["worker_pids"]),
                         timeout=START_TIMEOUT, what="the new worker")
        now = two_workers.stats["worker_pids"]
        survivor = next(p for p in pids if p != victim)
        assert survivor in now and victim not in now and two_workers.stats["worker_restarts"] == 1
        fresh = await open_peer()
        peers.append(fresh)
        again = await session_to(two_workers, fresh)  # the new worker has the fewest calls
        assert again.worker_pid not in (victim, survivor)
        await again.play(prompt(0x50, 3))
        await wait_until(lambda: len(heard(fresh)) >= 3, what="the new worker's prompt")
        assert heard(fresh) == [0x50, 0x51, 0x52]
        for s in [*sessions, again]:
            await s.close()  # the dead worker's sessions too: quietly
    finally:
        for p in peers:
            p.close()


def test_the_worker_exits_when_the_daemon_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the daemon (a crash, the watchdog) must not leave its worker holding the RTP ports."""
    script = tmp_path / "daemon.py"
    base = free_port_range(4)
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from ivr.rtp.remote import RemoteMediaEngine

        async def main():
            eng = RemoteMediaEngine("127.0.0.1", {base}, {base + 3})
            await eng.start()
            await eng.open_session()
            print(eng.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """))
    daemon = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        pid = int(daemon.stdout.readline())
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break  # exited, waiting for init to reap it
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the media worker outlived its daemon")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
