"""RFC 3263 failover for outbound calls, with a real DNS server (dnsmasq on loopback) and real trunk
servers (sipp): `_sip._udp.trunk.test` names a server that answers 503 first and one that answers 200
next. The call connects through the second with the Call-ID the caller chose (the callback dialer
records it before dialling), and the next call goes straight to the server that worked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.sip.dns import DnsResolver
from ivr.sip.endpoint import OutboundLeg, SipEndpoint
from ivr.sip.ua import UserAgentConfig
from ivr.sip.uac import OutboundOutcome, TargetFailure
from tests.integration.dnsmasq import dnsmasq, needs_dnsmasq, srv_records
from tests.integration.test_sip_outbound import SIPP, Sipp, free_udp_port, offer, refuse

pytestmark = [needs_dnsmasq, pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]


@pytest.fixture
async def trunk(tmp_path: Path) -> AsyncIterator[tuple[SipEndpoint, Path]]:
    """An endpoint whose DNS is a dnsmasq knowing the trunk's SRV records; yields it and the DNS log."""
    busy, good = free_udp_port(), free_udp_port()
    (tmp_path / "ports").write_text(f"{busy} {good}")
    with dnsmasq(tmp_path, *srv_records("trunk.test", [("busy.trunk.test", busy), ("good.trunk.test", good)])) as dns:
        ep = SipEndpoint(UserAgentConfig(allowed_peers=("127.0.0.1/32",)), "127.0.0.1", free_udp_port(), refuse,
                         resolver=DnsResolver([f"127.0.0.1:{dns}"], timeout=2.0))
        await ep.start()
        try:
            yield ep, tmp_path
        finally:
            await ep.stop(grace=1.0)


def uas(scenario: str, root: Path, name: str, port: int) -> Sipp:
    workdir = root / name
    workdir.mkdir(exist_ok=True)
    sipp = Sipp(scenario, workdir)
    sipp.port = port  # where the SRV record points
    return sipp


async def call(ep: SipEndpoint, call_id: str) -> OutboundLeg:
    return await ep.call("sip:+15555550100@trunk.test", from_uri="sip:+15555550999@ivr.example",
                         sdp_offer=offer(), proxy="trunk.test", ring_timeout=10.0, call_id=call_id)


async def test_503_at_the_first_srv_target_then_answered_at_the_second(trunk: tuple[SipEndpoint, Path]) -> None:
    ep, root = trunk
    busy_port, good_port = (int(p) for p in (root / "ports").read_text().split())
    busy = uas("uas_unavailable.xml", root, "busy", busy_port)
    good = uas("uas_answer_we_hang_up.xml", root, "good", good_port)
    await busy.start()
    await good.start()
    leg = await call(ep, "cb-first@127.0.0.1")
    assert leg.result is not None and leg.result.outcome == OutboundOutcome.ANSWERED, leg.result
    assert leg.call_id == "cb-first@127.0.0.1"
    assert leg.source == ("127.0.0.1", good_port)
    assert leg.result.failed_targets == (TargetFailure(("127.0.0.1", busy_port), "503"),)
    await leg.hangup()
    busy_log, good_log = await busy.finish(), await good.finish()
    # The same Call-ID at both servers: the one the dialer committed stays the call's.
    assert "Call-ID: cb-first@127.0.0.1" in busy_log and "Call-ID: cb-first@127.0.0.1" in good_log
    assert "query[SRV] _sip._udp.trunk.test" in (root / "dnsmasq.log").read_text()

    # Sticky: the next call goes to the server that worked (the 503 one is gone; an INVITE to it would
    # time out and show up in failed_targets).
    again = uas("uas_answer_we_hang_up.xml", root, "again", good_port)
    await again.start()
    leg = await call(ep, "cb-second@127.0.0.1")
    assert leg.result is not None and leg.result.outcome == OutboundOutcome.ANSWERED, leg.result
    assert leg.result.failed_targets == () and leg.source == ("127.0.0.1", good_port)
    await leg.hangup()
    await again.finish()


async def test_every_srv_target_503_is_a_trunk_failure(trunk: tuple[SipEndpoint, Path]) -> None:
    ep, root = trunk
    ports = [int(p) for p in (root / "ports").read_text().split()]
    servers = [uas("uas_unavailable.xml", root, f"busy{i}", port) for i, port in enumerate(ports)]
    for server in servers:
        await server.start()
    leg = await call(ep, "cb-third@127.0.0.1")
    assert leg.result is not None
    assert (leg.result.outcome, leg.result.status) == (OutboundOutcome.TRUNK_FAILURE, 503)
    assert [f.address for f in leg.result.failed_targets] == [("127.0.0.1", p) for p in ports]
    for server in servers:
        await server.finish()
