"""The relay against the HTTPS stand-in of the center, over a real event log: exactly once, in seq order,
through every answer the contract names (docs/central.md, "The wire: box → center")."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import uuid6

from ivr.store.eventlog import BOOT_ID, EventLog, iter_events
from ivr.store.outbox import read_status
from tests.sync.center import Answer, Center
from tests.sync.conftest import Box, Waits, central_for


def status(box: Box) -> dict:  # type: ignore[type-arg]
    return read_status(box.db, now=datetime.now(UTC))


async def test_everything_is_delivered_once_in_seq_order_as_ivr_events_json(box: Box, center: Center) -> None:
    seqs = await box.write(23, text="ünïcode ☎")
    relay = await box.relay(central_for(center, batch_max_events=5))
    report = await relay.push()
    assert report.caught_up and report.error is None
    assert (report.batches, report.events, report.duplicates, report.acked_seq, report.head_seq) == (5, 23, 0, 23, 23)
    assert center.stored_seqs() == seqs
    # each line is exactly what `ivr events --json` prints for that event
    assert [json.dumps(e, separators=(",", ":")) for e in center.stored()] == [e.to_json() for e in iter_events(box.db)]
    assert [s.seqs for s in center.seen] == [seqs[i:i + 5] for i in range(0, 23, 5)]
    first = center.seen[0].headers
    assert first["Authorization"] == f"Bearer {center.token}"
    assert (first["Content-Type"], first["Content-Encoding"]) == ("application/x-ndjson", "gzip")
    assert (first["X-IVR-Site"], first["X-IVR-Head-Seq"]) == ("test-site", "23")
    assert first["User-Agent"].startswith("edge-ivr/")
    body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in center.stored()[:5]).encode()
    assert first["Idempotency-Key"] == f"test-site:1-5:{hashlib.sha256(body).hexdigest()[:16]}"
    st = status(box)
    assert (st["acked_seq"], st["backlog"], st["oldest_unsent"], st["last_error"]) == (23, 0, None, None)
    assert st["last_success_at"] is not None
    # nothing new: nothing sent
    again = await relay.push()
    assert again.caught_up and again.batches == 0 and len(center.seen) == 5
    assert relay.batches["ok"] == 5 and relay.events_sent == 23


async def test_the_cursor_moves_only_after_a_2xx_that_names_a_seq_of_the_batch(box: Box, center: Center) -> None:
    await box.write(4)
    relay = await box.relay(central_for(center))
    center.script.extend([Answer(status=503), Answer(status=500, body={"error": "db down"})])
    for expected in ("the center answered 503", "the center answered 500: db down"):
        report = await relay.push()
        assert report.error == expected and not report.caught_up
        assert status(box)["acked_seq"] == 0 and center.stored() == []
    # a 2xx that acknowledges nothing: missing, null, a string, outside the batch (the center did commit)
    for bogus in (..., None, "4", 0, 99):
        center.script.append(Answer(acked=bogus))
        report = await relay.push()
        assert report.error is not None and "not an acknowledgement" in report.error, bogus
        assert status(box)["acked_seq"] == 0
    assert len(center.stored()) == 4
    report = await relay.push()  # a true answer: the same batch, every event already there
    assert report.caught_up and (report.inserted, report.duplicates, report.acked_seq) == (0, 4, 4)
    st = status(box)
    assert st["acked_seq"] == 4 and st["failures"] == 0 and "not an acknowledgement" in st["last_error"]
    assert relay.batches["error"] == 7 and relay.batches["duplicate"] == 1
    assert center.stored_seqs() == [1, 2, 3, 4]


async def test_an_answer_lost_after_the_center_committed_is_resent_and_deduplicated(box: Box,
                                                                                     center: Center) -> None:
    await box.write(12)
    relay = await box.relay(central_for(center, batch_max_events=5))
    center.script.extend([Answer(), Answer(drop=True)])  # batch 1 fine; batch 2 committed, answer never read
    report = await relay.push()
    assert report.error is not None and "connection" in report.error and "lost" in report.error
    assert (report.batches, report.acked_seq) == (1, 5)  # only what was acknowledged
    assert center.stored_seqs() == list(range(1, 11))
    report = await relay.push()
    assert report.caught_up and (report.batches, report.duplicates, report.inserted) == (2, 5, 2)
    keys = [s.headers["Idempotency-Key"] for s in center.seen]
    assert keys[1] == keys[2]  # the resend is the same batch, so the same key
    assert center.stored_seqs() == list(range(1, 13)) and status(box)["acked_seq"] == 12


async def test_wrong_credentials_are_retried_with_back_off_and_never_quarantined(
        box: Box, center: Center, caplog: pytest.LogCaptureFixture) -> None:
    await box.write(3)
    waits = Waits()
    relay = await box.relay(central_for(center, token="stale-token"), waits=waits)
    with caplog.at_level(logging.INFO, logger="ivr.sync"):
        await box.run(relay, lambda: len(waits.chosen) >= 4)
    # one WARNING line for the same failure, not one per attempt; no ERROR, no traceback
    [line] = [r for r in caplog.records if r.name == "ivr.sync"]
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert line.message.startswith("central: not delivered: the center refused this box's credentials (401")
    assert [s.status for s in center.seen][:4] == [401] * 4
    assert all(0 <= w <= 2.0 ** n for n, w in enumerate(waits.chosen[:4]))  # full jitter, doubling
    st = status(box)
    assert st["quarantined"] == 0 and st["acked_seq"] == 0 and st["failures"] >= 4
    assert "refused this box's credentials (401: unknown token)" in st["last_error"]
    assert center.stored() == []


async def test_an_invalid_event_is_quarantined_and_the_others_delivered(box: Box, center: Center,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    await box.write(3)
    bad = await box.log.append("test.bad", None, why="the center cannot take it")
    await box.write(3)
    center.invalid = lambda e: "unknown event type" if e["type"] == "test.bad" else None
    relay = await box.relay(central_for(center))
    with caplog.at_level(logging.WARNING, logger="ivr.sync"):
        report = await relay.push()
    assert report.caught_up and report.quarantined == 1 and report.events == 6
    assert center.stored_seqs() == [1, 2, 3, 5, 6, 7]
    assert [s.status for s in center.seen] == [422, 200]
    assert center.seen[1].seqs == [1, 2, 3, 5, 6, 7]  # the next batch leaves it out
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "quarantined 1 event the center refused as invalid (seq 4; 422: unknown event type)" in warning.message
    st = status(box)
    assert st["acked_seq"] == 7 and st["backlog"] == 0 and st["quarantined"] == 1
    [q] = st["quarantine"]
    assert (q["seq"], q["type"], q["http_status"], q["error"]) == (bad, "test.bad", 422, "unknown event type")
    assert relay.quarantined_total == 1 and relay.batches["rejected"] == 1
    assert await relay.push() == type(report)(acked_seq=7, head_seq=7, caught_up=True)  # never sent again


async def test_a_rejection_naming_no_event_is_narrowed_down_to_the_bad_one(box: Box, center: Center) -> None:
    await box.write(5)
    await box.log.append("test.bad", None)
    await box.write(2)
    center.invalid = lambda e: "bad" if e["type"] == "test.bad" else None
    center.name_invalid = False  # "the batch is invalid", no line named
    relay = await box.relay(central_for(center))
    report = await relay.push()
    assert report.caught_up and report.quarantined == 1  # not the seven good events with it
    [q] = status(box)["quarantine"]
    assert (q["seq"], q["http_status"], q["error"]) == (6, 422, "1 invalid events")
    assert center.stored_seqs() == [1, 2, 3, 4, 5, 7, 8]
    assert [s.seqs for s in center.seen if s.status == 422] == [[1, 2, 3, 4, 5, 6, 7, 8], [5, 6, 7, 8], [5, 6],
                                                                [6, 7], [6]]


async def test_a_center_that_refuses_everything_is_backed_off_from(box: Box, center: Center) -> None:
    """Not the whole log into quarantine at full speed: after 20 refusals in a row the relay backs off."""
    await box.write(40)
    center.invalid = lambda e: "schema from the future"
    waits = Waits()
    relay = await box.relay(central_for(center, batch_max_events=1), waits=waits)
    await box.run(relay, lambda: len(waits.chosen) >= 2)
    st = status(box)
    assert st["quarantined"] in (20, 21) and "refused 2" in st["last_error"] and "backing off" in st["last_error"]


async def test_too_large_batches_are_halved_and_a_lone_oversized_event_quarantined(box: Box, center: Center) -> None:
    await box.write(10)
    center.max_events = 3
    relay = await box.relay(central_for(center, batch_max_events=10))
    report = await relay.push()
    assert report.caught_up and report.quarantined == 0
    assert [len(s.seqs) for s in center.seen if s.status == 413] == [10, 5]
    assert all(len(s.seqs) <= 3 for s in center.seen if s.status == 200)
    assert center.stored_seqs() == list(range(1, 11))
    # one event larger than the center takes at all: quarantined, not retried forever
    center.max_events, center.max_body = None, 4000
    big = await box.log.append("test.big", None, blob="x" * 5000)
    await box.write(1)
    report = await relay.push()
    assert report.caught_up and report.quarantined == 1
    [q] = status(box)["quarantine"]
    assert (q["seq"], q["http_status"]) == (big, 413) and "too large" in q["error"]
    assert center.stored_seqs()[-1] == big + 1


async def test_retry_after_is_honoured(box: Box, center: Center) -> None:
    """The wait the relay chose, not the wall time: at least Retry-After (seconds or an HTTP-date)."""
    await box.write(2)
    waits = Waits()
    now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    relay = await box.relay(central_for(center), waits=waits)
    relay._now = lambda: now  # the HTTP-date is read against the relay's clock
    center.script.extend([
        Answer(status=503, headers={"Retry-After": "120"}),
        Answer(status=429, headers={"Retry-After": format_datetime(now + timedelta(seconds=90), usegmt=True)}),
        Answer(status=503),
    ])
    # the cursor is on disk a moment before the relay resets its count: wait for both
    await box.run(relay, lambda: status(box)["acked_seq"] == 2 and relay.failures == 0)
    assert len(waits.chosen) == 3
    assert 120 <= waits.chosen[0] <= 121  # jitter after the first failure is at most 1 s
    assert 90 <= waits.chosen[1] <= 92
    assert 0 <= waits.chosen[2] <= 4
    assert relay.failures == 0 and center.stored_seqs() == [1, 2]


async def test_a_center_whose_certificate_fails_verification_is_refused_and_retried(box: Box, center: Center,
                                                                                      tmp_path: Path) -> None:
    await box.write(2)
    (tmp_path / "other").mkdir()
    other = Center(tmp_path / "other")  # another CA: the box must not trust the center's certificate
    waits = Waits()
    relay = await box.relay(central_for(center, ca_file=other.ca_pem), waits=waits)
    await box.run(relay, lambda: len(waits.chosen) >= 2)
    assert center.seen == [] and center.stored() == []  # no request ever reached it
    st = status(box)
    assert st["acked_seq"] == 0 and st["quarantined"] == 0
    assert "TLS: the center's certificate failed verification" in st["last_error"]
    assert "certificate verify failed" in st["last_error"]


async def test_mutual_tls_presents_the_client_certificate(box: Box, tmp_path: Path) -> None:
    root = tmp_path / "mtls"
    root.mkdir()
    center = Center(root, require_client_cert=True)
    await center.start()
    try:
        await box.write(3)
        without = await box.relay(central_for(center))
        report = await without.push()
        assert report.error is not None and center.stored() == []
        cert, key = center.client_files("box.test-site")
        relay = await box.relay(central_for(center, client_cert=cert, client_key=key))
        report = await relay.push()
        assert report.caught_up and center.stored_seqs() == [1, 2, 3]
        peer = center.seen[-1].peer_cert
        assert peer is not None and ("DNS", "box.test-site") in peer["subjectAltName"]
    finally:
        await center.stop()


async def test_plain_http_to_a_loopback_collector(box: Box, tmp_path: Path) -> None:
    """The one place http is allowed (docs/config.md): a collector or a tunnel's end on the box itself."""
    (tmp_path / "plain").mkdir()
    center = Center(tmp_path / "plain", tls=False)
    await center.start()
    try:
        await box.write(2)
        relay = await box.relay(central_for(center, ca_file=None))
        assert (await relay.push()).caught_up and center.stored_seqs() == [1, 2]
    finally:
        await center.stop()


