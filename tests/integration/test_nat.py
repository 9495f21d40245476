"""The appliance behind NAT, in network namespaces this test builds (veth pairs, nftables masquerade):

    lan  10.77.N.2  `ivr run`            router  10.77.N.1 | 198.51.100.1  masquerade out, new from wan dropped
    wan  198.51.100.2  sipp: the registrar, then a caller

Shown: the registrar sees the masqueraded source, never the 10.x address; the appliance learns its public
address from received/rport and registers it as Contact; CRLF keep-alives cross the router at the
configured interval; a call from the wan side reaches the appliance through the binding and its RTP reaches
sipp's host. Everything is torn down in a finally; names are unique per run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration.appliance import start_appliance, stop_appliance, wait_for_call
from tests.integration.scenarios import call

SIPP = Path(__file__).parent / "sipp"
DEFAULT_SIP = "sip: {listen: '127.0.0.1:0', rtp_ports: 31000-31999}\n"
LAN_IP, ROUTER_LAN_IP = "10.77.0.2", "10.77.0.1"
ROUTER_WAN_IP, WAN_IP = "198.51.100.1", "198.51.100.2"
#: The router maps the appliance's SIP port to this one (a NAT that changes ports: rport must be learned).
PUBLIC_SIP_PORT = 47000
KEEPALIVE_SECONDS = 2


def _skip_reason(tools: tuple[str, ...] = ("ip", "nft")) -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"{' or '.join(missing)} is not installed (iproute2, nftables: setup.sh test)"
    probe = f"ivrprobe{secrets.token_hex(3)}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "no network namespace support here (ip netns add failed)"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def sh(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr}")
    return result.stdout


class Net:
    """Three namespaces named for this run."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.lan, self.router, self.wan = f"ivr-lan-{tag}", f"ivr-rtr-{tag}", f"ivr-wan-{tag}"
        # veth names: at most 15 characters.
        self.lan_if, self.rlan_if, self.rwan_if, self.wan_if = (f"il{tag}", f"irl{tag}", f"irw{tag}", f"iw{tag}")

    def ns(self, name: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", name, *args]

    def build(self) -> None:
        for name in (self.lan, self.router, self.wan):
            sh("ip", "netns", "add", name)
            sh(*self.ns(name, "ip", "link", "set", "lo", "up"))
        for a, a_ns, b, b_ns in ((self.lan_if, self.lan, self.rlan_if, self.router),
                                 (self.rwan_if, self.router, self.wan_if, self.wan)):
            sh("ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns)
        for ns, ifname, address in ((self.lan, self.lan_if, f"{LAN_IP}/24"),
                                    (self.router, self.rlan_if, f"{ROUTER_LAN_IP}/24"),
                                    (self.router, self.rwan_if, f"{ROUTER_WAN_IP}/24"),
                                    (self.wan, self.wan_if, f"{WAN_IP}/24")):
            sh(*self.ns(ns, "ip", "addr", "add", address, "dev", ifname))
            sh(*self.ns(ns, "ip", "link", "set", ifname, "up"))
        sh(*self.ns(self.lan, "ip", "route", "add", "default", "via", ROUTER_LAN_IP))
        sh(*self.ns(self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"))
        # The wan host has no route to 10.77.0.0/24: only the NAT binding brings its packets to the appliance.
        sh(*self.ns(self.router, "nft", "-f", "-"), stdin=f"""
table ip nat {{
  counter keepalives {{}}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "{self.rwan_if}" udp sport 5060 masquerade to :{PUBLIC_SIP_PORT}
    oifname "{self.rwan_if}" masquerade
  }}
}}
table ip filter {{
  counter keepalives {{}}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{self.rlan_if}" udp length 12 counter name keepalives
    ct state established,related accept
    iifname "{self.rwan_if}" drop
  }}
}}
""")
        # What arrives at the wan host: counted per source, and RTP towards sipp's media port.
        sh(*self.ns(self.wan, "nft", "-f", "-"), stdin="""
table ip seen {
  counter from_router {}
  counter from_lan {}
  counter rtp {}
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr 198.51.100.1 udp dport 5060 counter name from_router
    ip saddr 10.0.0.0/8 counter name from_lan
    ip saddr 198.51.100.1 udp dport 6000 counter name rtp
  }
}
""")

    def counter(self, ns: str, table: str, name: str) -> int:
        data = json.loads(sh(*self.ns(ns, "nft", "-j", "list", "counter", "ip", table, name)))
        for item in data["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise AssertionError(data)

    def teardown(self) -> None:
        for name in (self.lan, self.router, self.wan):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@contextmanager
def appliance_in(net: Net, env: Env) -> Iterator[Path]:
    """`ivr run` inside the lan namespace; yields its log once `ivr status` answers; SIGTERM at the end."""
    proc, _port, log = start_appliance(env, prefix=net.ns(net.lan))
    try:
        yield log
    finally:
        stop_appliance(proc)


def test_registration_keepalive_and_call_through_nat(env: Env) -> None:
    net = Net()
    procs: list[subprocess.Popen[str]] = []
    try:
        net.build()
        (env.root / "pbx.secret").write_text("regpass\n")
        text = env.config.read_text().replace(DEFAULT_SIP, "", 1)
        env.config.write_text(text + (
            f"sip: {{listen: '{LAN_IP}:5060', rtp_ports: 31000-31999, accounts: [{{aor: 'sip:2000@{WAN_IP}',"
            f" registrar: '{WAN_IP}:5060', username: '2000', password_file: pbx.secret, keepalive: crlf,"
            f" keepalive_seconds: {KEEPALIVE_SECONDS}}}]}}\n"))
        registrar = subprocess.Popen(
            net.ns(net.wan, "sipp", "-sf", str(SIPP / "reg_nat.xml"), "-m", "1", "-i", WAN_IP, "-p", "5060",
                   "-set", "src_ip", ROUTER_WAN_IP, "-set", "src_port", str(PUBLIC_SIP_PORT),
                   "-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err", "-trace_logs"),
            cwd=env.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(registrar)
        with appliance_in(net, env) as log:
            assert registrar.wait(timeout=60) == 0, (registrar.stderr.read() if registrar.stderr else "",
                                                     log.read_text())
            # The registrar's host saw the REGISTERs from the router's public address, never from 10.x.
            assert net.counter(net.wan, "seen", "from_router") >= 3
            assert net.counter(net.wan, "seen", "from_lan") == 0
            # It was told the public address and registered it as Contact (the registrar logged it).
            logged = "".join(p.read_text() for p in env.root.glob("reg_nat_*_logs.log"))
            assert f"<sip:ivr@{ROUTER_WAN_IP}:{PUBLIC_SIP_PORT}>" in logged.split("contact", 1)[-1], logged
            line = ""
            for _ in range(50):  # bounded: until the status shows the learned address
                line = env.ivr("status").json()["registrations"][0]
                if "public address" in line:
                    break
                time.sleep(0.2)
            assert f"public address {ROUTER_WAN_IP}:{PUBLIC_SIP_PORT}" in line, line
            # Keep-alives: double CRLF datagrams cross the router while registered.
            before = net.counter(net.router, "filter", "keepalives")
            seen = before
            for _ in range(100):  # bounded: 20 s for 3 more pings at 2 s intervals
                seen = net.counter(net.router, "filter", "keepalives")
                if seen >= before + 3:
                    break
                time.sleep(0.2)
            assert seen >= before + 3, (before, seen, log.read_text())
            assert "keep-alive crlf" in env.ivr("status").json()["registrations"][0]

            # A caller on the wan side (same address and port as the registrar, as a trunk would) dials the
            # registered public Contact: the NAT binding the keep-alives hold carries it to the appliance.
            scenario = env.root / "nat_call.xml"
            scenario.write_text(call("nat_call", [("pause", "4000")], hangup="caller"))
            caller = subprocess.Popen(
                net.ns(net.wan, "sipp", f"{ROUTER_WAN_IP}:{PUBLIC_SIP_PORT}", "-sf", str(scenario), "-s", "500",
                       "-m", "1", "-i", WAN_IP, "-p", "5060", "-mp", "6000", "-rtp_echo", "-timeout", "60s",
                       "-timeout_error", "-nostdin", "-trace_err", "-trace_msg"),
                cwd=env.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(caller)
            assert caller.wait(timeout=60) == 0, (caller.stderr.read() if caller.stderr else "",
                                                  log.read_text())
            record = wait_for_call(env)
            assert record.get("outcome"), record
            # The answer names the public address, not 10.x: Contact (for the ACK and BYE) and SDP c=/o=.
            messages = "".join(p.read_text() for p in env.root.glob("nat_call_*_messages.log"))
            answer = messages[messages.index("SIP/2.0 200 OK"):].split("-----", 1)[0]
            assert f"Contact: <sip:ivr@{ROUTER_WAN_IP}:{PUBLIC_SIP_PORT}>" in answer, answer
            sdp = [line.strip() for line in answer.splitlines() if line.strip()[:2] in ("c=", "o=")]
            assert len(sdp) == 2 and all(line.endswith(f"IN IP4 {ROUTER_WAN_IP}") for line in sdp), answer
            # The appliance's prompt audio crossed the NAT to sipp's media port (50 packets: one second).
            assert net.counter(net.wan, "seen", "rtp") >= 50
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        net.teardown()
