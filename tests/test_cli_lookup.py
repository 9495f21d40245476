"""Names a user types are looked up, never taken on trust (issue #18, items 6 and 7): ``ivr events --call``
takes the 8-character id ``ivr calls`` prints, and ``ivr closed`` a schedule the flows define."""

from __future__ import annotations

import sqlite3

from tests.conftest import Env

OPEN = "2026-12-01T10:00"


def simulated_call(env: Env) -> str:
    r = env.ivr("simulate", "main", "--at", OPEN, "-i", "hangup", "--json")
    assert r.code == 0, r.err
    return str(r.json()["call_id"])


def test_events_take_the_short_id_calls_prints(env: Env) -> None:
    call_id = simulated_call(env)
    simulated_call(env)
    listed = env.ivr("calls", "--simulated").out
    short = call_id[:8]
    assert f"  {short}  " in listed
    r = env.ivr("events", "--simulated", "--call", short, "--json")
    assert r.code == 0, r.err
    events = [line for line in r.out.splitlines() if line]
    assert events and all(f'"call_id": "{call_id}"' in line or f'"call_id":"{call_id}"' in line
                          for line in events)
    assert env.ivr("events", "--simulated", "--call", call_id).out.count("\n") == len(events)


def test_events_of_an_unknown_call_is_an_error(env: Env) -> None:
    simulated_call(env)
    r = env.ivr("events", "--simulated", "--call", "zzzzzzzz")
    assert r.code == 1 and r.out == ""
    assert "ivr events: no call 'zzzzzzzz'" in r.err


def test_events_of_an_ambiguous_prefix_lists_the_candidates(env: Env) -> None:
    first, second = simulated_call(env), simulated_call(env)
    # Two calls whose ids share a prefix: give the second the first one's first four characters.
    db = sqlite3.connect(env.state / "simulate.db")
    with db:
        db.execute("DROP TRIGGER events_append_only_update")
        twin = first[:4] + second[4:]
        db.execute("UPDATE events SET call_id=? WHERE call_id=?", (twin, second))
    db.close()
    r = env.ivr("events", "--simulated", "--call", first[:4])
    assert r.code == 1 and r.out == ""
    assert f"'{first[:4]}' names more than one call" in r.err
    assert first in r.err and twin in r.err


def test_closed_with_a_typo_says_did_you_mean_and_records_nothing(env: Env) -> None:
    r = env.ivr("closed", "ofice", "on", "--reason", "storm")
    assert r.code == 1 and "CLOSED" not in r.out
    assert "ivr closed: no schedule 'ofice'" in r.err and "(did you mean 'office'?)" in r.err
    assert "schedules: office, support" in r.err
    assert not (env.state / "ivr.db").exists()  # nothing recorded: no switch, no admin.switch event
    assert env.ivr("closed", "office", "on").code == 0
    assert env.ivr("events", "--type", "admin.switch", "--json").out.count("\n") == 1
