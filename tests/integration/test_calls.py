"""Real calls into `ivr run` from sipp on loopback: a menu walked by RFC 2833, SIP INFO and in-band tones,
the prompt audio on the wire checked from a packet capture, and each call in `ivr calls` with its path."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import free_port, run_appliance, wait_for_call

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    yield from run_appliance(env)


def sipp(scenario: str, sip_port: int, workdir: Path, service: str = "500", timeout: int = 60,
         extra: Sequence[str] = ()) -> None:
    """One call of the scenario text (tests.integration.scenarios) to ``service``; see :func:`sipp_file`."""
    path = workdir / f"scenario-{time.monotonic_ns()}.xml"
    path.write_text(scenario)
    sipp_file(path, sip_port, workdir, service, timeout, extra)


def sipp_file(scenario: Path, sip_port: int, workdir: Path, service: str = "500", timeout: int = 60,
              extra: Sequence[str] = ()) -> None:
    """One call of a scenario file (``extra``: more sipp arguments, e.g. ``-key``); fails the test on any
    sipp error: an unexpected message (a BYE too early), a failed header check or a timeout."""
    cmd = ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(scenario), "-s", service, "-m", "1", *extra,
           "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()),
           "-timeout", f"{timeout}s", "-timeout_error", "-nostdin", "-trace_err"]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)
    if r.returncode != 0:
        traces = "\n".join(p.read_text(errors="replace")[-4000:] for p in workdir.glob("*_errors.log"))
        raise AssertionError(f"sipp exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n{traces}")


def last_call(env: Env) -> dict[str, Any]:
    """The last call once its record is complete: sipp may exit on our BYE a moment before the appliance
    commits the call's end."""
    return dict(wait_for_call(env))


def events_of(env: Env, call_id: str) -> list[Any]:
    return asyncio.run(read_events(env.state / "ivr.db", call_id))


def dtmf_of(env: Env, call_id: str) -> list[tuple[str, str]]:
    return [(e.data["digit"], e.data["source"]) for e in events_of(env, call_id) if e.type == "input.dtmf"]


def keys_by(method: str, keys: str, root: Path) -> tuple[list[tuple[str, str]], bool]:
    """Steps that press ``keys`` by a method; groups separated by spaces are pauses. (steps, offer te)"""
    if method == "inband":
        return [("pause", "800"), ("stream", str(scenarios.tone_file(root / "keys.ul", keys.split())))], False
    steps: list[tuple[str, str]] = [("pause", "800")]
    for group in keys.split():
        steps += [("pcap" if method == "rfc2833" else "info", k) for k in group]
        steps.append(("pause", "1200"))
    return steps, True


SOURCE = {"rfc2833": "rfc4733", "info": "info", "inband": "inband"}


@pytest.mark.parametrize("method", ["rfc2833", "info", "inband"])
def test_keys_menu_by_each_dtmf_method(appliance: tuple[Env, int, Path], method: str) -> None:
    env, port, _ = appliance
    steps, te = keys_by(method, "2", env.root)
    sipp(scenarios.call(f"keys by {method}", steps, telephone_event=te), port, env.root)
    call = last_call(env)
    assert call["channel"] == "sip" and call["flow"] == "keys"
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup"
    events = events_of(env, call["call_id"])
    answered = next(e for e in events if e.type == "sip.answered")
    assert answered.data["codec"] == "PCMU" and answered.data["telephone_event"] is te
    assert answered.data["from"] == "+15555550142" and answered.data["to"] == "500"
    assert dtmf_of(env, call["call_id"]) == [("2", SOURCE[method])]
    assert next(e for e in events if e.type == "sip.ended").data["by"] == "ivr"


