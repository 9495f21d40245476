"""Synthetic site traffic for the central store's tests and benchmarks: a seeded, realistic event log of one
site as ``ivr events --json`` prints it (ids, seq, boot_id, mono_ns included), ready for
``ivr_central.store.insert_batch``.

The shapes are the box's own (docs/event-log.md, the hand-written logs of tests/kpi): calls that serve
themselves (some marked resolved, some answering the CSAT / NPS survey), hang up in the menu, are handed to a
PBX queue (queue_log rows that name the IVR call: answered, abandoned — some within seconds —, timed out, left
by key, transferred by the agent, still waiting), take a callback (the request's states, attempts, its
outbound leg and its ``callback.kept`` records), fail a transfer or end in error; callers who call again, with
their numbers written differently; simulated calls; calls still open at the end; PBX callers with no IVR call.
Pure: a ``random.Random`` and the times are passed in.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def uuid7_at(t: datetime, rng: random.Random) -> str:
    """A UUIDv7 of instant ``t`` (its partition is ``t``'s month), random bits from ``rng``."""
    ms = int(t.timestamp() * 1000)
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
                         | rng.getrandbits(62)))


def formats(e164: str, region: str = "US") -> list[str]:
    """Ways a caller's number reaches a box: E.164, a SIP URI and the national forms."""
    if region == "KR" and e164.startswith("+82"):
        rest = e164[3:]
        return [e164, f"sip:{e164}@192.0.2.1", f"0{rest[:2]}-{rest[2:6]}-{rest[6:]}", f"0{rest}"]
    if e164.startswith("+1"):
        d = e164[2:]
        return [e164, f"sip:{e164}@192.0.2.1", f"({d[:3]}) {d[3:6]}-{d[6:]}", d, f"+1 {d[:3]}-{d[3:6]}-{d[6:]}"]
    return [e164]


