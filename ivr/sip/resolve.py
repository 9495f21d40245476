"""Locating a SIP server from a configured host (RFC 3263 section 4), sans-I/O.

The lookups themselves (SRV, A/AAAA) are done by `ivr.sip.dns`; this module decides what to look up,
in which order the answers are tried, and which target to use after one failed:

- `parse_host("pbx.example.com")`: a name without port → SRV `_sip._udp.pbx.example.com` first
  (section 4.2); an explicit port or an IP literal skips SRV (A/AAAA only, or nothing);
- `order_srv(records, rng)`: lowest priority first, weighted random within a priority (RFC 2782);
- `Failover`: the ordered addresses with their TTL. The chosen target is sticky until it fails (a
  transaction timeout or a 503, section 4.3), then the next one is used; once every target failed in a
  row the round starts again from the best one (after the caller's backoff). `refresh_due(now)` says the
  records' TTL ran out and a new look-up is wanted; `update()` keeps the current target when it is still
  in the new answer.

Outbound calls use the same `Failover` per proxy name (`order(now)` gives the addresses one call may
try), and report back by address (`failed_at`, `succeeded_at`), since several calls share it; a 503's
Retry-After keeps its server out of `order` for that long (RFC 3261 section 21.5.4).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ivr.sip.transaction import Address

__all__ = ["Failover", "HostSpec", "SrvRecord", "expiry", "order_srv", "parse_host", "srv_name"]

#: Re-resolve at least this often even when the records' TTL is longer (a trunk may move).
MAX_TTL = 3600.0
#: ...and not more often than this, whatever TTL (0 included) the server gave.
MIN_TTL = 5.0


@dataclass(frozen=True)
class HostSpec:
    """A configured "host[:port]" (registrar, trunk, outbound proxy)."""

    host: str
    #: The port written in the config; None: SRV decides, else 5060.
    port: int | None
    #: The host is an IP address: no look-up at all.
    literal: bool

    @property
    def use_srv(self) -> bool:
        """RFC 3263 section 4.2: SRV only for a name without explicit port."""
        return not self.literal and self.port is None


def parse_host(text: str) -> HostSpec:
    """ "pbx.example.com", "pbx.example.com:5070", "192.0.2.1", "[2001:db8::1]:5060"; ValueError when bad."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad host {text!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    host = host.strip()
    if not host:
        raise ValueError(f"no host in {text!r}")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in {text!r}")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    return HostSpec(host, port, literal)


def srv_name(host: str, transport: str = "udp") -> str:
    """RFC 3263 section 4.2 / RFC 2782: `_sip._udp.<host>`, `_sip._tcp.<host>`, `_sips._tcp.<host>` for TLS."""
    if transport.lower() == "tls":
        return f"_sips._tcp.{host}"
    return f"_sip._{transport.lower()}.{host}"


@dataclass(frozen=True)
class SrvRecord:
    """One SRV answer (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 "Usage rules": by priority, then within a priority by weighted random selection (weight
    0 records first in the running sum, so they are picked only rarely). A lone target "." says the
    service is decidedly not available: no record."""
    if len(records) == 1 and records[0].target.rstrip(".") == "":
        return []
    out: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        pool = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.randint(0, total)
            running = 0
            for i, record in enumerate(pool):
                running += record.weight
                if running >= pick:
                    out.append(pool.pop(i))
                    break
    return out


@dataclass
class Failover:
    """Where requests for one configured host go; see the module docstring."""

    #: Addresses in the order to try (SRV order, then each target's A records in answer order).
    targets: list[Address]
    #: When the look-up runs out (loop time); None: never (an IP literal).
    expires_at: float | None = None
    _index: int = 0
    _failed: set[Address] = field(default_factory=set)
    #: Servers that answered 503 with Retry-After, until when (loop time).
    _held: dict[Address, float] = field(default_factory=dict)

    @classmethod
    def fixed(cls, address: Address) -> Failover:
        """One address that never changes (an IP literal, or a caller that resolved it itself)."""
        return cls([address])

    @property
    def current(self) -> Address:
        return self.targets[self._index]

    def refresh_due(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def update(self, targets: Sequence[Address], expires_at: float | None) -> None:
        """A new look-up's answer; the current target stays chosen while it is still listed."""
        if not targets:
            return  # keep what worked before rather than nothing; the caller logs the failed look-up
        current = self.current
        self.targets = list(targets)
        self.expires_at = expires_at
        self._index = self.targets.index(current) if current in self.targets else 0
        self._failed &= set(self.targets)
        self._held = {t: until for t, until in self._held.items() if t in self.targets}

    def succeeded(self) -> None:
        """The current target answered: the round of failures is over."""
        self._failed.clear()

    def succeeded_at(self, address: Address) -> None:
        """`address` answered a request: it becomes the current target (sticky) and the round of
        failures is over. An address no longer listed (a new look-up dropped it) changes nothing."""
        if address in self.targets:
            self._index = self.targets.index(address)
            self._failed.clear()
            self._held.pop(address, None)

    def order(self, now: float) -> list[Address]:
        """The addresses one new request may try, in turn: the current target, then the others in
        their order, leaving out servers held by a 503's Retry-After (all of them, if all are held:
        better a try than no call)."""
        ordered = [self.current] + [t for t in self.targets if t != self.current]
        usable = [t for t in ordered if self._held.get(t, now) <= now]
        return usable or ordered

    def failed_at(self, address: Address, hold_until: float | None = None) -> None:
        """`address` timed out or answered 503 (RFC 3263 section 4.3), with Retry-After: not to be
        used before `hold_until`. When it was the current target the next one not failed becomes
        current (another call may have moved on already: then the current target stays)."""
        if address not in self.targets:
            return
        if hold_until is not None:
            self._held[address] = hold_until
        if address == self.current:
            self.failed()
        else:
            self._failed.add(address)

    def failed(self) -> Address | None:
        """The current target timed out or answered 503 (RFC 3263 section 4.3): the next one to try at
        once, or None when every target failed in this round (then back to the best for the next try)."""
        self._failed.add(self.current)
        for i, target in enumerate(self.targets):
            if target not in self._failed:
                self._index = i
                return target
        self._failed.clear()
        self._index = 0
        return None


def expiry(now: float, ttl: float) -> float:
    """When to look up again: the TTL, kept within MIN_TTL..MAX_TTL."""
    return now + min(MAX_TTL, max(MIN_TTL, ttl))
