"""Sensitive values (``sensitive: true`` on collect and set) as an admin and a caller see them: the flow uses the
real value during the call, and it is found nowhere in clear afterwards — not in the raw SQLite file (its -wal
included), the log lines, ``ivr simulate``'s output, nor what the relay sends to the center."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from pathlib import Path

import pytest

from ivr.adapters.simulator import SimulatedCall
from ivr.config import load_config
from ivr.daemon import Daemon
from ivr.store.eventlog import iter_events
from ivr.sync.wire import Line, build_batch
from tests.ami.conftest import until
from tests.conftest import REPO, Env
from tests.sync.center import Center

PIN = "73915468"
WRONG = "61829374"  # refused by the pattern first: an invalid entry is as secret as a valid one
DOB = "19800229"

PIN_FLOW = """
flow: pin
numbers: ["700"]
start: pin
prompts:
  ask: "Enter your PIN, then pound."
  you_entered: "You entered"
  confirm_choice: "If that is correct, press 1. To enter it again, press 2."
  ok: "Thank you, your PIN is accepted."
  wrong: "That PIN is wrong."
nodes:
  pin:
    collect: {prompt: ask, into: pin, min_digits: 8, max_digits: 10, pattern: "^7[0-9]{7}$", sensitive: true,
              confirm: true, timeout: 8}
    next: keep
  keep:
    set: {pin_ref: "ref-${pin}", dob: {value: "@DOB@", sensitive: true}, plain: "visible"}
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
""".replace("@DOB@", DOB).replace("@PIN@", PIN)

SECRETS = (PIN, WRONG, DOB)


def raw_files(db: Path) -> dict[str, bytes]:
    """The database file and its companions as they lie on disk (the -wal holds what is not checkpointed)."""
    return {p.name: p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file()}


def assert_nowhere(where: str, blob: bytes | str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret} in clear in {where}"
        # the digits also must not be spelled out one per event or prompt (input.dtmf, the read-back)
        assert ",".join(secret).encode() not in data.replace(b'"', b"").replace(b" ", b"")


def wire_body(db: Path, site: str) -> bytes:
    """What the relay would send to the center: every event as one NDJSON batch (ivr/sync/relay.py builds its
    batches from these lines with this function)."""
    lines = [Line(e.seq, e.id, e.to_json().encode()) for e in iter_events(db)]
    batch = build_batch(site, lines, max_events=100_000, max_bytes=100_000_000)
    assert batch is not None
    return batch.body


def test_sensitive_pin_is_used_by_the_flow_and_never_recorded_in_clear(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    (env.flows / "pin.yaml").write_text(PIN_FLOW, encoding="utf-8")
    assert env.ivr("check").code == 0
    caplog.set_level(logging.DEBUG)
    r = env.ivr("simulate", "pin", "-i", f"{WRONG}#", "-i", f"{PIN}#", "-i", "1", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    # the flow read the real value: the branch on the PIN went to "ok"
    assert result["path"] == ["pin", "keep", "check", "ok"] and result["detail"] == "ok"
    transcript = "\n".join(result["transcript"])
    assert "You entered" in transcript and "  ♪ •" in transcript  # the read-back is heard, shown masked
    assert "  ← •••••••••" in transcript  # the 9 keys typed (8 digits and #) are echoed masked
    assert "✓ pin = •••• 8 digits" in transcript
    # what the admin sees of the call: masked values, the others as they were
    call = next(c for c in env.calls(simulated=True) if c["call_id"] == result["call_id"])
    assert call["variables"]["pin"] == "•••• 8 digits"
    assert call["variables"]["dob"] == "•••• 8 digits"
    assert call["variables"]["pin_ref"] == "•••• 12 characters"  # set from the PIN: sensitive too
    assert call["variables"]["plain"] == "visible"
    events = env.ivr("events", "--simulated", "--call", result["call_id"], "--json").out
    assert '"sensitive":true' in events
    db = env.state / "simulate.db"
    for name, blob in raw_files(db).items():
        assert_nowhere(name, blob)
    assert_nowhere("ivr simulate --json", r.out + r.err)
    assert_nowhere("ivr events --json", events)
    assert_nowhere("the log", "\n".join(rec.getMessage() for rec in caplog.records))
    assert_nowhere("the sync batch", wire_body(db, "test-site"))


def test_plain_collect_is_still_recorded(env: Env) -> None:
    """Without ``sensitive`` nothing changes: the sample billing flow keeps the account number on the record."""
    r = env.ivr("simulate", "billing", "-i", "1234567#", "-i", "1", "-i", "1", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    call = next(c for c in env.calls(simulated=True) if c["call_id"] == result["call_id"])
    assert call["variables"]["account"] == "1234567"


def test_check_refuses_a_misspelt_sensitive(empty_env: Env) -> None:
    (empty_env.flows / "bad.yaml").write_text(PIN_FLOW.replace("sensitive: true,", "sensitive: yes please,"))
    r = empty_env.ivr("check")
    assert r.code != 0 and "bad.yaml" in (r.out + r.err)



# -- personal data: sealed in the events, erasable (privacy: in the config) --

CALLER = "+12015550123"
ACCOUNT = "4075312"

ACCOUNT_FLOW = """
flow: acct
default: true
numbers: ["701"]
start: account
prompts:
  ask_account: "Enter your account number, then pound."
  ask_pin: "Enter your PIN, then pound."
  bye: "Thank you. Goodbye."
