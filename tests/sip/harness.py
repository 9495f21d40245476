"""A UserAgent on a test clock, shared by the registration and outbound-call tests."""

from __future__ import annotations

from ivr.sip.ua import UserAgent
from ivr.sip.ua_events import UaEvent


class ClockedUa:
    """Holds the UA, the test's "now" and the events it reported; ``advance`` fires timers the way the
    endpoint's ``loop.call_at`` would."""

    def __init__(self, ua: UserAgent, now: float) -> None:
        self.ua = ua
        self.now = now
        self.events: list[UaEvent] = []

    def drain(self) -> None:
        while (e := self.ua.next_event()) is not None:
            self.events.append(e)

    def advance(self, until: float) -> None:
        """Fire every timer due up to `until` (bounded), then move the clock to `until`."""
        for _ in range(1000):
            deadline = self.ua.get_timer()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
        self.now = until
        self.drain()
