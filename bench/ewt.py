"""Replay a synthetic queue trace through the EWT estimator and report its error.

Poisson arrivals, lognormal handle times, 3-10 agents by shift, a thin-traffic evening, exponential patience
(callers abandon). At every arrival the estimator is asked for the new caller's wait (position = waiting + 1)
from the events so far; served callers' real waits are compared with it. Prints mean absolute error, the
share of real waits inside the quoted range, and the share answered "unknown", beside the naive
callers x handle time / agents for reference.

    .venv/bin/python bench/ewt.py [--seed N] [--hours H]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from collections import deque

from ivr.callbacks.ewt import EwtConfig, QueueEvent, QueueEventKind, estimate

# (start hour, agents, arrivals per minute): busy morning, lunch dip, peak, thin evening
SHIFTS = [(0.0, 5, 1.1), (2.0, 3, 0.8), (3.0, 10, 2.6), (5.0, 6, 1.3), (6.5, 3, 0.08)]
HANDLE_MEDIAN, HANDLE_SIGMA = 240.0, 0.6
PATIENCE_MEAN = 900.0


def shift_at(t: float) -> tuple[int, float]:
    agents, rate = SHIFTS[0][1], SHIFTS[0][2]
    for start, a, r in SHIFTS:
        if t >= start * 3600:
            agents, rate = a, r
    return agents, rate


def run(seed: int, hours: float) -> None:
    rng = random.Random(seed)
    cfg = EwtConfig()
    end = hours * 3600
    events: list[QueueEvent] = []
    heap: list[tuple[float, int, str, str]] = []  # (time, order, kind, caller)
    order = 0
    queue: deque[str] = deque()
    joined: dict[str, float] = {}
    busy = 0
    preds: dict[str, tuple[float | None, float | None, float | None, float]] = {}
    actual: dict[str, float] = {}
    abandoned: set[str] = set()
    t = rng.expovariate(shift_at(0)[1] / 60)
    heapq.heappush(heap, (t, order, "arrive", "c0"))
    n_arrivals = 0
    steps = 0
    while heap and steps < 2_000_000:
        steps += 1
        now, _, kind, who = heapq.heappop(heap)
        agents, rate = shift_at(now)
        if kind == "arrive":
            if now < end:
                n_arrivals += 1
                window = events[-6000:]
                free = max(0, agents - busy)
                e = estimate(window, position=len(queue) + 1, agents_logged_in=agents, agents_available=free,
                             now=now, cfg=cfg)
                naive = (len(queue) + 1) * HANDLE_MEDIAN * math.exp(HANDLE_SIGMA**2 / 2) / agents
                preds[who] = (e.seconds, e.low, e.high, naive if len(queue) >= free else 0.0)
                events.append(QueueEvent(QueueEventKind.JOIN, now, who))
                queue.append(who)
                joined[who] = now
                order += 1
                heapq.heappush(heap, (now + rng.expovariate(1 / PATIENCE_MEAN), order, "abandon", who))
                order += 1
                nxt = now + rng.expovariate(rate / 60)
                heapq.heappush(heap, (nxt, order, "arrive", f"c{n_arrivals}"))
        elif kind == "done":
            busy -= 1
            events.append(QueueEvent(QueueEventKind.COMPLETE, now, who, duration=now - joined.get(who, now)))
        elif kind == "abandon" and who in joined and who not in actual and who in queue:
            queue.remove(who)
            abandoned.add(who)
            events.append(QueueEvent(QueueEventKind.ABANDON, now, who))
        # hand waiting callers to free agents (head of line first)
        while queue and busy < agents:
            c = queue.popleft()
            busy += 1
            actual[c] = now - joined[c]
            events.append(QueueEvent(QueueEventKind.CONNECT, now, c))
            handle = rng.lognormvariate(math.log(HANDLE_MEDIAN), HANDLE_SIGMA)
            joined[c] = now  # from here on: the start of its handle time
            order += 1
            heapq.heappush(heap, (now + handle, order, "done", c))

    known = [(c, p) for c, p in preds.items() if p[0] is not None and c in actual]
    served = [c for c in preds if c in actual]
    unknown = sum(1 for c in served if preds[c][0] is None)
    mae = sum(abs((p[0] or 0) - actual[c]) for c, p in known) / max(1, len(known))
    inside = sum(1 for c, p in known if (p[1] or 0) <= actual[c] <= (p[2] or 0))
    naive_mae = sum(abs(preds[c][3] - actual[c]) for c in served) / max(1, len(served))
    waited = [c for c, p in known if actual[c] >= 60]
    mae_long = sum(abs((preds[c][0] or 0) - actual[c]) for c in waited) / max(1, len(waited))
    mean_wait = sum(actual[c] for c in served) / max(1, len(served))
    print(f"seed {seed}: {n_arrivals} arrivals, {len(served)} served, {len(abandoned)} abandoned, "
          f"mean real wait {mean_wait:.0f} s")
    print(f"  hol-rate MAE           {mae:7.1f} s   (callers who waited >= 60 s: {mae_long:.1f} s, n={len(waited)})")
    print(f"  range coverage         {inside / max(1, len(known)):7.1%}")
    print(f"  unknown share          {unknown / max(1, len(served)):7.1%}")
    print(f"  naive N*AHT/agents MAE {naive_mae:7.1f} s")
    thin = [c for c in served if joined.get(c, 0) >= SHIFTS[-1][0] * 3600]
    if thin:
        print(f"  thin evening: unknown {sum(1 for c in thin if preds[c][0] is None) / len(thin):.0%} "
              f"of {len(thin)} served")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hours", type=float, default=9.0)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    for s in range(a.seed, a.seed + a.seeds):
        run(s, a.hours)


if __name__ == "__main__":
    main()
