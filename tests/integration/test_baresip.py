"""A real softphone calls `ivr run`: headless baresip dials 500, presses 2 (RFC 2833 telephone-event)
and the appliance records the call with its path, the digit and the codec baresip negotiated."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.store.eventlog import read_events
from tests.conftest import Env
from tests.integration.appliance import free_port, run_appliance, wait_for_call
from tests.integration.baresip.client import Baresip

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip (Debian baresip) not installed")


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    yield from run_appliance(env)


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[Baresip]:
    for attempt in range(3):  # a port it was given can be taken by another program before it binds
        phone = Baresip(tmp_path / f"try{attempt}")
        try:
            phone.start()
            break
        except AssertionError:
            phone.stop()
            if attempt == 2:
                raise
    try:
        yield phone
    finally:
        phone.stop()


def test_baresip_menu_by_rfc2833(appliance: tuple[Env, int, Path], baresip: Baresip) -> None:
    env, port, log = appliance
    dialed = baresip.command("dial", f"sip:500@127.0.0.1:{port}")
    assert dialed.get("ok"), dialed
    try:
        baresip.wait_event("CALL_ESTABLISHED", timeout=15)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- daemon log ---\n{log.read_text()[-4000:]}") from None
    time.sleep(0.5)  # the menu prompt has started: the digit is a barge-in, as from a person
    sent = baresip.command("sndcode", "2")
    assert sent.get("ok"), sent
    closed = baresip.wait_event("CALL_CLOSED", timeout=20)  # the flow says goodbye and hangs up

    call = wait_for_call(env)
    assert call["channel"] == "sip" and call["flow"] == "keys"
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup", (call, closed)
    events = asyncio.run(read_events(env.state / "ivr.db", call["call_id"]))
    answered = next(e for e in events if e.type == "sip.answered")
    negotiated = re.search(r"Set audio encoder: (\S+) ", baresip.output())  # baresip's own word for it
    assert negotiated is not None, baresip.output()
    assert answered.data["codec"] == negotiated.group(1) == "PCMU"  # the only codec its account offers
    assert answered.data["from"] == "baresip"
    assert answered.data["telephone_event"] is True
    assert answered.data["to"] == "500"
    dtmf = [e.data for e in events if e.type == "input.dtmf"]
    assert dtmf == [{"digit": "2", "source": "rfc4733"}]
    assert next(e for e in events if e.type == "sip.ended").data["by"] == "ivr"


def test_baresip_walks_the_sample_billing_line(appliance: tuple[Env, int, Path], baresip: Baresip) -> None:
    """The sample billing flow from a softphone: account 345678#, confirm 1, then 2 for an agent."""
    env, port, _ = appliance
    assert baresip.command("dial", f"sip:102@127.0.0.1:{port}").get("ok")
    baresip.wait_event("CALL_ESTABLISHED", timeout=15)
    for group in ("345678#", "1", "2"):
        time.sleep(1.0)  # a person's pause between answers
        for key in group:
            assert baresip.command("sndcode", key).get("ok")
            time.sleep(0.25)
    baresip.wait_event("CALL_CLOSED", timeout=30)
    call = wait_for_call(env)
    assert call["flow"] == "billing" and call["path"] == ["account", "billing_menu", "payments", "done"]
    assert call["variables"]["account"] == "345678"  # type: ignore[index]
    events = asyncio.run(read_events(env.state / "ivr.db", str(call["call_id"])))
    assert [e.data["digit"] for e in events if e.type == "input.dtmf"] == list("345678#12")


@pytest.mark.parametrize("mediaenc", ["srtp-mand", "srtp"])
def test_baresip_over_srtp_walks_the_menu(env: Env, tmp_path: Path, mediaenc: str) -> None:
    """baresip with its srtp module, mandatory (RTP/SAVP) and best effort (RTP/AVP with a=crypto), calls a box
    with ``sip.srtp: optional``: the answer gives our key, its telephone-event arrives encrypted and is heard,
    and it decrypts ours (its SRTP reports no failure)."""
    text = env.config.read_text().replace("rtp_ports: 31000-31999}", "rtp_ports: 31000-31999, srtp: optional}", 1)
    assert "srtp: optional" in text
    env.config.write_text(text)
    walk_menu_over_srtp(env, Baresip(tmp_path, mediaenc=mediaenc), lambda port: f"sip:500@127.0.0.1:{port}")


