"""Decoding yields the CPU to the event loop: the decode threads run at a raised nice value."""

from __future__ import annotations

import os
import threading

from ivr.adapters.speech import _lower_thread_priority


def test_a_decode_thread_lowers_only_its_own_priority() -> None:
    seen: list[int] = []

    def worker() -> None:
        _lower_thread_priority(7)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert seen == [min(19, before + 7)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the loop's thread keeps its own
