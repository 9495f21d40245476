"""Where a queue's wait comes from: the two ``QueueWaits`` sources (ivr/callbacks/desk.py).

- ``AmiQueueWaits`` (the PBX is Asterisk, ``ami:`` configured): agent counts and callers waiting from the AMI
  ``QueueMonitor``'s snapshot; the recent queue events (QueueCallerJoin, AgentConnect, ...) from AMI fed
  through ``QueueEventWindow.observe_ami`` into the head-of-line estimator (``ewt.estimate``). Free agents
  are the members the PBX says are available. While the link is down, or up but not yet re-read, the
  figures are stale: free agents unknown and every estimate unknown, so nothing is promised on them.
- ``RecordsQueueWaits`` (no AMI): agents per queue from config; callers and handle times from the
  appliance's own event log — the queue node's ``queue.offer`` (the caller joins), its ``transfer`` event
  (the handover ended: for a bridged call, the agent's talk ended) and the call's end. Calls handed to a
  queue and still going occupy an agent or wait for one. With too few finished handovers the estimator
  answers unknown, and no callback is offered on a guess.

Both are read synchronously by the queue node and the dialer (``estimate``, ``free_agents``); their
``run()`` keeps them current in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ivr.callbacks.ewt import EwtConfig, EwtEstimate, QueueEvent, QueueEventKind, QueueEventWindow, estimate
from ivr.proto.ami import AmiEvent
from ivr.store.eventlog import parse_utc_text

log = logging.getLogger("ivr.callbacks.queuestate")

#: the AMI events ``QueueEventWindow.observe_ami`` maps (Asterisk 18+ names)
EWT_EVENTS = frozenset({"QueueCallerJoin", "AgentConnect", "QueueCallerAbandon", "QueueCallerLeave",
                        "AgentComplete"})


#: ``EwtEstimate.reason`` while the AMI link is down / up but the queue figures not yet re-read
PBX_LINK_DOWN = "pbx-link-down"
QUEUE_STATE_STALE = "queue-state-stale"


class AmiQueueWaits:
    """Wait estimates from the PBX: ``monitor`` is an ``ivr.adapters.ami.QueueMonitor`` (its ``state`` holds
    the snapshots; ``link_up``/``fresh`` say whether to trust them), ``ami`` the adapter whose live events
    feed the per-queue event windows."""

    def __init__(self, monitor: Any, ami: Any, *, cfg: EwtConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.monitor = monitor
        self.ami = ami
        self.cfg = cfg or EwtConfig()
        self.clock = clock
        self.windows: dict[str, QueueEventWindow] = {}

    def observe(self, ev: AmiEvent, now: float) -> QueueEvent | None:
        """One live AMI event into its queue's window (events of other kinds are ignored)."""
        if ev.name not in EWT_EVENTS:
            return None
        queue = ev.get("Queue") or ""
        window = self.windows.setdefault(queue, QueueEventWindow())
        out = window.observe_ami(ev, now)
        window.prune(now, self.cfg.horizon)
        return out

    async def run(self) -> None:
        """Until cancelled: every queue event from the AMI link into the windows."""
        stream = self.ami.events(EWT_EVENTS, maxsize=5000)
        try:
            while True:
                ev = await stream.get()
                if ev is not None:
                    self.observe(ev, self.clock())
        finally:
            stream.close()

    @property
    def link_up(self) -> bool:
        """The PBX link (AMI) is logged in now."""
        return bool(self.monitor.link_up)

    @property
    def fresh(self) -> bool:
        """The queue figures are current: link up and a full QueueStatus read since it came up."""
        return bool(self.monitor.fresh)

    def stale_reason(self) -> str | None:
        """Why the figures cannot be trusted now (``pbx-link-down`` / ``queue-state-stale``), else None."""
        if not self.link_up:
            return PBX_LINK_DOWN
        return None if self.fresh else QUEUE_STATE_STALE

    def estimate(self, queue: str) -> EwtEstimate:
        stale = self.stale_reason()
        if stale is not None:
            return EwtEstimate.unknown(stale)
        snap = self.monitor.state.snapshot(queue)
        if snap is None:
            return EwtEstimate.unknown("unknown-queue")
        window = self.windows.get(queue)
        events = list(window.events) if window is not None else []
        return estimate(events, position=snap.waiting + 1, agents_logged_in=snap.logged_in,
                        agents_available=snap.available, now=self.clock(), cfg=self.cfg)

    def free_agents(self, queue: str) -> int | None:
        """Available agents as the PBX says; None when unknown (no such queue, or the figures are stale)."""
        if self.stale_reason() is not None:
            return None
        snap = self.monitor.state.snapshot(queue)
        return None if snap is None else int(snap.available)

    def callers_waiting(self, queue: str) -> int | None:
        """Callers the PBX has in the queue; None when unknown (no such queue, or the figures are stale)."""
        if self.stale_reason() is not None:
            return None
        snap = self.monitor.state.snapshot(queue)
        return None if snap is None else int(snap.waiting)


