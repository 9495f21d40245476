"""The append-only event log on SQLite (aiosqlite): every call and admin action, in one order of truth.

One writer connection with group commit: writes from many calls queue up in one FIFO and are committed
together in one transaction (WAL, synchronous=FULL). Two ways in:

- ``append`` (and the call, callback and switch writes) returns only after its commit: what a caller is
  promised — a callback confirmed, consent, a survey answer, a hand-over to an agent — is on disk before the
  caller hears what follows (``PROMISES`` lists them; docs/event-log.md).
- ``post`` queues a navigation fact (a node entered, a key pressed, a prompt played) and returns at once, so
  the next prompt never waits for the disk. It is committed by the same writer in the same order; a crash
  can lose only navigation posted within the last ``unsaved_seconds`` (a post waits for the disk when the
  oldest unsaved one is older than that), and never one posted before a promise that was acknowledged.

Ordering: ``seq`` (per-site, gap-free in commit order) is the order of truth; ``id`` is a UUIDv7 for global
uniqueness; ``wall_time`` and ``mono_ns``+``boot_id`` say when.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import uuid6

from ivr.metrics.buckets import COMMIT_BOUNDS, Buckets
from ivr.store.privacy import ERASED, KeyRing, Sealer, unseal_data

log = logging.getLogger("ivr.store")

Op = Callable[[aiosqlite.Connection], Awaitable[Any]]

PROMISES = ("callback.", "transfer", "survey.answer", "queue.arrival", "call.resolved")
"""Event types (or prefixes of them) a call records durably before it goes on: what the caller is told next
depends on them (a callback filed, consent, a chosen slot, a survey answer, a hand-over, the caller's place
in line) or a KPI is counted from them. Every other call event is navigation, posted without waiting."""

UNSAVED_SECONDS = 1.0
"""Default of ``calls.navigation_unsaved_seconds``: the age the oldest uncommitted navigation fact may reach
before posts wait for the disk; what a crash can lose at most."""


def is_promise(type: str) -> bool:
    return type.startswith(PROMISES)


def read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: one id per process still separates monotonic clocks
        return f"proc-{uuid.uuid4()}"


BOOT_ID = read_boot_id()


def utc_now_text(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc_text(text: str) -> datetime:
    """A time stored by ``utc_now_text`` (its trailing Z) back as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def migrations() -> list[tuple[int, str]]:
    files = resources.files("ivr.store").joinpath("migrations")
    out = []
    for f in files.iterdir():
        if f.name.endswith(".sql"):
            out.append((int(f.name.split("_", 1)[0]), f.read_text(encoding="utf-8")))
    return sorted(out)


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    site: str
    boot_id: str
    wall_time: str
    mono_ns: int
    call_id: str | None
    type: str
    data: dict[str, Any]

    def to_json(self) -> str:
        """One NDJSON line (no newline): ``ivr events --json`` and the central collector's wire both use it."""
        return json.dumps(self.__dict__, separators=(",", ":"))


async def connect(path: Path) -> aiosqlite.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("PRAGMA busy_timeout=10000")
    await db.execute("PRAGMA foreign_keys=ON")
    await db.execute("PRAGMA secure_delete=ON")  # erased personal data is zeroed in the file, not just unlinked
    return db


async def migrate(db: aiosqlite.Connection) -> int:
    """Apply migrations newer than PRAGMA user_version, each in its own transaction.

    The version is read again inside each migration's write transaction: two processes opening a new log at
    once (the daemon starting while ``ivr calls`` or a test opens it) would otherwise both see version 0
    and the second would fail on ``table events already exists``."""
    current = await _user_version(db)
    for version, sql in migrations():
        if version <= current:
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            current = await _user_version(db)
            if version <= current:  # another process applied it while we waited for the write lock
                await db.execute("COMMIT")
                continue
            for statement in _statements(sql):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version={version}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        log.info("database migrated to version %d", version)
        current = version
    return current


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about triggers' BEGIN/END)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        if line.strip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


