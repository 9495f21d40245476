"""The outbox to the central collector, in the event log's own SQLite file (migration 0005, docs/central.md).

The log is the outbox: ``seq`` is its order and one row, ``sync_cursor.acked_seq``, its progress. An event is
unsent while its seq is above the cursor and it is not in ``sync_quarantine``. Nothing is copied, so an event
cannot be committed and miss the outbox, and a crash between writing and sending loses nothing.

Reads go through a read-only connection of the relay's own: it sees committed rows only. (The writer's
connection would also show a group commit still in progress, whose seqs a rollback could hand to other
events: a batch read there could carry events that never existed.) Every write (the cursor, a quarantine, a
``sync.gap`` event, the last attempt's outcome) is a transaction of the event log's single writer, so nothing
races its group commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from ivr.store.eventlog import Event, EventLog, utc_now_text

_COLUMNS = "seq, id, site, boot_id, wall_time, mono_ns, call_id, type, data"


def _event(r: Sequence[Any]) -> Event:
    return Event(seq=r[0], id=r[1], site=r[2], boot_id=r[3], wall_time=r[4], mono_ns=r[5], call_id=r[6],
                 type=r[7], data=json.loads(r[8]))


@dataclass(frozen=True)
class Position:
    """Where the outbox stands: the cursor, the log's last seq and the quarantined seqs above the cursor."""

    acked_seq: int
    head_seq: int
    quarantined_after: int

    @property
    def backlog(self) -> int:
        """Unsent events (seq is gap-free in commit order: docs/event-log.md)."""
        return max(0, self.head_seq - self.acked_seq - self.quarantined_after)


@dataclass(frozen=True)
class Young:
    """What "younger than outbox.max_age" means for an event. Within this boot by ``mono_ns``, which never
    steps: an appliance without a real-time clock writes its first events with a wrong wall time (1970, until
    NTP answers), and those must not look a lifetime old. Events of earlier boots have only their wall time."""

    boot_id: str
    mono_floor_ns: int
    wall_cutoff: str

    @classmethod
    def at(cls, *, now: datetime, mono_ns: int, boot_id: str, max_age: float) -> Young:
        return cls(boot_id, mono_ns - int(max_age * 1e9), utc_now_text(now - timedelta(seconds=max_age)))