def walk_menu_over_srtp(env: Env, phone: Baresip, target: Callable[[int], str]) -> dict[str, Any]:
    """``phone`` (baresip with its srtp module) dials ``target(sip port)``, hears the prompt, presses 2: the menu
    is walked, its key heard through SRTP, our audio and RTCP decrypt on both sides. The call's sip.answered."""
    phone.start()
    try:
        for env_, port, log in run_appliance(env):
            assert phone.command("dial", target(port)).get("ok")
            try:
                phone.wait_event("CALL_ESTABLISHED", timeout=15)
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- daemon log ---\n{log.read_text()[-4000:]}") from None
            heard_both_ways = wait_for_bit_rates(phone)  # our prompt plays to it, encrypted, then a key
            assert phone.command("sndcode", "2").get("ok")
            phone.wait_event("CALL_CLOSED", timeout=20)
            call = wait_for_call(env_)
            daemon_log = log.read_text()
    finally:
        phone.stop()
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup", call
    events = asyncio.run(read_events(env.state / "ivr.db", str(call["call_id"])))
    answered = next(e for e in events if e.type == "sip.answered")
    assert answered.data["srtp"] in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    assert [e.data for e in events if e.type == "input.dtmf"] == [{"digit": "2", "source": "rfc4733"}]
    out = phone.output()
    assert "SRTP is Enabled" in out and "unprotect" not in out, out  # libre's srtp warns of every failure
    assert "fail authentication" not in daemon_log, daemon_log[-3000:]  # its SRTCP too (its plain APP/BYE dropped)
    assert heard_both_ways, out  # its bit rates sent / received both above zero while the call was up
    return dict(answered.data)


def wait_for_bit_rates(phone: Baresip, timeout: float = 10.0) -> bool:
    """Whether baresip's status line shows audio sent and received at a non-zero bit rate within ``timeout``.
    Its rates first show ~3 s into a call (a one-second metric after a start-up pause), so a fixed sleep
    before the key would race the call's end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rates = re.findall(r"audio=(\d+)/(\d+) \(bit/s\)", phone.output())
        if rates and min(int(x) for x in rates[-1]) > 0:
            return True
        time.sleep(0.2)
    return False


def test_a_callback_to_baresip_offers_srtp_when_its_trunk_requires_it(env: Env, tmp_path: Path) -> None:
    """The callback dialer calls a customer's baresip (mandatory SRTP, picks up by itself) through a trunk
    whose ``sip.srtp_peers`` mode is ``required``: our offer is RTP/SAVP with our key, the answer's key is taken,
    and baresip hears our prompt through SRTP (its received bit rate) with no failure."""
    from tests.integration.test_callbacks import NUMBER, configure, file_request, wait_state

    phone = Baresip(tmp_path, mediaenc="srtp-mand", auto_answer=True, user=NUMBER)
    phone.start()
    text = env.config.read_text().replace(
        "rtp_ports: 31000-31999}", "rtp_ports: 31000-31999, srtp_peers: [{peers: [127.0.0.1], srtp: required}]}", 1)
    assert "srtp_peers" in text
    env.config.write_text(text)
    configure(env, phone.sip_port, free_port(), max_attempts=1)
    try:
        for env_, _port, log in run_appliance(env):
            rid, _ = file_request(env_)
            try:
                phone.wait_event("CALL_ESTABLISHED", timeout=30)
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- daemon log ---\n{log.read_text()[-4000:]}") from None
            wait_state(env_, rid, ("retry", "expired", "failed", "done"), timeout=60)  # nobody pressed 1
    finally:
        phone.stop()
    out = phone.output()
    assert "SRTP is Enabled" in out and "unprotect" not in out, out
    rates = re.findall(r"audio=(\d+)/(\d+) \(bit/s\)", out)
    assert rates and max(int(rx) for _tx, rx in rates) > 0, out  # our prompt reached it, decrypted
