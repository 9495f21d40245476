"""RFC 3263 with a real DNS server (dnsmasq on loopback, `sip.dns_servers`) and real registrars (sipp):
the SRV records' first target is dead (nothing listens: the kernel's ICMP port unreachable tells the box at
once) and the next answers 503, so the appliance registers at the third; without SRV records the A record is
used on port 5060."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from tests.conftest import Env
from tests.integration.appliance import free_port, run_appliance
from tests.integration.dnsmasq import dnsmasq, needs_dnsmasq, srv_records

SIPP = Path(__file__).parent / "sipp"
DEFAULT_SIP = "sip: {listen: '127.0.0.1:0', rtp_ports: 31000-31999}\n"

pytestmark = needs_dnsmasq


def sipp_registrar(env: Env, scenario: str, host: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(["sipp", "-sf", str(SIPP / scenario), "-m", "1", "-i", host, "-p", str(port),
                             "-timeout", "90s", "-timeout_error", "-nostdin", "-trace_err"],
                            cwd=env.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def configure(env: Env, dns_port: int, registrar: str) -> None:
    (env.root / "pbx.secret").write_text("regpass\n")
    text = env.config.read_text().replace(DEFAULT_SIP, "", 1)
    env.config.write_text(text + (
        f"sip: {{listen: '127.0.0.1:0', rtp_ports: 31000-31999, dns_servers: ['127.0.0.1:{dns_port}'],"
        f" accounts: [{{aor: 'sip:2000@pbx.test', registrar: '{registrar}', username: '2000',"
        f" password_file: pbx.secret, keepalive: 'off'}}]}}\n"))


def wait_registered(env: Env, seconds: float) -> list[str]:
    lines: list[str] = []
    for _ in range(int(seconds / 0.2)):  # bounded
        lines = env.ivr("status").json()["registrations"]
        if lines and ": registered" in lines[0]:
            break
        time.sleep(0.2)
    return lines


def test_srv_failover_past_a_dead_and_a_503_registrar(env: Env) -> None:
    dead, busy, good = free_port(), free_port(), free_port()
    records = srv_records("pbx.test", [("dead.pbx.test", dead), ("busy.pbx.test", busy), ("good.pbx.test", good)])
    overloaded = sipp_registrar(env, "reg_503.xml", "127.0.0.1", busy)
    registrar = sipp_registrar(env, "reg_auth.xml", "127.0.0.1", good)
    try:
        with dnsmasq(env.root, *records) as dns_port:
            configure(env, dns_port, "pbx.test")  # a name without port: SRV first (RFC 3263 section 4.2)
            for env_, _sip_port, log in run_appliance(env):
                # The dead target answers the REGISTER with an ICMP port unreachable: the socket reports it
                # and the next target is tried at once (it used to cost Timer F, 64*T1 = 32 s).
                lines = wait_registered(env_, 60)
                assert lines and lines[0].startswith("sip:2000@pbx.test: registered, expires in"), (
                    lines, log.read_text())
                text = log.read_text()
                assert f"registrar 127.0.0.1:{dead} failed (unreachable)" in text
                assert f"registrar 127.0.0.1:{busy} failed (503)" in text
            queries = (env.root / "dnsmasq.log").read_text()
            assert "query[SRV] _sip._udp.pbx.test" in queries
        assert overloaded.wait(timeout=30) == 0, overloaded.stderr.read() if overloaded.stderr else ""
        # The good registrar saw the digest REGISTER and, at shutdown, the un-REGISTER (its scenario's end).
        assert registrar.wait(timeout=30) == 0, registrar.stderr.read() if registrar.stderr else ""
    finally:
        for proc in (overloaded, registrar):
            if proc.poll() is None:
                proc.kill()


def test_without_srv_the_a_record_on_port_5060(env: Env) -> None:
    # A loopback address of its own, so port 5060 is free whatever else runs on 127.0.0.1.
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    registrar = sipp_registrar(env, "reg_auth.xml", address, 5060)
    try:
        with dnsmasq(env.root, f"--host-record=pbx.test,{address}") as dns_port:
            configure(env, dns_port, "pbx.test")
            for env_, _sip_port, log in run_appliance(env):
                lines = wait_registered(env_, 30)
                assert lines and lines[0].startswith("sip:2000@pbx.test: registered"), (lines, log.read_text())
            queries = (env.root / "dnsmasq.log").read_text()
            assert "query[SRV] _sip._udp.pbx.test" in queries and "query[A] pbx.test" in queries
        assert registrar.wait(timeout=30) == 0, registrar.stderr.read() if registrar.stderr else ""
    finally:
        if registrar.poll() is None:
            registrar.kill()
