"""50 SIGKILLs of `ivr run` and 20 drops of its AMI link at random moments while it calls customers back
through Asterisk (dial via ami), against the test AMI peer playing a PBX whose customers answer, then either
press 1 (their channel joins the queue: QueueCallerJoin, then app_queue in CoreShowChannels for a while) or
decline (IvrCallbackDeclined). Issue 12's invariants, from the peer's own record and the database:
- 0 lost: every request whose filing returned is still there;
- 0 double: never two attempts of one request at once, and never an Originate for a request after its
  customer joined the queue;
- 0 falsely kept: a request is done only if the PBX showed that customer in the queue.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
from typing import Any

from ivr.proto.ami import AmiAction, event
from tests.ami.peer import AmiPeer, _Conn
from tests.conftest import Env
from tests.integration.test_callbacks_ami import ami_yaml, file, stop

KILLS = 50
DROPS = 20


class CallbackPbx(AmiPeer):
    """The test AMI peer with a model of the callback leg: every Originate is answered; 0.3-1.5 s later the
    customer presses 1 (70 %: the channel joins the queue, marked in AstDB as the sample dialplan does, and stays
    in app_queue for 2-6 s) or declines."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.channels = []
        self.seq = 0
        self.joined: dict[str, float] = {}  # request id -> loop time its customer joined the queue
        self.originated: list[tuple[str, float]] = []  # (request id, loop time)

    async def _originate(self, conn: _Conn, action: AmiAction) -> None:
        rid = action.variables().get("CALLBACK_ID", "")
        self.originated.append((rid, asyncio.get_running_loop().time()))
        self.seq += 1
        channel = f"{action.get('Channel')}-{self.seq:08x};1"
        self.variables[(channel, "CALLBACK_ID")] = rid
        row = {"Channel": channel, "ChannelStateDesc": "Up", "Context": "ivr-callback", "Exten": "s",
               "Uniqueid": f"1700000200.{self.seq}", "Application": "Read", "ApplicationData": "press-1"}
        assert self.channels is not None
        self.channels.append(row)
        await super()._originate(conn, action)
        task = asyncio.ensure_future(self._customer(rid, action.variables().get("CALLBACK_ATTEMPT", ""), channel,
                                                    row))
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    async def _customer(self, rid: str, attempt: str, channel: str, row: dict[str, str]) -> None:
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        assert self.channels is not None
        if self.rng.random() < 0.7:
            row["Application"], row["ApplicationData"] = "Queue", "support"
            self.joined.setdefault(rid, asyncio.get_running_loop().time())
            # [ivr-queue] marks the attempt in AstDB as the customer enters (docs/asterisk/extensions-ivr.conf)
            self.astdb[("ivr_callback", attempt)] = str(int(asyncio.get_running_loop().time()))
            await self.push(event("QueueCallerJoin", {"Channel": channel, "Uniqueid": row["Uniqueid"],
                                                      "Queue": "support", "Position": "1", "Count": "1"}))
            await asyncio.sleep(self.rng.uniform(2.0, 6.0))  # waiting, then with an agent
        else:
            await self.push(event("UserEvent", {"UserEvent": "IvrCallbackDeclined", "CallbackID": rid}))
        if row in self.channels:
            self.channels.remove(row)


async def _run(env: Env) -> tuple[CallbackPbx, list[str], int]:
    rng = random.Random(20261202)
    pbx = CallbackPbx(rng)
    await pbx.start()
    with env.config.open("a") as f:
        f.write(ami_yaml(pbx, confirm=3, intervals="[1]").replace(
            "max_attempts: 3, expiry: 3600", "max_attempts: 50, expiry: 3600, after_interruption: 0.5"))
    env.state.mkdir(parents=True, exist_ok=True)
    log = (env.root / "daemon.log").open("a")
    filed: list[str] = []
    drops = 0
    try:
        for i in range(KILLS):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run",
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
            try:
                await asyncio.sleep(rng.uniform(0.3, 2.5))
                if len(filed) < 30 and rng.random() < 0.6:
                    filed.append(await file(env, f"+1212555{3000 + i:04d}"))
                if drops < DROPS and rng.random() < 0.5:
                    drops += 1
                    pbx.drop_all()  # the link drops: a network blip, Asterisk and its calls live on
                await asyncio.sleep(rng.uniform(0.0, 2.5))
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run",
            stdout=asyncio.subprocess.DEVNULL, stderr=log)
        for _ in range(max(4, DROPS - drops)):  # the rest of the 20 drops, in the last, orderly run
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            pbx.drop_all()
            drops += 1
        await asyncio.sleep(12.0)  # reconcile what the kills and drops left, dial the rest
        code = await stop(proc)
    finally:
        await pbx.stop()
        log.close()
    assert drops >= DROPS
    return pbx, filed, code


def _overlaps(atts: list[dict[str, Any]]) -> bool:
    return any(b["started_at"] < (a["ended_at"] or "9") for a, b in zip(atts, atts[1:], strict=False))


async def test_fifty_kills_and_twenty_link_drops_lose_nothing_double_nothing_keep_nothing_falsely(
        env: Env) -> None:
    pbx, filed, code = await _run(env)
    assert code == 0, (env.root / "daemon.log").read_text()[-3000:]
    assert len(filed) >= 15
    with sqlite3.connect(env.state / "ivr.db") as db:
        db.row_factory = sqlite3.Row
        reqs = {r["id"]: dict(r) for r in db.execute("SELECT * FROM callback_requests")}
        atts = [dict(r) for r in db.execute("SELECT * FROM callback_attempts ORDER BY request_id, n")]
    assert set(filed) <= set(reqs), "a committed request was lost"
    by_request: dict[str, list[dict[str, Any]]] = {}
    for a in atts:
        by_request.setdefault(a["request_id"], []).append(a)
    assert sum(1 for a in atts if a["outcome"] == "interrupted") >= 3, "the faults hardly hit an attempt"
    for rid, rows in by_request.items():
        assert not _overlaps(rows), f"{rid}: two attempts at once"
    # never dialled again once the customer was in the queue
    for rid, joined_at in pbx.joined.items():
        later = [t for r, t in pbx.originated if r == rid and t > joined_at]
        assert not later, f"{rid}: Originate again {later[0] - joined_at:.1f} s after the customer joined the queue"
    # done only on the PBX's evidence
    done = {rid for rid, r in reqs.items() if r["state"] == "done"}
    falsely = done - set(pbx.joined)
    assert not falsely, f"done without the customer ever in the queue: {falsely}"
    assert done, "nothing was ever done: the test proved little"
