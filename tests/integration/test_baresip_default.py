"""baresip with its DEFAULT configuration walks a menu (issue 15), in network namespaces this test builds:

    ns "phone host"  lo 127.0.0.1: `ivr run` (sip.listen 127.0.0.1:0) and baresip
                     veth 10.78.N.2/24, default route via 10.78.N.1: its LAN interface, as on a real LAN
    ns "lan"         veth 10.78.N.1/24 (the LAN's router; nothing runs there)

baresip runs with the config it writes itself on first start in an empty dir, changed only where a headless
run must be (``Baresip.generate_default_config`` has the detail, each edit asserted against the template's
exact line):

- ``module_app ctrl_tcp.so`` uncommented: the test dials and presses keys over its TCP control socket (the
  template's ``ctrl_tcp_listen 0.0.0.0:4444``, inside the namespace); its stdio UI fails to load without a
  terminal, as it would anywhere headless, and is left in;
- ``aufile.so`` and ``aubridge.so`` uncommented and audio_source/player/alert moved off ``alsa,default`` to a WAV
  of silence and a bridge: with no sound card, baresip hangs up as soon as the call is answered;
- one account appended to the accounts template, which has none: ``<sip:baresip@10.78.N.2>;regint=0`` (the
  address of its LAN interface; no registrar to register with).

Left as baresip wrote them: no sip_listen, no net_interface, no rtp_ports, the stun/turn/ice modules, rtcp_mux
no, epoll. ``-s`` (its SIP trace, to its log) is a command-line flag, not config.

What that default does on one host: baresip binds its SIP socket to its LAN address (the INVITE comes from
10.78.N.2) and names that address in its SDP, but binds RTP to the wildcard address, so its RTP towards
127.0.0.1 leaves from 127.0.0.1: not from the SDP's address. The appliance, configured for a LAN phone
(``sip.allowed_peers: [10.78.N.2]``), hears its key and records menu -> two only with that address in
``sip.comedia_peers``; without it (the second case) the same call's key is not heard: every packet is refused
as from a stranger and the call ends for lack of media. So the test exercises the default-config problem.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration.appliance import start_appliance, stop_appliance, wait_for_call
from tests.integration.baresip.client import Baresip
from tests.integration.test_nat import _skip_reason, sh

_REASON = "baresip (Debian baresip) not installed" if shutil.which("baresip") is None else _skip_reason(("ip",))
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

RTP_TIMEOUT_SECONDS = 6  # without comedia_peers the call ends this long after the answer, nothing heard


class PhoneNet:
    """The phone's host and its LAN: two namespaces and a veth pair, named for this run."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        n = secrets.randbelow(256)
        self.host, self.lan = f"ivr-bsh-{tag}", f"ivr-bsl-{tag}"
        self.host_if, self.lan_if = f"bh{tag}", f"bl{tag}"  # veth names: at most 15 characters
        self.phone_ip, self.router_ip = f"10.78.{n}.2", f"10.78.{n}.1"

    def ns(self, name: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", name, *args]

    def build(self) -> None:
        for name in (self.host, self.lan):
            sh("ip", "netns", "add", name)
            sh(*self.ns(name, "ip", "link", "set", "lo", "up"))
        sh("ip", "link", "add", self.host_if, "netns", self.host, "type", "veth",
           "peer", "name", self.lan_if, "netns", self.lan)
        for ns, ifname, address in ((self.host, self.host_if, self.phone_ip), (self.lan, self.lan_if, self.router_ip)):
            sh(*self.ns(ns, "ip", "addr", "add", f"{address}/24", "dev", ifname))
            sh(*self.ns(ns, "ip", "link", "set", ifname, "up"))
        sh(*self.ns(self.host, "ip", "route", "add", "default", "via", self.router_ip))

    def teardown(self) -> None:
        for name in (self.host, self.lan):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def net() -> Iterator[PhoneNet]:
    net = PhoneNet()
    try:
        net.build()
        yield net
    finally:
        net.teardown()


@pytest.mark.parametrize("comedia", [True, False], ids=["comedia_peers", "no_comedia_peers"])
def test_default_baresip_walks_the_menu(env: Env, tmp_path: Path, net: PhoneNet, comedia: bool) -> None:
    peers = f"allowed_peers: [{net.phone_ip}], " + (f"comedia_peers: [{net.phone_ip}], " if comedia else "")
    text = env.config.read_text(encoding="utf-8").replace("sip: {listen: '127.0.0.1:0',",
                                                         "sip: {" + peers + "listen: '127.0.0.1:0',", 1)
    assert "allowed_peers" in text
    env.config.write_text(text + f"calls: {{rtp_timeout_seconds: {RTP_TIMEOUT_SECONDS}}}\nlog: {{level: debug}}\n",
                          encoding="utf-8")
    phone = Baresip(tmp_path, netns=net.host, default_account=f"<sip:baresip@{net.phone_ip}>;regint=0")
    proc = None
    log = env.root / "daemon.log"
    try:
        proc, port, log = start_appliance(env, prefix=net.ns(net.host))
        phone.start()
        assert phone.command("dial", f"sip:500@127.0.0.1:{port}").get("ok")
        try:
            phone.wait_event("CALL_ESTABLISHED", timeout=15)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- daemon log ---\n{log.read_text()[-4000:]}") from None
        time.sleep(1.5)  # our prompt plays to it, then a key, as from a person
        assert phone.command("sndcode", "2").get("ok")
        phone.wait_event("CALL_CLOSED", timeout=30)  # our BYE: after "two" with comedia_peers, at the timeout without
        call = wait_for_call(env)
    finally:
        phone.stop()
        if proc is not None:
            stop_appliance(proc)
    trace = phone.log.read_text(errors="replace")
    context = f"{call}\n--- baresip ---\n{trace[-6000:]}\n--- daemon log ---\n{log.read_text()[-4000:]}"

    # Its default config: the media NAT modules are loaded; it dialed 127.0.0.1 with its LAN address in the SDP.
    assert "medianat: ice" in phone.first_start and "medianat: stun" in phone.first_start, phone.first_start
    invite = trace[trace.index("INVITE sip:500@127.0.0.1"):]
    offered = re.search(r"^c=IN IP4 (\S+)", invite, re.MULTILINE)
    assert offered is not None and offered.group(1) == net.phone_ip, invite[:2000]
    assert "send DTMF digit: '2'" in trace, context  # it sent the key, heard or not

    events = asyncio.run(read_events(env.state / "ivr.db", str(call["call_id"])))
    answered = next(e for e in events if e.type == "sip.answered")
    assert answered.data["source"].startswith(f"{net.phone_ip}:"), answered.data  # its SIP: from the LAN address
    assert answered.data["from"] == "baresip" and answered.data["to"] == "500"
    assert answered.data["telephone_event"] is True
    dtmf = [e.data for e in events if e.type == "input.dtmf"]
    assert call["channel"] == "sip" and call["flow"] == "keys", context
    if comedia:
        assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup", context
        assert dtmf == [{"digit": "2", "source": "rfc4733"}], context
    else:
        assert call["path"] == ["menu"] and call["outcome"] == "rtp_timeout", context
        assert dtmf == [], context
    assert next(e for e in events if e.type == "sip.ended").data["by"] == "ivr"
