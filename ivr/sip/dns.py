"""The DNS look-ups of RFC 3263 (SRV, then A/AAAA) on asyncio, with dnspython; the choices are made
by the pure `ivr.sip.resolve`.

With `servers` ("ip[:port]", `sip.dns_servers`) every look-up goes to them; without, SRV goes to the
system's resolvers (/etc/resolv.conf) and names are turned into addresses by getaddrinfo, so
/etc/hosts keeps working.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from ivr.sip.resolve import Failover, SrvRecord, expiry, order_srv, parse_host, srv_name

__all__ = ["DnsResolver", "parse_server"]

log = logging.getLogger(__name__)

#: TTL assumed for what getaddrinfo returns (it tells none).
SYSTEM_TTL = 300.0


def parse_server(text: str) -> tuple[str, int]:
    """ "127.0.0.1", "127.0.0.1:5353", "[::1]:53" → (ip, port); ValueError when it is no IP."""
    spec = parse_host(text)
    if not spec.literal:
        raise ValueError(f"DNS server {text!r} is not an IP address")
    return spec.host, spec.port or 53


class DnsResolver:
    """Turns a configured "host[:port]" into a `Failover` (ordered addresses and their expiry)."""

    def __init__(self, servers: Sequence[str] = (), *, timeout: float = 5.0, rng: random.Random | None = None):
        self.timeout = timeout
        self._rng = rng or random.Random()
        self._system_addresses = not servers
        self._resolver: dns.asyncresolver.Resolver | None
        if servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_server(s)) for s in servers]
            self._resolver = resolver
        else:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._resolver = None  # no resolv.conf: names still resolve by getaddrinfo, just no SRV
        if self._resolver is not None:
            self._resolver.lifetime = timeout

    async def resolve(self, text: str, family: int, now: float, transport: str = "udp") -> Failover:
        """Every address to try for `text` over `transport` (udp, tcp, tls), best first (RFC 3263 section 4).
        OSError when none."""
        spec = parse_host(text)
        default_port = 5061 if transport.lower() == "tls" else 5060
        if spec.literal:
            return Failover.fixed((spec.host, spec.port or default_port))
        if spec.use_srv:
            records, ttl = await self._srv(srv_name(spec.host, transport))
            targets = []
            ttls = [ttl]
            for record in order_srv(records, self._rng):
                try:
                    addresses, a_ttl = await self._addresses(record.target, family)
                except OSError as exc:
                    log.warning("sip dns srv target %s of %s does not resolve: %s", record.target, spec.host, exc)
                    continue
                ttls.append(a_ttl)
                targets += [(address, record.port) for address in addresses]
            if targets:
                log.info("sip dns %s -> %s", srv_name(spec.host, transport), " ".join(f"{h}:{p}" for h, p in targets))
                return Failover(targets, expiry(now, min(ttls)))
        addresses, ttl = await self._addresses(spec.host, family)
        targets = [(address, spec.port or default_port) for address in addresses]
        log.info("sip dns %s -> %s", spec.host, " ".join(f"{h}:{p}" for h, p in targets))
        return Failover(targets, expiry(now, ttl))

    async def _srv(self, name: str) -> tuple[list[SrvRecord], float]:
        """SRV records of `name`; none when there are none or the look-up failed (then A/AAAA)."""
        if self._resolver is None:
            return [], SYSTEM_TTL
        try:
            answer = await self._resolver.resolve(name, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], SYSTEM_TTL
        except dns.exception.DNSException as exc:
            log.warning("sip dns SRV %s failed: %s", name, exc)
            return [], SYSTEM_TTL
        records = [SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True)) for r in answer]
        return records, float(answer.rrset.ttl if answer.rrset is not None else SYSTEM_TTL)

    async def _addresses(self, host: str, family: int) -> tuple[list[str], float]:
        if self._system_addresses or self._resolver is None:
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            if not addresses:
                raise OSError(f"no address for {host}")
            return addresses, SYSTEM_TTL
        rdtype = "AAAA" if family == socket.AF_INET6 else "A"
        try:
            answer = await self._resolver.resolve(host, rdtype)
        except dns.exception.DNSException as exc:
            raise OSError(f"no address for {host}: {exc}") from exc
        addresses = [r.address for r in answer]
        return addresses, float(answer.rrset.ttl if answer.rrset is not None else SYSTEM_TTL)