async def test_the_outbox_bound_skips_the_oldest_with_a_gap_event_that_is_delivered(box: Box,
                                                                                  center: Center) -> None:
    await box.write(12)
    relay = await box.relay(central_for(center, outbox_max_events=5))
    report = await relay.push()
    assert report.caught_up and report.skipped == 8
    assert report.gaps == [{"seq": 13, "from_seq": 1, "to_seq": 8, "count": 8, "reason": "max_events"}]
    assert center.stored_seqs() == [9, 10, 11, 12, 13]  # 5 events: 4 kept and the gap event
    gap = center.stored()[-1]
    assert gap["type"] == "sync.gap" and gap["data"] == {"from_seq": 1, "to_seq": 8, "count": 8,
                                                          "reason": "max_events"}
    st = status(box)
    assert st["skipped"] == 8 and [g["seq"] for g in st["gaps"]] == [13] and st["acked_seq"] == 13
    assert relay.skipped_total == 8
    assert len([e for e in iter_events(box.db)]) == 13  # skipped events stay in the log


async def test_a_long_outage_folds_the_earlier_gap_into_the_next(box: Box, center: Center) -> None:
    await box.write(12)
    relay = await box.relay(central_for(center, outbox_max_events=5))
    center.script.extend([Answer(status=503)])
    report = await relay.push()  # gap 1-8 (seq 13), then the center is down
    assert report.error and report.gaps[0]["to_seq"] == 8
    await box.write(10)  # 14..23: the outbox is over its bound again, gap event 13 among the oldest
    report = await relay.push()
    assert report.caught_up
    assert report.gaps == [{"seq": 24, "from_seq": 1, "to_seq": 19, "count": 19, "reason": "max_events"}]
    assert report.skipped == 11  # new to this skip: 9..19
    assert center.stored_seqs() == [20, 21, 22, 23, 24]
    assert status(box)["skipped"] == 19