@dataclass(frozen=True)
class QueueRecords:
    """What the event log says about one queue: finished handovers as events, and calls still in it."""

    events: tuple[QueueEvent, ...]
    in_queue: int


def _epoch(wall: str) -> float:
    return parse_utc_text(wall).timestamp()


#: A handover shorter than this was a REFER or Redirect (the call left our hands at once): it says nothing
#: about how long agents take.
MIN_HANDLE = 5.0


def records_to_queues(rows: Iterable[tuple[str, str | None, str, str]], now: float, horizon: float
                      ) -> dict[str, QueueRecords]:
    """Pure: event-log rows ``(wall_time, call_id, type, data)`` in commit order → per queue. A call joins at
    its ``queue.offer`` (or a queue ``transfer`` with no offer before it); it is still in the queue (waiting
    or talking) until its ``transfer`` event or its ``call.ended``; a successful handover that lasted at least
    ``MIN_HANDLE`` (a bridge: the agent talked until then) is a COMPLETE with that duration."""
    joined: dict[str, tuple[str, float]] = {}
    events: dict[str, list[QueueEvent]] = {}
    for wall, call_id, type_, data_text in rows:
        if call_id is None:
            continue
        t = _epoch(wall)
        data = json.loads(data_text) if isinstance(data_text, str) else data_text
        if type_ == "queue.offer" and data.get("queue"):
            joined.setdefault(call_id, (str(data["queue"]), t))
            events.setdefault(str(data["queue"]), []).append(QueueEvent(QueueEventKind.JOIN, t, call_id))
        elif type_ == "transfer" and data.get("kind") == "queue":
            queue = str(data.get("destination") or "")
            q, t0 = joined.pop(call_id, (queue, t))
            if data.get("ok") and t - t0 >= MIN_HANDLE and now - t <= horizon:
                events.setdefault(q, []).append(QueueEvent(QueueEventKind.COMPLETE, t, call_id, duration=t - t0))
            else:
                events.setdefault(q, [])
        elif type_ == "call.ended" and call_id in joined:
            q, _ = joined.pop(call_id)
            events.setdefault(q, []).append(QueueEvent(QueueEventKind.ABANDON, t, call_id))
    in_queue: dict[str, int] = {}
    for q, _ in joined.values():
        in_queue[q] = in_queue.get(q, 0) + 1
    names = set(events) | set(in_queue)
    return {q: QueueRecords(tuple(e for e in events.get(q, []) if now - e.t <= horizon), in_queue.get(q, 0))
            for q in names}


class RecordsQueueWaits:
    """Wait estimates without a PBX link: configured agents, the appliance's own records (see the module
    docstring). ``refresh()`` re-reads the recent event log; ``run()`` does so every ``interval`` seconds."""

    def __init__(self, agents: Mapping[str, int], db: Any, *, cfg: EwtConfig | None = None,
                 clock: Callable[[], float] = time.time, interval: float = 15.0) -> None:
        self.agents = dict(agents)
        self.db = db  # aiosqlite connection (the event log's)
        self.cfg = cfg or EwtConfig()
        self.clock = clock
        self.interval = interval
        self.queues: dict[str, QueueRecords] = {}

    #: no PBX link to lose: the appliance's own records are always as current as the event log
    link_up = True
    fresh = True

    async def refresh(self) -> None:
        now = self.clock()
        since = datetime.fromtimestamp(now - self.cfg.horizon * 2, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        async with self.db.execute(
            "SELECT wall_time, call_id, type, data FROM events WHERE type IN ('queue.offer','transfer','call.ended')"
            " AND wall_time>=? ORDER BY seq", (since,)) as cur:
            rows = await cur.fetchall()
        self.queues = records_to_queues(rows, now, self.cfg.horizon)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a busy database: keep the last picture, try again next round
                log.exception("queue records refresh failed")
            await asyncio.sleep(self.interval)

    def estimate(self, queue: str) -> EwtEstimate:
        agents = self.agents.get(queue)
        if agents is None:
            return EwtEstimate.unknown("unknown-queue")
        rec = self.queues.get(queue, QueueRecords((), 0))
        free = max(0, agents - rec.in_queue)
        waiting = max(0, rec.in_queue - agents)
        return estimate(list(rec.events), position=waiting + 1, agents_logged_in=agents, agents_available=free,
                        now=self.clock(), cfg=self.cfg)

    def free_agents(self, queue: str) -> int | None:
        agents = self.agents.get(queue)
        if agents is None:
            return None
        return max(0, agents - self.queues.get(queue, QueueRecords((), 0)).in_queue)

    def callers_waiting(self, queue: str) -> int | None:
        """Calls handed to the queue and still going, beyond the agents (they wait for one)."""
        agents = self.agents.get(queue)
        if agents is None:
            return None
        return max(0, self.queues.get(queue, QueueRecords((), 0)).in_queue - agents)
