"""Issue #12 defect 10: no dead air after a restart. `ivr run` dials a callback (via SIP) to a sipp phone and is
SIGKILLed while the INVITE is in flight; the restarted daemon (same SIP port) ends the leg:
(i) the phone answers while the box is dead and retransmits its 200: the restarted box ACKs it and sends BYE
    (the phone's scenario requires both, in that order);
(ii) the phone is still ringing: the restarted box CANCELs the INVITE (rebuilt from the attempt's Call-ID) and
    ACKs the 487 (uas_ring_no_answer.xml requires CANCEL then ACK) before anything is redialled.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration.appliance import free_port, start_appliance, stop_appliance
from tests.integration.test_callbacks import attempts, configure, file_request, sipp_ok, sipp_uas, stop

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")


def fixed_sip_port(env: Env) -> int:
    """The restarted daemon must listen where the phone's responses go (our Via)."""
    port = free_port()
    text = env.config.read_text()
    env.config.write_text(text.replace("listen: '127.0.0.1:0'", f"listen: '127.0.0.1:{port}'", 1))
    return port


def wait_log(log: Path, needle: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if needle in log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in the daemon log:\n{log.read_text()[-3000:]}")


def crash_mid_invite_then_restart(env: Env, phone: subprocess.Popen[str]) -> tuple[str, str]:
    """File a request, SIGKILL the daemon once its INVITE is out, start it again; (request id, restart log)."""
    proc, _port, log = start_appliance(env)
    try:
        rid, _ = file_request(env)
        wait_log(log, "sip outbound invite")
        time.sleep(0.5)  # the phone has it and rings
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    proc, _port, log = start_appliance(env)
    try:
        sipp_ok(phone, "customer phone", timeout=60)
        for _ in range(100):  # bounded: the attempt is decided on the pass after its leg is ended
            if all(a["outcome"] is not None for a in attempts(env, rid)):
                break
            time.sleep(0.1)
        text = log.read_text()
    finally:
        stop_appliance(proc)
    return rid, text


def test_a_leg_answered_while_the_box_was_dead_gets_ack_and_bye(env: Env) -> None:
    customer_port, agent_port = free_port(), free_port()
    configure(env, customer_port, agent_port, intervals="[600]", ring_timeout=30)
    fixed_sip_port(env)
    phone = sipp_uas("cb_customer_answer_after_crash.xml", customer_port, env.root, timeout=60)
    try:
        rid, log = crash_mid_invite_then_restart(env, phone)
    finally:
        stop(phone)
    [att] = attempts(env, rid)  # not redialled meanwhile
    assert "sip orphan 2xx call_id=" + att["sip_call_id"] in log
    assert "level=error" not in log.lower()


def test_a_ringing_leg_is_cancelled_after_a_restart(env: Env) -> None:
    customer_port, agent_port = free_port(), free_port()
    configure(env, customer_port, agent_port, intervals="[600]", ring_timeout=30)
    fixed_sip_port(env)
    phone = sipp_uas("uas_ring_no_answer.xml", customer_port, env.root, timeout=60)
    try:
        rid, log = crash_mid_invite_then_restart(env, phone)
    finally:
        stop(phone)
    [att] = attempts(env, rid)
    assert att["outcome"] == "interrupted", att
    assert f"callback leg cleaned up attempt={att['id']} call_id={att['sip_call_id']} final=487" in log
