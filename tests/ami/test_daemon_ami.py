"""`ivr run` with an `ami:` section: it logs in to the (test) Asterisk, keeps the queue snapshot, shows it
in `ivr status`, and writes the live queue events to the event log in queue_log's shape."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ivr.daemon import control
from ivr.proto.ami import AmiEvent
from ivr.store.eventlog import read_events
from tests.ami.conftest import until
from tests.ami.peer import AmiPeer, transcript
from tests.conftest import Env


async def test_daemon_keeps_queues_and_logs_queue_events(env: Env) -> None:
    peer = AmiPeer()
    await peer.start()
    with env.config.open("a") as f:
        f.write(f"ami: {{host: 127.0.0.1, port: {peer.port}, username: ivr, secret: s3cret, ping_interval: 30,"
                " action_timeout: 2, queue_refresh_seconds: 60}\n")
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
