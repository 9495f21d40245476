"""Jitter buffer: playout order, loss, reordering, duplicates, wraps, re-sync and adaptation."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from ivr.rtp.jitter import Gap, GapReason, JitterBuffer
from ivr.rtp.packet import RtpPacket

FRAME = 0.020


def packet(seq: int, ts: int | None = None, ssrc: int = 1, marker: bool = False) -> RtpPacket:
    seq &= 0xFFFF
    return RtpPacket(
        payload_type=0,
        sequence_number=seq,
        timestamp=(seq * 160 if ts is None else ts) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=seq.to_bytes(2, "big"),
        marker=marker,
    )


def simulate(
    jb: JitterBuffer,
    arrivals: Iterable[tuple[float, RtpPacket]],
    ticks: int,
    tick_phase: float = 0.005,
) -> list[RtpPacket | Gap]:
    """Deliver packets at their arrival times and pop once per 20 ms tick."""
    pending = sorted(arrivals, key=lambda a: a[0])
    out: list[RtpPacket | Gap] = []
    i = 0
    for k in range(ticks):
        now = tick_phase + k * FRAME
        while i < len(pending) and pending[i][0] <= now:
            jb.push(pending[i][1], pending[i][0])
            i += 1
        out.append(jb.pop(now))
    return out


def seqs(out: list[RtpPacket | Gap]) -> list[int]:
    return [p.sequence_number for p in out if isinstance(p, RtpPacket)]


def assert_in_order_without_loss(jb: JitterBuffer, out: list[RtpPacket | Gap], expected: list[int]) -> None:
    """Played in order; anything missing was dropped on purpose to shrink the delay."""
    played = seqs(out)
    it = iter(expected)
    assert all(any(s == e for e in it) for s in played), played  # an ordered subsequence
    assert len(expected) - len(played) == jb.stats.discarded
    assert jb.stats.lost == 0 and jb.stats.late == 0


def steady(
    n: int, first_seq: int = 0, delay: float = 0.010, first_ts: int | None = None
) -> list[tuple[float, RtpPacket]]:
    base_ts = first_seq * 160 if first_ts is None else first_ts
    return [(delay + k * FRAME, packet(first_seq + k, base_ts + 160 * k)) for k in range(n)]


def test_in_order_stream_plays_everything_after_the_initial_delay() -> None:
    jb = JitterBuffer()
    out = simulate(jb, steady(50), 60)
    assert seqs(out) == list(range(50))
    first = next(i for i, p in enumerate(out) if isinstance(p, RtpPacket))
    assert all(p == Gap(GapReason.BUFFERING) for p in out[:first])
    assert first * FRAME >= jb.initial_delay - FRAME
    assert jb.stats.lost == jb.stats.late == jb.stats.duplicate == 0
    assert jb.stats.played == 50


def test_loss_becomes_a_gap_and_is_counted() -> None:
    jb = JitterBuffer()
    arrivals = [a for a in steady(40) if a[1].sequence_number not in (10, 11, 25)]
    out = simulate(jb, arrivals, 50)
    assert seqs(out) == [s for s in range(40) if s not in (10, 11, 25)]
    assert sum(1 for p in out if p == Gap(GapReason.LOST)) == 3
    assert jb.stats.lost == 3


def test_reordering_within_the_delay_is_repaired() -> None:
    jb = JitterBuffer(min_delay=0.060)
    arrivals = steady(40)
    # swap arrival times of neighbours: 5<->6, 20<->22
    for a, b in ((5, 6), (20, 22)):
        (ta, pa), (tb, pb) = arrivals[a], arrivals[b]
        arrivals[a], arrivals[b] = (tb, pa), (ta, pb)
    out = simulate(jb, arrivals, 50)
    assert seqs(out) == list(range(40))
    assert jb.stats.lost == 0


def test_reordering_raises_the_jitter_estimate() -> None:
    jb = JitterBuffer()
    arrivals = steady(60)
    for a in range(20, 60, 2):  # every other packet 30 ms late from packet 20 on
        arrivals[a] = (arrivals[a][0] + 0.030, arrivals[a][1])
    out = simulate(jb, arrivals, 70)
    assert jb.jitter > 0.010
    assert jb.target_delay > 0.050
    assert seqs(out) == sorted(seqs(out))
    assert seqs(out)[-10:] == list(range(50, 60))  # settled: the tail plays complete


def test_duplicates_dropped_and_counted() -> None:
    jb = JitterBuffer()
    arrivals = steady(30)
    arrivals += [(t + 0.001, p) for t, p in arrivals if p.sequence_number % 7 == 0]  # while buffered
    arrivals += [(0.5, packet(2))]  # long after it played
    out = simulate(jb, arrivals, 40)
    assert seqs(out) == list(range(30))
    assert jb.stats.duplicate == 5 + 1


def test_late_packet_dropped_and_counted_as_late_not_lost() -> None:
    jb = JitterBuffer(initial_delay=0.040, max_delay=0.040)
    arrivals = [(t + (0.300 if p.sequence_number == 10 else 0.0), p) for t, p in steady(40)]
    out = simulate(jb, arrivals, 50)
    assert 10 not in seqs(out)
    assert jb.stats.late == 1
    assert jb.stats.lost == 0


@pytest.mark.parametrize("start", [65500, 65535])
def test_sequence_number_wrap(start: int) -> None:
    jb = JitterBuffer()
    out = simulate(jb, steady(100, first_seq=start), 110)
    assert_in_order_without_loss(jb, out, [(start + k) & 0xFFFF for k in range(100)])
    assert jb.stats.discarded <= 2 and jb.stats.resyncs == 0


def test_reordering_across_the_wrap() -> None:
    jb = JitterBuffer()
    arrivals = steady(20, first_seq=65530)
    (ta, pa), (tb, pb) = arrivals[5], arrivals[6]  # seq 65535 and 0 swapped
    arrivals[5], arrivals[6] = (tb, pa), (ta, pb)
    out = simulate(jb, arrivals, 30)
    assert seqs(out) == [(65530 + k) & 0xFFFF for k in range(20)]


def test_timestamp_wrap_keeps_jitter_sane() -> None:
    jb = JitterBuffer()
    out = simulate(jb, steady(60, first_ts=0xFFFFFFFF - 160 * 30), 70)
    assert seqs(out) == list(range(60))
    assert jb.jitter < 0.002
    assert jb.target_delay == pytest.approx(jb.min_delay, abs=0.006)


def test_ssrc_change_resyncs() -> None:
    jb = JitterBuffer()
    first = steady(20)
    second = [(0.5 + k * FRAME, packet(40000 + k, ts=123456 + 160 * k, ssrc=2)) for k in range(20)]
    out = simulate(jb, first + second, 60)
    played = [p for p in out if isinstance(p, RtpPacket)]
    assert [p.sequence_number for p in played if p.ssrc == 1] == list(range(20))
    assert [p.sequence_number for p in played if p.ssrc == 2] == [40000 + k for k in range(20)]
    assert jb.stats.resyncs == 1


def test_big_sequence_jump_resyncs_after_confirmation() -> None:
    jb = JitterBuffer()
    first = steady(20)
    jumped = [(0.4 + k * FRAME, packet(20 + 10000 + k)) for k in range(20)]
    out = simulate(jb, first + jumped, 60)
    assert seqs(out)[:20] == list(range(20))
    assert seqs(out)[20:] == [10020 + k for k in range(20)]
    assert jb.stats.resyncs == 1
    assert jb.stats.lost < 5  # not 10000 gaps


def test_backward_restart_resyncs() -> None:
    jb = JitterBuffer()
    first = steady(20, first_seq=30000)
    restarted = [(0.4 + k * FRAME, packet(5 + k)) for k in range(20)]
    out = simulate(jb, first + restarted, 60)
    assert seqs(out)[-20:] == [5 + k for k in range(20)]


def test_single_stray_packet_does_not_resync() -> None:
    jb = JitterBuffer()
    arrivals = steady(40)
    arrivals.append((0.2001, packet(50000)))
    out = simulate(jb, arrivals, 50)
    assert seqs(out) == list(range(40))
    assert jb.stats.resyncs == 0 and jb.stats.discarded == 1


def test_timestamp_jump_with_continuous_sequence_does_not_stall() -> None:
    jb = JitterBuffer()
    first = steady(20)
    later = [(0.01 + (20 + k) * FRAME, packet(20 + k, ts=0x40000000 + 160 * k)) for k in range(20)]
    out = simulate(jb, first + later, 50)
    assert seqs(out) == list(range(40))
    assert jb.target_delay < 0.06  # the jump did not count as jitter


def test_silence_suppression_underruns_then_resumes() -> None:
    jb = JitterBuffer()
    talk1 = steady(10)
    # 500 ms of silence: seq continues, timestamp jumps, marker set on the first packet after
    talk2 = [(0.71 + k * FRAME, packet(10 + k, ts=(10 + 25 + k) * 160, marker=k == 0)) for k in range(10)]
    out = simulate(jb, talk1 + talk2, 60)
    assert seqs(out) == list(range(20))
    assert Gap(GapReason.UNDERRUN) in out
    assert jb.stats.lost == 0


def test_adapts_to_jitter_and_stays_bounded() -> None:
    rnd = random.Random(5)
    jb = JitterBuffer()
    arrivals = [(0.010 + k * FRAME + rnd.uniform(0, 0.080), packet(k)) for k in range(500)]
    out = simulate(jb, arrivals, 520)
    assert jb.jitter > 0.010
    assert 0.060 < jb.target_delay <= jb.max_delay
    # after settling, few slots are missed despite up to 80 ms of jitter
    assert jb.stats.lost + jb.stats.late < 25
    assert len(seqs(out)) > 450
    assert seqs(out) == sorted(seqs(out))


def test_delay_never_exceeds_max() -> None:
    rnd = random.Random(9)
    jb = JitterBuffer(max_delay=0.100)
    arrivals = [(0.010 + k * FRAME + rnd.uniform(0, 0.400), packet(k)) for k in range(300)]
    out = simulate(jb, arrivals, 320)
    assert jb.target_delay <= 0.100
    assert len(seqs(out)) > 0


def test_shrinks_after_a_burst() -> None:
    jb = JitterBuffer()
    # 300 ms outage, then everything held up arrives at once
    arrivals = [(max(0.010 + k * FRAME, 0.5 if 10 <= k < 25 else 0.0), packet(k)) for k in range(100)]
    out = simulate(jb, arrivals, 110)
    assert jb.depth <= jb.max_delay + FRAME
    assert seqs(out) == sorted(seqs(out))
    assert seqs(out)[-1] == 99


def test_buffer_is_bounded_when_nobody_pops_for_a_while() -> None:
    jb = JitterBuffer()
    for k in range(1000):
        jb.push(packet(k), 0.01 + k * FRAME)
    first = jb.pop(20.5)
    assert isinstance(first, RtpPacket)
    assert jb.depth <= jb.max_delay


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(min_delay=0.1, initial_delay=0.05)


def test_empty_buffer_reports_buffering() -> None:
    assert JitterBuffer().pop(1.0) == Gap(GapReason.BUFFERING)
