"""A small fleet's week of calls, as each box's ``ivr events --json`` would give them, for the center's tests.

Seeded and deterministic. Calls arrive on a working-day profile in each site's zone; each one goes through
the IVR (``call.started``, ``node.entered``, ``call.ended`` with its path) and ends one way or another: the
flow says goodbye (self-served, some after a CSAT/NPS survey), the caller hangs up in a menu, the call is
handed to the PBX queue (a ``transfer`` to a queue, then Asterisk's queue_log rows as ``queue.log`` events
naming the IVR call: ENTERQUEUE, then CONNECT + COMPLETECALLER or ABANDON), or the caller takes a callback
(``queue.offer`` / ``callback.offer.accepted`` / ``callback.confirmed``, the request's attempts, state and
``callback.kept`` record with the quoted wait).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HOURLY = [0, 0, 0, 0, 0, 0, 1, 3, 7, 10, 11, 10, 8, 8, 10, 11, 9, 7, 5, 3, 2, 1, 0, 0]  # working-day profile


@dataclass(frozen=True)
class SiteSpec:
    site_id: str
    name: str
    group: str
    zone: str
    calls_per_day: int
    mean_wait_s: float  # how long its queue makes callers wait
    patience_s: float  # how long its callers wait before hanging up
    seed: int


FLEET = (
    SiteSpec("nyc-1", "New York", "east", "America/New_York", 240, 18.0, 70.0, 1),
    SiteSpec("bos-1", "Boston", "east", "America/New_York", 110, 35.0, 60.0, 2),
    SiteSpec("den-1", "Denver", "west", "America/Denver", 160, 10.0, 90.0, 3),
)


def uuid7_at(t: datetime, rnd: random.Random) -> uuid.UUID:
    """A UUIDv7 of instant ``t`` (RFC 9562: 48 bits of unix ms, version 7, variant 10, random bits)."""
    ms = int(t.timestamp() * 1000)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rnd.getrandbits(12) << 64) | (0b10 << 62)
                     | rnd.getrandbits(62))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Box:
    def __init__(self, spec: SiteSpec) -> None:
        self.spec = spec
        self.rnd = random.Random(spec.seed)
        self.raw: list[tuple[datetime, int, str | None, str, dict[str, Any]]] = []
        self.order = 0
        self.requests = 0

    def add(self, at: datetime, call_id: str | None, type_: str, /, **data: Any) -> None:
        self.order += 1
        self.raw.append((at, self.order, call_id, type_, data))

    def queue_row(self, at: datetime, callid: str, queue: str, verb: str, *data: str, ivr_call_id: str | None = None,
                  agent: str = "NONE") -> None:
        row: dict[str, Any] = {"time": at.timestamp(), "callid": callid, "queuename": queue, "agent": agent,
                               "event": verb}
        for i in range(4):
            row[f"data{i + 1}"] = data[i] if i < len(data) else ""
        row["data5"] = ""
        if ivr_call_id:
            row["ivr_call_id"] = ivr_call_id
        self.add(at, None, "queue.log", **row)

    def call(self, n: int, start: datetime) -> None:
        r, s = self.rnd, self.spec
        cid = f"{s.site_id}-c{n}"
        caller = f"+1212555{r.randrange(0, 400):04d}"
        self.add(start, cid, "call.started", channel="sip", caller=caller, dialed="+15550100", flow="main",
                 flow_version="v7", zone=s.zone)
        path = ["main.greet", "main.menu"]
        at = start + timedelta(seconds=1)
        for node in path:
            self.add(at, cid, "node.entered", node=node, kind="menu")
            at += timedelta(seconds=r.uniform(4, 9))
        roll = r.random()
        if roll < 0.18:  # self-served: opening hours, balance; some answer the survey on the way out
            route = r.choice([["main.hours"], ["main.balance"], ["billing.account", "billing.paid"]])
            for node in (*route, "main.goodbye"):
                path.append(node)
                self.add(at, cid, "node.entered", node=node, kind="play")
                at += timedelta(seconds=r.uniform(8, 25))
            self._survey(cid, path, at)
            self.add(at + timedelta(seconds=30), cid, "call.ended", outcome="hangup", detail="goodbye", path=path)
        elif roll < 0.30:  # the caller hangs up in the IVR, in the menu or in billing's account number
            if r.random() < 0.5:
                path.append("billing.account")
                self.add(at, cid, "node.entered", node="billing.account", kind="collect")
                at += timedelta(seconds=r.uniform(5, 20))
            self.add(at, cid, "call.ended", outcome="caller_hangup", detail=path[-1], path=path)
        elif roll < 0.37:  # offered a callback and took it
            self._callback(cid, path, at)
        else:  # handed to the queue
            queue = "support" if r.random() < 0.7 else "sales"
            node = f"main.{queue}"
            path.append(node)
            self.add(at, cid, "node.entered", node=node, kind="queue")
            self.add(at + timedelta(seconds=1), cid, "transfer", node=node, kind="queue", destination=queue, ok=True)
            self.add(at + timedelta(seconds=2), cid, "call.ended", outcome="queued", detail=queue, path=path)
            self._queue(cid, queue, at + timedelta(seconds=2))

    def _survey(self, cid: str, path: list[str], at: datetime) -> None:
        r = self.rnd
        if r.random() < 0.6:
            csat = r.choices([1, 2, 3, 4, 5], [1, 1, 2, 4, 5])[0]
            self.add(at, cid, "survey.answer", node="survey.csat", scale="csat", var="csat", value=csat)
            nps = r.choices(range(11), [1, 1, 1, 1, 1, 2, 2, 4, 6, 6, 5])[0]
            self.add(at + timedelta(seconds=5), cid, "survey.answer", node="survey.nps", scale="nps", var="nps",
                     value=nps)

    def _queue(self, cid: str, queue: str, at: datetime) -> None:
        r, s = self.rnd, self.spec
        pbx = f"{s.site_id}-pbx-{cid}"
        self.queue_row(at, pbx, queue, "ENTERQUEUE", "", "", "1", ivr_call_id=cid)
        wait = r.expovariate(1 / s.mean_wait_s)
        patience = r.expovariate(1 / s.patience_s)
        if patience < wait:
            w = max(1, round(patience))
            self.queue_row(at + timedelta(seconds=w), pbx, queue, "ABANDON", "1", "1", str(w))
            return
        w = max(1, round(wait))
        talk = round(r.uniform(90, 600))
        agent = f"PJSIP/agent{r.randrange(1, 9)}"
        self.queue_row(at + timedelta(seconds=w), pbx, queue, "CONNECT", str(w), pbx, "3", agent=agent)
        self.queue_row(at + timedelta(seconds=w + talk), pbx, queue, "COMPLETECALLER", str(w), str(talk), "1",
                       agent=agent)

    def _callback(self, cid: str, path: list[str], at: datetime) -> None:
        r, s = self.rnd, self.spec
        path.append("main.support")
        self.add(at, cid, "node.entered", node="main.support", kind="queue")
        self.requests += 1
        rid = f"{s.site_id}-r{self.requests}"
        self.add(at, cid, "queue.offer", node="main.support", queue="support", offered=True)
        self.add(at + timedelta(seconds=3), cid, "callback.offer.accepted", node="main.support", queue="support")
        self.add(at + timedelta(seconds=9), cid, "callback.confirmed", node="main.support", queue="support",
                 request_id=rid)
        end = at + timedelta(seconds=12)
        self.add(end, cid, "call.ended", outcome="callback", detail="support", path=path)
        self.add(end, cid, "callback.requested", request_id=rid, queue="support", at=_iso(end))
        low = r.choice([120, 240, 300, 480])
        high = low + r.choice([120, 180, 240])
        if r.random() < 0.85:
            to_agent = max(30.0, r.gauss((low + high) / 2 + 40, 90))
            n = 1
            if r.random() < 0.2:
                self.add(end + timedelta(seconds=to_agent * 0.6), None, "callback.attempt.ended", request_id=rid,
                         n=n, outcome="no-answer")
                n += 1
            done = end + timedelta(seconds=to_agent)
            self.add(done, None, "callback.attempt.ended", request_id=rid, n=n, outcome="connected")
            self.add(done, None, "callback.state", request_id=rid, queue="support", to="done")
            self.add(done, None, "callback.kept", request_id=rid, queue="support", quoted_low=low, quoted_high=high,
                     time_to_agent=round(to_agent, 1), kept=to_agent <= high, arrival_at=_iso(at))
        else:
            gone = end + timedelta(hours=2)
            self.add(end + timedelta(seconds=low), None, "callback.attempt.ended", request_id=rid, n=1,
                     outcome="no-answer")
            self.add(gone, None, "callback.state", request_id=rid, queue="support", to="expired")
            self.add(gone, None, "callback.kept", request_id=rid, queue="support", quoted_low=low, quoted_high=high,
                     time_to_agent=None, kept=False, arrival_at=_iso(at))

    def events(self) -> list[dict[str, Any]]:
        boot = f"boot-{self.spec.site_id}"
        out = []
        t0 = min(r[0] for r in self.raw)
        for seq, (at, _, call_id, type_, data) in enumerate(sorted(self.raw, key=lambda x: (x[0], x[1])), 1):
            out.append({"seq": seq, "id": str(uuid7_at(at, self.rnd)), "wall_time": _iso(at), "boot_id": boot,
                        "mono_ns": int((at - t0).total_seconds() * 1e9), "call_id": call_id, "type": type_,
                        "data": data})
        return out


def site_events(spec: SiteSpec, first: date, days: int) -> list[dict[str, Any]]:
    """The site's events for local days ``first`` .. ``first + days - 1`` (weekends quieter)."""
    box = _Box(spec)
    tz = ZoneInfo(spec.zone)
    n = 0
    for d in range(days):
        day = first + timedelta(days=d)
        scale = 0.4 if day.weekday() >= 5 else 1.0
        total = sum(HOURLY)
        for hour, weight in enumerate(HOURLY):
            if weight == 0:
                continue
            calls = round(spec.calls_per_day * scale * weight / total * box.rnd.uniform(0.7, 1.3))
            start = datetime.combine(day, time(hour), tz).astimezone(UTC)
            if start.astimezone(tz).hour != hour:  # the hour skipped when clocks go forward
                continue
            for _ in range(calls):
                n += 1
                box.call(n, start + timedelta(seconds=box.rnd.uniform(0, 3599)))
    return box.events()


async def load_fleet(conn: Any, first: date, days: int, fleet: tuple[SiteSpec, ...] = FLEET) -> dict[str, int]:
    """Migrate, register the sites and insert each site's events in batches of 500; events per site."""
    from ivr_central import db, store

    await db.migrate(conn)
    counts = {}
    months: set[date] = set()
    for spec in fleet:
        await conn.execute("INSERT INTO sites (site_id, name, grp, zone, region) VALUES ($1, $2, $3, $4, 'US')",
                           spec.site_id, spec.name, spec.group, spec.zone)
        events = site_events(spec, first, days)
        for i in range(0, len(events), 500):
            await store.insert_batch(conn, spec.site_id, events[i:i + 500], known_months=months)
        counts[spec.site_id] = len(events)
    return counts
