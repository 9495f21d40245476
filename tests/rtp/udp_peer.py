"""UDP helpers for the media engine tests: a peer socket, paced sending, free ports, bounded waits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from ivr.rtp.packet import RtpPacket, parse_rtp


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """An even base port with ``count`` consecutive free UDP ports above it (checked by binding)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((host, 0))
    start = probe.getsockname()[1] & ~1
    probe.close()
    for base in range(start, start + 2000, 2):
        if base + count > 65535:
            break
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    """Poll with a bound in count and time (aiortc's sleepWhile shape); fails the test on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(int(timeout / 0.01) + 1):
        if predicate() or loop.time() > deadline:
            break
        await asyncio.sleep(0.01)
    assert predicate(), f"timed out waiting for {what}"


@dataclass
class Peer(asyncio.DatagramProtocol):
    """A remote RTP endpoint: records what arrives, sends what the test says."""

    received: list[tuple[float, bytes, tuple[str, int]]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((asyncio.get_running_loop().time(), data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def packets(self) -> list[RtpPacket]:
        return [parse_rtp(data) for _, data, _ in self.received]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def send_paced(self, datagrams: list[bytes], addr: tuple[str, int], interval: float = 0.02) -> None:
        """One datagram every ``interval`` on an absolute schedule (like a phone)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k, data in enumerate(datagrams):
            delay = t0 + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_peer(host: str = "127.0.0.1") -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(host, 0))
    return peer