async def test_the_age_bound_skips_old_events_of_earlier_boots_by_wall_time(box: Box, center: Center) -> None:
    """Within this boot the age is measured on the monotonic clock (a box without a real-time clock writes 1970
    until NTP answers: those events are not old); events of an earlier boot have only their wall time."""

    def row(boot: str, wall: str, n: int) -> tuple[object, ...]:
        return (str(uuid6.uuid7()), "test-site", boot, wall, 1000 + n, None, "test.event", json.dumps({"n": n}))

    for n, (boot, wall) in enumerate([("an-earlier-boot", "2025-01-01T00:00:00.000000Z")] * 3
                                     + [(BOOT_ID, "1970-01-01T00:00:05.000000Z")]):
        r = row(boot, wall, n)
        await box.log.transaction(lambda db, r=r: EventLog.insert(db, r))
    # this boot's 1970 event: its mono_ns (1003) is long before now on the monotonic clock, so it is old too;
    # an event of this boot written just now is young whatever its wall time says
    await box.log.transaction(lambda db: EventLog.insert(db, (str(uuid6.uuid7()), "test-site", BOOT_ID,
                                                                "1970-01-01T00:00:06.000000Z", time.monotonic_ns(),
                                                                None, "test.event", "{}")))
    relay = await box.relay(central_for(center, outbox_max_age=3600.0))
    report = await relay.push()
    assert report.gaps == [{"seq": 6, "from_seq": 1, "to_seq": 4, "count": 4, "reason": "max_age"}]
    assert center.stored_seqs() == [5, 6]
