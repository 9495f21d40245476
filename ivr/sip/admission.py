"""Who may start a call now: per-peer INVITE rates, per-peer and global call caps (RFC 3261 21.5.4: 503 with
Retry-After), and a log of refused traffic an admin can read during a flood. Sans-I/O: the user agent asks,
with the time and the sources of the calls in progress.

A site's own PBX is one source address: under the default per-source rate (10 INVITEs/s, burst 20) its busy
hour would meet 503s, so ``sip.peer_limits`` gives it its own (high, or none) while unknown sources stay
tight; ``max_calls`` caps what the box takes at once, in all and per peer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ivr.sip.ua_state import PeerLimit, UaStats, UserAgentConfig

MAX_BUCKETS = 4096
"""Source addresses with a token bucket at once; the oldest is dropped beyond it (memory stays bounded)."""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class Admission:
    """The limits of new incoming calls; counts what it refuses in ``stats``."""

    def __init__(self, config: UserAgentConfig, stats: UaStats) -> None:
        self.max_calls = config.max_calls
        self.stats = stats
        self._limits = [([ipaddress.ip_network(n, strict=False) for n in limit.networks], limit)
                        for limit in config.peer_limits]
        self._default = PeerLimit((), config.invite_rate, config.invite_burst, None)
        self._buckets: dict[str, _Bucket] = {}

    def limit_for(self, host: str) -> tuple[int, PeerLimit]:
        """The limits for a source (its index in ``peer_limits``, -1 for the default): first match wins."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return -1, self._default
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for index, (networks, limit) in enumerate(self._limits):
            if any(address in network for network in networks):
                return index, limit
        return -1, self._default

    def refuse(self, host: str, now: float, live_sources: Iterable[str]) -> str | None:
        """Why a new INVITE from ``host`` is refused, or None. ``live_sources``: the source address of every
        incoming call in progress. Checked in order: the global cap, the peer's cap, the peer's rate."""
        live = list(live_sources)
        if self.max_calls is not None and len(live) >= self.max_calls:
            self.stats.over_capacity += 1
            return f"at max_calls ({self.max_calls})"
        index, limit = self.limit_for(host)
        if limit.max_calls is not None and sum(1 for h in live if self.limit_for(h)[0] == index) >= limit.max_calls:
            self.stats.over_capacity += 1
            return f"at the peer's max_calls ({limit.max_calls})"
        if limit.invite_rate is not None and not self._take_token(host, now, limit.invite_rate, limit.invite_burst):
            self.stats.rate_limited += 1
            return "rate limited"
        return None

    def _take_token(self, host: str, now: float, rate: float, burst: float) -> bool:
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))  # oldest first
            bucket = self._buckets[host] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class RefusalLog:
    """Refused traffic logged the way an admin can read during a flood: the first refusal of a kind in full,
    then, once per interval, one line with how many more and from whom (the top sources)."""

    def __init__(self, interval: float, log: logging.Logger) -> None:
        self.interval = interval
        self.log = log
        self._windows: dict[str, tuple[float, Counter[str]]] = {}

    def note(self, kind: str, host: str, now: float, level: int, line: str, *args: object) -> None:
        window = self._windows.get(kind)
        if window is not None and now - window[0] < self.interval:
            window[1][host] += 1
            return
        if window is not None and window[1]:
            more = window[1]
            top = ", ".join(f"{h} x{n}" for h, n in more.most_common(3))
            self.log.log(level, "sip %s: %d more in the last %.0f s from %d sources (%s)", kind,
                         sum(more.values()), now - window[0], len(more), top)
        self._windows[kind] = (now, Counter())
        self.log.log(level, line, *args)
