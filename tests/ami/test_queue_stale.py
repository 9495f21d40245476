"""Issue #12, defect 2 (queue-state half) and the README's queue view: when the PBX link drops, the queue
figures go stale at once — no free agents, no estimate, no callback promised on them, `ivr status` says so —
and are live again only after a fresh QueueStatus on the new session. `ivr status` lists each waiting
caller's position and wait. Played with the AMI test peer over TCP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from ivr.adapters.ami import AmiAdapter, QueueMonitor
from ivr.callbacks.policy import LEGAL_DEFAULT, OfferRules, decide_offer
from ivr.callbacks.queuestate import AmiQueueWaits
from ivr.config import load_config
from ivr.daemon import Daemon
from tests.ami.conftest import until
from tests.ami.peer import AmiPeer
from tests.ami.test_daemon_ami import ami_section
from tests.conftest import Env


@pytest.fixture
async def monitor(ami: AmiAdapter) -> AsyncIterator[QueueMonitor]:
    mon = QueueMonitor(ami, refresh_interval=60.0)
    runner = asyncio.create_task(mon.run())
    try:
        yield mon
    finally:
        runner.cancel()
        await asyncio.wait({runner}, timeout=2)


async def test_queue_figures_go_stale_when_the_link_drops_and_live_after_a_fresh_read(
        ami: AmiAdapter, peer: AmiPeer, monitor: QueueMonitor) -> None:
    waits = AmiQueueWaits(monitor, ami)
    await until(lambda: monitor.refreshes == 1)
    # sales: one agent free, nobody waiting -> a known estimate; support: Alice free
    assert waits.estimate("sales").known and waits.free_agents("support") == 1

    await peer.stop()  # Asterisk goes away
    await until(lambda: not ami.connected)
    # the last figures are trusted by no one: no free agent to pace by, no wait to promise a callback on
    assert waits.free_agents("support") is None and waits.free_agents("sales") is None
    est = waits.estimate("sales")
    assert not est.known and est.reason == "pbx-link-down"
    now = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)
    assert decide_offer(est, now, ("UTC",), OfferRules(threshold=0), (LEGAL_DEFAULT,)).reason == "ewt-unknown"
    assert not monitor.fresh and not waits.link_up and not waits.fresh
    snap = monitor.state.snapshot("support")  # kept for show, flagged
    assert snap is not None and snap.stale and snap.stale_since is not None and snap.available == 1
    assert monitor.stale_since == snap.stale_since

    await peer.start()  # back on the same port: login, then a fresh QueueStatus
    await until(lambda: monitor.refreshes == 2, timeout=10)
    assert monitor.fresh and monitor.stale_since is None
    snap = monitor.state.snapshot("support")
    assert snap is not None and not snap.stale
    assert waits.estimate("sales").known and waits.free_agents("support") == 1


async def test_logged_in_but_not_yet_reread_is_still_stale(ami: AmiAdapter, peer: AmiPeer,
                                                            monitor: QueueMonitor) -> None:
    waits = AmiQueueWaits(monitor, ami)
    await until(lambda: monitor.refreshes == 1)
    peer.silent.add("QueueStatus")  # the new session answers everything but the queue read
    peer.drop_all()
    await until(lambda: ami.logins >= 2 and ami.connected)
    assert waits.estimate("sales").reason == "queue-state-stale" and waits.free_agents("sales") is None
    assert waits.link_up and not waits.fresh
    peer.silent.discard("QueueStatus")
    await until(lambda: monitor.refreshes == 2, timeout=10)  # the failed read is retried
    assert waits.fresh and waits.free_agents("sales") == 1


async def test_status_shows_staleness_link_state_and_each_callers_position_and_wait(env: Env) -> None:
    peer = AmiPeer()
    await peer.start()
    with env.config.open("a") as f:
        f.write(ami_section(peer))
    daemon = Daemon(load_config(str(env.config)), with_sip=False)
    await daemon.start()
    try:
        await until(lambda: daemon.queues.refreshes >= 1, timeout=20)
        st = json.loads(json.dumps(daemon.status()))  # what the control socket sends
        assert st["ami"] == "connected"
        support = st["queues"]["support"]
        assert support["stale"] is False and support["stale_since"] is None
        # the queuestatus transcript: two callers, waiting 377 s and 42 s when it was read
        waiting = support["waiting"]
        assert [(c["position"], c["caller"]) for c in waiting] == [(1, "8012317154"), (2, "2125550100")]
        assert 377 <= waiting[0]["wait"] < 377 + 20 and 42 <= waiting[1]["wait"] < 42 + 20
        assert waiting[0]["name"] == "JOHN Q PUBLIC"

        await peer.stop()
        await until(lambda: not daemon.ami.connected, timeout=10)
        st = json.loads(json.dumps(daemon.status()))
        assert st["ami"] == "down"
        for q in st["queues"].values():
            assert q["stale"] is True and q["stale_since"] is not None
        assert st["queues"]["support"]["available"] == 1  # the last figure, shown as stale

        await peer.start()
        await until(lambda: daemon.queues.refreshes >= 2, timeout=20)
        st = daemon.status()
        assert st["ami"] == "connected" and st["queues"]["support"]["stale"] is False
    finally:
        await daemon.shutdown()
        await peer.stop()
