"""Reading a batch without I/O: what is refused, with which status, naming which lines and seqs."""

from __future__ import annotations

import json
import uuid

import pytest

from ivr_central import validate
from ivr_central.validate import BatchRefused
from tests.central.helpers import bomb, events, gz, ndjson

MB = 1 << 20


def read(body: bytes, *, site: str = "s1", encoding: str | None = "gzip", ctype: str = "application/x-ndjson",
         max_events: int = 1000, max_decompressed: int = MB) -> validate.Batch:
    return validate.read_batch(body, content_type=ctype, content_encoding=encoding, site=site,
                               max_decompressed=max_decompressed, max_events=max_events)


def refused(body: bytes, **kw: object) -> BatchRefused:
    with pytest.raises(BatchRefused) as info:
        read(body, **kw)  # type: ignore[arg-type]
    return info.value


def lines_of(evs: list[dict[str, object]]) -> list[str]:
    return [json.dumps(e) for e in evs]


def test_a_good_batch_reads_back_every_event_in_order() -> None:
    evs = events("s1", 10, 20)
    batch = read(gz(ndjson(evs)))
    assert batch.events == evs
    assert (batch.first_seq, batch.last_seq) == (10, 29)
    assert read(ndjson(evs), encoding=None).events == evs  # identity
    assert read(ndjson(evs), encoding="identity", ctype="application/x-ndjson; charset=utf-8").events == evs


def test_each_kind_of_bad_line_is_named_with_its_line_and_seq() -> None:
    evs = events("s1", 1, 8)
    evs[1]["id"] = "not-a-uuid"
    del evs[2]["call_id"]
    evs[3]["id"] = str(uuid.uuid4())
    evs[4]["seq"] = 2  # backwards
    evs[5]["wall_time"] = "2026-02-30T10:00:00Z"
    evs[6]["data"] = {"note": "nul\x00byte"}
    lines = lines_of(evs)
    lines[7] = lines[7][:-5]  # cut short: not JSON, its seq still readable
    err = refused(gz("\n".join(lines).encode()))
    assert err.status == 422
    by_line = {i.line: i for i in err.invalid}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert "id: \"not-a-uuid\" is not a UUID" in by_line[2].error
    assert by_line[3].error == "call_id is required" and by_line[3].seq == 3
    assert "is a UUIDv4, not a UUIDv7" in by_line[4].error
    assert by_line[5].seq == 2 and "does not follow seq 4 of line 4" in by_line[5].error
    assert "is not a real time" in by_line[6].error
    assert "data.note holds \\u0000" in by_line[7].error
    assert by_line[8].seq == 8 and by_line[8].error.startswith("not JSON")
    assert err.as_json()["invalid"][0] == {"line": 2, "seq": 2, "error": by_line[2].error}


def test_unknown_fields_wrong_types_nan_and_repeated_ids_are_refused() -> None:
    evs = events("s1", 1, 4)
    evs[0]["extra"] = 1
    evs[1]["mono_ns"] = "12"
    evs[3]["id"] = evs[2]["id"]
    lines = lines_of(evs) + ['{"seq": 5, "x": NaN}']
    err = refused(ndjson([]) + "\n".join(lines).encode(), encoding="identity")
    msgs = {i.line: i.error for i in err.invalid}
    assert msgs[1] == "unknown field 'extra'"
    assert msgs[2] == 'mono_ns: expected integer, got string "12"'
    assert msgs[4] == f"id {evs[2]['id']} repeats line 3"
    assert "NaN is not a JSON number" in msgs[5]


def test_another_sites_lines_are_named_among_the_invalid_ones() -> None:
    """422, so the box quarantines just those lines (a 403 it would retry for ever)."""
    evs = events("s1", 1, 3)
    evs[1]["site"] = "s2"
    evs[2]["id"] = "x"
    err = refused(gz(ndjson(evs)))
    assert err.status == 422
    assert [(i.line, i.seq) for i in err.invalid] == [(2, 2), (3, 3)]
    assert "is not this token's site 's1'" in err.invalid[0].error


def test_body_faults_have_their_own_statuses() -> None:
    good = ndjson(events("s1", 1, 3))
    assert refused(gz(good), ctype="application/json").status == 415
    assert refused(gz(good), encoding="br").status == 415
    assert refused(b"not gzip at all").status == 400
    assert refused(gz(good)[:-10]).status == 400  # truncated
    assert refused(gz(good), max_events=2).status == 413
    assert refused(b"", encoding="identity").status == 422
    bad_utf8 = good + b'{"seq": 4, "note": "\xff"}\n'
    err = refused(bad_utf8, encoding="identity")
    assert err.status == 400 and [(i.line, i.seq) for i in err.invalid] == [(4, 4)]


def test_a_gzip_bomb_is_stopped_at_the_bound() -> None:
    body = bomb(200 * MB)
    assert len(body) < 300_000
    err = refused(body, max_decompressed=4 * MB)
    assert err.status == 413 and "max_decompressed_bytes" in err.error


def test_the_schema_is_a_valid_2020_12_schema_and_names_every_field_the_box_sends() -> None:
    from ivr.store.eventlog import Event

    schema = validate.event_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) == set(Event.__dataclass_fields__)
