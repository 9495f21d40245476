"""Issue 17's done-when, by a real call: sipp keys a PIN (sensitive) by SIP INFO and an account number by RFC 2833
into `ivr run` with privacy on, debug logging and a center; the PIN is then in neither the raw SQLite file, its
-wal, the daemon's log nor what the center received, while the flow used it; the account number reached the
center only sealed."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import start_appliance, stop_appliance, wait_for_call
from tests.integration.test_calls import sipp
from tests.sync.center import Center
from tests.sync.conftest import until

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")

PIN = "73915468"
ACCOUNT = "4075312"

FLOW = """
flow: pinline
numbers: ["702"]
start: pin
prompts:
  ask_pin: "PIN, then pound."
  ask_account: "Account, then pound."
  ok: "Accepted."
  wrong: "Wrong."
nodes:
  pin:
    collect: {prompt: ask_pin, into: pin, min_digits: 8, max_digits: 10, sensitive: true, timeout: 8}
    next: account
  account:
    collect: {prompt: ask_account, into: account, min_digits: 7, max_digits: 10, timeout: 8}
    next: check
  check:
    branch:
      - if: {var: pin, equals: "@PIN@"}
        goto: ok
    next: wrong
  ok:
    hangup: ok
  wrong:
    hangup: wrong
""".replace("@PIN@", PIN)


async def test_a_pin_keyed_on_a_real_call_is_nowhere_in_clear(env: Env, tmp_path: Path) -> None:
    (env.flows / "pinline.yaml").write_text(FLOW, encoding="utf-8")
    center = Center(tmp_path)
    await center.start()
    token = env.root / "central-token"
    token.write_text(center.token + "\n", encoding="utf-8")
    token.chmod(0o600)
    central = {"url": center.url, "token_file": str(token), "ca_file": str(center.ca_pem), "interval": 60}
    with env.config.open("a", encoding="utf-8") as f:
        f.write("privacy: {retention_days: 30}\nlog: {level: debug}\ncentral: " + json.dumps(central) + "\n")
    try:
        proc, port, daemon_log = await asyncio.to_thread(start_appliance, env)
        try:
            steps: list[tuple[str, str]] = [("pause", "800")]
            steps += [("info", k) for k in PIN + "#"]
            steps.append(("pause", "1500"))
            steps += [("pcap", k) for k in ACCOUNT + "#"]
            await asyncio.to_thread(sipp, scenarios.call("pin by INFO, account by RFC 2833", steps), port, env.root,
                                    "702")
            call = await asyncio.to_thread(wait_for_call, env)
            await until(lambda: any(e["type"] == "call.ended" and e["call_id"] == call["call_id"]
                                    for e in center.stored()), 20)
        finally:
            await asyncio.to_thread(stop_appliance, proc)
    finally:
        await center.stop()
    # the flow read the real PIN: the branch went to "ok"
    assert call["path"] == ["pin", "account", "check", "ok"], call
    assert call["variables"]["pin"] == "•••• 8 digits" and call["variables"]["account"] == ACCOUNT
    sent = json.dumps(center.stored())
    db = env.state / "ivr.db"
    files = {p.name: p.read_bytes() for p in db.parent.glob("ivr.db*") if p.is_file()}
    assert "ivr.db" in files
    for where, blob in [*files.items(), ("the daemon's log", daemon_log.read_bytes()),
                        ("what the center received", sent.encode())]:
        assert PIN.encode() not in blob, f"the PIN in clear in {where}"
    # the account number is personal, not sensitive: the admin reads it on the box, the center only sealed
    assert ACCOUNT not in sent
    value = next(e for e in center.stored() if e["type"] == "collect.value" and e["data"]["var"] == "account")
    assert value["data"]["value"].startswith("sealed:v1:")
    started = next(e for e in center.stored() if e["type"] == "call.started" and e["call_id"] == call["call_id"])
    assert started["data"]["caller_ref"].startswith("ref:") and "5555550142" not in sent
    # the debug log did show the keys arriving (so the check above had something to miss)
    text = daemon_log.read_text(errors="replace")
    assert "dtmf" in text
    # nor the caller's number: the log cannot be erased on a request, so with privacy on it names the Call-ID
    assert "5555550142" not in text and f"call_id={call['call_id']}" in text and "caller=(private)" in text