class Outbox:
    def __init__(self, events: EventLog, reader: aiosqlite.Connection) -> None:
        self.events = events
        self._db = reader

    @classmethod
    async def open(cls, events: EventLog, path: Path) -> Outbox:
        """``events`` must already be open on ``path`` (it migrated the file; its WAL keeps ``-shm`` there)."""
        reader = await aiosqlite.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        await reader.execute("PRAGMA busy_timeout=10000")
        return cls(events, reader)

    async def close(self) -> None:
        await self._db.close()

    # -- reading (committed rows only) --
    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, args) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def position(self) -> Position:
        acked = int(await self._one("SELECT acked_seq FROM sync_cursor WHERE id=1") or 0)
        head = int(await self._one("SELECT max(seq) FROM events") or 0)
        quarantined = int(await self._one("SELECT count(*) FROM sync_quarantine WHERE seq>?", (acked,)) or 0)
        return Position(acked, head, quarantined)

    async def unsent(self, after: int, limit: int) -> list[Event]:
        """The next ``limit`` events after seq ``after`` that are not quarantined, in seq order."""
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE seq>? AND seq NOT IN"
            " (SELECT seq FROM sync_quarantine WHERE seq>?) ORDER BY seq LIMIT ?", (after, after, limit)) as cur:
            return [_event(r) for r in await cur.fetchall()]

    async def first_young(self, after: int, young: Young) -> int | None:
        """The first seq after ``after`` young enough to keep (scans only the too-old prefix, which is then
        skipped: normally the first row answers)."""
        seq = await self._one(
            "SELECT seq FROM events WHERE seq>? AND ((boot_id=? AND mono_ns>=?) OR (boot_id<>? AND wall_time>=?))"
            " ORDER BY seq LIMIT 1", (after, young.boot_id, young.mono_floor_ns, young.boot_id, young.wall_cutoff))
        return None if seq is None else int(seq)

    async def oldest_unsent(self, after: int) -> tuple[int, str] | None:
        """(seq, wall_time) of the oldest unsent event."""
        async with self._db.execute(
            "SELECT seq, wall_time FROM events WHERE seq>? AND seq NOT IN"
            " (SELECT seq FROM sync_quarantine WHERE seq>?) ORDER BY seq LIMIT 1", (after, after)) as cur:
            row = await cur.fetchone()
        return (int(row[0]), str(row[1])) if row else None

    async def last_success(self) -> str | None:
        value = await self._one("SELECT last_success_at FROM sync_state WHERE id=1")
        return None if value is None else str(value)

    # -- writing (the event log's single writer) --
    async def acknowledge(self, seq: int, *, central: str, now: datetime) -> None:
        """The center committed everything up to ``seq``: the cursor moves (never back: a trigger refuses)."""
        at = utc_now_text(now)

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute("UPDATE sync_cursor SET acked_seq=max(acked_seq, ?), updated_at=? WHERE id=1",
                             (seq, at))
            await db.execute("UPDATE sync_state SET central=?, last_attempt_at=?, last_success_at=?, failures=0"
                             " WHERE id=1", (central, at, at))

        await self.events.transaction(op)

    async def quarantine(self, rows: Sequence[tuple[int, str, str]], *, batch_key: str, status: int, central: str,
                         now: datetime) -> None:
        """Keep ``rows`` (seq, event id, the center's reason) out of every later batch."""
        at = utc_now_text(now)
        n = len(rows)
        summary = (f"the center refused {n} event{'s' if n != 1 else ''} as invalid ({status}): {rows[0][2]}"
                   if rows else "")

        async def op(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "INSERT OR IGNORE INTO sync_quarantine (seq, event_id, batch_key, http_status, error, quarantined_at)"
                " VALUES (?,?,?,?,?,?)", [(seq, eid, batch_key, status, error, at) for seq, eid, error in rows])
            await db.execute("UPDATE sync_state SET central=?, last_attempt_at=?, last_error_at=?, last_error=?"
                             " WHERE id=1", (central, at, at, summary))

        await self.events.transaction(op)

    async def skip(self, first: int, last: int, reason: str, *, now: datetime) -> tuple[int, dict[str, Any], int]:
        """Move the cursor past ``first``..``last`` and append ``sync.gap`` in the same transaction, so the
        skip is itself delivered and never silent. Returns the gap event's seq and data, and how many events
        this skip left behind (``count`` less what folded gaps had already counted).

        Earlier ``sync.gap`` events inside the range (a long outage: the first gap's record waited too, and is
        skipped now) are folded in: this gap then starts where the earliest began and counts their events,
        so the center still learns of every event it will never get."""

        async def op(db: aiosqlite.Connection) -> tuple[int, dict[str, Any], int]:
            async with db.execute("SELECT count(*) FROM events WHERE seq BETWEEN ? AND ?", (first, last)) as cur:
                row = await cur.fetchone()
            count = new = int(row[0]) if row else 0
            start = first
            async with db.execute("SELECT data FROM events WHERE type='sync.gap' AND seq BETWEEN ? AND ?",
                                  (first, last)) as cur:
                for (text,) in await cur.fetchall():
                    folded = json.loads(text)
                    start = min(start, int(folded["from_seq"]))
                    count += int(folded["count"])
            data = {"from_seq": start, "to_seq": last, "count": count, "reason": reason}
            await db.execute("UPDATE sync_cursor SET acked_seq=max(acked_seq, ?), updated_at=? WHERE id=1",
                             (last, utc_now_text(now)))
            seq = await EventLog.insert(db, self.events._row("sync.gap", None, {  # same package: the row format
                "from_seq": start, "to_seq": last, "count": count, "reason": reason}))
            return seq, data, new

        result: tuple[int, dict[str, Any], int] = await self.events.transaction(op)
        return result

    async def record_failure(self, error: str, *, central: str, now: datetime) -> None:
        at = utc_now_text(now)

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute("UPDATE sync_state SET central=?, last_attempt_at=?, last_error_at=?, last_error=?,"
                             " failures=failures+1 WHERE id=1", (central, at, at, error))

        await self.events.transaction(op)


