"""The relay: delivers the outbox (the event log after the cursor) to the central collector, batch by batch.

A step sends one batch under ``STATE_DIR/sync.lock``: read the cursor (committed rows), skip what the outbox
bounds say with a ``sync.gap`` event, build the batch, POST it, record what the answer means (the cursor, a
quarantine, the last error). The daemon runs ``run()``: forever, woken by each commit of the log, else every
``central.interval``, with a jittered back-off after a failure. ``ivr sync --once`` runs ``push()``: steps
until caught up or the first failure.

Why a file lock and not the daemon's control socket for ``ivr sync --once``: one code path whether or not a
daemon runs (a box whose daemon is stopped or wedged can still be emptied), and it also keeps out a second
CLI or a second daemon on the same state dir. Every step re-reads the cursor under the lock, so two processes
take turns batch by batch and neither resends what the other had acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ivr.adapters.central import CentralClient, CentralUnreachable
from ivr.config import CentralConfig
from ivr.store.eventlog import BOOT_ID, EventLog, parse_utc_text
from ivr.store.outbox import Outbox, Position, Young
from ivr.sync.wire import (
    Acked,
    Answer,
    Batch,
    Failed,
    Line,
    Rejected,
    TooLarge,
    build_batch,
    interpret,
    plan_gap,
    retry_delay,
)

log = logging.getLogger("ivr.sync")

RESULTS = ("ok", "duplicate", "rejected", "too_large", "error")
"""``ivr_sync_batches_total`` results: acknowledged (``duplicate``: every event of it was already stored, a
resend), refused as invalid, refused as too large, not delivered."""
LOCK_GRACE = 10.0
"""Seconds beyond ``central.timeout`` to wait for the lock: a step holds it for one POST and one commit."""
LOCK_TURN = 0.02
"""Pause between steps with the lock released, so a process waiting for it gets its turn."""
LINGER = 1.0
"""After a commit wakes the relay, wait this long so a call's burst of events travels as one batch: the center
sees events about a second after they happen, and a busy box posts about once a second, not once per event."""
WARN_EVERY = 300.0
"""The same delivery failure is logged once, then at most once per this many seconds (a center down for a
day must not flood the journal)."""
REJECTS_BEFORE_BACKOFF = 20
"""Batches refused in a row without one accepted before the relay backs off: a center that refuses everything
(older than this box, misconfigured) is a center problem, and must not quarantine the whole log at full speed."""

MORE = "more"
CAUGHT_UP = "caught-up"


@dataclass
class PushReport:
    """What ``push()`` did: ``ivr sync --once`` prints it."""

    batches: int = 0
    """Batches the center acknowledged."""
    events: int = 0
    """Events in them."""
    inserted: int = 0
    duplicates: int = 0
    """Events the center already had (a batch resent after a lost answer)."""
    quarantined: int = 0
    skipped: int = 0
    """Events skipped by the outbox bounds (``gaps``)."""
    gaps: list[dict[str, Any]] = field(default_factory=list)
    acked_seq: int = 0
    head_seq: int = 0
    backlog: int = 0
    caught_up: bool = False
    error: str | None = None
    retry_after: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SyncLock:
    """An flock on ``STATE_DIR/sync.lock``, polled so the event loop never blocks on it. Locks are per open
    file, so two holders in one process (a test's daemon and CLI) exclude each other too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        self._held = False

    async def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.01)
            else:
                self._held = True
                return True

    def release(self) -> None:
        if self._held:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._held = False

    def close(self) -> None:
        self.release()
        os.close(self._fd)


