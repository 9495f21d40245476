"""Erasing personal data: by retention (``privacy.retention_days``) and for one caller (``ivr privacy erase``).

An erasure deletes keys (``privacy_keys.key`` set to NULL: what they sealed in the append-only events, and a
callback's sealed data for the agent, can no longer be opened) and overwrites the mutable rows that hold
personal data in clear (``calls.caller`` and ``variables``; a finished callback's number, consent and data for
the agent), in one transaction with a ``privacy.erased`` event that says what was erased without saying whose
(at most the caller's pseudonym). It names the messages the erased calls recorded (``recording_ids``: the
caller's voice, deleted from disk by whoever holds the files: the CLI, the daemon). A callback still waiting or
being dialled keeps its number (and its call's keys): it is erased once it is over and old enough. Then the WAL
is checkpointed so the old pages do not linger in ``-wal`` (``secure_delete`` zeroes freed space).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from ivr.store.eventlog import EventLog, utc_now_text
from ivr.store.privacy import normalise

TERMINAL = ("done", "expired", "cancelled")


@dataclass
class Erased:
    """What one erasure did."""

    reason: str
    keys: int = 0
    calls: int = 0
    callbacks: int = 0
    call_ids: list[str] = field(default_factory=list)
    recording_ids: list[str] = field(default_factory=list)
    """The messages the erased calls recorded (``recording.saved``): the caller's voice, to delete."""
    recordings: int = 0
    """How many of those files were deleted (set by the holder of the files, ``RecordingFiles.erase``)."""
    kept_callbacks: list[str] = field(default_factory=list)
    """Callbacks of the caller still waiting or being dialled: their number is kept until they are over."""
    checkpointed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "keys": self.keys, "calls": self.calls, "callbacks": self.callbacks,
                "recordings": self.recordings, "kept_callbacks": self.kept_callbacks, "checkpointed": self.checkpointed}