@pytest.mark.parametrize("method", ["rfc2833", "info", "inband"])
def test_sample_billing_flow_by_each_dtmf_method(appliance: tuple[Env, int, Path], method: str) -> None:
    """The sample billing line: account 345678#, confirm 1, then 2 for an agent (transfer not yet
    available, so its failure target ends the flow) — each key group after a pause."""
    env, port, _ = appliance
    steps, te = keys_by(method, "345678# 1 2", env.root)
    sipp(scenarios.call(f"billing by {method}", steps, telephone_event=te), port, env.root, service="102")
    call = last_call(env)
    assert call["flow"] == "billing"
    assert call["path"] == ["account", "billing_menu", "payments", "done"]
    assert call["variables"]["account"] == "345678"
    # the agent transfer failed: its own outcome, though the flow then ended politely (issue 13)
    assert call["outcome"] == "transfer_failed"
    assert call["outcome_detail"] == "queue payments (then hangup return from top-level flow)"
    assert [d for d, _ in dtmf_of(env, call["call_id"])] == list("345678#12")
    assert {src for _, src in dtmf_of(env, call["call_id"])} == {SOURCE[method]}
    failed = [e.data for e in events_of(env, call["call_id"]) if e.type == "transfer"]
    assert failed and failed[0]["ok"] is False


COLLECT_FLOW = """
flow: dup
numbers: ["600"]
start: entry
prompts:
  ask: "Enter digits, then pound."
  bye: "Thank you."
nodes:
  entry:
    collect: {prompt: ask, into: entry, max_digits: 8, terminator: "#", timeout: 8}
    next: bye
  bye:
    hangup: bye
"""


def test_same_digit_sent_two_ways_counts_once(appliance: tuple[Env, int, Path]) -> None:
    env, port, _ = appliance
    (env.flows / "dup.yaml").write_text(COLLECT_FLOW)
    env.ivr("reload")
    steps = [("pause", "800"), ("pcap", "5"), ("info", "5"), ("pause", "600"), ("pcap", "#")]
    sipp(scenarios.call("5 by RFC 2833 and INFO at once", steps), port, env.root, service="600")
    call = last_call(env)
    assert call["variables"]["entry"] == "5"
    assert [d for d, _ in dtmf_of(env, call["call_id"])] == ["5", "#"]


def test_prompt_audio_on_the_wire(appliance: tuple[Env, int, Path]) -> None:
    """A packet capture of what the appliance sends: G.711 µ-law, one stream, unbroken sequence and
    timestamps (+160 per packet), the marker bit where each prompt starts."""
    env, port, _ = appliance
    pcap = env.root / "rtp.pcap"
    cap = subprocess.Popen(["tshark", "-i", "lo", "-f", "udp and src portrange 31000-31999", "-w", str(pcap)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        line = ""
        while "Capturing on" not in line and time.monotonic() < deadline:
            line = cap.stderr.readline()  # type: ignore[union-attr]
        steps, _ = keys_by("rfc2833", "2", env.root)
        sipp(scenarios.call("capture", [("pause", "2500"), *steps]), port, env.root)
        time.sleep(0.5)
    finally:
        cap.terminate()
        cap.wait(timeout=20)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", "udp.port==31000-31999,rtp", "-T", "fields", "-e", "udp.srcport",
         "-e", "rtp.p_type",
         "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.marker", "-e", "rtp.ssrc"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    call = last_call(env)
    rtp_port = next(e for e in events_of(env, call["call_id"]) if e.type == "sip.answered").data["rtp_port"]
    packets = [f.split("\t")[1:] for f in fields if f.strip() and f.split("\t")[0] == str(rtp_port)]
    assert len(packets) > 100  # several seconds of audio at 50 packets/s
    assert {p[0] for p in packets} == {"0"} and len({p[4] for p in packets}) == 1
    seqs = [int(p[1]) for p in packets]
    stamps = [int(p[2]) for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert all((b - a) % 2**32 == 160 for a, b in zip(stamps, stamps[1:], strict=False))
    markers = [i for i, p in enumerate(packets) if p[3] in ("1", "True")]
    assert 1 <= len(markers) <= 2  # the menu prompt, then the goodbye prompt after the key


def test_silent_caller_is_hung_up_after_rtp_timeout(env: Env, prompt_cache: Path) -> None:
    with env.config.open("a") as f:
        f.write("calls: {rtp_timeout_seconds: 2}\n")
    for _, port, _log in run_appliance(env):
        sipp(scenarios.call("no RTP at all", []), port, env.root)  # sipp sends no audio: we must BYE
        call = last_call(env)
        ended = next(e for e in events_of(env, call["call_id"]) if e.type == "sip.ended")
        assert ended.data == {"reason": "rtp timeout", "by": "ivr"}
        assert call["outcome"] == "rtp_timeout"
