"""SIGTERM drains: a call in progress finishes its flow, a new INVITE meanwhile gets 503 with Retry-After,
and the daemon exits cleanly with every record committed."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import free_port, start_appliance, wait_for_call
from tests.integration.test_calls import events_of

REFUSED = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="a call while the appliance drains: 503 with Retry-After">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15555550199@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="503">
    <action>
      <ereg regexp="^ *30$" search_in="hdr" header="Retry-After:" assign_to="ra" check_it="true"/>
    </action>
  </recv>
  <Reference variables="ra"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15555550199@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def sipp(scenario: str, sip_port: int, workdir: Path, name: str) -> subprocess.Popen[str]:
    path = workdir / f"{name}.xml"
    path.write_text(scenario)
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(path), "-s", "500", "-m", "1", "-i", "127.0.0.1",
         "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()), "-timeout", "60s",
         "-timeout_error", "-nostdin", "-trace_err"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigterm_lets_the_call_finish_and_refuses_new_ones(env: Env) -> None:
    daemon, port, log = start_appliance(env)
    callers: list[subprocess.Popen[str]] = []
    try:
        # The first caller is in the menu when the daemon is told to stop; it presses 2 three seconds later.
        steps = [("pause", "3000"), ("pcap", "2")]
        callers.append(sipp(scenarios.call("in progress at SIGTERM", steps), port, env.root, "first"))
        for _ in range(100):
            if env.ivr("status").json()["calls_in_progress"] == 1:
                break
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        callers.append(sipp(REFUSED, port, env.root, "second"))
        for caller in callers:
            out, _ = caller.communicate(timeout=60)
            assert caller.returncode == 0, out[-3000:]
        assert daemon.wait(timeout=30) == 0
    finally:
        for p in (*callers, daemon):
            if p.poll() is None:
                p.kill()
    call = wait_for_call(env)
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup"  # finished, not cut off
    assert "waiting up to 10 s for 1 calls" in log.read_text()


def test_a_call_cut_off_by_the_stop_is_ended_by_the_box(env: Env) -> None:
    """A call still in its menu when the drain's 10 s are up is ended by the box: ``sip.ended`` says
    ``by: ivr`` (issue 15 defect 7: it said ``caller``), the record says ``shutdown``."""
    daemon, port, _ = start_appliance(env)
    caller = sipp(scenarios.call("still in the menu at the stop", [("pause", "100")]), port, env.root, "long")
    try:
        for _ in range(100):
            if env.ivr("status").json()["calls_in_progress"] == 1:
                break
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        out, _ = caller.communicate(timeout=60)
        assert caller.returncode == 0, out[-3000:]  # it got the box's BYE
        assert daemon.wait(timeout=30) == 0
    finally:
        for p in (caller, daemon):
            if p.poll() is None:
                p.kill()
    call = wait_for_call(env)
    assert call["outcome"] == "shutdown"
    ended = [e.data for e in events_of(env, str(call["call_id"])) if e.type == "sip.ended"]
    assert ended == [{"reason": "shutdown", "by": "ivr"}], ended