nodes:
  account:
    collect: {prompt: ask_account, into: account, min_digits: 7, max_digits: 10, timeout: 5}
    next: pin
  pin:
    collect: {prompt: ask_pin, into: pin, min_digits: 8, max_digits: 10, sensitive: true, timeout: 5}
    next: bye
  bye:
    hangup: bye
"""

PERSONAL = (CALLER.lstrip("+"), ACCOUNT, PIN)


async def run_ivr(env: Env, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """The ``ivr`` command as a process (the stand-in center serves on this test's loop meanwhile)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ivr.cli", "--config", str(env.config), *args,
                                                cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def configure_center(env: Env, center: Center) -> None:
    token = env.root / "central-token"
    token.write_text(center.token + "\n", encoding="utf-8")
    token.chmod(0o600)
    items = {"url": center.url, "token_file": str(token), "ca_file": str(center.ca_pem), "interval": 60}
    with env.config.open("a", encoding="utf-8") as f:
        f.write("central: " + json.dumps(items) + "\n")


async def test_personal_data_goes_out_sealed_and_an_erasure_request_removes_it(
        empty_env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = empty_env
    (env.flows / "acct.yaml").write_text(ACCOUNT_FLOW, encoding="utf-8")
    with env.config.open("a", encoding="utf-8") as f:
        f.write("privacy: {}\n")
    center = Center(tmp_path)
    await center.start()
    caplog.set_level(logging.DEBUG)
    try:
        configure_center(env, center)
        daemon = Daemon(load_config(str(env.config)))
        try:
            await daemon.start()
            call = SimulatedCall(str(uuid.uuid4()), CALLER, "701", [f"{ACCOUNT}#", f"{PIN}#"],
                                 emit=lambda _line: None)
            outcome = await daemon.start_call(call)
            assert outcome.kind == "hangup"

            def acknowledged() -> bool:
                ended = [e["seq"] for e in center.stored() if e["type"] == "call.ended"]
                return bool(ended) and daemon.relay is not None and daemon.relay.position.acked_seq >= ended[0]

            await until(acknowledged, 15)
        finally:
            await daemon.shutdown(grace=1)
    finally:
        await center.stop()
    # the center got the call, its pseudonym and only sealed personal fields
    sent = [e for e in center.stored() if e["call_id"] == call.call_id]
    started = next(e for e in sent if e["type"] == "call.started")
    assert started["data"]["caller"].startswith("sealed:v1:") and started["data"]["caller_ref"].startswith("ref:")
    assert next(e for e in sent if e["type"] == "collect.value" and e["data"]["var"] == "account")[
        "data"]["value"].startswith("sealed:v1:")
    assert_nowhere_of(PERSONAL, "what the center received", json.dumps(center.stored()))
    # the box's admin still reads them while the keys exist
    code, out, _ = await run_ivr(env, "events", "--call", call.call_id, "--json")
    assert code == 0 and f'"caller":"{CALLER}"' in out and f'"value":"{ACCOUNT}"' in out
    assert PIN not in out  # a sensitive value was never kept: masked, not sealed
    # a data-subject request, the number written another way
    code, out, err = await run_ivr(env, "privacy", "erase", "--caller", "(201) 555-0123")
    assert code == 0, err
    assert "erased for the caller: 1 key(s)" in out and "1 call record(s)" in out
    code, out, _ = await run_ivr(env, "events", "--call", call.call_id, "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert next(e for e in events if e["type"] == "call.started")["data"]["caller"] == "(erased)"
    assert next(e for e in events if e["type"] == "collect.value")["data"]["value"] == "(erased)"
    code, out, _ = await run_ivr(env, "events", "--type", "privacy.erased", "--json")
    erased = json.loads(out.splitlines()[-1])["data"]
    assert erased["reason"] == "request" and erased["keys"] == 1 and erased["caller_ref"] == \
        started["data"]["caller_ref"]
    code, out, _ = await run_ivr(env, "calls", "--json")
    record = next(c for c in json.loads(out) if c["call_id"] == call.call_id)
    assert record["caller"] == "(erased)" and record["variables"] == {}
    # and the raw file and its -wal hold none of it any more
    for name, blob in raw_files(env.state / "ivr.db").items():
        assert_nowhere_of(PERSONAL, name, blob)
    assert_nowhere_of((PIN,), "the daemon's log", "\n".join(r.getMessage() for r in caplog.records))


def assert_nowhere_of(secrets: tuple[str, ...], where: str, blob: bytes | str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in secrets:
        assert secret.encode() not in data, f"{secret} in clear in {where}"


async def test_retention_erases_old_calls_but_keeps_a_waiting_callback_dialable(tmp_path: Path) -> None:
    """``retention_days``: a call older than the period is erased at once; one whose callback is still waiting
    keeps its number (the dialer must reach it) until the callback is over and as old."""
    from datetime import UTC, datetime, timedelta

    from ivr.store.callbacks import CallbackStore, Consent
    from ivr.store.erasure import erase_expired
    from ivr.store.eventlog import EventLog, read_events
    from ivr.store.privacy import Sealer

    db = tmp_path / "ivr.db"
    caller_a, callback_to, caller_b = "+14155552671", "+14155550987", "+12125550123"
    log = await EventLog.open(db, "site-a", sealer=Sealer(b"k" * 32))
    try:
        store = CallbackStore(log)
        now = datetime.now(UTC)
        for call_id, caller in (("call-a", caller_a), ("call-b", caller_b)):
            await log.begin_call(call_id=call_id, channel="sip", caller=caller, dialed="100", flow="main",
                                 version="v1")
            await log.append("collect.value", call_id, node="account", var="account", value="88812345")
            await log.end_call(call_id=call_id, outcome="hangup", detail="", path=["account"],
                               variables={"caller": caller, "account": "88812345"})
        filed = await store.request(queue="support", number=callback_to, zones=("America/New_York",),
                                    arrival_at=now, consent=Consent(at=now, number=callback_to, heard="offer",
                                                                    pressed="1"), now=now, call_id="call-a")
        later = now + timedelta(days=31)
        first = await erase_expired(log, 30, later)
        assert (first.keys, first.calls, first.callbacks) == (1, 1, 0)  # call-b only
        assert (await store.get(filed.id)).number == callback_to  # still dialable
        ev = {(e.call_id, e.type): e.data for e in await read_events(db)}
        assert ev[("call-b", "call.started")]["caller"] == "(erased)"
        assert ev[("call-a", "call.started")]["caller"] == caller_a
        # the callback is made and done; a retention round after it is as old erases the rest
        attempt = await store.begin_attempt(filed.id, now)
        await store.finish_attempt(attempt.id, "connected", now)
        await store.complete(filed.id, now)
        second = await erase_expired(log, 30, later)
        assert second.calls == 1 and second.callbacks == 1 and second.keys >= 1
        assert (await store.get(filed.id)).number == ""
        events = await read_events(db)
        assert all(e.data.get("number") in (None, "(erased)") for e in events if e.type.startswith("callback."))
        kinds = [e.data["reason"] for e in events if e.type == "privacy.erased"]
        assert kinds == ["retention", "retention"]
        assert (await erase_expired(log, 30, later)).keys == 0  # nothing left: nothing written
        assert [e.type for e in await read_events(db)].count("privacy.erased") == 2
    finally:
        await log.close()
    for name, blob in raw_files(db).items():
        assert_nowhere_of(tuple(n.lstrip("+") for n in (caller_a, callback_to, caller_b)) + ("88812345",), name, blob)


async def test_repeat_callers_still_count_from_the_pseudonym_after_an_erasure(tmp_path: Path) -> None:
    """FCR by repeat caller reads ``caller_ref``, never the sealed number: one caller written two ways is one
    caller, before and after their personal data is erased (the box's ``ivr kpi`` reads what the center reads)."""
    from datetime import UTC, datetime, timedelta

    from ivr.kpi.report import build
    from ivr.store.erasure import erase_caller
    from ivr.store.eventlog import EventLog
    from ivr.store.privacy import Sealer

    db = tmp_path / "ivr.db"
    log = await EventLog.open(db, "site-a", "UTC", sealer=Sealer(b"k" * 32))

    def fcr() -> tuple[float, int]:
        now = datetime.now(UTC) + timedelta(days=10)
        report = build(iter_events(db, opened=False), zone="UTC", since=now - timedelta(days=30), until=None,
                       by=None, now=now, region="US").to_json()
        return report["totals"]["fcr_24h"]["value"], report["totals"]["fcr_24h"]["n"]

    try:
        for i, caller in enumerate(["+12015550123", "(201) 555-0123", "+13125550000"]):
            await log.begin_call(call_id=f"c{i}", channel="sip", caller=caller, dialed="100", flow="main",
                                 version="v1")
            await log.end_call(call_id=f"c{i}", outcome="hangup", detail="", path=["a"], variables={})
        assert fcr() == (0.6667, 3)  # c0 was followed by a repeat call from the same number
        done = await erase_caller(log, "201-555-0123", "US", datetime.now(UTC))
        assert done.keys == 2 and done.calls == 2
        assert fcr() == (0.6667, 3)
    finally:
        await log.close()


def test_the_privacy_section(tmp_path: Path) -> None:
    """Present (even empty) turns sealing on, ``false`` or absent leaves it off; ``ivr check`` refuses a bad value
    at its line; the pseudonym key is made once, readable by its owner only."""
    def load(text: str) -> object:
        cfg = tmp_path / "ivr.yaml"
        cfg.write_text(f"state_dir: {tmp_path / 'var'}\n{text}", encoding="utf-8")
        return load_config(str(cfg)).privacy

    assert load("") is None and load("privacy: false\n") is None
    on = load("privacy:\n")
    assert on is not None and on.retention_days is None  # type: ignore[attr-defined]
    kept = load("privacy: {retention_days: 30}\ncallbacks: {region: GB, dial: {proxy: '127.0.0.1:5070'}}\n")
    assert kept.retention_days == 30 and kept.region == "GB"  # type: ignore[attr-defined]
    sealer = kept.sealer()  # type: ignore[attr-defined]
    key_file = tmp_path / "var" / "privacy-pseudonym.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert kept.sealer().caller_ref("07700 900123") == sealer.caller_ref("+447700900123")  # type: ignore[attr-defined]
    from ivr.errors import ConfigError

    with pytest.raises(ConfigError, match="ivr.yaml:2"):
        load("privacy: {retention_days: -1}\n")


def test_a_sensitive_entry_spoken_is_masked_too(env: Env) -> None:
    """Digits said rather than keyed: the recogniser's text is no more recorded than the keys would be."""
    flow = PIN_FLOW.replace("sensitive: true,", "sensitive: true, speech: true,")
    (env.flows / "pin.yaml").write_text(flow, encoding="utf-8")
    spoken = "say:seven three nine one five four six eight"
    r = env.ivr("simulate", "pin", "-i", spoken, "-i", "1", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["path"] == ["pin", "keep", "check", "ok"]
    assert "say (sensitive, masked)" in "\n".join(result["transcript"])
    out = env.ivr("events", "--simulated", "--call", result["call_id"], "--json").out
    speech = [json.loads(line)["data"] for line in out.splitlines() if '"input.speech"' in line]
    assert speech and speech[0]["text"] == "••••" and speech[0]["sensitive"] is True
    assert "seven" not in out and "seven" not in r.out
    for name, blob in raw_files(env.state / "simulate.db").items():
        assert_nowhere(name, blob)
        assert b"seven three" not in blob


async def test_the_daemon_erases_what_retention_says_is_due(empty_env: Env) -> None:
    """``retention_days`` in a running daemon: a call older than the period (here about a second) is erased by
    the daemon's own round, recorded as ``privacy.erased``; calls go on meanwhile."""
    env = empty_env
    (env.flows / "acct.yaml").write_text(ACCOUNT_FLOW, encoding="utf-8")
    with env.config.open("a", encoding="utf-8") as f:
        f.write("privacy: {retention_days: 0.00001, check_seconds: 1}\n")  # 0.86 s
    daemon = Daemon(load_config(str(env.config)))
    try:
        await daemon.start()
        call = SimulatedCall(str(uuid.uuid4()), CALLER, "701", [f"{ACCOUNT}#", f"{PIN}#"], emit=lambda _line: None)
        assert (await daemon.start_call(call)).kind == "hangup"
        db = env.state / "ivr.db"

        def erased() -> bool:
            return any(e.type == "privacy.erased" and e.data["calls"] >= 1 for e in iter_events(db))

        await until(erased, 15)
        started = next(e for e in iter_events(db, call_id=call.call_id) if e.type == "call.started")
        assert started.data["caller"] == "(erased)"
    finally:
        await daemon.shutdown(grace=1)
    for name, blob in raw_files(env.state / "ivr.db").items():
        assert_nowhere_of(PERSONAL, name, blob)


BALANCE_FLOW = """
flow: bal
numbers: ["703"]
start: keep
prompts:
  your_balance: "Your balance is"
  after_fee: "After the fee,"
nodes:
  keep:
    set: {balance: {value: "4321.75", sensitive: true}}
    next: say
  say:
    play: [your_balance, {money: balance}]
    next: fee
  fee:
    set: {after: {expr: "${balance} - 10"}, tries: {add: 1}}
    next: again
  again:
    play: [after_fee, {money: after}]
    next: bye
  bye:
    hangup: true
"""


def test_a_sensitive_amount_is_said_and_computed_with_but_recorded_masked(env: Env) -> None:
    """Spoken values and arithmetic (issue 17 items 2 and 9) on a sensitive variable: the caller hears the amount,
    a sum made from it is sensitive too, and neither is in the records."""
    (env.flows / "bal.yaml").write_text(BALANCE_FLOW, encoding="utf-8")
    r = env.ivr("simulate", "bal", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    transcript = "\n".join(result["transcript"])
    assert "♪ Your balance is" in transcript and "♪ •" in transcript and "dollars" not in transcript
    out = env.ivr("events", "--simulated", "--call", result["call_id"], "--json").out
    events = [json.loads(line) for line in out.splitlines()]
    played = [e["data"]["prompts"] for e in events if e["type"] == "prompt.played"]
    assert ["your_balance", "money:••••"] in played and ["after_fee", "money:••••"] in played
    assert not any(n.startswith("v.") for p in played for n in p)
    sets = [e["data"] for e in events if e["type"] == "vars.set"]
    assert sets[1]["values"] == {"after": "•••• 7 characters", "tries": 1} and sets[1]["sensitive"] == ["after"]
    call = next(c for c in env.calls(simulated=True) if c["call_id"] == result["call_id"])
    assert call["variables"]["after"] == "•••• 7 characters" and call["variables"]["tries"] == 1
    for where, blob in [*raw_files(env.state / "simulate.db").items(), ("ivr simulate", r.out.encode()),
                        ("ivr events", out.encode())]:
        assert b"4321.75" not in blob and b"4311.75" not in blob, where
