"""The media tick's kernel timer (ivr.rtp.timerfd): expirations are counted, none is invented."""

from __future__ import annotations

import select
import time

import pytest

from ivr.rtp.timerfd import open_periodic


def test_a_timer_whose_first_expiry_passed_is_ready_and_counts_each_period_missed() -> None:
    timer = open_periodic(time.monotonic() - 0.0505, 0.01)
    if timer is None:
        pytest.skip("no timerfd on this system")
    try:
        ready, _, _ = select.select([timer.fd], [], [], 1.0)
        assert ready == [timer.fd]
        assert timer.read() >= 6  # at -50.5 ms, -40.5, ..., -0.5: six expirations already passed
        assert timer.read() in (0, 1)  # read resets the count: at most the one due since
    finally:
        timer.close()
    assert timer.fd == -1


def test_a_timer_not_yet_due_reads_nothing_then_wakes_a_poll() -> None:
    timer = open_periodic(time.monotonic() + 0.05, 0.02)
    if timer is None:
        pytest.skip("no timerfd on this system")
    try:
        assert timer.read() == 0  # non-blocking: a spurious wake-up reads 0, it never blocks the loop
        ready, _, _ = select.select([timer.fd], [], [], 2.0)
        assert ready == [timer.fd] and timer.read() >= 1
    finally:
        timer.close()
