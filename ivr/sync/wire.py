"""The box → center wire without I/O (docs/central.md, "The wire: box → center").

A batch's body, Idempotency-Key and headers from event lines; what the center's answer means; Retry-After;
the back-off; when the bounded outbox must skip its oldest events. No asyncio, sockets or clock reads: ``now``
and the random source are passed in, so each rule is tested with plain values. ``ivr.sync.relay`` does the
I/O around it (the store, the HTTP adapter, the sleeping).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

PATH = "/v1/events"
CONTENT_TYPE = "application/x-ndjson"
AUTH_STATUSES = frozenset({401, 403})
"""The box's credentials are wrong: its config, never its data, so retried (with back-off), never quarantined."""
REJECT_STATUSES = frozenset({400, 415, 422})
"""The batch is invalid; the center wrote nothing of it and names the bad lines (or none)."""
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
RETRY_AFTER_CAP = 3600.0
"""A Retry-After is honoured up to an hour: a center's typo (or a year) must not silence a box for good."""
ERROR_TEXT_MAX = 300


@dataclass(frozen=True)
class Line:
    """One event as the wire carries it: ``seq``, ``id`` (what a quarantine row keeps) and its NDJSON line
    without the newline, in exactly the shape of ``ivr events --json``."""

    seq: int
    id: str
    text: bytes


@dataclass(frozen=True)
class Batch:
    """Events in ``seq`` order (quarantined ones left out, so seqs may skip), their body and their key."""

    site: str
    lines: tuple[Line, ...]
    body: bytes
    """Uncompressed NDJSON, one event per line, each line ending in a newline."""
    key: str
    """``<site>:<first_seq>-<last_seq>:<first 16 hex of sha256(body)>``: the same events give the same key, so
    a batch resent after a lost answer is recognised; a batch that differs (one event quarantined since) does
    not collide with it."""

    @property
    def first_seq(self) -> int:
        return self.lines[0].seq

    @property
    def last_seq(self) -> int:
        return self.lines[-1].seq

    @property
    def count(self) -> int:
        return len(self.lines)

    @property
    def seqs(self) -> tuple[int, ...]:
        return tuple(line.seq for line in self.lines)

    def gzipped(self) -> bytes:
        """The body as sent (``Content-Encoding: gzip``); mtime 0 so the same batch is the same bytes."""
        return gzip.compress(self.body, compresslevel=6, mtime=0)

    def headers(self, *, token: str, head_seq: int, user_agent: str) -> dict[str, str]:
        """Every header of the POST (docs/central.md)."""
        return {
            "Authorization": f"Bearer {token}",
            "Content-Type": CONTENT_TYPE,
            "Content-Encoding": "gzip",
            "Idempotency-Key": self.key,
            "X-IVR-Site": self.site,
            "X-IVR-Head-Seq": str(head_seq),
            "User-Agent": user_agent,
        }


def idempotency_key(site: str, first_seq: int, last_seq: int, body: bytes) -> str:
    return f"{site}:{first_seq}-{last_seq}:{hashlib.sha256(body).hexdigest()[:16]}"


def build_batch(site: str, lines: Iterable[Line], *, max_events: int, max_bytes: int) -> Batch | None:
    """The next batch from ``lines`` (in seq order): at most ``max_events`` lines and ``max_bytes`` of body,
    except that the first line always goes, however long, so one oversized event cannot stall the outbox (the
    center's 413 for it alone then quarantines it). None when there is nothing to send."""
    taken: list[Line] = []
    size = 0
    for line in lines:
        if len(taken) >= max_events or (taken and size + len(line.text) + 1 > max_bytes):
            break
        taken.append(line)
        size += len(line.text) + 1
    if not taken:
        return None
    body = b"".join(line.text + b"\n" for line in taken)
    return Batch(site, tuple(taken), body, idempotency_key(site, taken[0].seq, taken[-1].seq, body))


# -- what an answer means --

@dataclass(frozen=True)
class Acked:
    """2xx with an ``acked_seq`` inside the batch: the center committed it; the cursor may move to ``seq``."""

    seq: int
    inserted: int
    duplicates: int


@dataclass(frozen=True)
class Rejected:
    """400/415/422: the batch is invalid. ``invalid``: the batch's seqs the center named, with its reason for
    each; empty when it named none."""

    status: int
    error: str
    invalid: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TooLarge:
    """413: smaller batches, please."""

    status: int = 413


@dataclass(frozen=True)
class Failed:
    """Not delivered, to be tried again after a back-off: a 5xx, 429, 401/403, a 2xx that acknowledged
    nothing, a redirect, a timeout, a refused connection, a certificate that failed verification."""

    error: str
    status: int | None = None
    retry_after: float | None = None
    """Seconds the center asked us to wait (Retry-After), when it said."""
    auth: bool = False


Answer = Acked | Rejected | TooLarge | Failed


