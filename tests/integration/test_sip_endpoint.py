"""A real SipEndpoint on 127.0.0.1 against real sipp processes (tests/integration/sipp/uac_*.xml).

Each test runs one sipp call (`-m 1`) and checks sipp's exit code, plus what the tiny app saw.
Every wait is bounded: sipp by `-timeout 20s -timeout_error`, our waits by asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ivr.errors import CallerHungUp
from ivr.sip.endpoint import InboundLeg, SipEndpoint
from ivr.sip.sdp import PCMA, PCMU, TELEPHONE_EVENT, Answer, SessionDescription, build_offer, negotiate_answer
from ivr.sip.ua import UserAgentConfig

SCENARIOS = Path(__file__).parent / "sipp"
SIPP = shutil.which("sipp")
LOCAL_RTP_PORT = 30000

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed")


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class AnsweringApp:
    """Answers every call with an SDP from negotiate_answer; dialed numbers steer it:
    "slow" rings and never answers, "ringlong" rings for 0.5 s first, "hangup" hangs up once the ACK is in."""

    calls: list[InboundLeg] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    media_offers: list[SessionDescription] = field(default_factory=list)
    late_answers: list[bytes] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    version: int = 1

    def on_call(self, leg: InboundLeg) -> None:
        self.calls.append(leg)
        leg.on_dtmf = self.digits.append
        leg.on_media_changed = self.media_changed
        task = asyncio.get_running_loop().create_task(self.run(leg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def answer_for(self, offer: SessionDescription) -> bytes | None:
        self.version += 1
        answer = negotiate_answer(offer, [PCMU, PCMA, TELEPHONE_EVENT], local_address="127.0.0.1",
                                  local_port=LOCAL_RTP_PORT, session_id="4242", session_version=str(self.version))
        return answer.sdp.to_bytes() if isinstance(answer, Answer) else None

    def media_changed(self, offer: SessionDescription) -> bytes:
        self.media_offers.append(offer)
        answer = self.answer_for(offer)
        assert answer is not None
        return answer

    async def run(self, leg: InboundLeg) -> None:
        try:
            await leg.ring()
            if leg.dialed == "slow":
                async with asyncio.timeout(20):
                    await leg.ended.wait()
                return
            if leg.dialed == "ringlong":
                await asyncio.sleep(0.5)
            if leg.offer is None:
                offer = build_offer([PCMU, PCMA, TELEPHONE_EVENT], local_address="127.0.0.1",
                                    local_port=LOCAL_RTP_PORT, session_id="4242")
                remote = await leg.answer(offer.to_bytes())
                assert remote is not None
                self.late_answers.append(remote)
            else:
                sdp = self.answer_for(leg.offer)
                if sdp is None:
                    await leg.reject(488)
                    return
                assert await leg.answer(sdp) is None
            async with asyncio.timeout(20):
                await leg.wait_confirmed()
                if leg.dialed == "hangup":
                    await asyncio.sleep(0.2)
                    await leg.hangup()
                await leg.ended.wait()
        except CallerHungUp:
            pass
        finally:
            self.done.set()


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[SipEndpoint, AnsweringApp]]:
    app = AnsweringApp()
    config = UserAgentConfig(allowed_peers=("127.0.0.1/32",))
    ep = SipEndpoint(config, "127.0.0.1", free_udp_port(), app.on_call)
    await ep.start()
    try:
        yield ep, app
    finally:
        await ep.stop(grace=1.0)
        for task in list(app.tasks):
            task.cancel()
        if app.tasks:
            await asyncio.wait(app.tasks, timeout=2.0)


async def run_sipp(ep: SipEndpoint, scenario: str, tmp_path: Path, *, local_ip: str = "127.0.0.1",
                   service: str = "5000", extra: tuple[str, ...] = ()) -> str:
    """One sipp UAC call against the endpoint; fails with sipp's error log unless it exits 0.

    Returns sipp's message trace (-trace_msg)."""
    assert SIPP is not None
    host, port = ep.local_address
    args = [
        SIPP, f"{host}:{port}", "-sf", str(SCENARIOS / scenario), "-m", "1", "-s", service,
        "-i", local_ip, "-p", str(free_udp_port(local_ip)), "-mp", str(free_udp_port(local_ip)),
        "-timeout", "20s", "-timeout_error", "-trace_err", "-trace_msg", "-nostdin", *extra,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(tmp_path.glob("*.log"))
        )
        pytest.fail(f"sipp {scenario} exited {proc.returncode}: {stderr.decode(errors='replace')}\n{logs}")
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*_messages.log")))


