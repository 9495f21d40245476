"""Estimated wait time (EWT), pure: the head-of-line exit-rate estimator.

**Head-of-line exit-rate estimator (HOL rate).** A caller at position ``k`` waits until ``k`` callers (those
ahead and then itself) have been taken from the head of the queue by an agent. While the queue is non-empty,
agents take callers at a rate ``mu`` (service starts per second); so the expected wait is ``k / mu``.
``mu`` is measured, not modelled: the exponentially weighted count of service starts (CONNECT of a caller who
actually waited) divided by the exponentially weighted time the queue held a waiting caller, over the recent
``horizon`` (weights ``exp(-age / tau)``). This is Little's law on recent queue exits, counted only while the
queue was congested, so idle periods (when arrivals, not agents, limit the exit rate) do not drag ``mu`` down.

When there is too little congested time to measure ``mu`` (fewer than ``min_events`` service starts), the
**capacity fallback** uses ``mu = agents / h`` where ``h`` is the exponentially smoothed handle time of recent
completed calls (the Erlang-C service rate of ``agents`` servers), if at least ``min_events`` completions are
known. Otherwise — or when no agent is logged in — the answer is *unknown*: better to say nothing than a
number we cannot stand behind (ANCHORS.md "honest wait estimates").

**Range.** Service starts while every agent is busy are close to a Poisson process, so the time to ``k`` of
them is Gamma(k, mu): relative spread ``1/sqrt(k)``; the measured ``mu`` from ``n`` events adds ``1/sqrt(n)``.
The range is ``mean * (1 -/+ z * sqrt(1/k + 1/n))`` with ``z = 1.28`` (an 80 % interval if it were normal),
floored at zero. ``bench/ewt.py`` measures its error and coverage on a replayed trace (see docs/callbacks.md).

Abandonment of callers ahead shortens the real wait; the estimator ignores it, so it leans long (a callback
offer that says "5 to 8 minutes" and connects in 4 is a promise kept).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ivr.proto.ami import AmiEvent

ESTIMATOR_NAME = "hol-rate"


class QueueEventKind(StrEnum):
    JOIN = "join"  # a caller entered the queue
    CONNECT = "connect"  # an agent took the caller (AgentConnect): the caller's wait ended with service
    ABANDON = "abandon"  # the caller hung up while waiting
    EXIT = "exit"  # the caller left without service some other way (key, timeout, empty queue, callback)
    COMPLETE = "complete"  # an agent finished a call; ``duration`` is its handle (talk) time in seconds


@dataclass(frozen=True)
class QueueEvent:
    """One queue event; ``t`` is epoch seconds. ``caller`` ties JOIN to its CONNECT/ABANDON/EXIT."""

    kind: QueueEventKind
    t: float
    caller: str = ""
    duration: float = 0.0


@dataclass(frozen=True)
class EwtConfig:
    horizon: float = 3600.0
    """Only events this many seconds old or newer are used."""
    tau: float = 900.0
    """Time constant (s) of the exponential weights: a service start ``tau`` ago counts ``1/e``."""
    min_events: int = 8
    """Fewer service starts (or completions, for the fallback) in the horizon than this: unknown."""
    min_wait: float = 5.0
    """A CONNECT counts as a head-of-line exit only if the caller waited at least this long (s); below it the
    caller met an idle agent, which says nothing about the agents' rate. Also trims the congested time."""
    z: float = 1.28
    """Width of the range in standard deviations."""


@dataclass(frozen=True)
class EwtEstimate:
    """An estimate in seconds with a range, or unknown (``seconds is None``) with the reason."""

    seconds: float | None
    low: float | None = None
    high: float | None = None
    method: str = ""  # "hol-rate", "capacity", "free-agent"
    reason: str = ""  # why unknown: "no-agents", "thin-traffic"
    basis: int = 0  # events the rate was measured from

    @property
    def known(self) -> bool:
        return self.seconds is not None

    @classmethod
    def unknown(cls, reason: str, basis: int = 0) -> EwtEstimate:
        return cls(seconds=None, reason=reason, basis=basis)

    def minutes_range(self) -> tuple[int, int] | None:
        """The range as whole minutes for a prompt ("about 5 to 8 minutes"): low rounded down, high up,
        at least one minute apart; None when unknown."""
        if self.low is None or self.high is None:
            return None
        lo = max(0, math.floor(self.low / 60))
        hi = max(lo + 1, math.ceil(self.high / 60))
        return lo, hi


def _weighted_span(a: float, b: float, now: float, tau: float) -> float:
    """Integral of exp(-(now - t) / tau) dt over [a, b]."""
    if b <= a:
        return 0.0
    return tau * (math.exp(-(now - b) / tau) - math.exp(-(now - a) / tau))


