"""The head-of-line exit-rate EWT estimator: unknown when thin, proportional to position, ranges widen."""

from __future__ import annotations

from ivr.callbacks.ewt import EwtConfig, QueueEvent, QueueEventKind, QueueEventWindow, estimate
from ivr.proto.ami import AmiEvent

J, C, A, X, D = (QueueEventKind.JOIN, QueueEventKind.CONNECT, QueueEventKind.ABANDON, QueueEventKind.EXIT,
                 QueueEventKind.COMPLETE)


def congested(n: int, gap: float, wait: float, t0: float = 0.0) -> list[QueueEvent]:
    """A queue that is never empty: caller i joins at t0 + i*gap and is taken after ``wait`` s."""
    evs = []
    for i in range(n):
        evs.append(QueueEvent(J, t0 + i * gap, f"c{i}"))
        evs.append(QueueEvent(C, t0 + i * gap + wait, f"c{i}"))
    return sorted(evs, key=lambda e: e.t)


def test_rate_from_congested_exits() -> None:
    evs = congested(40, gap=30.0, wait=300.0)  # one service start every 30 s while callers wait
    now = evs[-1].t
    est = estimate(evs, position=10, agents_logged_in=4, agents_available=0, now=now)
    assert est.known and est.method == "hol-rate"
    assert est.seconds is not None and 240 <= est.seconds <= 360  # ~10 * 30 s
    assert est.low is not None and est.high is not None and est.low < est.seconds < est.high
    far = estimate(evs, position=20, agents_logged_in=4, agents_available=0, now=now)
    assert far.seconds is not None and far.seconds > est.seconds * 1.8


def test_unknown_when_thin_or_no_agents() -> None:
    evs = congested(3, gap=30.0, wait=300.0)
    now = evs[-1].t
    thin = estimate(evs, position=3, agents_logged_in=2, agents_available=0, now=now)
    assert not thin.known and thin.reason == "thin-traffic" and thin.minutes_range() is None
    none = estimate(congested(40, 30.0, 300.0), position=3, agents_logged_in=0, agents_available=0, now=now)
    assert not none.known and none.reason == "no-agents"


def test_old_events_fall_out_of_the_horizon() -> None:
    evs = congested(40, gap=30.0, wait=300.0)
    later = evs[-1].t + 2 * EwtConfig().horizon
    assert not estimate(evs, position=3, agents_logged_in=2, agents_available=0, now=later).known


def test_idle_agents_connects_do_not_count() -> None:
    # callers met a free agent at once: no congestion, so no rate, and no fake "zero wait" for position 5
    evs = congested(40, gap=60.0, wait=1.0)
    est = estimate(evs, position=5, agents_logged_in=3, agents_available=0, now=evs[-1].t)
    assert not est.known


def test_free_agent_means_no_wait() -> None:
    est = estimate([], position=1, agents_logged_in=3, agents_available=2, now=0.0)
    assert est.known and est.seconds == 0.0 and est.method == "free-agent"


def test_capacity_fallback_from_handle_times() -> None:
    evs = [QueueEvent(D, float(i * 100), f"c{i}", duration=240.0) for i in range(10)]
    est = estimate(evs, position=4, agents_logged_in=4, agents_available=0, now=1000.0)
    assert est.method == "capacity" and est.seconds is not None
    assert abs(est.seconds - 4 / (4 / 240.0)) < 1e-6  # k / (agents / handle time)


def test_abandons_and_exits_are_not_service() -> None:
    base = congested(20, gap=30.0, wait=300.0)
    extra = [QueueEvent(J, 5.0 + i, f"a{i}") for i in range(10)]
    extra += [QueueEvent(A if i % 2 else X, 400.0 + i, f"a{i}") for i in range(10)]
    evs = sorted(base + extra, key=lambda e: e.t)
    now = base[-1].t
    with_ab = estimate(evs, position=5, agents_logged_in=2, agents_available=0, now=now)
    without = estimate(base, position=5, agents_logged_in=2, agents_available=0, now=now)
    assert with_ab.basis == without.basis  # abandons add congested time but not service starts


def test_minutes_range_for_the_prompt() -> None:
    evs = congested(40, gap=30.0, wait=300.0)
    est = estimate(evs, position=12, agents_logged_in=4, agents_available=0, now=evs[-1].t)
    lo, hi = est.minutes_range() or (0, 0)
    assert 0 <= lo < hi


def test_window_from_ami_events() -> None:
    w = QueueEventWindow()
    mk = lambda name, **kv: AmiEvent((("Event", name), *kv.items()))  # noqa: E731
    w.observe_ami(mk("QueueCallerJoin", Queue="q", Uniqueid="1"), 10.0)
    w.observe_ami(mk("AgentConnect", Queue="q", Uniqueid="1"), 70.0)
    w.observe_ami(mk("QueueCallerLeave", Queue="q", Uniqueid="1"), 70.0)  # follows connect: not an exit
    w.observe_ami(mk("QueueCallerJoin", Queue="q", Uniqueid="2"), 20.0)
    w.observe_ami(mk("QueueCallerLeave", Queue="q", Uniqueid="2"), 80.0)  # left by key
    w.observe_ami(mk("AgentComplete", Queue="q", Uniqueid="1", TalkTime="200"), 270.0)
    assert [e.kind for e in w.events] == [J, C, J, X, D]
    assert w.events[-1].duration == 200.0
    w.prune(now=10_000.0, horizon=3600.0)
    assert not w.events
