"""The caller's data on a callback (issue 17, item 3): a queue node's ``data:`` is filed with the callback request
(migration 0007) and handed to the agent when the customer is called back; a sensitive value is sealed with its
call's key (``privacy:`` on) or masked (off), found nowhere in clear in the raw file, and erased with the caller.
Real parts: the engine on the simulator's call, a real SQLite event log, the store and the erasure. The AMI
Originate is tested against the AMI test peer in tests/integration/test_callbacks_ami.py."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from ivr.adapters.simulator import SimulatedCall, StatedWaits
from ivr.callbacks.desk import Desk
from ivr.callbacks.dialer import Dialer, DialerSettings, DialIds, DialResult
from ivr.callbacks.policy import CallbackPolicy, CallingWindow
from ivr.config import Config
from ivr.engine.runner import run_call
from ivr.flows.model import FlowSet
from ivr.flowset import load_flowset
from ivr.store.callbacks import CallbackRequest, CallbackStore, Consent
from ivr.store.erasure import erase_caller, erase_expired
from ivr.store.eventlog import CallRecorder, EventLog, _statements, migrations, read_events
from ivr.store.privacy import SEALED, Sealer
from tests.conftest import SteppingClock

ACCOUNT = "88812345"
PIN = "73915468"
CALLER = "+12125550123"
NOON_NY = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
NY = ("America/New_York",)
POLICY = CallbackPolicy(site_zone="America/New_York", windows=(CallingWindow(time(0, 0), time(0, 0)),))  # all day

DATA_FLOW = """
flow: acct
default: true
languages: [en]
timezone: America/New_York
start: account
prompts:
  ask_account: "Enter your account number, then pound."
  ask_pin: "Enter your PIN, then pound."
  hold: "Please hold."
nodes:
  account:
    collect: {prompt: ask_account, into: account, min_digits: 6, max_digits: 10, timeout: 5}
    next: pin
  pin:
    collect: {prompt: ask_pin, into: pin, min_digits: 4, max_digits: 10, sensitive: true, timeout: 5}
    next: q
  q:
    queue:
      name: support
      prompt: hold
      data: [account, pin]
      callback: {min_wait_seconds: 120}
"""

CALLBACK_FLOW = """
flow: callback
languages: [en]
timezone: America/New_York
start: connect
prompts:
  connecting: "Connecting you now."
nodes:
  connect:
    transfer: {queue: "${queue}", prompt: connecting, data: [account]}
