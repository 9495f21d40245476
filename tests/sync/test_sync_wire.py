"""The box → center wire without I/O: batches and their key, what each answer means, Retry-After, the
jittered back-off, and where the bounded outbox cuts (ivr/sync/wire.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from ivr.sync.wire import (
    Acked,
    Failed,
    Gap,
    Line,
    Rejected,
    TooLarge,
    build_batch,
    full_jitter,
    interpret,
    parse_retry_after,
    plan_gap,
    retry_delay,
)

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def lines(*seqs: int, size: int = 10) -> list[Line]:
    return [Line(s, f"id-{s}", json.dumps({"seq": s, "pad": "x" * size}).encode()) for s in seqs]


def test_a_batch_is_ndjson_in_seq_order_with_a_key_over_its_body() -> None:
    batch = build_batch("store-042", lines(3, 4, 7), max_events=500, max_bytes=1 << 20)
    assert batch is not None
    assert batch.body == b"".join(line.text + b"\n" for line in lines(3, 4, 7))
    assert (batch.first_seq, batch.last_seq, batch.seqs, batch.count) == (3, 7, (3, 4, 7), 3)
    assert batch.key == f"store-042:3-7:{hashlib.sha256(batch.body).hexdigest()[:16]}"
    assert gzip.decompress(batch.gzipped()) == batch.body
    assert batch.gzipped() == batch.gzipped()  # mtime 0: a resend is the same bytes
    assert batch.headers(token="t", head_seq=99, user_agent="edge-ivr/1") == {
        "Authorization": "Bearer t", "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip",
        "Idempotency-Key": batch.key, "X-IVR-Site": "store-042", "X-IVR-Head-Seq": "99",
        "User-Agent": "edge-ivr/1"}


def test_a_batch_stops_at_its_event_and_byte_limits_but_always_takes_one() -> None:
    assert build_batch("s", lines(*range(1, 11)), max_events=4, max_bytes=1 << 20).seqs == (1, 2, 3, 4)  # type: ignore[union-attr]
    one = len(lines(1)[0].text) + 1
    assert build_batch("s", lines(*range(1, 11)), max_events=500, max_bytes=3 * one).seqs == (1, 2, 3)  # type: ignore[union-attr]
    huge = build_batch("s", lines(1, 2, size=5000), max_events=500, max_bytes=1024)
    assert huge is not None and huge.seqs == (1,)  # larger than the limit, alone: the center's 413 decides
    assert build_batch("s", [], max_events=500, max_bytes=1024) is None


def test_the_same_range_with_other_events_has_another_key() -> None:
    a = build_batch("s", lines(1, 2, 3), max_events=9, max_bytes=1 << 20)
    b = build_batch("s", lines(1, 3), max_events=9, max_bytes=1 << 20)
    assert a is not None and b is not None and a.key != b.key and a.key.split(":")[1] == b.key.split(":")[1]


def batch_of(*seqs: int):  # type: ignore[no-untyped-def]
    b = build_batch("s", lines(*seqs), max_events=500, max_bytes=1 << 20)
    assert b is not None
    return b


def answer(status: int, body: object = None, retry_after: str | None = None, seqs: tuple[int, ...] = (5, 6, 7)):
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return interpret(batch_of(*seqs), status, raw, retry_after, NOW)


def test_only_a_2xx_naming_a_seq_of_the_batch_acknowledges() -> None:
    assert answer(200, {"acked_seq": 7, "inserted": 2, "duplicates": 1}) == Acked(7, 2, 1)
    assert answer(201, {"acked_seq": 6}) == Acked(6, 0, 0)  # inside the batch: the cursor goes to 6
    for bogus in ({}, {"acked_seq": None}, {"acked_seq": "7"}, {"acked_seq": 7.0}, {"acked_seq": True},
                  {"acked_seq": 4}, {"acked_seq": 8}, {"acked_seq": 10**9}, [7], b"ok", None):
        got = answer(200, bogus)
        assert isinstance(got, Failed) and "not an acknowledgement" in got.error, bogus


def test_invalid_batches_name_their_events_by_seq_or_line() -> None:
    got = answer(422, {"error": "2 invalid", "invalid": [{"line": 1, "seq": 5, "error": "no type"},
                                                          {"line": 3, "error": "bad data"},
                                                          {"seq": 99, "error": "not ours"}, "junk"]})
    assert got == Rejected(422, "2 invalid", {5: "no type", 7: "bad data"})
    assert answer(400, {"error": "bad gzip"}) == Rejected(400, "bad gzip", {})
    assert answer(415) == Rejected(415, "the center refused the batch (415)", {})


def test_too_large_credentials_throttling_and_errors() -> None:
    assert answer(413) == TooLarge()
    auth = answer(401, {"error": "unknown token"})
    assert isinstance(auth, Failed) and auth.auth and auth.status == 401
    assert "credentials (401: unknown token)" in auth.error and "token_file" in auth.error
    assert answer(403).auth  # type: ignore[union-attr]
    busy = answer(503, None, "120")
    assert busy == Failed("the center answered 503", 503, 120.0)
    assert answer(429, None, format_datetime(NOW + timedelta(seconds=30), usegmt=True)).retry_after == 30.0  # type: ignore[union-attr]
    assert answer(500).retry_after is None  # type: ignore[union-attr]
    assert "is central.url right?" in answer(404).error  # type: ignore[union-attr]
    assert "redirect" in answer(308).error  # type: ignore[union-attr]


def test_retry_after_is_seconds_or_an_http_date_capped_at_an_hour() -> None:
    assert parse_retry_after("0", NOW) == 0.0
    assert parse_retry_after(" 45 ", NOW) == 45.0
    assert parse_retry_after("999999", NOW) == 3600.0
    assert parse_retry_after("Tue, 01 Dec 2026 15:02:00 GMT", NOW) == 120.0
    assert parse_retry_after("Tue, 01 Dec 2026 14:00:00 GMT", NOW) == 0.0  # already past
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-5", NOW) is None


def test_full_jitter_stays_under_the_doubling_cap() -> None:
    rng = random.Random(1)
    for failures in range(1, 40):
        ceiling = min(300.0, 2.0 ** (failures - 1))
        waits = [full_jitter(failures, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # spread over the whole range, not a fixed step
    assert retry_delay(1, 120.0, random.Random(2)) >= 120.0  # Retry-After is a floor
    assert retry_delay(12, 5.0, random.Random(2)) <= 300.0


def test_the_outbox_bounds_cut_the_oldest_and_leave_room_for_the_gap_event() -> None:
    assert plan_gap(acked=0, head=10, max_events=10, first_young=1) is None
    assert plan_gap(acked=0, head=11, max_events=10, first_young=1) == Gap(1, 2, "max_events")
    assert plan_gap(acked=0, head=100, max_events=10, first_young=95) == Gap(1, 94, "max_age")
    assert plan_gap(acked=0, head=100, max_events=3, first_young=95) == Gap(1, 98, "max_events")
    assert plan_gap(acked=40, head=100, max_events=1000, first_young=None) == Gap(41, 100, "max_age")
    assert plan_gap(acked=0, head=5, max_events=1, first_young=1) == Gap(1, 5, "max_events")


def test_a_gap_never_causes_the_next_one() -> None:
    """After a gap, the log holds its sync.gap event too: the next look must find the outbox within bounds."""
    for max_events in (1, 2, 5, 50):
        for head in range(1, 120):
            for young in (1, head // 2 or 1, head, None):
                gap = plan_gap(acked=0, head=head, max_events=max_events, first_young=young)
                if gap is None:
                    continue
                # the first young event after the new cursor: the old young ones left, else the gap event itself
                first_young = head + 1 if young is None else max(young, gap.to_seq + 1)
                again = plan_gap(acked=gap.to_seq, head=head + 1, max_events=max_events, first_young=first_young)
                assert again is None, (max_events, head, young, gap, again)
