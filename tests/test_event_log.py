"""The event log: a simulated call's events in order with UUIDv7 ids and gap-free sequence numbers;
append-only; a call cut off by a crash is closed as interrupted at the next start."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from ivr.store.eventlog import EventLog, read_events
from tests.conftest import Env


def test_simulated_call_events_in_order(env: Env) -> None:
    r = env.ivr("simulate", "main", "--at", "2026-12-01T10:00", "-i", "2", "--json")
    call_id = r.json()["call_id"]
    events = asyncio.run(read_events(env.state / "simulate.db", call_id))
    types = [e.type for e in events]
    assert types[0] == "call.started" and types[-1] == "call.ended"
    assert types[1:6] == ["node.entered", "branch.taken", "node.entered", "prompt.played", "node.entered"]
    assert "input.dtmf" in types and "menu.choice" in types and "transfer" in types
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing else ran: gap-free
    ids = [uuid.UUID(e.id) for e in events]
    assert all(i.version == 7 for i in ids) and len(set(ids)) == len(ids)
    assert sorted(ids, key=lambda i: i.bytes) == ids  # UUIDv7 order agrees with seq
    assert all(e.site == "test-site" and e.call_id == call_id for e in events)
    assert all(e.wall_time.endswith("Z") for e in events)
    monos = [e.mono_ns for e in events]
    assert monos == sorted(monos) and len({e.boot_id for e in events}) == 1
    dtmf = next(e for e in events if e.type == "input.dtmf")
    assert dtmf.data == {"digit": "2", "source": "simulator"}
    assert events[-1].data["outcome"] == "queued"


def test_events_are_append_only(env: Env) -> None:
    env.ivr("simulate", "survey", "-i", "hangup")
    db = sqlite3.connect(env.state / "simulate.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE events SET type='x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM events")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_concurrent_appends_all_committed_in_sequence(tmp_path) -> None:
    async def go() -> list[int]:
        log = await EventLog.open(tmp_path / "x.db", "s")
        seqs = await asyncio.gather(*(log.append("test.event", f"c{i % 7}", n=i) for i in range(500)))
        await log.close()
        return list(seqs)

    seqs = asyncio.run(go())
    assert sorted(seqs) == list(range(min(seqs), min(seqs) + 500))
    events = asyncio.run(read_events(tmp_path / "x.db"))
    assert sum(1 for e in events if e.type == "test.event") == 500


def test_crash_mid_call_is_reconciled(env: Env) -> None:
    # A simulated call waiting for the caller is killed with SIGKILL: its record must survive the crash.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ivr.cli", "--config", str(env.config), "simulate", "main", "--at",
         "2026-12-01T10:00", "--interactive"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        while "[main_menu] menu" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen += line
        assert "[main_menu] menu" in seen, seen
        # Another process opening the log meanwhile (an admin's `ivr simulate`) leaves the live call open.
        assert env.ivr("simulate", "survey", "-i", "hangup").code == 0
        assert [c["outcome"] for c in env.calls(simulated=True) if c["flow"] == "main"] == [None]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    main_calls = [c for c in env.calls(simulated=True) if c["flow"] == "main"]
    assert main_calls[-1]["outcome"] is None  # the summary row was committed when the call started
    # The next start of anything that opens the log closes it as interrupted, with the path it had.
    r = env.ivr("simulate", "survey", "-i", "hangup")
    assert r.code == 0
    interrupted = [c for c in env.calls(simulated=True) if c["outcome"] == "interrupted"]
    assert len(interrupted) == 1
    assert interrupted[0]["path"] == ["greet", "say_morning", "check_hours", "main_menu"]


def test_processes_opening_a_new_log_at_once_all_start(tmp_path) -> None:
    """The daemon starting while `ivr calls` (or anything) opens a brand-new log: each waits for the other's
    migration instead of failing on 'table events already exists' (seen in CI)."""
    code = ("import asyncio, sys\n"
            "from ivr.store.eventlog import EventLog\n"
            "async def go():\n"
            "    log = await EventLog.open(__import__('pathlib').Path(sys.argv[1]), 's')\n"
            "    await log.append('test.opened', None)\n"
            "    await log.close()\n"
            "asyncio.run(go())\n")
    for round_ in range(3):
        db = tmp_path / f"new{round_}.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, "\n".join(e for e in errors if e)
        events = asyncio.run(read_events(db))
        assert sum(1 for e in events if e.type == "test.opened") == 6