@dataclass
class _Timeline:
    """Events of one site before seq is given: (time, tie, call_id, type, data)."""

    items: list[tuple[datetime, int, str | None, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, at: datetime, call_id: str | None, type_: str, /, **data: Any) -> None:
        self.items.append((at, len(self.items), call_id, type_, data))


@dataclass(frozen=True)
class Mix:
    """Shares of the call scenarios (they need not add up to 1: weights)."""

    self_served: float = 0.25
    abandoned: float = 0.15
    queued: float = 0.33
    callback: float = 0.10
    transfer_failed: float = 0.05
    other: float = 0.04
    simulated: float = 0.02


class SiteLog:
    """One site's synthetic traffic between ``start`` and ``end``; ``events()`` in seq order."""

    def __init__(self, site: str, rng: random.Random, *, start: datetime, end: datetime, callers: list[str],
                 zone: str = "America/New_York", mix: Mix = Mix(), queues: tuple[str, ...] = ("support", "sales"),
                 boot_id: str = "boot-1") -> None:
        self.site, self.rng, self.start, self.end = site, rng, start, end
        self.callers, self.zone, self.mix, self.queues, self.boot_id = callers, zone, mix, queues, boot_id
        self.tl = _Timeline()
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{self.site}-{prefix}{self._n}"

    def _s(self, lo: float, hi: float) -> timedelta:
        return timedelta(seconds=self.rng.uniform(lo, hi))

    def calls(self, n: int) -> SiteLog:
        """``n`` calls at random instants of the period (some still open when it ends)."""
        span = (self.end - self.start).total_seconds()
        for _ in range(n):
            self.call(self.start + timedelta(seconds=self.rng.uniform(0, span)))
        return self

    def pbx_only(self, n: int) -> SiteLog:
        """``n`` callers who reached a queue straight from the PBX (no IVR call)."""
        span = (self.end - self.start).total_seconds()
        for _ in range(n):
            at = self.start + timedelta(seconds=self.rng.uniform(0, span))
            self._queue_visit(at, self.rng.choice(self.queues), None)
        return self

    def call(self, t0: datetime, *, caller: str | None = None, scenario: str | None = None) -> str:
        rng, add = self.rng, self.tl.add
        cid = self._id("c")
        m = self.mix
        kinds = ["self_served", "abandoned", "queued", "callback", "transfer_failed", "other", "simulated"]
        kind = scenario or rng.choices(kinds, [m.self_served, m.abandoned, m.queued, m.callback, m.transfer_failed,
                                               m.other, m.simulated])[0]
        flow = rng.choice(["main", "main", "sales"])
        caller = caller if caller is not None else self._caller()
        add(t0, cid, "call.started", channel="simulator" if kind == "simulated" else "sip", caller=caller,
            dialed="+15550100", flow=flow, flow_version="v7", zone=self.zone)
        t = t0
        path: list[str] = []

        def enter(node: str, kind_: str = "play") -> None:
            nonlocal t
            t += self._s(0.5, 20)
            path.append(node)
            add(t, cid, "node.entered", node=node, kind=kind_, flow=flow, flow_version="v7")

        enter("greet")
        enter("main_menu", "menu")
        outcome, detail, resolved = "hangup", "", False
        if kind in ("self_served", "simulated"):
            enter("billing.account", "collect")
            t += self._s(1, 10)
            add(t, cid, "collect.value", node="account", var="account", value="1234567", flow=flow)  # bare name
            enter("billing.online")
            if rng.random() < 0.5:
                resolved = True
                add(t + self._s(0, 1), cid, "call.resolved", node="billing.online", flow=flow)
            if rng.random() < 0.45:
                enter("survey.csat", "survey")
                add(t + self._s(1, 5), cid, "survey.answer", node="survey.csat", scale="csat", var="csat",
                    value=rng.randint(1, 5), flow=flow)
                t += self._s(5, 6)
                if rng.random() < 0.8:
                    enter("survey.nps", "survey")
                    add(t + self._s(1, 5), cid, "survey.answer", node="nps", scale="nps", var="nps",
                        value=rng.randint(0, 10), flow=flow)
                    t += self._s(5, 6)
            enter("goodbye")
            detail = "goodbye"
        elif kind == "abandoned":
            if rng.random() < 0.5:
                enter("billing.account", "collect")
            outcome, detail = "caller_hangup", path[-1]
        elif kind in ("queued", "callback"):
            q = rng.choice(self.queues)
            enter(q, "queue")
            decided = rng.random() < 0.7 or kind == "callback"
            offered = kind == "callback" or (decided and rng.random() < 0.4)
            if decided:
                t += self._s(0.5, 3)
                add(t, cid, "queue.offer", node=q, queue=q, offered=offered, estimate=240, low=180, high=300,
                    flow=flow)
            if kind == "callback":
                rid = self._id("r")
                t += self._s(1, 5)
                add(t, cid, "callback.offer.accepted", node=q, queue=q, requested=False, flow=flow)
                t += self._s(5, 30)
                add(t, cid, "callback.confirmed", node=q, queue=q, request_id=rid, created=True, flow=flow)
                outcome, detail = "callback", f"{q} {rid}"
                self._request(rid, cid, q, t, caller)
            else:
                if offered:
                    t += self._s(1, 5)
                    add(t, cid, "callback.offer.declined", node=q, queue=q, key="2", flow=flow)
                t += self._s(0.5, 4)
                add(t, cid, "transfer.progress", node=q, stage="referred", kind="queue", destination=q, flow=flow)
                outcome, detail = "queued", f"queue {q}"
                self._queue_visit(t + self._s(0.2, 2), q, cid)
        elif kind == "transfer_failed":
            enter("operator", "transfer")
            t += self._s(1, 8)
            add(t, cid, "transfer", node="operator", kind="extension", destination="2000", ok=False, flow=flow)
            if rng.random() < 0.5:
                enter("goodbye")
                outcome, detail = "transfer_failed", "extension 2000 (then hangup goodbye)"
            else:
                outcome, detail = "caller_hangup", "operator"
        else:
            outcome, detail = rng.choice(["error", "failed", "max_length", "rtp_timeout", "interrupted"]), "x"
        t += self._s(1, 30)
        if t < self.end:  # else still running when the log ends
            add(t, cid, "call.ended", outcome=outcome, detail=detail, path=path, resolved=resolved)
        return cid

    def _caller(self) -> str:
        if self.rng.random() < 0.06:
            return self.rng.choice(["anonymous", "", "Restricted", "100"])
        return self.rng.choice(formats(self.rng.choice(self.callers)))

    def _queue_visit(self, at: datetime, q: str, ivr_call_id: str | None) -> None:
        """A caller's queue_log rows (the columns of Asterisk's realtime queue_log)."""
        rng = self.rng
        callid = f"{int(at.timestamp())}.{self._id('')}"

        def row(t: datetime, verb: str, *data: str, agent: str = "NONE", link: bool = False) -> None:
            r: dict[str, Any] = {"time": t.timestamp(), "callid": callid, "queuename": q, "agent": agent,
                                 "event": verb}
            for i in range(4):
                r[f"data{i + 1}"] = data[i] if i < len(data) else ""
            r["data5"] = "|".join(data[4:])
            if link and ivr_call_id:
                r["ivr_call_id"] = ivr_call_id
            self.tl.add(t, None, "queue.log", **r)

        row(at, "ENTERQUEUE", "", "+12125550100", "1", link=True)
        wait = rng.choice([rng.uniform(0, 4.9), rng.uniform(0, 30), rng.uniform(10, 400)])
        end = at + timedelta(seconds=round(wait))
        if end >= self.end or rng.random() < 0.03:
            return  # still waiting
        r = rng.random()
        agent = f"PJSIP/agent{rng.randint(1, 9)}"
        if r < 0.6:
            if rng.random() < 0.3:
                row(end - timedelta(seconds=min(1, wait)), "RINGNOANSWER", "1000", agent=agent)
            row(end, "CONNECT", str(round(wait)), "1733065200.9", "3", agent=agent)
            talk = round(rng.uniform(20, 900))
            done = end + timedelta(seconds=talk)
            if done >= self.end:
                return
            v = rng.random()
            if v < 0.1:
                row(done, "BLINDTRANSFER", "2001", "default", str(round(wait)), str(talk), "1", agent=agent)
            elif v < 0.15:
                row(done, "ATTENDEDTRANSFER", "BRIDGE", "x", str(round(wait)), str(talk), "1", agent=agent)
            else:
                row(done, rng.choice(["COMPLETECALLER", "COMPLETEAGENT"]), str(round(wait)), str(talk), "1",
                    agent=agent)
        elif r < 0.85:
            row(end, "ABANDON", "1", "1", str(round(wait)))
        elif r < 0.93:
            row(end, "EXITWITHTIMEOUT", "1", "1", str(round(wait)))
        else:
            row(end, "EXITWITHKEY", "1", "1", "1", str(round(wait)))

    def _request(self, rid: str, cid: str, q: str, at: datetime, number: str) -> None:
        """A callback request's life: states, attempts, the outbound leg when answered, kept records. Like the
        box's callback store, every event of the request carries the id of the call that filed it."""
        rng, add = self.rng, self.tl.add
        low, high = float(rng.choice([60, 120, 180])), float(rng.choice([240, 300, 480]))
        add(at, cid, "callback.requested", request_id=rid, queue=q, number=number, arrival_at=iso(at),
            quoted_low=low, quoted_high=high, at=iso(at), state="requested")
        t = at
        add(t + self._s(0, 1), cid, "callback.state", request_id=rid, queue=q, **{"from": "requested"},
            to="scheduled")
        outcomes = rng.choice([["connected"], ["interrupted", "connected"], ["no-answer", "connected"],
                               ["no-answer", "busy", "no-answer"], ["busy"]])
        for n, o in enumerate(outcomes, 1):
            t += self._s(30, 400)
            if t >= self.end:
                return
            aid = self._id("a")
            add(t - self._s(20, 25), cid, "callback.attempt.started", request_id=rid, attempt_id=aid, n=n,
                channel="sip")
            add(t, cid, "callback.attempt.ended", request_id=rid, attempt_id=aid, n=n, outcome=o)
            if o == "connected":
                leg = self._id("leg")
                add(t - self._s(1, 5), leg, "call.started", channel="sip", caller="+15550100", dialed=number,
                    flow="callback", flow_version="v7", zone=self.zone)
                add(t - self._s(0, 1), leg, "callback.leg", request_id=rid, number=number, queue=q)
                add(t + self._s(60, 300), leg, "call.ended", outcome="queued", detail=f"queue {q}", path=[],
                    resolved=False)
                to_agent = (t - at).total_seconds() + rng.uniform(5, 60)
                add(t + self._s(1, 2), cid, "callback.state", request_id=rid, queue=q, to="done")
                add(t + self._s(2, 3), cid, "callback.kept", request_id=rid, queue=q, quoted_low=low,
                    quoted_high=high, arrival_at=iso(at), time_to_dial=to_agent - 10, time_to_agent=to_agent,
                    kept=to_agent <= high, leg_call_id=leg)
                return
        t += self._s(60, 600)
        if t < self.end:
            if rng.random() < 0.5:  # an expiry written twice (a pass, then reconciliation): the last counts
                add(t, cid, "callback.kept", request_id=rid, queue=q, quoted_low=low, quoted_high=high,
                    arrival_at=iso(at), time_to_agent=None, kept=False)
            add(t + self._s(1, 2), cid, "callback.state", request_id=rid, queue=q, to="expired")
            add(t + self._s(2, 3), cid, "callback.kept", request_id=rid, queue=q, quoted_low=low, quoted_high=high,
                arrival_at=iso(at), time_to_agent=None, kept=False)

    def orphan_kept(self, at: datetime) -> None:
        """A ``callback.kept`` record whose request's events are not in the log (taken before it began)."""
        rid = self._id("old")
        self.tl.add(at, None, "callback.kept", request_id=rid, queue="support", quoted_low=60.0, quoted_high=120.0,
                    arrival_at=iso(at - timedelta(minutes=5)), time_to_agent=150.5, kept=False)

    def events(self, first_seq: int = 1) -> list[dict[str, Any]]:
        """The log in commit (time) order, each event with seq, id, site, boot_id, wall_time, mono_ns."""
        out = []
        for seq, (at, _, call_id, type_, data) in enumerate(sorted(self.tl.items, key=lambda x: (x[0], x[1])),
                                                           first_seq):
            out.append({"seq": seq, "id": uuid7_at(at, self.rng), "site": self.site, "boot_id": self.boot_id,
                        "wall_time": iso(at), "mono_ns": int((at - self.start).total_seconds() * 1e9),
                        "call_id": call_id, "type": type_, "data": data})
        return out


def numbers(rng: random.Random, n: int, region: str = "US") -> list[str]:
    """``n`` distinct callers' E.164 numbers."""
    if region == "KR":
        return [f"+8210{rng.randint(1000, 9999)}{i:04d}" for i in range(n)]
    return [f"+1212555{i:04d}" for i in rng.sample(range(10000), n)]


def batches(events: list[dict[str, Any]], rng: random.Random, sizes: tuple[int, ...] = (1, 3, 17, 50, 200)
            ) -> Iterator[list[dict[str, Any]]]:
    """The log cut into consecutive batches of random sizes (what a relay posts)."""
    i = 0
    while i < len(events):
        k = rng.choice(sizes)
        yield events[i:i + k]
        i += k