# -- ``ivr sync status``: any process, read only --

def read_status(path: Path, *, now: datetime, limit: int = 1000) -> dict[str, Any]:
    """The outbox as ``ivr sync status`` shows it. A log not yet migrated to 0005 (no process opened it since
    the upgrade) has sent nothing: cursor 0. ``limit`` bounds the quarantine and gap lists."""
    out: dict[str, Any] = {"acked_seq": 0, "head_seq": 0, "backlog": 0, "oldest_unsent": None, "lag_seconds": None,
                           "last_attempt_at": None, "last_success_at": None, "last_error_at": None,
                           "last_error": None, "failures": 0, "quarantined": 0, "quarantine": [], "gaps": [],
                           "skipped": 0}
    if not path.exists():
        return out
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        out["head_seq"] = int(db.execute("SELECT max(seq) FROM events").fetchone()[0] or 0)
        try:
            acked = int(db.execute("SELECT acked_seq FROM sync_cursor WHERE id=1").fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet: nothing was ever sent
            out["backlog"] = out["head_seq"]
            return out
        out["acked_seq"] = acked
        state = db.execute("SELECT last_attempt_at, last_success_at, last_error_at, last_error, failures"
                           " FROM sync_state WHERE id=1").fetchone()
        for key, value in zip(("last_attempt_at", "last_success_at", "last_error_at", "last_error", "failures"),
                              state, strict=True):
            out[key] = value
        quarantined_after = int(db.execute("SELECT count(*) FROM sync_quarantine WHERE seq>?",
                                           (acked,)).fetchone()[0])
        out["backlog"] = Position(acked, out["head_seq"], quarantined_after).backlog
        oldest = db.execute("SELECT seq, wall_time FROM events WHERE seq>? AND seq NOT IN"
                            " (SELECT seq FROM sync_quarantine WHERE seq>?) ORDER BY seq LIMIT 1",
                            (acked, acked)).fetchone()
        if oldest:
            out["oldest_unsent"] = {"seq": oldest[0], "wall_time": oldest[1]}
            out["lag_seconds"] = round(max(0.0, (now - datetime.fromisoformat(
                str(oldest[1]).replace("Z", "+00:00"))).total_seconds()), 3)
        out["quarantined"] = int(db.execute("SELECT count(*) FROM sync_quarantine").fetchone()[0])
        out["quarantine"] = [
            {"seq": r[0], "type": r[1], "event_id": r[2], "http_status": r[3], "error": r[4], "quarantined_at": r[5]}
            for r in db.execute("SELECT q.seq, e.type, q.event_id, q.http_status, q.error, q.quarantined_at"
                                " FROM sync_quarantine q JOIN events e ON e.seq = q.seq ORDER BY q.seq LIMIT ?",
                                (limit,))]
        gaps = [{"seq": r[0], "wall_time": r[1], **json.loads(r[2])}
                for r in db.execute("SELECT seq, wall_time, data FROM events WHERE type='sync.gap' ORDER BY seq")]
        outermost: list[dict[str, Any]] = []  # a later gap that folded an earlier one counts its events
        for g in gaps:
            outermost = [f for f in outermost if not g["from_seq"] <= f["seq"] <= g["to_seq"]] + [g]
        out["skipped"] = sum(int(g["count"]) for g in outermost)
        out["gaps"] = gaps[-limit:]
    finally:
        db.close()
    return out
