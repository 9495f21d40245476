"""The SIP endpoint on uvloop, the daemon's loop (issue 15 defect 1): uvloop's ``call_at`` for a deadline
already past returns a ``Handle`` without ``when()``, which the endpoint once read back and raised on —
thousands of times in a fuzz run, and on the answer, hang-up and DTMF paths."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import uuid

import pytest

from ivr.sip.endpoint import SipEndpoint
from ivr.sip.ua import UserAgentConfig

uvloop = pytest.importorskip("uvloop")


class PastDeadline:
    """A user agent whose next timer is always already due (a busy loop running late)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls = 0

    def get_timer(self) -> float:
        self.calls += 1
        return self.loop.time() - 1.0 + self.calls * 1e-6  # a new deadline each time, always in the past


def options(port: int, here: int, n: int, call_id: str) -> bytes:
    return (f"OPTIONS sip:ivr@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK{n}x{call_id[:8]}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:f@127.0.0.1>;tag={n}\r\nTo: <sip:ivr@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def test_timers_due_in_the_past_and_a_flood_on_uvloop(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__.startswith("uvloop")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        ep = SipEndpoint(UserAgentConfig(allowed_peers=("127.0.0.1/32",)), "127.0.0.1", port, lambda leg: None)
        await ep.start()
        try:
            stub = PastDeadline(loop)
            for _ in range(3):  # re-arming over a handle made for a past deadline
                ep._arm_timer(stub)  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
            # then the real thing: OPTIONS and garbage as fast as the socket takes them, every answer awaited
            rng = random.Random(15)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
                here = s.getsockname()[1]
                sent: set[str] = set()
                answered: set[str] = set()

                def read() -> None:  # as they come: the test's own socket buffer must not drop them
                    while True:
                        try:
                            data = s.recv(65536)
                        except BlockingIOError:
                            return
                        if data.startswith(b"SIP/2.0 200"):
                            answered.add(data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode())

                for n in range(1, 401):
                    call_id = uuid.uuid4().hex
                    if n % 3:
                        sent.add(call_id)
                    s.sendto(options(port, here, n, call_id) if n % 3 else rng.randbytes(rng.randint(1, 300)),
                             ("127.0.0.1", port))
                    if n % 10 == 0:
                        await asyncio.sleep(0.001)
                        read()
                deadline = loop.time() + 10
                while answered != sent and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                    read()
            assert len(sent) == 267 and answered == sent
        finally:
            await ep.stop(grace=0.5)

    with caplog.at_level(logging.WARNING), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
