"""A hundred ordinary calls with every kind of ending write nothing alarming in the daemon's log: no ERROR line,
no "Task exception was never retrieved", no "coroutine … was never awaited" (issue 15 defect 8; the
standards: ordinary calls write no ERROR line). Callers hang up at once after the answer, while the prompt
plays, after a key, after a wrong key; the box hangs up the rest."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import free_port, run_appliance

ENDINGS = {
    "bye-at-once": [("pause", "0")],
    "bye-after-20ms": [("pause", "20")],
    "bye-after-200ms": [("pause", "200")],
    "bye-during-prompt": [("pause", "1500")],
    "wrong-key-then-bye": [("pause", "500"), ("pcap", "7"), ("pause", "300")],
    "key-then-bye": [("pause", "500"), ("pcap", "2"), ("pause", "50")],
}
BOX_HANGS_UP = {"key-by-info": [("pause", "300"), ("info", "2")], "key-by-rfc2833": [("pause", "300"), ("pcap", "2")]}
PER_SCENARIO = 13  # 8 scenarios x 13 = 104 calls, 8 new calls a second in all (the limit per source is 10)


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    yield from run_appliance(env)


def sipp_many(scenario: str, port: int, workdir: Path, name: str) -> subprocess.Popen[str]:
    path = workdir / f"{name}.xml"
    path.write_text(scenario)
    return subprocess.Popen(["sipp", f"127.0.0.1:{port}", "-sf", str(path), "-s", "500", "-m", str(PER_SCENARIO),
                             "-l", "4", "-r", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1",
                             "-mp", str(free_port()), "-timeout", "120s", "-timeout_error", "-nostdin"],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_hundred_ordinary_calls_leave_a_quiet_log(appliance: tuple[Env, int, Path]) -> None:
    env, port, log = appliance
    runs = [sipp_many(scenarios.call(name, steps, hangup="caller"), port, env.root, name)
            for name, steps in ENDINGS.items()]
    runs += [sipp_many(scenarios.call(name, steps, hangup="ivr"), port, env.root, name)
             for name, steps in BOX_HANGS_UP.items()]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    calls = env.calls()
    finished = [c for c in calls if c.get("outcome")]
    assert len(calls) == PER_SCENARIO * len(runs) and len(finished) == len(calls)
    assert {c["outcome"] for c in calls} <= {"caller_hangup", "hangup"}, {c["outcome"] for c in calls}
    text = log.read_text()
    bad = [line for line in text.splitlines()
           if "level=error" in line or "ERROR" in line or "never retrieved" in line or "never awaited" in line
           or "Traceback" in line]
    assert bad == [], "\n".join(bad[:20])