def received(trace: str, start_line: str) -> int:
    """How many datagrams starting with `start_line` sipp received (retransmissions included)."""
    return len(re.findall(r"message received \[\d+\] bytes :\s*" + re.escape(start_line), trace))


async def wait_for(event: asyncio.Event, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        await event.wait()


async def test_options(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_options.xml", tmp_path)
    assert app.calls == []


async def test_basic_call_caller_hangs_up(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_basic_call.xml", tmp_path)
    (leg,) = app.calls
    await wait_for(leg.ended)
    assert (leg.caller, leg.dialed, leg.end_reason) == ("+15555550142", "5000", "caller hung up")
    assert leg.source[0] == "127.0.0.1"


async def test_we_hang_up(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_we_hang_up.xml", tmp_path, service="hangup")
    (leg,) = app.calls
    await wait_for(leg.ended)
    assert leg.end_reason == "hangup"


async def test_cancel_before_answer(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_cancel.xml", tmp_path, service="slow")
    (leg,) = app.calls
    await wait_for(leg.ended)
    assert leg.end_reason == "cancelled"


async def test_duplicate_invite_absorbed(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    trace = await run_sipp(ep, "uac_duplicate_invite.xml", tmp_path, service="ringlong",
                           extra=("-nr",))  # sipp would answer each copy of the 180 with its INVITE again
    assert len(app.calls) == 1
    assert received(trace, "SIP/2.0 180 Ringing") >= 2  # the retransmitted INVITE got the 180 again
    await wait_for(app.calls[0].ended)


async def test_2xx_retransmitted_until_ack(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    trace = await run_sipp(ep, "uac_2xx_retransmit.xml", tmp_path)
    assert received(trace, "SIP/2.0 200 OK") >= 3  # 200 to INVITE, its retransmission, 200 to BYE
    (leg,) = app.calls
    await wait_for(leg.ended)
    assert leg.end_reason == "caller hung up"


async def test_late_offer(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_late_offer.xml", tmp_path)
    (leg,) = app.calls
    await wait_for(leg.ended)
    assert leg.offer is None
    (answer,) = app.late_answers
    assert b"m=audio" in answer


async def test_reinvite_hold_resume_new_port(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_reinvite.xml", tmp_path)
    (leg,) = app.calls
    await wait_for(leg.ended)
    assert leg.end_reason == "caller hung up"  # not dropped by hold, resume or the move
    directions = [str(o.media[0].direction) for o in app.media_offers]
    assert directions == ["sendonly", "sendrecv", "sendrecv"]
    assert app.media_offers[2].media[0].port != app.media_offers[1].media[0].port


async def test_info_dtmf_relay(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_info_dtmf.xml", tmp_path)
    (leg,) = app.calls
    await wait_for(leg.ended)
    assert app.digits == ["5", "#"]


async def test_bye_unknown_dialog_481(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, _ = endpoint
    await run_sipp(ep, "uac_bye_unknown.xml", tmp_path)


async def test_peer_not_allowed_403(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_invite_forbidden.xml", tmp_path, local_ip="127.0.0.2")
    assert app.calls == [] and ep.user_agent.stats.forbidden >= 1


async def test_garbage_then_options(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, _ = endpoint
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for junk in (b"\x00\x01\x02 not sip", b"INVITE\r\n\r\n", b"SIP/2.0 999\r\n"):
            sock.sendto(junk, ep.local_address)
    for _ in range(500):  # bounded poll, 5 s at most
        if ep.user_agent.stats.parse_errors >= 3:
            break
        await asyncio.sleep(0.01)
    assert ep.user_agent.stats.parse_errors == 3
    await run_sipp(ep, "uac_options.xml", tmp_path)


async def test_require_100rel_420(endpoint: tuple[SipEndpoint, AnsweringApp], tmp_path: Path) -> None:
    ep, app = endpoint
    await run_sipp(ep, "uac_require_100rel.xml", tmp_path)
    assert app.calls == []
