"""Outbound calls and registration of a real SipEndpoint against real sipp UAS processes on 127.0.0.1.

sipp plays the callee (tests/integration/sipp/uas_*.xml) or the registrar (reg_*.xml), one call each
(`-m 1`), bounded by `-timeout 20s -timeout_error`; the test checks sipp's exit code and what our API
reported. Our INVITE/REGISTER retransmissions cover sipp still starting up, so nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.sip.endpoint import InboundLeg, OutboundLeg, SipEndpoint
from ivr.sip.register import RegistrationConfig, RegistrationState, RegistrationStatus
from ivr.sip.sdp import PCMU, TELEPHONE_EVENT, build_offer
from ivr.sip.ua import UserAgentConfig
from ivr.sip.uac import OutboundOutcome

SCENARIOS = Path(__file__).parent / "sipp"
SIPP = shutil.which("sipp")

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed")


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def refuse(leg: InboundLeg) -> None:
    raise AssertionError(f"unexpected inbound call {leg.call_id}")


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    ep = SipEndpoint(UserAgentConfig(allowed_peers=("127.0.0.1/32",)), "127.0.0.1", free_udp_port(), refuse)
    await ep.start()
    try:
        yield ep
    finally:
        await ep.stop(grace=1.0)


def udp_bound(port: int) -> bool:
    """Whether a UDP socket is bound to 127.0.0.1 (or any address) at ``port`` (Linux /proc/net/udp)."""
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/udp", encoding="ascii") as f:
        return any(line.split()[1] in wanted for line in f.readlines()[1:] if len(line.split()) > 1)


class Sipp:
    """One sipp UAS on its own port; `finish()` waits for it (bounded) and fails the test unless it exits 0."""

    def __init__(self, scenario: str, tmp_path: Path) -> None:
        self.scenario = scenario
        self.tmp_path = tmp_path
        self.port = free_udp_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert SIPP is not None
        args = [
            SIPP, "-sf", str(SCENARIOS / self.scenario), "-m", "1", "-i", "127.0.0.1", "-p", str(self.port),
            "-mp", str(free_udp_port()), "-timeout", "20s", "-timeout_error", "-trace_err", "-trace_msg",
            "-nostdin",
        ]
        self.proc = await asyncio.create_subprocess_exec(
            *args, cwd=self.tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        # until sipp holds its port: a request sent before would bounce (ICMP port unreachable), and the box
        # gives up on a peer whose request and retransmission both bounce
        for _ in range(200):  # bounded: 10 s
            if udp_bound(self.port) or self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    async def finish(self) -> str:
        assert self.proc is not None
        try:
            async with asyncio.timeout(30):
                _, stderr = await self.proc.communicate()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        if self.proc.returncode != 0:
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                             for p in sorted(self.tmp_path.glob("*.log")))
            pytest.fail(f"sipp {self.scenario} exited {self.proc.returncode}: "
                        f"{stderr.decode(errors='replace')}\n{logs}")
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*_messages.log")))


def offer() -> bytes:
    return build_offer([PCMU, TELEPHONE_EVENT], local_address="127.0.0.1", local_port=30000,
                       session_id="77").to_bytes()


async def dial(ep: SipEndpoint, sipp: Sipp, *, ring_timeout: float = 10.0,
               credentials: tuple[str, str] | None = None) -> OutboundLeg:
    return await ep.call(
        f"sip:+15555550100@127.0.0.1:{sipp.port}", from_uri="sip:+15555550999@127.0.0.1",
        from_display="Callback", asserted_identity="sip:+15555550999@ivr.example", sdp_offer=offer(),
        proxy=sipp.address, credentials=credentials, ring_timeout=ring_timeout,
    )


async def test_answered_then_callee_hangs_up(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp = Sipp("uas_answer_bye.xml", tmp_path)
    await sipp.start()
    leg = await dial(endpoint, sipp)
    assert leg.result is not None and leg.result.outcome == OutboundOutcome.ANSWERED
    assert leg.answered and leg.remote_sdp is not None and b"m=audio" in leg.remote_sdp
    assert leg.progress == [180] and leg.caller == "+15555550100"
    async with asyncio.timeout(10):
        await leg.ended.wait()
    assert leg.end_reason == "callee hung up"
    await sipp.finish()


async def test_answered_then_we_hang_up(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp = Sipp("uas_answer_we_hang_up.xml", tmp_path)
    await sipp.start()
    leg = await dial(endpoint, sipp)
    assert leg.answered, leg.result
    await leg.hangup()
    assert leg.end_reason == "hangup"
    await sipp.finish()


@pytest.mark.parametrize(
    ("scenario", "outcome", "status"),
    [("uas_busy.xml", OutboundOutcome.BUSY, 486), ("uas_not_found.xml", OutboundOutcome.INVALID_NUMBER, 404),
     ("uas_unavailable.xml", OutboundOutcome.TRUNK_FAILURE, 503)],
)
async def test_rejected(endpoint: SipEndpoint, tmp_path: Path, scenario: str, outcome: OutboundOutcome,
                        status: int) -> None:
    sipp = Sipp(scenario, tmp_path)
    await sipp.start()
    leg = await dial(endpoint, sipp)
    assert leg.result is not None
    assert (leg.result.outcome, leg.result.status) == (outcome, status)
    assert leg.ended.is_set() and leg.end_reason == outcome.value
    if status == 486:
        assert leg.result.q850_cause == 17
    await sipp.finish()


async def test_ring_timeout_cancels(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp = Sipp("uas_ring_no_answer.xml", tmp_path)
    await sipp.start()
    leg = await dial(endpoint, sipp, ring_timeout=1.0)
    assert leg.result is not None
    assert (leg.result.outcome, leg.result.status) == (OutboundOutcome.NO_ANSWER, 487)
    await sipp.finish()


async def test_407_then_answered(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp = Sipp("uas_auth_407.xml", tmp_path)
    await sipp.start()
    leg = await dial(endpoint, sipp, credentials=("trunkuser", "trunkpass"))
    assert leg.result is not None and leg.result.outcome == OutboundOutcome.ANSWERED, leg.result
    await leg.hangup()
    await sipp.finish()


class Watcher:
    """Collects the states pushed through `on_registration` and wakes a waiter on each."""

    def __init__(self, ep: SipEndpoint) -> None:
        self.seen: list[RegistrationState] = []
        self.changed = asyncio.Event()
        ep.on_registration = self.update

    def update(self, status: RegistrationStatus) -> None:
        self.seen.append(status.state)
        self.changed.set()

    async def wait_for(self, state: RegistrationState, seconds: float = 10.0) -> None:
        async with asyncio.timeout(seconds):
            while state not in self.seen:
                await self.changed.wait()
                self.changed.clear()


async def test_register_with_digest_then_unregister(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp = Sipp("reg_auth.xml", tmp_path)
    await sipp.start()
    watcher = Watcher(endpoint)
    config = RegistrationConfig(aor="sip:2000@127.0.0.1", registrar=f"127.0.0.1:{sipp.port}", username="2000",
                                password="regpass", expires=300)
    await endpoint.register(config)
    await watcher.wait_for(RegistrationState.REGISTERED)
    status = endpoint.registrations()[0]
    assert status.reason is None and status.expires_at is not None
    (line,) = endpoint.registration_lines()
    assert line.startswith("sip:2000@127.0.0.1: registered, expires in 1")  # 120 s granted, less than asked
    await endpoint.unregister_all(timeout=5.0)
    assert endpoint.registrations()[0].state == RegistrationState.UNREGISTERED
    assert watcher.seen[-1] == RegistrationState.UNREGISTERED
    await sipp.finish()


async def test_register_wrong_password_retries(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp = Sipp("reg_auth.xml", tmp_path)
    await sipp.start()
    config = RegistrationConfig(aor="sip:2000@127.0.0.1", registrar=f"127.0.0.1:{sipp.port}", username="2000",
                                password="nope", backoff_min=30.0)
    watcher = Watcher(endpoint)
    await endpoint.register(config)
    await watcher.wait_for(RegistrationState.RETRYING)
    status = endpoint.registrations()[0]
    assert status.reason == "403 Forbidden" and status.failures == 1
    assert "retrying in" in endpoint.registration_lines()[0]
    await sipp.finish()
