"""Sensitive values (``sensitive: true`` on collect and set) as an admin and a caller see them: the flow uses the
real value during the call, and it is found nowhere in clear afterwards — not in the raw SQLite file (its -wal
included), the log lines, ``ivr simulate``'s output, nor what the relay sends to the center."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ivr.store.eventlog import iter_events
from ivr.sync.wire import Line, build_batch
from tests.conftest import Env

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

