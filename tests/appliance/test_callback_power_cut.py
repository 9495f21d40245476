"""Power cut (qemu killed) while the box's callback dialer has calls ringing: after the boot no callback is lost
and none is dialled twice.

The box's dialer calls a sipp phone on the host (qemu user-net: the host is 10.0.2.2 inside the VM) that rings
and never answers. Callback requests are filed in the box's event log (committed), qemu is killed once an
attempt is ringing, the VM boots again; the dialer reconciles what it left in flight (CANCELs the ringing leg,
marks the attempt interrupted) and dials again after the back-off. Then, with the daemon stopped, from the
box's database and the phone's message trace:
- every request filed before the cut is there;
- attempts per request are numbered 1..n, none left open, never two at once (the schema's one-in-flight index),
  the one cut is `interrupted`, and the next began at least the back-off after the previous ended;
- every INVITE the phone received belongs to a recorded attempt, one Call-ID per attempt: nothing was dialled
  that the box does not know of, nothing twice for one attempt.
The site config is put back afterwards, so the update tests see the box as the boot tests left it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.appliance.vm import Vm
from tests.integration.test_callbacks import SCENARIOS, SHORT_CALLBACK_FLOW, gap

pytestmark = [pytest.mark.vm_needed,
              pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")]
BACKOFF = 5.0  # retry interval and back-off after an interruption
NUMBERS = ["+12125550101", "+12125550102", "+12125550103"]

FILE_REQUESTS = r"""
import asyncio, json, sys
from datetime import UTC, datetime
from pathlib import Path
from ivr.store.callbacks import CallbackStore, Consent
from ivr.store.eventlog import EventLog

async def go():
    ids = []
    async with await EventLog.open(Path("/var/lib/ivr/ivr.db"), "qemu-test") as log:
        for number in sys.argv[1:]:
            now = datetime.now(UTC)
            r = await CallbackStore(log).request(
                queue="support", number=number, zones=("America/New_York",), arrival_at=now,
                consent=Consent(at=now, number=number, heard="offer,readback", pressed="1"), now=now,
                quoted=(60.0, 600.0))
            ids.append(r.id)
    print(json.dumps(ids))