def _congested_intervals(events: Sequence[QueueEvent], now: float, cfg: EwtConfig) -> tuple[list[tuple[float, float]],
                                                                                          list[float]]:
    """Union of [join + min_wait, end of wait] over callers, clipped to the horizon; and the service-start
    times of callers who waited at least min_wait."""
    start = now - cfg.horizon
    joined: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    starts: list[float] = []
    for ev in events:
        if ev.t > now:
            continue
        if ev.kind is QueueEventKind.JOIN:
            joined[ev.caller] = ev.t
        elif ev.kind in (QueueEventKind.CONNECT, QueueEventKind.ABANDON, QueueEventKind.EXIT):
            t0 = joined.pop(ev.caller, None)
            if t0 is None:
                continue  # joined before we were watching: its wait is unknown
            if ev.t - t0 >= cfg.min_wait:
                spans.append((max(start, t0 + cfg.min_wait), ev.t))
                if ev.kind is QueueEventKind.CONNECT and ev.t >= start:
                    starts.append(ev.t)
    for t0 in joined.values():  # still waiting
        if now - t0 >= cfg.min_wait:
            spans.append((max(start, t0 + cfg.min_wait), now))
    spans = sorted(s for s in spans if s[1] > s[0])
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged, starts


def service_rate(events: Sequence[QueueEvent], now: float, cfg: EwtConfig) -> tuple[float, int] | None:
    """The measured head-of-line exit rate (per second) and the number of service starts it rests on."""
    spans, starts = _congested_intervals(events, now, cfg)
    if len(starts) < cfg.min_events:
        return None
    busy = sum(_weighted_span(a, b, now, cfg.tau) for a, b in spans)
    weight = sum(math.exp(-(now - t) / cfg.tau) for t in starts)
    if busy <= 0.0:
        return None
    return weight / busy, len(starts)


def smoothed_handle_time(events: Sequence[QueueEvent], now: float, cfg: EwtConfig) -> tuple[float, int] | None:
    """Exponentially weighted mean handle time of recent completions, and how many there were."""
    recent = [e for e in events if e.kind is QueueEventKind.COMPLETE and now - cfg.horizon <= e.t <= now
              and e.duration > 0]
    if len(recent) < cfg.min_events:
        return None
    w = [math.exp(-(now - e.t) / cfg.tau) for e in recent]
    return sum(wi * e.duration for wi, e in zip(w, recent, strict=True)) / sum(w), len(recent)


def estimate(events: Sequence[QueueEvent], *, position: int, agents_logged_in: int, agents_available: int,
             now: float, cfg: EwtConfig | None = None) -> EwtEstimate:
    """EWT for a caller who would be at ``position`` (1 = next to be served; a new caller: waiting + 1).

    ``events`` in time order (older than the horizon are ignored); agent counts as the PBX says now.
    """
    cfg = cfg or EwtConfig()
    if agents_logged_in <= 0:
        return EwtEstimate.unknown("no-agents")
    if position <= agents_available:
        # a free agent for everyone up to this caller: only the ring time stands between them
        return EwtEstimate(seconds=0.0, low=0.0, high=cfg.min_wait * 6, method="free-agent")
    k = max(1, position - agents_available)
    measured = service_rate(events, now, cfg)
    method = ESTIMATOR_NAME
    if measured is None:
        handle = smoothed_handle_time(events, now, cfg)
        if handle is None:
            return EwtEstimate.unknown("thin-traffic")
        mu, n = agents_logged_in / handle[0], handle[1]
        method = "capacity"
    else:
        mu, n = measured
    mean = k / mu
    rel = cfg.z * math.sqrt(1.0 / k + 1.0 / n)
    return EwtEstimate(seconds=mean, low=max(0.0, mean * (1 - rel)), high=mean * (1 + rel), method=method, basis=n)


class QueueEventWindow:
    """Recent events of one queue, bounded, fed from AMI (``observe_ami``) or the appliance's own records."""

    def __init__(self, maxlen: int = 20_000) -> None:
        self.events: deque[QueueEvent] = deque(maxlen=maxlen)
        self._ended: deque[str] = deque(maxlen=1000)  # callers whose wait already ended (leave follows)

    def add(self, ev: QueueEvent) -> None:
        self.events.append(ev)

    def extend(self, evs: Iterable[QueueEvent]) -> None:
        for ev in evs:
            self.add(ev)

    def prune(self, now: float, horizon: float) -> None:
        """Drop events older than the horizon (bounded: at most ``len(events)`` steps)."""
        while self.events and self.events[0].t < now - horizon:
            self.events.popleft()

    def observe_ami(self, ev: AmiEvent, now: float) -> QueueEvent | None:
        """Map one AMI queue event (Asterisk 18+ names) to a QueueEvent; ``now`` if it carries no Timestamp."""
        ts = ev.get("Timestamp")
        try:
            t = float(ts) if ts else now
        except ValueError:
            t = now
        uid = ev.get("Uniqueid") or ev.get("Channel") or ""
        out: QueueEvent | None = None
        if ev.name == "QueueCallerJoin":
            out = QueueEvent(QueueEventKind.JOIN, t, uid)
        elif ev.name == "AgentConnect":
            out = QueueEvent(QueueEventKind.CONNECT, t, uid)
            self._ended.append(uid)
        elif ev.name == "QueueCallerAbandon":
            out = QueueEvent(QueueEventKind.ABANDON, t, uid)
            self._ended.append(uid)
        elif ev.name == "QueueCallerLeave":
            if uid not in self._ended:  # left by key, timeout or empty queue: no other event says so
                out = QueueEvent(QueueEventKind.EXIT, t, uid)
        elif ev.name == "AgentComplete":
            try:
                talk = float(ev.get("TalkTime") or 0)
            except ValueError:
                talk = 0.0
            out = QueueEvent(QueueEventKind.COMPLETE, t, uid, duration=talk)
        if out is not None:
            self.add(out)
        return out
