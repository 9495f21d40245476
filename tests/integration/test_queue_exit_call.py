"""A caller pressed 1 while waiting in an Asterisk queue (``[ivr-queue-exit]``): the PBX dials the box at
``callback-request`` with the ``[ivr-headers]`` X- headers. A real SIP call (sipp, the INVITE as Asterisk
would send it) into ``ivr run`` with callbacks configured: the sample flow flows/queue_exit.yaml confirms the
caller ID and files the request with the queue from X-IVR-Queue and the arrival from X-IVR-Queue-Entered
(the PBX queue's entry time, not the moment of this call), though no wait estimate exists for the queue.

The request waits its turn: the queue's only agent is busy with a caller who joined it earlier (seeded in
the appliance's own records), so nothing is dialled meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uuid6

from ivr.store.eventlog import BOOT_ID, EventLog, read_events
from tests.conftest import Env
from tests.integration.appliance import start_appliance, stop_appliance, wait_for_call
from tests.integration.test_callbacks import attempts, callbacks_yaml, free_port, request_row
from tests.integration.test_calls import sipp_file

SCENARIO = Path(__file__).parent / "sipp" / "uac_queue_exit.xml"
pytestmark = pytest.mark.skipif(subprocess.run(["which", "sipp"], capture_output=True).returncode != 0,
                                reason="sipp (Debian sip-tester) not installed")


async def seed_waiting_caller(db: Path, now: datetime) -> None:
    """One caller in the support queue now (no finished handovers: the wait cannot be estimated)."""
    async with await EventLog.open(db, "test-site") as log:
        wall = (now - timedelta(seconds=60)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row = (str(uuid6.uuid7()), "test-site", BOOT_ID, wall, time.monotonic_ns(), "waiting-0", "queue.offer",
               json.dumps({"queue": "support", "offered": False}))
        await log.transaction(lambda conn: EventLog.insert(conn, row))


def pbx_call(sip_port: int, workdir: Path, *, queue: str, entered: int, arrival: int) -> None:
    sipp_file(SCENARIO, sip_port, workdir, "callback-request", timeout=90,
              extra=["-key", "queue", queue, "-key", "entered", str(entered), "-key", "arrival", str(arrival)])


def test_a_caller_leaving_the_pbx_queue_by_key_keeps_its_place(env: Env) -> None:
    with env.config.open("a") as f:  # the dialer's trunk is a port nobody answers: nothing must be dialled
        f.write(callbacks_yaml(free_port(), extra=" queues: {support: {agents: 1}},"))
    db = env.state / "ivr.db"
    now = datetime.now(UTC)
    asyncio.run(seed_waiting_caller(db, now))
    entered = int(now.timestamp()) - 7 * 60  # Asterisk's ${EPOCH} when the caller joined the queue
    arrival = entered - 40  # when it first reached the PBX
    workdir = env.root / f"sipp-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()

    proc, port, log = start_appliance(env)
    try:
        pbx_call(port, workdir, queue="support", entered=entered, arrival=arrival)
        call = wait_for_call(env)
        assert call["flow"] == "queue_exit" and call["outcome"] == "callback", (call, log.read_text()[-3000:])
        assert call["path"] == ["which_queue", "request"]
        assert call["variables"]["sip_x_ivr_queue"] == "support"
        assert call["variables"]["sip_x_ivr_queue_entered"] == str(entered)
        assert call["variables"]["sip_x_ivr_queue_position"] == "4"
        evs = {e.type: e.data for e in asyncio.run(read_events(db, str(call["call_id"])))}
        offer = evs["queue.offer"]
        assert (offer["offered"], offer["reason"], offer["requested"]) == (True, "requested", True)
        assert offer["estimate"] is None  # no wait estimate was needed
        rid = str(evs["callback.confirmed"]["request_id"])
        row = request_row(env, rid)
        assert (row["queue"], row["number"], row["state"]) == ("support", "+12125550123", "requested")
        # The place in line the PBX queue earned: its entry time, minutes before this call.
        assert datetime.fromisoformat(row["arrival_at"]) == datetime.fromtimestamp(entered, UTC)
        assert datetime.fromisoformat(row["requested_at"]) >= now
        assert row["consent_pressed"] == "queue:1 1" and row["consent_number"] == "+12125550123"
        assert row["call_id"] == call["call_id"]
        assert attempts(env, rid) == []  # its turn has not come: the agent is busy
    finally:
        stop_appliance(proc, timeout=60)