asyncio.run(go())
"""

READ_DB = r"""
import json, sqlite3
db = sqlite3.connect("file:/var/lib/ivr/ivr.db?mode=ro", uri=True)
db.row_factory = sqlite3.Row
print(json.dumps({
    "requests": [dict(r) for r in db.execute("SELECT id, state, number FROM callback_requests")],
    "attempts": [dict(r) for r in db.execute(
        "SELECT request_id, n, started_at, ended_at, outcome, sip_call_id, detail FROM callback_attempts"
        " ORDER BY request_id, n")],
}))
"""


def _db(vm: Vm) -> dict[str, list[dict[str, object]]]:
    return json.loads(vm.ssh(f"/opt/ivr/venv/bin/python -c {shlex.quote(READ_DB)}").stdout)


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check, timeout: float, step: float = 5.0):  # noqa: ANN001, ANN202 - a small poll helper
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:.0f} s; last: {last}")


def test_power_cut_during_callback_attempts(vm: Vm, tmp_path: Path) -> None:
    from tests.appliance import vm as vmmod

    slow = vmmod.SLOW
    vm.wait_ssh(timeout=300)
    vm.wait_for("systemctl is-active ivr-health.service", "active", timeout=400, line=True)
    phone_port = _udp_port()
    phone_dir = tmp_path / "phone"
    phone_dir.mkdir()
    # The phone on the host: every INVITE rings until CANCELled (then 487); its messages are traced.
    phone = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "uas_ring_no_answer.xml"), "-i", "127.0.0.1", "-p", str(phone_port),
         "-nostdin", "-timeout", "3600s", "-trace_msg"], cwd=phone_dir, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    callbacks = (
        "callbacks: {region: US, zone: America/New_York, clock: trust, poll_seconds: 1, max_concurrent: 2,"
        f" dial: {{via: sip, proxy: '10.0.2.2:{phone_port}', ring_timeout: {int(120 * slow)},"
        " from: 'sip:+15550100@10.0.2.15', display: Acme},"
        f" retry: {{intervals: [{BACKOFF}], max_attempts: 1000, expiry: 28800, after_interruption: {BACKOFF}}},"
        " windows: [{start: '00:00', end: '24:00'}]}\n"
        "transfer: {mode: bridge, bridge_proxy: '10.0.2.2:9', ring_timeout: 10}\n")
    flow = shlex.quote(SHORT_CALLBACK_FLOW)
    cb = shlex.quote(callbacks)
    restored = False
    try:
        vm.ssh("cp -p /etc/ivr/ivr.yaml /etc/ivr/ivr.yaml.before-callback-test"
               f" && printf %s {cb} >> /etc/ivr/ivr.yaml"
               f" && printf %s {flow} > /etc/ivr/flows/callback.yaml"
               " && chown root:ivr /etc/ivr/flows/callback.yaml && chmod 640 /etc/ivr/flows/callback.yaml"
               " && runuser -u ivr -- /opt/ivr/venv/bin/ivr --config /etc/ivr/ivr.yaml check && sync", timeout=180)
        vm.ssh("systemctl restart ivr.service", timeout=400)  # returns once READY (Type=notify)
        assert vm.ssh("systemctl is-active ivr.service", check=False).stdout.strip() == "active"

        filed = json.loads(vm.ssh(f"runuser -u ivr -- /opt/ivr/venv/bin/python -c {shlex.quote(FILE_REQUESTS)} "
                                  + " ".join(NUMBERS), timeout=180).stdout)
        assert len(filed) == len(NUMBERS)

        def ringing() -> list[dict[str, object]]:
            return [a for a in _db(vm)["attempts"] if a["outcome"] is None and a["sip_call_id"]]

        open_before = _wait("an attempt in flight", ringing, timeout=120 * slow)
        time.sleep(3)  # the phone has the INVITE and rings
        cut_at = time.monotonic()
        vm.kill()  # the power cut: no shutdown, no sync
        vm.start()
        vm.wait_ssh(timeout=600)
        vm.wait_for("systemctl is-active ivr.service", "active", timeout=600, line=True)
        up = time.monotonic() - cut_at
        cut_ids = {str(a["request_id"]) for a in open_before}

        def redialled() -> bool:
            by = {}
            for a in _db(vm)["attempts"]:
                by.setdefault(a["request_id"], []).append(a)
            return all(len(by.get(rid, [])) >= 2 for rid in cut_ids)

        _wait("the cut requests dialled again", redialled, timeout=180 * slow)
        took = time.monotonic() - cut_at
        vm.ssh("systemctl stop ivr.service", timeout=300)  # closes what is ringing now (interrupted, CANCEL)
        state = _db(vm)
    finally:
        try:
            vm.ssh("test -f /etc/ivr/ivr.yaml.before-callback-test && mv /etc/ivr/ivr.yaml.before-callback-test"
                   " /etc/ivr/ivr.yaml; rm -f /etc/ivr/flows/callback.yaml; sync", check=False)
            restored = True
        finally:
            time.sleep(10)  # the phone answers the last CANCELs
            phone.terminate()
            phone.wait(timeout=30)
    assert restored
    vm.ssh("systemctl start ivr.service", timeout=400)

    print(f"power cut with {len(open_before)} attempt(s) ringing; ssh + ivr READY {up:.0f} s after the cut; "
          f"the cut ones dialled again {took:.0f} s after it")
    ids = {str(r["id"]) for r in state["requests"]}
    assert set(filed) <= ids, "a committed callback request was lost"
    by_request: dict[str, list[dict[str, object]]] = {}
    for a in state["attempts"]:
        by_request.setdefault(str(a["request_id"]), []).append(a)
    for rid, atts in by_request.items():
        assert [a["n"] for a in atts] == list(range(1, len(atts) + 1)), rid
        assert all(a["outcome"] is not None for a in atts), f"{rid}: attempt left open after a clean stop"
        for a, b in zip(atts, atts[1:], strict=False):
            assert gap(str(a["ended_at"]), str(b["started_at"])) >= BACKOFF - 0.001, (
                f"{rid}: attempt {b['n']} began {gap(str(a['ended_at']), str(b['started_at'])):.2f} s after"
                f" attempt {a['n']} ended ({a['outcome']})")
    for a in open_before:
        cut = next(x for x in by_request[str(a["request_id"])] if x["n"] == a["n"])
        assert cut["outcome"] == "interrupted", cut  # found in flight after the boot, not charged, redialled
    # The phone's side: every INVITE it got is a recorded attempt's, and each attempt is one Call-ID.
    trace = "\n".join(p.read_text(errors="replace") for p in phone_dir.glob("*_messages.log"))
    invites = set(re.findall(r"^INVITE sip:.*?^Call-ID:\s*(\S+)", trace, flags=re.M | re.S | re.I))
    recorded = {str(a["sip_call_id"]) for a in state["attempts"] if a["sip_call_id"]}
    assert invites, "the phone never saw an INVITE"
    assert invites <= recorded, f"INVITEs without an attempt on record: {invites - recorded}"
    print(f"{len(state['attempts'])} attempts for {len(by_request)} requests; the phone got {len(invites)} "
          "INVITE dialogs, all on record")
