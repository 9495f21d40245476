"""RFC 4028 session timers on real calls into `ivr run`: sipp plays a caller that stops refreshing (the
appliance hangs up and the record says why), one that refreshes by re-INVITE and UPDATE (the call outlives
the interval), and one offering too small an interval (422 with Min-SE). Scenarios: tests/integration/sipp/
uac_timer_*.xml; the 9 s interval they ask for needs `sip.min_se` lowered (for testing only)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration.appliance import run_appliance, wait_for_call
from tests.integration.test_calls import sipp_file

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")

SCENARIOS = Path(__file__).parent / "sipp"


def short_timers(env: Env) -> None:
    """Allow the scenarios' 9 s interval (the default Min-SE is 90 s)."""
    text = env.config.read_text(encoding="utf-8")
    assert "rtp_ports: 31000-31999}" in text
    env.config.write_text(text.replace("rtp_ports: 31000-31999}",
                                       "rtp_ports: 31000-31999, session_expires: 30, min_se: 4}"), encoding="utf-8")


def sip_events(env: Env, call_id: str) -> dict[str, Any]:
    events = asyncio.run(read_events(env.state / "ivr.db", call_id))
    return {e.type: e.data for e in events if e.type.startswith("sip.")}


def test_caller_that_stops_refreshing_is_hung_up_and_the_record_says_why(env: Env) -> None:
    short_timers(env)
    for _, port, _log in run_appliance(env):
        sipp_file(SCENARIOS / "uac_timer_no_refresh.xml", port, env.root)  # waits for our BYE and answers it
        call = wait_for_call(env)
        assert call["outcome"] == "session_expired" and call["path"] == ["menu"]
        assert sip_events(env, str(call["call_id"]))["sip.ended"] == {"reason": "session timer expired", "by": "ivr"}


def test_caller_that_refreshes_keeps_the_call_past_the_interval(env: Env) -> None:
    short_timers(env)
    for _, port, _log in run_appliance(env):
        # 12 s of refreshes (re-INVITE, UPDATE, re-INVITE, UPDATE) against a 9 s interval; a BYE from the
        # appliance in between would fail the scenario. Each 200 is checked for Session-Expires + Require.
        sipp_file(SCENARIOS / "uac_timer_refresh.xml", port, env.root)
        call = wait_for_call(env)
        assert call["outcome"] == "caller_hangup" and call["path"] == ["menu"]
        assert sip_events(env, str(call["call_id"]))["sip.ended"] == {"reason": "caller hung up", "by": "caller"}


def test_too_small_interval_gets_422_with_min_se(env: Env) -> None:
    for _, port, _log in run_appliance(env):  # default config: Min-SE 90
        sipp_file(SCENARIOS / "uac_timer_too_small.xml", port, env.root)
        assert env.calls() == []  # refused before any call started
