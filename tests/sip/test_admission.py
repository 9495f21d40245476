"""Who may start a call now (issue 15 defect 6): the site's PBX is one source address, so its busy hour must
not meet the per-source limit meant for strangers; call caps in all and per peer answer 503 with Retry-After;
a flood of refusals is summarised in the log, not written line by line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ivr.sip.ua import UserAgent, UserAgentConfig
from ivr.sip.ua_events import IncomingCall
from ivr.sip.ua_state import PeerLimit
from tests.sip.test_ua import LOCAL, events, offer, request, responses

PBX = ("192.0.2.20", 5062)
STRANGER = ("192.0.2.99", 5060)


def ua_with(**settings: object) -> UserAgent:
    return UserAgent(UserAgentConfig(**{"allowed_peers": ("192.0.2.0/24",), **settings}), LOCAL)  # type: ignore[arg-type]


def burst(ua: UserAgent, source: tuple[str, int], n: int, now: float = 0.0, tag: str = "") -> list[int]:
    """``n`` new INVITEs from ``source`` at one instant; the statuses the UA sent back (100s and 503s)."""
    for i in range(n):
        ua.receive_datagram(request("INVITE", call_id=f"{tag}{source[0]}-{i}", branch=f"z9hG4bK{tag}{i}x{source[0]}",
                                    body=offer()), source, now)
    return [r.status for r in responses(ua)]


def test_the_pbx_has_no_rate_limit_while_strangers_keep_theirs() -> None:
    ua = ua_with(peer_limits=(PeerLimit(("192.0.2.20/32",), invite_rate=None),))
    assert burst(ua, PBX, 100).count(503) == 0  # the busy hour's first second
    assert sum(isinstance(e, IncomingCall) for e in events(ua)) == 100
    assert burst(ua, STRANGER, 30).count(503) == 10  # the default: burst 20


def test_call_caps_in_all_and_per_peer_answer_503_with_retry_after() -> None:
    ua = ua_with(max_calls=5, retry_after=9, peer_limits=(PeerLimit(("192.0.2.99/32",), invite_rate=100.0,
                                                                     invite_burst=100.0, max_calls=2),))
    statuses = burst(ua, STRANGER, 3)
    assert statuses.count(503) == 1  # the peer's cap of 2
    statuses = burst(ua, PBX, 5, tag="p")
    assert statuses.count(503) == 2  # 2 + 3 = the global cap of 5
    calls = [e for e in events(ua) if isinstance(e, IncomingCall)]
    assert len(calls) == 5
    ua.reject(calls[0].leg_id, 486, 1.0)  # one call over: room for one more
    responses(ua)
    assert burst(ua, PBX, 1, now=1.1, tag="q").count(503) == 0
    assert ua.stats.over_capacity == 3


def test_retry_after_on_a_capped_503() -> None:
    ua = ua_with(max_calls=1, retry_after=9)
    burst(ua, PBX, 1)
    ua.receive_datagram(request("INVITE", call_id="second", branch="z9hG4bKsecond", body=offer()), PBX, 0.1)
    (busy,) = [r for r in responses(ua) if r.status == 503]
    assert busy.headers.get("Retry-After") == "9"


def test_a_flood_of_refusals_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    ua = ua_with(invite_rate=1.0, invite_burst=1.0, refused_log_interval=10.0)
    with caplog.at_level(logging.INFO, logger="ivr.sip.ua"):
        for i in range(2000):  # 2,000 INVITEs in 5 s from one source: 1,995 or so refused
            ua.receive_datagram(request("INVITE", call_id=f"f{i}", branch=f"z9hG4bKf{i}", body=offer()), STRANGER,
                                i * 0.0025)
            ua.datagrams_to_send()
        for i in range(3):  # after the interval: the summary, then the new window's first line
            ua.receive_datagram(request("INVITE", call_id=f"g{i}", branch=f"z9hG4bKg{i}", body=offer()), STRANGER,
                                12.0)
    refused = [r.getMessage() for r in caplog.records if "rate limited" in r.getMessage()]
    assert len(refused) <= 4, refused
    summary = [m for m in refused if "more in the last" in m]
    assert summary and "192.0.2.99 x" in summary[0], refused


def test_the_config_names_peer_limits_and_says_where_one_is_wrong(tmp_path: Path) -> None:
    from ivr.config import load_config
    from ivr.errors import ConfigError

    config = tmp_path / "ivr.yaml"
    config.write_text("sip:\n  max_calls: 300\n  peer_limits:\n    - peers: [192.0.2.20, 198.51.100.0/24]\n"
                      "      invite_rate: null\n      max_calls: 250\n", encoding="utf-8")
    sip = load_config(str(config)).sip
    assert sip.max_calls == 300 and sip.invite_rate == 10.0
    assert sip.peer_limits == (PeerLimit(("192.0.2.20", "198.51.100.0/24"), None, 20.0, 250),)
    config.write_text("sip:\n  peer_limits:\n    - peers: [192.0.2.20, pbx.local]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(str(config))
    assert f"{config}:3:27: 'pbx.local' is not an address or CIDR" in str(err.value), str(err.value)
