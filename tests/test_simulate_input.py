"""`ivr simulate` refuses bad input before the call starts, and a closed stdout is not a failed call (issue #18,
item 5): a typo became a recorded call that went somewhere else, a bad ``--at`` a traceback, and
``ivr simulate main -i 1 | head -1`` an ``error`` call."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, Env

OPEN = "2026-12-01T10:00"


def with_speech(env: Env) -> Env:
    text = env.config.read_text(encoding="utf-8").replace("speech: {enabled: false}", "speech: {enabled: true}")
    env.config.write_text(text, encoding="utf-8")
    return env


def test_unknown_input_token_is_refused_and_nothing_recorded(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", OPEN, "-i", "1x")
    assert r.code == 2
    assert "bad input '1x': use keys (0-9 * #), say:WORDS, wav:FILE, silence or hangup" in r.err
    assert env.calls(simulated=True) == []


def test_missing_and_unreadable_wav_are_refused(env: Env) -> None:
    with_speech(env)
    r = env.ivr("simulate", "voice", "-i", f"wav:{env.root / 'nothere.wav'}")
    assert r.code == 2 and f"no such file: {env.root / 'nothere.wav'}" in r.err
    junk = env.root / "junk.wav"
    junk.write_bytes(b"this is not audio")
    r = env.ivr("simulate", "voice", "-i", f"wav:{junk}")
    assert r.code == 2 and f"sox cannot read {junk}" in r.err
    assert env.calls(simulated=True) == []


def test_bad_at_is_a_clear_error_not_a_traceback(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", "tomorrow 10am", "-i", "1")
    assert r.code == 2
    assert r.err.strip() == ("ivr simulate: --at 'tomorrow 10am' is not a local date and time: "
                             "use e.g. 2026-12-01T10:00")
    assert env.calls(simulated=True) == []


def run_closed_stdout(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """``ivr ARGS | head -0``: the reader has closed the pipe before the first line."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "ivr.cli", "--config", str(env.config), *args],
                              stdout=write, stderr=subprocess.PIPE, text=True, cwd=env.root, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    finally:
        os.close(write)


def test_closed_stdout_records_no_error_call_and_prints_no_traceback(env: Env) -> None:
    p = run_closed_stdout(env, "simulate", "main", "--at", OPEN, "-i", "1", "-i", "hangup")
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 1
    calls = env.calls(simulated=True)
    assert [c["outcome"] for c in calls] == ["caller_hangup"]  # the call ran to its end, unseen
    for command in (["calls", "--simulated"], ["events", "--simulated"], ["calls", "--json", "--simulated"]):
        p = run_closed_stdout(env, *command)
        assert p.returncode == 1 and p.stderr == "", (command, p.stderr)