class Relay:
    """Delivers the site's event log to ``settings.url``. ``sleep``, ``rng`` and ``now`` are the waits, the
    jitter and the wall clock (tests pass their own to see what the relay chose, never to time it)."""

    def __init__(self, settings: CentralConfig, events: EventLog, *, db_path: Path, lock_path: Path,
                 rng: random.Random | None = None, sleep: Callable[[float], Awaitable[None]] | None = None,
                 now: Callable[[], datetime] | None = None, logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.events = events
        self.site = events.site
        self.db_path = db_path
        self.lock = SyncLock(lock_path)
        self.client = CentralClient(settings.url, settings.token, tls=settings.tls(), timeout=settings.timeout)
        self.outbox: Outbox | None = None
        self._rng = rng or random.Random()
        self._sleep = sleep or asyncio.sleep
        self._now = now or (lambda: datetime.now(UTC))
        self.log = logger or log
        self._wake = asyncio.Event()
        # batch limits: 413 lowers the cap for this relay's life; an unnamed rejection halves only the limit
        # (bisecting to the bad event), and every acknowledgement doubles it back towards the cap
        self._cap = settings.batch_max_events
        self._limit = settings.batch_max_events
        self._max_bytes = settings.batch_max_bytes
        self.failures = 0
        """Steps failed since the last acknowledgement (the back-off's attempt)."""
        self._rejects_in_row = 0
        self._warned: tuple[str, float] | None = None
        self._suppressed = 0
        # what ``ivr status`` and the metrics read
        self.position: Position | None = None
        self.batches: Counter[str] = Counter(dict.fromkeys(RESULTS, 0))
        self.events_sent = 0
        self.quarantined_total = 0
        self.skipped_total = 0
        self.last_attempt: datetime | None = None
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self.next_try: datetime | None = None
        """While backing off: when the next try is due."""

    @property
    def url(self) -> str:
        return self.settings.url

    async def start(self) -> None:
        self.outbox = await Outbox.open(self.events, self.db_path)
        last = await self.outbox.last_success()
        self.last_success = parse_utc_text(last) if last else None
        self.events.commit_listeners.append(self._wake.set)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.events.commit_listeners.remove(self._wake.set)
        await self.client.close()
        if self.outbox is not None:
            await self.outbox.close()
            self.outbox = None
        self.lock.close()

    # -- the daemon's loop --
    async def run(self) -> None:
        while True:
            self._wake.clear()  # commits from here on (ours included) mean one more look
            try:
                report = await self.push()
            except Exception as exc:  # a bug or a broken disk: said once, then the loop goes on, backing off
                self.log.exception("central: sync step failed")
                report = PushReport(error=f"{type(exc).__name__}: {exc}")
                self.failures += 1
            if report.error is None:
                await self._idle()
                continue
            delay = retry_delay(self.failures, report.retry_after, self._rng)
            self.next_try = datetime.fromtimestamp(self._now().timestamp() + delay, UTC)
            await self._sleep(delay)
            self.next_try = None

    async def _idle(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self.settings.interval)
        except TimeoutError:
            return
        await asyncio.sleep(min(LINGER, self.settings.interval))

    # -- pushing --
    async def push(self) -> PushReport:
        """Steps until caught up or the first failure (each step makes progress: an acknowledgement, a
        quarantine, a gap, or a smaller batch, so this ends)."""
        report = PushReport()
        while True:
            outcome = await self._step(report)
            if outcome == CAUGHT_UP:
                report.caught_up = True
                break
            if isinstance(outcome, Failed):
                report.error, report.retry_after = outcome.error, outcome.retry_after
                break
            await asyncio.sleep(LOCK_TURN)
        if self.position is not None:
            report.acked_seq, report.head_seq = self.position.acked_seq, self.position.head_seq
            report.backlog = self.position.backlog
        return report

    async def _step(self, report: PushReport) -> str | Failed:
        assert self.outbox is not None, "start() first"
        if not await self.lock.acquire(self.settings.timeout + LOCK_GRACE):
            return Failed(f"another process held {self.lock.path} for over "
                          f"{self.settings.timeout + LOCK_GRACE:g} s (sending to the center)")
        try:
            pos = self.position = await self.outbox.position()
            if await self._skip_if_over_bounds(pos, report):
                return MORE
            rows = await self.outbox.unsent(pos.acked_seq, self._limit)
            batch = build_batch(self.site, (Line(e.seq, e.id, e.to_json().encode()) for e in rows),
                                max_events=self._limit, max_bytes=self._max_bytes)
            if batch is None:
                return CAUGHT_UP
            self.last_attempt = self._now()
            try:
                reply = await self.client.post(batch, pos.head_seq)
            except CentralUnreachable as exc:
                answer: Answer = Failed(exc.reason)
            else:
                answer = interpret(batch, reply.status, reply.body, reply.retry_after, self._now())
            return await self._record(batch, answer, report)
        finally:
            self.lock.release()

    async def _skip_if_over_bounds(self, pos: Position, report: PushReport) -> bool:
        """The outbox bounds: skip the oldest unsent events with a ``sync.gap`` event when there are more than
        ``outbox.max_events`` after the cursor or the oldest waited longer than ``outbox.max_age``."""
        assert self.outbox is not None
        if pos.head_seq <= pos.acked_seq:
            return False
        now = self._now()
        young = Young.at(now=now, mono_ns=time.monotonic_ns(), boot_id=BOOT_ID, max_age=self.settings.outbox_max_age)
        gap = plan_gap(acked=pos.acked_seq, head=pos.head_seq, max_events=self.settings.outbox_max_events,
                       first_young=await self.outbox.first_young(pos.acked_seq, young))
        if gap is None:
            return False
        seq, data, new = await self.outbox.skip(gap.from_seq, gap.to_seq, gap.reason, now=now)
        self.skipped_total += new
        report.skipped += new
        report.gaps.append({"seq": seq, **data})
        self.log.warning("outbox over central.outbox.%s: %d unsent events (seq %d-%d) skipped, never to reach the "
                         "center; sync.gap seq %d tells it", gap.reason, new, gap.from_seq, gap.to_seq, seq)
        return True

    async def _record(self, batch: Batch, answer: Answer, report: PushReport) -> str | Failed:
        """What the answer means, written down (the cursor only on ``Acked``)."""
        assert self.outbox is not None
        now = self._now()
        if isinstance(answer, Acked):
            await self.outbox.acknowledge(answer.seq, central=self.url, now=now)
            sent = sum(1 for s in batch.seqs if s <= answer.seq)
            self.batches["duplicate" if answer.inserted == 0 and answer.duplicates > 0 else "ok"] += 1
            self.events_sent += sent
            report.batches += 1
            report.events += sent
            report.inserted += answer.inserted
            report.duplicates += answer.duplicates
            self.last_success = now
            if self.failures:
                self.log.info("central: delivering again after %d failed attempts", self.failures)
            self.failures = self._rejects_in_row = self._suppressed = 0
            self._warned = None
            self._limit = min(self._cap, self._limit * 2)
            return MORE
        if isinstance(answer, TooLarge):
            self.batches["too_large"] += 1
            if batch.count == 1:
                return await self._quarantine(batch, {batch.first_seq: f"too large for the center alone "
                                                                       f"({len(batch.body)} bytes)"},
                                              answer.status, report)
            self._cap = self._limit = max(1, batch.count // 2)
            self._max_bytes = max(1, len(batch.body) // 2)
            self.log.warning("central: a batch of %d events (%d bytes) is too large for the center (413); sending "
                             "at most %d events, %d bytes", batch.count, len(batch.body), self._cap, self._max_bytes)
            return MORE
        if isinstance(answer, Rejected):
            self.batches["rejected"] += 1
            self._rejects_in_row += 1
            named = answer.invalid
            if not named and batch.count > 1:
                # nothing named: halve until the bad event is alone, so one bad event does not take the
                # batch's good ones into quarantine with it
                self._limit = max(1, batch.count // 2)
                self.log.info("central: batch seq %d-%d refused (%d: %s) naming no event; retrying in halves",
                              batch.first_seq, batch.last_seq, answer.status, answer.error)
            else:
                await self._quarantine(batch, named or {batch.first_seq: answer.error}, answer.status, report)
            if self._rejects_in_row >= REJECTS_BEFORE_BACKOFF:
                return await self._failed(Failed(f"the center refused {self._rejects_in_row} batches in a row "
                                                 f"without accepting one (last: {answer.error}); backing off"))
            return MORE
        return await self._failed(answer)

    async def _quarantine(self, batch: Batch, named: dict[int, str], status: int, report: PushReport) -> str:
        assert self.outbox is not None
        ids = {line.seq: line.id for line in batch.lines}
        rows = [(seq, ids[seq], error) for seq, error in sorted(named.items())]
        await self.outbox.quarantine(rows, batch_key=batch.key, status=status, central=self.url, now=self._now())
        self.quarantined_total += len(rows)
        report.quarantined += len(rows)
        seqs = ", ".join(str(r[0]) for r in rows[:10]) + (", …" if len(rows) > 10 else "")
        self.last_error = f"{status}: {rows[0][2]}"
        self.log.warning("central: quarantined %d event%s the center refused as invalid (seq %s; %d: %s); "
                         "ivr sync status lists them", len(rows), "s" if len(rows) != 1 else "", seqs, status,
                         rows[0][2])
        return MORE

    async def _failed(self, answer: Failed) -> Failed:
        assert self.outbox is not None
        await self.outbox.record_failure(answer.error, central=self.url, now=self._now())
        self.batches["error"] += 1
        self.failures += 1
        self.last_error = answer.error
        self._warn(answer.error)
        return answer

    def _warn(self, error: str) -> None:
        """One WARNING line per failure, the same one again only every ``WARN_EVERY`` seconds."""
        now = time.monotonic()
        if self._warned is not None and self._warned[0] == error and now - self._warned[1] < WARN_EVERY:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more like it)" if self._suppressed else ""
        self.log.warning("central: not delivered: %s; retrying with back-off (%d failure%s since the last "
                         "success)%s", error, self.failures, "" if self.failures == 1 else "s", more)
        self._warned, self._suppressed = (error, now), 0

    def status(self) -> dict[str, Any]:
        """For ``ivr status`` (``sync``): what this process's relay last saw; ``ivr sync status`` reads the log."""
        pos = self.position

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat(timespec="seconds")

        return {
            "central": self.url,
            "acked_seq": pos.acked_seq if pos else None,
            "head_seq": pos.head_seq if pos else None,
            "backlog": pos.backlog if pos else None,
            "last_attempt": iso(self.last_attempt),
            "last_success": iso(self.last_success),
            "last_error": self.last_error,
            "failures": self.failures,
            "next_try": iso(self.next_try),
            "batches": dict(self.batches),
            "events_sent": self.events_sent,
            "quarantined": self.quarantined_total,
            "skipped": self.skipped_total,
        }


async def open_relay(settings: CentralConfig, events: EventLog, *, db_path: Path, lock_path: Path,
                     **kwargs: Any) -> Relay:
    relay = Relay(settings, events, db_path=db_path, lock_path=lock_path, **kwargs)
    await relay.start()
    return relay