async def _ids(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[str]:
    async with db.execute(sql, args) as cur:
        return [str(r[0]) for r in await cur.fetchall()]


def _marks(n: int) -> str:
    return ",".join("?" * n)


async def _erase_calls(db: aiosqlite.Connection, call_ids: list[str], at: str, by: str, out: Erased,
                       callback_ids: list[str]) -> None:
    for i in range(0, len(call_ids), 500):
        part = call_ids[i:i + 500]
        cur = await db.execute(f"UPDATE privacy_keys SET key=NULL, erased_at=?, erased_by=? WHERE key IS NOT NULL"
                               f" AND call_id IN ({_marks(len(part))})", (at, by, *part))
        out.keys += cur.rowcount
        cur = await db.execute(f"UPDATE calls SET caller='', variables='{{}}', erased_at=? WHERE erased_at IS NULL"
                               f" AND call_id IN ({_marks(len(part))})", (at, *part))
        out.calls += cur.rowcount
        out.recording_ids += await _ids(
            db, "SELECT json_extract(data, '$.recording_id') FROM events WHERE type='recording.saved'"
            f" AND call_id IN ({_marks(len(part))})", tuple(part))
    for i in range(0, len(callback_ids), 500):
        part = callback_ids[i:i + 500]
        cur = await db.execute(
            "UPDATE callback_requests SET number='', consent_number='', consent_pressed='', consent_heard='',"
            f" agent_data='[]', erased_at=? WHERE erased_at IS NULL AND id IN ({_marks(len(part))})", (at, *part))
        out.callbacks += cur.rowcount
        await db.execute(  # a dial string or channel name may carry the number
            f"UPDATE callback_attempts SET channel='', detail='' WHERE request_id IN ({_marks(len(part))})", part)
    out.call_ids = call_ids


async def erase_expired(events: EventLog, days: float, now: datetime) -> Erased:
    """Retention: personal data of calls that started more than ``days`` ago, and of callbacks over since then.
    Nothing is written when there was nothing to erase."""
    cutoff = utc_now_text(now - timedelta(days=days))
    at = utc_now_text(now)
    out = Erased("retention")

    async def op(db: aiosqlite.Connection) -> None:
        # A callback still waiting (or finished within the period) keeps its call's number and keys.
        active = set(await _ids(db, "SELECT call_id FROM callback_requests WHERE call_id IS NOT NULL AND"
                                    f" (state NOT IN ({_marks(len(TERMINAL))}) OR updated_at>=?)", (*TERMINAL, cutoff)))
        calls = await _ids(db, "SELECT call_id FROM calls WHERE erased_at IS NULL AND started_at<?"
                               " AND ended_at IS NOT NULL", (cutoff,))
        keyed = await _ids(db, "SELECT DISTINCT call_id FROM privacy_keys WHERE key IS NOT NULL AND created_at<?",
                           (cutoff,))
        ids = sorted((set(calls) | set(keyed)) - active)
        callbacks = await _ids(db, "SELECT id FROM callback_requests WHERE erased_at IS NULL AND"
                                   f" state IN ({_marks(len(TERMINAL))}) AND updated_at<?", (*TERMINAL, cutoff))
        await _erase_calls(db, ids, at, "retention", out, callbacks)
        if out.keys or out.calls or out.callbacks:
            await EventLog.insert(db, events._row("privacy.erased", None, {
                "reason": "retention", "before": cutoff, "keys": out.keys, "calls": out.calls,
                "callbacks": out.callbacks}))

    await events.transaction(op)
    if events.sealer is not None:
        events.sealer.forget(out.call_ids)
    if out.keys or out.calls or out.callbacks:
        out.checkpointed = await checkpoint(events)
    return out


async def erase_caller(events: EventLog, number: str, region: str, now: datetime) -> Erased:
    """A data-subject request: every call from ``number`` (however it was written: read as E.164 in
    ``region``), every call whose callback went to it, and its finished callbacks. Callbacks still waiting
    must be cancelled first (``ivr privacy erase`` does); one being dialled is kept and reported."""
    e164 = normalise(number, region)
    ref = events.sealer.caller_ref(number) if events.sealer is not None else None
    at = utc_now_text(now)
    out = Erased("request")

    async def op(db: aiosqlite.Connection) -> None:
        ids: set[str] = set()
        async with db.execute("SELECT call_id, caller FROM calls WHERE erased_at IS NULL AND caller<>''") as cur:
            ids |= {str(r[0]) for r in await cur.fetchall() if normalise(str(r[1]), region) == e164}
        if ref is not None:
            ids |= set(await _ids(db, "SELECT DISTINCT call_id FROM privacy_keys WHERE caller_ref=?", (ref,)))
        async with db.execute("SELECT id, call_id, number, consent_number, state FROM callback_requests"
                              " WHERE erased_at IS NULL") as cur:
            rows = await cur.fetchall()
        mine = [r for r in rows if e164 in (normalise(str(r[2]), region), normalise(str(r[3]), region))
                or (r[1] is not None and str(r[1]) in ids)]
        over = [str(r[0]) for r in mine if r[4] in TERMINAL]
        out.kept_callbacks = [str(r[0]) for r in mine if r[4] not in TERMINAL]
        kept_calls = {str(r[1]) for r in mine if r[4] not in TERMINAL and r[1] is not None}
        ids |= {str(r[1]) for r in mine if r[1] is not None}
        await _erase_calls(db, sorted(ids - kept_calls), at, "request", out, over)
        await EventLog.insert(db, events._row("privacy.erased", None, {
            "reason": "request", "caller_ref": ref, "keys": out.keys, "calls": out.calls, "callbacks": out.callbacks,
            "kept_callbacks": out.kept_callbacks}))

    await events.transaction(op)
    if events.sealer is not None:
        events.sealer.forget(out.call_ids)
    out.checkpointed = await checkpoint(events)
    return out


async def checkpoint(events: EventLog) -> bool:
    """Copy the WAL into the file and truncate it, so overwritten pages are gone from ``-wal`` too; False when a
    reader kept it from finishing (the next checkpoint will)."""
    path = await _path(events)
    if path is None:
        return False

    def run() -> bool:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return not busy
        finally:
            db.close()

    return await asyncio.to_thread(run)


async def _path(events: EventLog) -> Path | None:
    async with events.db.execute("PRAGMA database_list") as cur:
        for row in await cur.fetchall():
            if row[1] == "main" and row[2]:
                return Path(row[2])
    return None
