"""Media from where it comes (issue 15 defect 5): a phone behind NAT, or a softphone that names another
interface, puts an address in its SDP that its RTP does not come from. By default that media is not heard (an
appliance must not take audio and keys from strangers); for the peers in ``sip.comedia_peers`` it is taken
from wherever the first packet comes, and latched there (Asterisk's ``nat=comedia``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import run_appliance
from tests.integration.test_calls import last_call, sipp

ELSEWHERE = "c=IN IP4 127.0.0.9"  # the SDP's address; the RTP comes from 127.0.0.1


def keys_from_elsewhere() -> str:
    text = scenarios.call("RTP from another address than the SDP's", [("pause", "500"), ("pcap", "2")])
    assert "c=IN IP[media_ip_type] [media_ip]" in text
    return text.replace("c=IN IP[media_ip_type] [media_ip]", ELSEWHERE)


@pytest.fixture(params=["comedia", "default"])
def appliance(env: Env, request: pytest.FixtureRequest) -> Iterator[tuple[Env, int, Path, str]]:
    text = env.config.read_text(encoding="utf-8")
    if request.param == "comedia":
        text = text.replace("sip: {listen: '127.0.0.1:0',",
                            "sip: {comedia_peers: [127.0.0.0/8], listen: '127.0.0.1:0',")
        assert "comedia_peers" in text
    env.config.write_text(text + "calls: {rtp_timeout_seconds: 4}\n", encoding="utf-8")
    for env_, port, log in run_appliance(env):
        yield env_, port, log, request.param


def test_comedia_peers_are_heard_from_where_their_media_comes(appliance: tuple[Env, int, Path, str]) -> None:
    env, port, _, mode = appliance
    sipp(keys_from_elsewhere(), port, env.root)  # the IVR's BYE ends it either way
    call = last_call(env)
    if mode == "comedia":
        assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup", call
    else:
        assert call["outcome"] == "rtp_timeout", call  # nothing it sent was taken: not its key, not its audio
