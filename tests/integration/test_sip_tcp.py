"""SIP over TCP (issue 15 item 12, RFC 3261 section 18): with ``sip.tcp`` on, sipp calls over TCP and walks the
menu; the IVR's BYE goes back on the caller's connection (its Contact names no transport: the Via alias does);
an INVITE larger than any datagram path (over 1500 bytes) is answered over TCP; a stream that cannot be framed
is closed with one log line and the appliance goes on serving."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import run_appliance
from tests.integration.test_calls import last_call, sipp


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    text = env.config.read_text(encoding="utf-8")
    env.config.write_text(text.replace("sip: {listen: '127.0.0.1:0',", "sip: {tcp: true, listen: '127.0.0.1:0',"),
                          encoding="utf-8")
    assert "tcp: true" in env.config.read_text(encoding="utf-8")
    yield from run_appliance(env)


def tcp_call(pad: int = 0) -> str:
    text = scenarios.call("a call over TCP", [("pause", "500"), ("pcap", "2")])
    if pad:  # a header that makes the INVITE bigger than a 1500-byte path could carry as one datagram
        text = text.replace("      Max-Forwards: 70\n", f"      Max-Forwards: 70\n      X-Pad: {'p' * pad}\n", 1)
    return text


def test_a_call_over_tcp_walks_the_menu_and_is_hung_up_on_its_connection(appliance: tuple[Env, int, Path]) -> None:
    env, port, log = appliance
    sipp(tcp_call(), port, env.root, extra=("-t", "t1"))
    call = last_call(env)
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup", call
    assert "sip bye" in log.read_text()


def test_an_invite_larger_than_a_datagram_path_is_answered_over_tcp(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    scenario = tcp_call(pad=1800)
    assert len(scenario) > 1500 + 1800 // 2
    sipp(scenario, port, env.root, extra=("-t", "t1"))
    call = last_call(env)
    assert call["path"] == ["menu", "two"], call


def test_an_unframable_stream_is_closed_and_the_appliance_serves_on(appliance: tuple[Env, int, Path]) -> None:
    env, port, log = appliance
    with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
        bad.sendall(b"OPTIONS sip:500@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n")
        bad.settimeout(5)
        closed = False
        for _ in range(50):  # bounded: the appliance closes it at once
            try:
                if bad.recv(4096) == b"":
                    closed = True
                    break
            except (ConnectionResetError, TimeoutError):
                closed = True
                break
    assert closed
    for _ in range(50):
        if "without Content-Length" in log.read_text():
            break
        time.sleep(0.1)
    assert log.read_text().count("without Content-Length") == 1
    sipp(tcp_call(), port, env.root, extra=("-t", "t1"))
    assert last_call(env)["path"] == ["menu", "two"]