class OwnerLock:
    """This process's claim on the calls it runs: an flock held on ``<db>.owners/<owner>.lock`` for the
    process's life. The kernel drops it when the process dies (crash, SIGKILL, power cut), so another
    process can tell a live call from one a crash left open without trusting pids or clocks."""

    def __init__(self, db_path: Path) -> None:
        self.dir = db_path.with_name(db_path.name + ".owners")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._fd: int | None = os.open(self.dir / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def alive(self, owner: str | None) -> bool:
        """Whether the process that wrote ``owner`` still runs (ours always does; unknown owners do not)."""
        if owner == self.owner:
            return True
        if not owner or "/" in owner:
            return False
        path = self.dir / f"{owner}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)  # its process is gone: tidy the file away
        return False

    def release(self) -> None:
        if self._fd is not None:
            (self.dir / f"{self.owner}.lock").unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


class EventLog:
    """The single writer of the local store."""

    def __init__(self, db: aiosqlite.Connection, site: str, owner: OwnerLock | None = None, zone: str = "",
                 sealer: Sealer | None = None) -> None:
        self.db = db
        self.sealer = sealer
        """With ``privacy:`` on: seals the personal fields of each event with its call's key (ivr/store/privacy.py)."""
        self.site = site
        self.zone = zone
        """The site's time zone (``site.timezone``), written on every call so its day is the site's day."""
        self.owner = owner
        self._queue: asyncio.Queue[tuple[Op, asyncio.Future[Any]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.commit_seconds = Buckets(COMMIT_BOUNDS)
        """Each group commit's BEGIN to COMMIT (fsync included): how long durability costs (docs/metrics.md)."""
        self.commit_listeners: list[Callable[[], None]] = []
        """Called after each commit (the relay to the center wakes on it: events go out as they are written)."""
        self.unsaved_seconds = UNSAVED_SECONDS
        self._unsaved: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self.post_waits = 0
        """Posts that had to wait for the disk (the oldest unsaved fact was older than ``unsaved_seconds``)."""

    @classmethod
    async def open(cls, path: Path, site: str, zone: str = "", sealer: Sealer | None = None) -> EventLog:
        """Open (and migrate) the log. Calls left open by a process that is gone are closed as interrupted;
        those of a live process beside us (the daemon, a simulation) are left alone. ``zone``: the site's
        time zone, recorded on each call (``zone`` of ``call.started`` and the call row)."""
        db = await connect(path)
        await migrate(db)
        self = cls(db, site, OwnerLock(path), zone, sealer)
        self._writer = asyncio.create_task(self._write_loop(), name="eventlog-writer")
        await self.reconcile_interrupted_calls()
        return self

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            await asyncio.wait({self._writer}, timeout=5)
            self._writer = None
        await self.db.close()
        if self.owner is not None:
            self.owner.release()

    async def __aenter__(self) -> EventLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing --
    async def transaction(self, op: Op) -> Any:
        """Run ``op`` inside the next group commit; returns its result once committed."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((op, fut))
        return await asyncio.shield(fut)

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 256:
                batch.append(self._queue.get_nowait())
            results: list[Any] = []
            began = time.perf_counter()
            committed = False
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                for op, _ in batch:
                    if self.sealer is not None:  # the keys an event is sealed with go in before it
                        await self.sealer.flush(self.db)
                    await self.db.execute("SAVEPOINT op")
                    try:
                        results.append(await op(self.db))
                        await self.db.execute("RELEASE op")
                    except Exception as exc:  # one bad op fails alone, not the batch
                        await self.db.execute("ROLLBACK TO op")
                        await self.db.execute("RELEASE op")
                        results.append(exc)
                    if self.sealer is not None:  # and the keys of events an op built itself (callbacks)
                        await self.sealer.flush(self.db)
                await self.db.execute("COMMIT")
                self.commit_seconds.observe(time.perf_counter() - began)
                committed = True
                if self.sealer is not None:
                    self.sealer.committed(True)
            except Exception as exc:
                log.exception("event log commit failed")
                if self.sealer is not None:
                    self.sealer.committed(False)
                try:
                    await self.db.execute("ROLLBACK")
                except Exception:
                    pass
                results = [exc] * len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    if isinstance(res, Exception):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
                self._queue.task_done()
            if committed:
                for listener in self.commit_listeners:
                    listener()

    def _row(self, type: str, call_id: str | None, data: dict[str, Any]) -> tuple[Any, ...]:
        if self.sealer is not None:
            data = self.sealer.seal_data(type, call_id, data)
        return (
            str(uuid6.uuid7()),
            self.site,
            BOOT_ID,
            utc_now_text(),
            time.monotonic_ns(),
            call_id,
            type,
            json.dumps(data, default=str, separators=(",", ":")),
        )

    @staticmethod
    async def insert(db: aiosqlite.Connection, row: tuple[Any, ...]) -> int:
        cur = await db.execute(
            "INSERT INTO events (id, site, boot_id, wall_time, mono_ns, call_id, type, data)"
            " VALUES (?,?,?,?,?,?,?,?)",
            row,
        )
        return int(cur.lastrowid or 0)

    async def append(self, type: str, call_id: str | None = None, **data: Any) -> int:
        """Append one event; returns its sequence number after it is committed."""
        row = self._row(type, call_id, data)
        return int(await self.transaction(lambda db: self.insert(db, row)))

    async def post(self, type: str, call_id: str | None = None, **data: Any) -> None:
        """Queue one navigation event behind everything queued before it and return without waiting for its
        commit — unless the oldest unsaved post is older than ``unsaved_seconds`` (a disk that stalls): then
        wait until none is, so the posts a crash can lose were all made within one such span."""
        waited = False
        while True:
            while self._unsaved and self._unsaved[0][1].done():
                self._unsaved.popleft()
            now = time.monotonic()
            if not self._unsaved or now - self._unsaved[0][0] <= self.unsaved_seconds:
                break
            waited = True
            await asyncio.wait({self._unsaved[0][1]})
        self.post_waits += waited
        row = self._row(type, call_id, data)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_report_lost_post)
        self._unsaved.append((now, fut))
        self._queue.put_nowait((lambda db: self.insert(db, row), fut))

    async def flush(self) -> None:
        """Wait until everything posted so far is committed."""
        if self._unsaved:
            await asyncio.wait({f for _, f in self._unsaved})

    # -- calls --
    async def begin_call(self, *, call_id: str, channel: str, caller: str, dialed: str, flow: str,
                         version: str) -> int:
        row = self._row("call.started", call_id, {"channel": channel, "caller": caller, "dialed": dialed,
                                                 "flow": flow, "flow_version": version, "zone": self.zone})

        async def op(db: aiosqlite.Connection) -> int:
            seq = await self.insert(db, row)
            await db.execute(
                "INSERT INTO calls (call_id, site, channel, started_at, caller, dialed, flow, flow_version,"
                " first_seq, owner, zone) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (call_id, self.site, channel, row[3], caller, dialed, flow, version, seq,
                 self.owner.owner if self.owner else None, self.zone),
            )
            return seq

        return int(await self.transaction(op))

    async def end_call(self, *, call_id: str, outcome: str, detail: str, path: list[str],
                       variables: dict[str, object], resolved: bool = False) -> int:
        row = self._row("call.ended", call_id, {"outcome": outcome, "detail": detail, "path": path,
                                                "resolved": resolved})

        async def op(db: aiosqlite.Connection) -> int:
            seq = await self.insert(db, row)
            await db.execute(
                "UPDATE calls SET ended_at=?, outcome=?, outcome_detail=?, path=?,"
                " variables=CASE WHEN erased_at IS NULL THEN ? ELSE '{}' END, last_seq=?,"  # erased while it ran
                " resolved=? WHERE call_id=?",
                (row[3], outcome, detail, json.dumps(path), json.dumps(variables, default=str), seq,
                 int(resolved), call_id),
            )
            return seq

        seq = int(await self.transaction(op))
        if self.sealer is not None:
            self.sealer.evict(call_id)
        return seq

    async def reconcile_interrupted_calls(self) -> int:
        """Calls left open by a crash or power cut get an ``interrupted`` end, so none stays "running".
        A call whose owner process still holds its lock is live (the daemon's, beside ``ivr calls``)."""
        async with self.db.execute("SELECT call_id, owner FROM calls WHERE ended_at IS NULL") as cur:
            rows = await cur.fetchall()
        owners = {owner: self.owner.alive(owner) if self.owner else False for _, owner in rows}
        open_calls = [call_id for call_id, owner in rows if not owners[owner]]
        for call_id in open_calls:
            async with self.db.execute(
                "SELECT type, data FROM events WHERE call_id=? AND type IN ('node.entered', 'call.resolved')"
                " ORDER BY seq", (call_id,)
            ) as cur:
                rows_ = await cur.fetchall()
            path = [json.loads(r[1])["node"] for r in rows_ if r[0] == "node.entered"]
            await self.end_call(call_id=call_id, outcome="interrupted", detail="appliance restarted",
                                path=path, variables={}, resolved=any(r[0] == "call.resolved" for r in rows_))
        if open_calls:
            log.warning("marked %d calls interrupted by a restart", len(open_calls))
        return len(open_calls)

    # -- switches --
    async def set_switch(self, schedule: str, closed: bool, reason: str) -> None:
        row = self._row("admin.switch", None, {"schedule": schedule, "closed": closed, "reason": reason})

        async def op(db: aiosqlite.Connection) -> None:
            await self.insert(db, row)
            await db.execute(
                "INSERT INTO switches (schedule, closed, reason, changed_at) VALUES (?,?,?,?)"
                " ON CONFLICT(schedule) DO UPDATE SET closed=excluded.closed, reason=excluded.reason,"
                " changed_at=excluded.changed_at",
                (schedule, int(closed), reason, row[3]),
            )

        await self.transaction(op)

    async def emergency_closed(self, schedule: str) -> bool:
        async with self.db.execute("SELECT closed FROM switches WHERE schedule=?", (schedule,)) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])


class CallRecorder:
    """The engine's Recorder for one call, writing to the event log."""

    def __init__(self, log_: EventLog, call_id: str) -> None:
        self.log = log_
        self.call_id = call_id

    async def begin(self, call: Any, flow: Any, version: str) -> None:
        await self.log.begin_call(call_id=self.call_id, channel=call.channel, caller=call.caller,
                                  dialed=call.dialed, flow=flow.name, version=version)

    async def event(self, type: str, **data: Any) -> None:
        """A promise is committed before this returns; navigation is posted (ivr/store/eventlog.py says why)."""
        if is_promise(type) or self.log.unsaved_seconds <= 0:
            await self.log.append(type, self.call_id, **data)
        else:
            await self.log.post(type, self.call_id, **data)

    async def end(self, outcome: Any, path: list[str], variables: dict[str, object]) -> None:
        await self.log.end_call(call_id=self.call_id, outcome=outcome.kind, detail=outcome.detail, path=path,
                                variables=variables, resolved=bool(getattr(outcome, "resolved", False)))


def _report_lost_post(fut: asyncio.Future[Any]) -> None:
    """Nobody awaits a post: its failure (the one op rolled back, or the whole commit) is logged here."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.warning("a navigation event was not written: %s", exc)


# -- reading (any process, its own connection) --

class LogSwitches:
    """The emergency switches as another process's log holds them, read-only: ``ivr simulate`` records in its
    own log but must still see ``ivr closed office on`` (written to the site's log)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def emergency_closed(self, schedule: str) -> bool:
        if not self.path.exists():
            return False
        async with aiosqlite.connect(self.path) as db:
            try:
                async with db.execute("SELECT closed FROM switches WHERE schedule=?", (schedule,)) as cur:
                    row = await cur.fetchone()
            except sqlite3.OperationalError:  # a log not migrated yet has no switches
                return False
        return bool(row and row[0])


async def read_calls(path: Path, last: int) -> list[dict[str, Any]]:
    async with aiosqlite.connect(path) as db:
        db.row_factory = aiosqlite.Row
        async with db.execute(
            "SELECT * FROM calls ORDER BY first_seq DESC LIMIT ?", (last,)
        ) as cur:
            rows = [dict(r) for r in await cur.fetchall()]
    for r in rows:
        r["path"] = json.loads(r["path"])
        r["variables"] = json.loads(r["variables"])
        if r.get("caller") == "" and r.get("erased_at"):
            r["caller"] = ERASED
    return list(reversed(rows))


async def read_events(path: Path, call_id: str | None = None) -> list[Event]:
    async with aiosqlite.connect(path) as db:
        sql = "SELECT seq, id, site, boot_id, wall_time, mono_ns, call_id, type, data FROM events"
        args: tuple[Any, ...] = ()
        if call_id is not None:
            sql += " WHERE call_id=?"
            args = (call_id,)
        async with db.execute(sql + " ORDER BY seq", args) as cur:
            rows = await cur.fetchall()
    keys_db = sqlite3.connect(path)
    try:
        keys = KeyRing(keys_db)
        return [Event(seq=r[0], id=r[1], site=r[2], boot_id=r[3], wall_time=r[4], mono_ns=r[5], call_id=r[6],
                      type=r[7], data=unseal_data(json.loads(r[8]), keys)) for r in rows]
    finally:
        keys_db.close()


def iter_events(path: Path, *, call_id: str | None = None, after_seq: int = 0,
                types: Sequence[str] = (), opened: bool = True) -> Iterator[Event]:
    """Events in ``seq`` order, one at a time off the cursor (memory stays flat however long the log): those
    after ``after_seq`` (a consumer's last seen: the order of truth), of one call, of the given types.
    ``opened``: sealed personal fields opened with the box's keys (``(erased)`` once a key is gone); False:
    as stored, and as the relay sends them."""
    sql = "SELECT seq, id, site, boot_id, wall_time, mono_ns, call_id, type, data FROM events WHERE seq>?"
    args: list[Any] = [after_seq]
    if call_id is not None:
        sql += " AND call_id=?"
        args.append(call_id)
    if types:
        sql += f" AND type IN ({','.join('?' * len(types))})"
        args.extend(types)
    db = sqlite3.connect(path)
    keys: KeyRing | None = None
    try:
        db.execute("PRAGMA busy_timeout=10000")
        keys = KeyRing(sqlite3.connect(path)) if opened else None
        for r in db.execute(sql + " ORDER BY seq", args):
            data = json.loads(r[8])
            yield Event(seq=r[0], id=r[1], site=r[2], boot_id=r[3], wall_time=r[4], mono_ns=r[5], call_id=r[6],
                        type=r[7], data=unseal_data(data, keys) if keys is not None else data)
    finally:
        db.close()
        if keys is not None:
            keys.db.close()
