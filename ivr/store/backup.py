"""``ivr backup`` and ``ivr restore``: the box's state (event log, callback queue, outbox) to a file and back.

Why SQLite's online backup API and not a file copy: the daemon writes the log in WAL mode all day; a copy of
``ivr.db`` taken under load can miss the WAL's committed pages or tear a page. ``Connection.backup`` with
all pages in one step reads everything inside one read transaction: a consistent snapshot of the last commit,
while the daemon keeps writing (WAL readers do not block the writer). The copy is checked
(``PRAGMA quick_check``), fsynced and only then renamed into place, so a power cut leaves either the old
backup or the new one, never half of one.

A restore refuses to run beside a live daemon (its control socket answers), refuses a file that is not a
healthy event log of this site (``--force`` for another site's), and never deletes what it replaces: the
current database is moved aside as ``ivr.db.replaced-<UTC time>``. On the next start the daemon does what it
does after any crash: calls left open are marked interrupted, callback attempts in flight are reconciled
with the PBX before anything is dialled, and the relay resends the outbox from the backup's cursor (the center
stores each event once, so what it already had is acknowledged as a duplicate).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BACKUP_PREFIX = "ivr-"
BACKUP_SUFFIX = ".db"


class BackupError(Exception):
    """Why a backup or restore did not happen: one line for the admin."""


@dataclass(frozen=True)
class StateSummary:
    """What a state file holds, as an admin checks a backup: enough to see the callbacks are all there."""

    site: str | None
    events: int
    last_seq: int
    last_event_at: str | None
    pending_callbacks: int
    unsent_events: int
    schema_version: int

    def lines(self) -> list[str]:
        return [f"site {self.site or '?'}, schema {self.schema_version}",
                f"{self.events} events, last seq {self.last_seq} at {self.last_event_at or '-'}",
                f"{self.pending_callbacks} callbacks waiting or in progress",
                f"{self.unsent_events} events not yet delivered to the center"]


def summarize(path: Path) -> StateSummary:
    """Read-only look at a state file (a live database or a backup). BackupError when it is not one."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: cannot open: {exc}") from None
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "events" not in tables:
            raise BackupError(f"{path}: not an edge-ivr event log (no events table)")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        count, last = db.execute("SELECT count(*), coalesce(max(seq), 0) FROM events").fetchone()
        row = db.execute("SELECT site, wall_time FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        pending = 0
        if "callback_requests" in tables:
            pending = db.execute("SELECT count(*) FROM callback_requests"
                                 " WHERE state NOT IN ('done', 'expired', 'cancelled')").fetchone()[0]
        acked = 0
        if "sync_cursor" in tables:
            acked = (db.execute("SELECT acked_seq FROM sync_cursor WHERE id=1").fetchone() or (0,))[0]
        return StateSummary(site=row[0] if row else None, events=int(count), last_seq=int(last),
                            last_event_at=row[1] if row else None, pending_callbacks=int(pending),
                            unsent_events=max(0, int(last) - int(acked)), schema_version=version)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite database: {exc}") from None
    finally:
        db.close()


def backup_name(site: str, now: datetime) -> str:
    return f"{BACKUP_PREFIX}{site}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}{BACKUP_SUFFIX}"


def backup(db_path: Path, dest: Path) -> Path:
    """Copy the live database at ``db_path`` to the file ``dest`` (consistent, checked, durable)."""
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}: nothing to back up")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        check = _online_copy(db_path, partial)
        if check != "ok":
            raise BackupError(f"the copy of {db_path} failed its check: {check}")
        _fsync(partial)
        os.replace(partial, dest)
        _fsync(dest.parent)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot back up {db_path}: {exc}") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return dest


def prune(folder: Path, site: str, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest backups of ``site`` in ``folder`` (names sort by time)."""
    mine = sorted(folder.glob(f"{BACKUP_PREFIX}{site}-*{BACKUP_SUFFIX}"))
    gone = mine[:-keep] if keep > 0 else []
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def daemon_running(control_socket: Path) -> bool:
    """True when something answers on the daemon's control socket (a stale socket file refuses)."""
    if not control_socket.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(control_socket))
        except OSError:
            return False
    return True


def restore(source: Path, db_path: Path, *, site: str, force: bool, now: datetime) -> tuple[StateSummary, Path | None]:
    """Put the backup ``source`` in place of ``db_path``; returns what it holds and where the replaced
    database went (None when there was none). The caller has made sure no daemon is running."""
    summary = summarize(source)  # raises for a file that is not an event log
    if summary.site is not None and summary.site != site and not force:
        raise BackupError(f"{source} is site {summary.site!r}'s state, and this box is {site!r}: "
                          "restore it anyway with --force, or set site.id in the config")
    moved: Path | None = None
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    partial = db_path.with_name(db_path.name + ".restoring")
    partial.unlink(missing_ok=True)
    try:
        _online_copy(source, partial)
        _fsync(partial)
        if db_path.exists():
            moved = db_path.with_name(f"{db_path.name}.replaced-{stamp}")
            os.replace(db_path, moved)
            for side in ("-wal", "-shm"):  # the old database's WAL belongs with it, not with the restored one
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{db_path}{side}", f"{moved}{side}")
        os.replace(partial, db_path)
        _fsync(db_path.parent)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot restore {source}: {exc}") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot restore into {db_path}: {exc.strerror or exc}") from None
    return summary, moved


def _online_copy(source: Path, target: Path) -> str:
    """``source`` copied to ``target`` with SQLite's backup API, all pages in one step (one read transaction:
    one consistent moment while a writer goes on), as one self-contained file; returns its quick_check."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # no -wal beside it
        return str(dst.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        dst.close()
        src.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