def interpret(batch: Batch, status: int, body: bytes, retry_after: str | None, now: datetime) -> Answer:
    """What the center's answer to ``batch`` means for the box (docs/central.md). The cursor moves only on
    ``Acked``, and only a 2xx naming a seq inside the batch is one: a proxy's or a broken center's bare 200
    acknowledges nothing."""
    doc = _json(body)
    said = _text(doc.get("error")) if isinstance(doc, dict) else ""
    if 200 <= status < 300:
        acked = doc.get("acked_seq") if isinstance(doc, dict) else None
        if type(acked) is not int or not batch.first_seq <= acked <= batch.last_seq:
            return Failed(_clip(f"the center answered {status} without an acked_seq in {batch.first_seq}-"
                                f"{batch.last_seq} (got {_clip(json.dumps(acked), 40)}): not an acknowledgement"),
                          status)
        assert isinstance(doc, dict)
        return Acked(acked, _count(doc.get("inserted")), _count(doc.get("duplicates")))
    if status in REJECT_STATUSES:
        return Rejected(status, said or f"the center refused the batch ({status})",
                        _invalid(batch, doc.get("invalid") if isinstance(doc, dict) else None, said))
    if status == 413:
        return TooLarge(status)
    wait = parse_retry_after(retry_after, now) if retry_after is not None else None
    if status in AUTH_STATUSES:
        return Failed(_clip(f"the center refused this box's credentials ({status}"
                            + (f": {said}" if said else "") + "): check central.token_file or central.token"
                            " and the client certificate"), status, wait, auth=True)
    if 300 <= status < 400:
        return Failed(f"the center answered {status} (a redirect): set central.url to where it points", status,
                      wait)
    hint = " (is central.url right?)" if status in (404, 405) else ""
    return Failed(_clip(f"the center answered {status}" + (f": {said}" if said else "") + hint), status, wait)


def _invalid(batch: Batch, entries: Any, said: str) -> dict[int, str]:
    """The batch's seqs named in ``invalid`` (by ``seq``, else by 1-based ``line``), with each one's reason.
    Names outside the batch are ignored: only what we sent can be quarantined."""
    out: dict[int, str] = {}
    if not isinstance(entries, list):
        return out
    seqs = set(batch.seqs)
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        seq, line = entry.get("seq"), entry.get("line")
        if type(seq) is not int and type(line) is int and 1 <= line <= batch.count:
            seq = batch.lines[line - 1].seq
        if type(seq) is int and seq in seqs:
            out[seq] = _clip(_text(entry.get("error")) or said or "invalid")
    return out


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Retry-After as seconds from ``now``: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3); None when
    it is neither. A date in the past is 0; anything is capped at ``RETRY_AFTER_CAP``."""
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110: an HTTP-date is always GMT
        return None
    return min(max(0.0, (when - now).total_seconds()), RETRY_AFTER_CAP)


# -- waiting --

def full_jitter(failures: int, rng: random.Random, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 for the first): "Full Jitter" of the AWS
    Architecture Blog's "Exponential Backoff And Jitter", ``random(0, min(cap, base * 2**attempt))`` with
    attempt = failures - 1. Boxes cut off together by a center outage then come back spread out, not in step.

    Not tenacity's ``wait_random_exponential``: it computes the same line from a ``RetryCallState`` of a
    retried call, while the relay is a loop that never gives up and mixes this wait with Retry-After, 413
    halving and quarantines; one line of arithmetic here is clearer than building tenacity's state for it."""
    attempt = min(max(failures - 1, 0), 62)
    return rng.uniform(0.0, min(cap, base * 2.0 ** attempt))


def retry_delay(failures: int, retry_after: float | None, rng: random.Random) -> float:
    """The wait before the next try: the jittered back-off, and at least what the center asked for."""
    return max(full_jitter(failures, rng), retry_after or 0.0)


# -- the bounded outbox --

@dataclass(frozen=True)
class Gap:
    """Unsent events the relay skips because the outbox outgrew a bound: seqs ``from_seq``..``to_seq`` (the
    oldest unsent ones). They stay in the local log; a ``sync.gap`` event tells the center."""

    from_seq: int
    to_seq: int
    reason: str
    """``max_events`` or ``max_age``: the bound that decided where the gap ends."""


def plan_gap(*, acked: int, head: int, max_events: int, first_young: int | None) -> Gap | None:
    """The oldest unsent events to skip so that no unsent event is older than the age bound and at most
    ``max_events`` seqs follow the cursor. ``first_young``: the first seq after the cursor young enough to keep
    (None: every one is too old).

    A gap leaves room for its own ``sync.gap`` event: with it the outbox holds at most ``max_events``, so the
    next look finds the outbox within bounds (a gap event must never push out the next event, and that one's
    gap the next: a cascade that would skip everything)."""
    by_age = head if first_young is None else first_young - 1
    cut = max(acked, by_age)
    left = head - cut + (1 if cut > acked else 0)  # what would follow the cursor, a gap event included
    if left > max_events:
        cut = head + 1 - max_events
    if cut <= acked:
        return None
    return Gap(acked + 1, cut, "max_age" if cut == by_age else "max_events")


# -- helpers --

def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _text(value: Any) -> str:
    return _clip(" ".join(value.split())) if isinstance(value, str) else ""


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _clip(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