"""


@pytest.fixture(scope="module")
def flowset(tmp_path_factory: pytest.TempPathFactory, prompt_cache: Path) -> FlowSet:
    d = tmp_path_factory.mktemp("cbdata")
    (d / "acct.yaml").write_text(DATA_FLOW, encoding="utf-8")
    (d / "callback.yaml").write_text(CALLBACK_FLOW, encoding="utf-8")
    config = Config(site_id="t", state_dir=d / "var", prompt_cache_dir=prompt_cache)
    return asyncio.run(load_flowset([d], config))


def raw_files(db: Path) -> dict[str, bytes]:
    """The database file and its companions as they lie on disk (the -wal holds what is not checkpointed)."""
    return {p.name: p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file()}


async def call_and_accept(log: EventLog, flowset: FlowSet, call_id: str = "call-1") -> CallbackRequest:
    """A caller keys their account and PIN, waits long, accepts the callback on their caller ID."""
    store = CallbackStore(log)
    desk = Desk(store, POLICY, StatedWaits({"support": 600}), region="US", now=SteppingClock(NOON_NY))
    call = SimulatedCall(call_id, CALLER, "", [f"{ACCOUNT}#", f"{PIN}#", "1", "1"], emit=lambda _line: None)
    outcome = await run_call(call, flowset, CallRecorder(log, call_id), now=SteppingClock(NOON_NY), entry="acct",
                             callbacks=desk)
    assert outcome.kind == "callback"
    [req] = [r for r in await store.active() if r.call_id == call_id]
    return req


async def test_sealed_with_privacy_on_opened_for_the_dial_erased_with_the_caller(tmp_path: Path,
                                                                                 flowset: FlowSet) -> None:
    db = tmp_path / "ivr.db"
    log = await EventLog.open(db, "site-a", sealer=Sealer(b"k" * 32))
    try:
        store = CallbackStore(log)
        req = await call_and_accept(log, flowset)
        [(n1, v1, s1), (n2, v2, s2)] = req.agent_data
        assert (n1, v1, s1) == ("account", ACCOUNT, False)
        assert n2 == "pin" and s2 and v2.startswith(SEALED)  # sealed with the call's key
        assert await store.agent_data(req) == ((("account", ACCOUNT), ("pin", PIN)), frozenset({"pin"}))
        events = await read_events(db)
        [filed] = [e.data for e in events if e.type == "callback.requested"]
        assert filed["data"] == ["account", "pin"]  # the names, never the values
        # after the call: the PIN in clear nowhere on disk (-wal included)
        for name, blob in raw_files(db).items():
            assert PIN.encode() not in blob, f"PIN in clear in {name}"
        # the caller asks to be forgotten: cancelled first (as `ivr privacy erase` does), then erased
        await store.cancel(req.id, NOON_NY + timedelta(minutes=1))
        done = await erase_caller(log, CALLER, "US", NOON_NY + timedelta(minutes=2))
        assert done.callbacks == 1 and done.keys >= 1
        erased = await store.get(req.id)
        assert erased.agent_data == () and erased.number == ""
        assert await store.agent_data(req) == ((("account", ACCOUNT),), frozenset())  # the old row: key gone
    finally:
        await log.close()
    for name, blob in raw_files(db).items():
        for secret in (PIN, ACCOUNT):
            assert secret.encode() not in blob, f"{secret} in clear in {name} after the erasure"


async def test_a_value_its_key_cannot_open_is_left_out(tmp_path: Path, flowset: FlowSet) -> None:
    """A sealed value whose key on disk is not the one it was sealed with (a database put together from two
    boxes' copies) opens as nothing: the agent is not handed the word "(erased)" for the PIN."""
    log = await EventLog.open(tmp_path / "ivr.db", "site-a", sealer=Sealer(b"k" * 32))
    try:
        store = CallbackStore(log)
        req = await call_and_accept(log, flowset)
        key_id = next(v for _n, v, hidden in req.agent_data if hidden)[len(SEALED):].rpartition(":")[0]
        await log.db.execute("UPDATE privacy_keys SET key=? WHERE id=?", (b"x" * 32, key_id))
        await log.db.commit()
        assert await store.agent_data(req) == ((("account", ACCOUNT),), frozenset())
    finally:
        await log.close()


async def test_masked_without_privacy_and_never_handed_over(tmp_path: Path, flowset: FlowSet) -> None:
    """No ``privacy:``: no key could erase a sealed value, so the sensitive one is kept masked, as in the call's
    record, and the agent gets only the others."""
    db = tmp_path / "ivr.db"
    async with await EventLog.open(db, "site-a") as log:
        store = CallbackStore(log)
        req = await call_and_accept(log, flowset)
        assert req.agent_data == (("account", ACCOUNT, False), ("pin", "•••• 8 digits", True))
        assert await store.agent_data(req) == ((("account", ACCOUNT),), frozenset())
    for name, blob in raw_files(db).items():
        assert PIN.encode() not in blob, f"PIN in clear in {name}"


async def test_an_update_replaces_the_data_and_retention_erases_it(tmp_path: Path) -> None:
    db = tmp_path / "ivr.db"
    async with await EventLog.open(db, "site-a", sealer=Sealer(b"k" * 32)) as log:
        store = CallbackStore(log)
        first = await store.request(queue="support", number=CALLER, zones=NY, arrival_at=NOON_NY,
                                    consent=Consent(at=NOON_NY, number=CALLER), now=NOON_NY, call_id="c1",
                                    data=(("account", "111111"), ("pin", "2222")), sensitive={"pin"})
        later = NOON_NY + timedelta(minutes=5)
        again = await store.request(queue="support", number=CALLER, zones=NY, arrival_at=later,
                                    consent=Consent(at=later, number=CALLER), now=later, call_id="c2",
                                    data=(("account", "333333"),))
        assert again.id == first.id and not again.created
        req = await store.get(first.id)
        assert req.agent_data == (("account", "333333", False),)
        [updated] = [e.data for e in await read_events(db) if e.type == "callback.updated"]
        assert updated["data"] == ["account"]
        await store.cancel(req.id, later)
        await erase_expired(log, 30, later + timedelta(days=31))
        assert (await store.get(req.id)).agent_data == ()


async def test_migration_7_keeps_the_requests_of_an_older_log(tmp_path: Path) -> None:
    """A log at version 6 with a waiting request opens at 7: the request has no data and is still dialable."""
    db = tmp_path / "ivr.db"
    con = sqlite3.connect(db)
    for version, sql in migrations():
        if version <= 6:
            for statement in _statements(sql):
                con.execute(statement)
    con.execute("PRAGMA user_version=6")
    con.execute("INSERT INTO callback_requests (id, site, queue, number, callee_tz, arrival_at, requested_at,"
                " updated_at, state, consent_at, consent_number, next_attempt_at) VALUES"
                " ('r1','site-a','support',?, '[\"America/New_York\"]','2026-12-01T17:00:00.000000Z',"
                " '2026-12-01T17:00:00.000000Z','2026-12-01T17:00:00.000000Z','requested',"
                " '2026-12-01T17:00:00.000000Z',?, '2026-12-01T17:00:00.000000Z')", (CALLER, CALLER))
    con.commit()
    con.close()
    async with await EventLog.open(db, "site-a") as log:
        store = CallbackStore(log)
        req = await store.get("r1")
        assert req.agent_data == () and req.number == CALLER
        assert [r.id for r in await store.due(NOON_NY + timedelta(minutes=1), 10)] == ["r1"]
        async with log.db.execute("PRAGMA user_version") as cur:
            assert (await cur.fetchone()) == (max(v for v, _ in migrations()),)


class RecordingPort:
    """A dial port that answers and notes what it was handed."""

    name = "test"

    def __init__(self) -> None:
        self.dialled: list[DialIds] = []

    def ids(self, req: CallbackRequest) -> DialIds:
        return DialIds(channel="test")

    def unavailable(self) -> str | None:
        return None

    async def dial(self, req: CallbackRequest, attempt: object, ids: DialIds) -> DialResult:
        self.dialled.append(ids)
        return DialResult("answered", True, detail="queued", answered_at=datetime.now(UTC),
                          agent_at=datetime.now(UTC))

    async def pbx_view(self, attempts: object) -> dict[str, str]:
        return {}


async def test_the_dialer_hands_the_opened_data_to_its_port(tmp_path: Path) -> None:
    async with await EventLog.open(tmp_path / "ivr.db", "site-a", sealer=Sealer(b"k" * 32)) as log:
        store = CallbackStore(log)
        now = datetime.now(UTC)
        await store.request(queue="support", number=CALLER, zones=NY, arrival_at=now,
                            consent=Consent(at=now, number=CALLER), now=now, call_id="c1",
                            data=(("account", ACCOUNT), ("pin", PIN)), sensitive={"pin"})
        port = RecordingPort()
        dialer = Dialer(store, POLICY, port, DialerSettings(clock="trust"))
        assert await dialer.tick() == 1
        await asyncio.gather(*(a.task for a in dialer.active.values()))
    [ids] = port.dialled
    assert ids.agent_data == (("account", ACCOUNT), ("pin", PIN)) and ids.sensitive == frozenset({"pin"})


async def test_the_callback_legs_transfer_carries_the_data(flowset: FlowSet) -> None:
    """The SIP way: the dialer runs the callback flow on the answered leg with the request's data; its transfer
    to the queue hands it over with its own ``data:`` (the node's value wins), as any transfer does (X-IVR-Var-*
    headers, or Setvar before a Redirect: ivr/adapters/transfer.py)."""
    lines: list[str] = []
    call = SimulatedCall("leg-1", CALLER, "", [], emit=lines.append)
    outcome = await run_call(call, flowset, _NoRecorder(), entry="callback",
                             variables={"queue": "support", "account": "new"},
                             carried=(("account", "old"), ("pin", PIN)), sensitive=frozenset({"pin"}))
    assert outcome.kind == "transferred"
    [target] = call.transfers
    assert target.destination == "support"
    assert target.data == (("account", "new"), ("pin", PIN)) and target.sensitive == frozenset({"pin"})
    assert not any(PIN in line for line in lines)  # narrated masked


class _NoRecorder:
    async def begin(self, call: object, flow: object, version: str) -> None:
        pass

    async def event(self, type: str, **data: object) -> None:
        pass

    async def end(self, outcome: object, path: list[str], variables: dict[str, object]) -> None:
        pass
