"""A hold longer than the RTP timeout is no hang-up: the inactivity clock restarts when the caller resumes
(issue 15 defect 3: the call used to be dropped ~0.4 s after resume)."""

from __future__ import annotations

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
    env.config.write_text(text + "calls: {rtp_timeout_seconds: 2}\n", encoding="utf-8")
    yield from run_appliance(env)


def test_a_long_hold_then_resume_keeps_the_call(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    steps = [("hold", "4000"),  # on hold twice as long as the RTP timeout, sending nothing
             ("resume", "1300"),  # back, and quiet for 1.3 s: within the 2 s timeout counted from the resume
             ("pcap", "2")]
    sipp(scenarios.call("hold past the rtp timeout", steps), port, env.root)  # the IVR's BYE comes after "two"
    call = last_call(env)
    assert call["outcome"] == "hangup" and call["path"] == ["menu", "two"], call


def test_silence_without_hold_still_ends_the_call(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    sipp(scenarios.call("silent caller", [("pause", "100")]), port, env.root)  # the IVR's BYE ends it
    call = last_call(env)
    assert call["outcome"] == "rtp_timeout", call
