"""`ivr run` with an `ami:` section: it logs in to the (test) Asterisk, keeps the queue snapshot, shows it
in `ivr status`, and writes the live queue events to the event log in queue_log's shape."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from ivr.daemon import control
from ivr.proto.ami import AmiEvent
from ivr.store.eventlog import read_events
from tests.ami.conftest import until
from tests.ami.peer import AmiPeer, transcript
from tests.conftest import Env


def ami_section(peer: AmiPeer) -> str:
    return (f"ami: {{host: 127.0.0.1, port: {peer.port}, username: ivr, secret: s3cret, ping_interval: 30,"
            " action_timeout: 2, queue_refresh_seconds: 60}\n")


async def test_daemon_keeps_queues_and_logs_queue_events(env: Env) -> None:
    peer = AmiPeer()
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_section(peer))
    log = env.root / "daemon.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run",
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("w"),
    )
    sock: Path = env.state / "ivr.sock"
    try:
        await until(lambda: sock.exists() and peer.logins >= 1, timeout=60, step=0.1)
        assert [a.get("AuthType") for a in peer.actions("Challenge")] == ["MD5"]  # the secret never sent

        async def status() -> dict:
            return await control(sock, {"cmd": "status"})

        for _ in range(100):  # bounded: the first QueueStatus snapshot arrives after login
            st = await status()
            if st["ami"] == "connected" and "support" in st["queues"]:
                break
            await asyncio.sleep(0.1)
        assert st["queues"]["support"]["callers"] == 2 and st["queues"]["support"]["logged_in"] == 3

        live = [m for m in transcript("queue_events.txt", "events") if isinstance(m, AmiEvent)]
        await peer.push(*live)
        db = env.state / "ivr.db"
        for _ in range(100):
            logged = [e for e in await read_events(db) if e.type == "queue.log"]
            if len(logged) >= 6:
                break
            await asyncio.sleep(0.1)
        verbs = [e.data["event"] for e in logged]
        assert verbs[0] == "ENTERQUEUE" and "CONNECT" in verbs and "EXITWITHKEY" in verbs, verbs
        assert all(e.data["queuename"] == "support" for e in logged)
        st = await status()
        assert st["queues"]["support"]["callers"] == 0

        # Asterisk restarts: the daemon logs in again and refreshes its snapshot.
        await peer.restart()
        await until(lambda: peer.logins >= 2, timeout=20, step=0.1)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
        await peer.stop()
    assert proc.returncode == 0, log.read_text()


async def test_ivr_kpi_reads_the_queue_figures_asterisk_reported(env: Env) -> None:
    """Issue 13: the PBX's queue events, logged by the daemon in queue_log's shape, are what `ivr kpi` counts.
    The transcript (tests/ami/fixtures/queue_events.txt, times in November 2023) worked by hand:
    .17 answered after 380 s and talked 95 s; .21 abandoned after 60 s; .30 entered and left by key after 100 s.
    Asterisk's own lines for it are tests/ami/fixtures/queue_log.txt."""
    peer = AmiPeer()
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_section(peer))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run",
        stdout=asyncio.subprocess.DEVNULL, stderr=(env.root / "daemon.log").open("w"))
    try:
        await until(lambda: peer.logins >= 1, timeout=60, step=0.1)
        await asyncio.sleep(0.5)  # the first QueueStatus snapshot
        await peer.push(*[m for m in transcript("queue_events.txt", "events") if isinstance(m, AmiEvent)])
        for _ in range(100):  # bounded: the daemon commits each queue_log line as it maps it
            verbs = [e.data["event"] for e in await read_events(env.state / "ivr.db") if e.type == "queue.log"]
            if "EXITWITHKEY" in verbs:
                break
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        await peer.stop()
    r = env.ivr("kpi", "--since", "2023-11-01", "--until", "2023-12-01", "--json")
    assert r.code == 0, r.err
    t = json.loads(r.out)["totals"]
    assert (t["answered"]["value"], t["abandoned"]["value"], t["exited"]["value"]) == (1, 1, 1)
    assert (t["asa"]["value"], t["asa"]["n"]) == (380, 1)  # the one answered call's hold time
    assert t["longest_queue_wait"]["value"] == 380  # of 380, 60 and 100
    assert t["average_talk_time"]["value"] == 95
    # service level, answered within 20 s / (answered + abandoned after 20 s): 0 / (1 + 1)
    assert (t["service_level"]["value"], t["service_level"]["n"]) == (0.0, 2)
