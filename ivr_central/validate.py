"""Reading one posted batch: body bytes in, checked events out, or the reason it is refused. No I/O.

A batch is committed whole or not at all, so every line is checked before anything is written, and a refusal
names every bad line with its seq (the box quarantines exactly those and resends the rest). The shape of one
line is ``event.schema.json`` (JSON Schema 2020-12, the file editors and the box's tests can read too),
compiled once. What a schema cannot say is checked here: the id is a UUIDv7 (its time prefix picks the
month partition, so a v4 id would land in a random month), ``wall_time`` is a real time, seqs rise within the
batch, no id repeats (one INSERT would take it once but the facts twice), ``site`` is the authenticated
site, and no string holds what PostgreSQL cannot store (NUL, lone surrogates; NaN and Infinity are not JSON).

gzip is inflated with an output bound, so a small body that inflates to gigabytes (a gzip bomb) costs at
most the bound.
"""

from __future__ import annotations

import json
import math
import re
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema_rs

CONTENT_TYPE = "application/x-ndjson"
ENCODINGS = ("gzip", "identity")
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_MAX_ID_MS = int(datetime(9999, 12, 1).timestamp() * 1000)
"""A UUIDv7 time prefix past this has no month partition a datetime can name."""
_SEQ_GUESS = re.compile(r'"seq"\s*:\s*(\d{1,19})\b')
_UNSTORABLE_ESCAPE = re.compile(r"\\u(0000|[dD][89a-fA-F])")
"""An escaped NUL or surrogate: the only ways either gets into strictly decoded UTF-8 JSON."""
_CLIP = 80


@dataclass(frozen=True)
class Invalid:
    """One refused line: 1-based ``line`` of the decompressed body, its ``seq`` when it could be read."""

    line: int
    seq: int | None
    error: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "seq": self.seq, "error": self.error}


class BatchRefused(Exception):  # noqa: N818 - an answer, not a fault of ours
    """The batch as a whole is refused with HTTP ``status``; ``invalid`` names the lines to blame."""

    def __init__(self, status: int, error: str, invalid: Sequence[Invalid] = ()) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.invalid = tuple(invalid)

    def as_json(self) -> dict[str, Any]:
        return {"error": self.error, "invalid": [i.as_json() for i in self.invalid]}

    def summary(self, limit: int = 2000) -> str:
        """One text for the ``rejects`` table: the error and the first bad lines."""
        parts = [self.error] + [f"line {i.line} (seq {i.seq}): {i.error}" for i in self.invalid]
        text = "; ".join(parts)
        return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Batch:
    """The checked events of one batch, in seq order."""

    events: list[dict[str, Any]]

    @property
    def first_seq(self) -> int:
        return int(self.events[0]["seq"])

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"])


# -- headers and body ---------------------------------------------------------------------------------------------

def check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != CONTENT_TYPE:
        raise BatchRefused(415, f"Content-Type must be {CONTENT_TYPE} (got {_clip(value or 'none')})")


def check_encoding(value: str | None) -> str:
    """``gzip`` or ``identity`` (no header: identity); anything else is 415 (RFC 7694)."""
    enc = (value or "identity").strip().lower()
    if enc not in ENCODINGS:
        raise BatchRefused(415, f"Content-Encoding must be gzip or identity (got {_clip(value or '')})")
    return enc


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """Inflate every gzip member of ``body``, refusing (413) as soon as the output passes ``max_bytes``."""
    out = bytearray()
    data = body
    while data:
        d = zlib.decompressobj(_GZIP_WBITS)
        try:
            out += d.decompress(data, max_bytes - len(out) + 1)
        except zlib.error as exc:
            raise BatchRefused(400, f"the body is not readable gzip: {exc}") from None
        if len(out) > max_bytes:
            raise BatchRefused(413, f"the body inflates to more than limits.max_decompressed_bytes ({max_bytes})")
        if not d.eof:
            raise BatchRefused(400, "the body is not readable gzip: it ends inside a gzip member")
        data = d.unused_data
    return bytes(out)


def decode_body(body: bytes, encoding: str, max_decompressed: int) -> str:
    """The body as text: inflated (``gzip``), bounded, strict UTF-8 (a bad byte is 400, naming its line)."""
    raw = gunzip(body, max_decompressed) if encoding == "gzip" else body
    if len(raw) > max_decompressed:
        raise BatchRefused(413, f"the body is more than limits.max_decompressed_bytes ({max_decompressed})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = raw.count(b"\n", 0, exc.start) + 1
        start = raw.rfind(b"\n", 0, exc.start) + 1
        end = raw.find(b"\n", exc.start)
        line = raw[start:end if end >= 0 else len(raw)]
        bad = Invalid(line_no, _guess_seq(line.decode("utf-8", "replace")),
                      f"not UTF-8 at byte {exc.start - start + 1} of the line")
        raise BatchRefused(400, "the body is not UTF-8", [bad]) from None


# -- lines --------------------------------------------------------------------------------------------------------

@cache
def event_schema() -> dict[str, Any]:
    text = resources.files("ivr_central").joinpath("event.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = event_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def parse_events(text: str, *, site: str, max_events: int) -> Batch:
    """Every line checked; the events when all pass. Refusals: 413 (more than ``max_events`` lines), 422 (every
    invalid line named, a line of another site among them). Another site's line is 422, not 403: the box
    quarantines the lines a 422 names and delivers the rest, while it retries a 403 for ever (its credentials
    are wrong) — so one old line written under a previous ``site.id`` would stop the box's delivery for good.
    The token's site itself is checked before the body (a header naming another site is 403). Blank lines
    are skipped (NDJSON allows it) but still counted, so line numbers are the body's."""
    lines = text.split("\n")
    count = sum(1 for line in lines if line.strip())
    if count > max_events:
        raise BatchRefused(413, f"{count} events: more than limits.max_events ({max_events}) in one batch")
    if count == 0:
        raise BatchRefused(422, "the batch holds no events")
    events: list[dict[str, Any]] = []
    invalid: list[Invalid] = []
    seen: dict[uuid.UUID, int] = {}
    prev: tuple[int, int] | None = None  # (seq, line) of the last line whose seq could be read
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
        except (ValueError, RecursionError) as exc:
            invalid.append(Invalid(n, _guess_seq(line), f"not JSON: {_clip(str(exc))}"))
            continue
        seq = _seq_of(obj)
        errors = _problems(obj, line)
        if isinstance(obj, dict) and isinstance(obj.get("site"), str) and obj["site"] != site:
            errors.append(f"site {_clip(obj['site'])!r} is not this token's site {site!r}")
        if seq is not None:
            if prev is not None and seq <= prev[0]:
                errors.append(f"seq {seq} does not follow seq {prev[0]} of line {prev[1]}: seqs rise within a batch")
            prev = (seq, n)
        if not errors:
            u = uuid.UUID(obj["id"])
            if u in seen:
                errors.append(f"id {obj['id']} repeats line {seen[u]}")
            seen[u] = n
        if errors:
            invalid.append(Invalid(n, seq, "; ".join(errors)))
        else:
            events.append(obj)
    if invalid:
        what = "line fails" if len(invalid) == 1 else "lines fail"
        raise BatchRefused(422, f"{len(invalid)} {what} validation; nothing of the batch was written", invalid)
    return Batch(events)


def read_batch(body: bytes, *, content_type: str | None, content_encoding: str | None, site: str,
               max_decompressed: int, max_events: int) -> Batch:
    """The whole request body check, in the order a client can fix things: media type, encoding, size,
    UTF-8, then the lines."""
    check_content_type(content_type)
    encoding = check_encoding(content_encoding)
    text = decode_body(body, encoding, max_decompressed)
    return parse_events(text, site=site, max_events=max_events)


@cache
def _fast_validator() -> Any:
    """The same schema compiled by jsonschema-rs (Rust): the yes/no on every line. Python's jsonschema spent
    about 70 % of a batch's checking time (docs/central-collector.md); it still words the errors of the
    rare line that fails, so the messages a box's admin reads come from one place."""
    return jsonschema_rs.Draft202012Validator(event_schema())


def _problems(obj: Any, line: str) -> list[str]:
    """What is wrong with one parsed line (empty: nothing)."""
    if not _fast_validator().is_valid(obj):
        validator = _validator()
        errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:  # the two engines agree on this schema; Python's word is final where they would not
            return [_message(e) for e in errors]
    out: list[str] = []
    u = uuid.UUID(obj["id"])
    if u.variant != uuid.RFC_4122 or u.version != 7:
        version = f"a UUIDv{u.version}" if u.variant == uuid.RFC_4122 else "not an RFC 9562 UUID"
        out.append(f"id {obj['id']} is {version}, not a UUIDv7 (its time prefix picks the month partition)")
    elif (u.int >> 80) >= _MAX_ID_MS:
        out.append(f"id {obj['id']}: its time prefix is past the year 9999")
    try:
        datetime.fromisoformat(obj["wall_time"].replace("Z", "+00:00"))
    except ValueError:
        out.append(f"wall_time {obj['wall_time']!r} is not a real time")
    if _UNSTORABLE_ESCAPE.search(line):  # rare: walk the strings only then (a pair of surrogates is fine)
        where = _unstorable(obj, "")
        if where:
            out.append(f"{where} holds \\u0000 or a lone surrogate, which PostgreSQL cannot store")
    return out


def _message(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "required":
        missing = re.findall(r"'([^']*)' is a required property", err.message)
        return f"{missing[0] if missing else err.message} is required"
    if err.validator == "additionalProperties":
        return "unknown field " + err.message.split("(", 1)[-1].rstrip(")").replace(" was unexpected", "")
    if not path:
        return f"the line is not a JSON object (got {type(err.instance).__name__})"
    if err.validator == "type":
        want = err.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{path}: expected {want}, got {_json_type(err.instance)} {_clip(json.dumps(err.instance))}"
    if err.validator == "pattern":
        what = {"id": "a UUID", "wall_time": "an ISO 8601 time like 2026-12-01T15:00:00.123456Z",
                "site": "a site id (letters, digits, . _ -)"}.get(path, f"of the form {err.validator_value}")
        return f"{path}: {_clip(json.dumps(err.instance))} is not {what}"
    return f"{path}: {_clip(err.message)}"


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(type(v), "value")


def _unstorable(v: Any, path: str) -> str | None:
    """The path of the first string (or key) PostgreSQL text/jsonb refuses: NUL, or a lone surrogate."""
    if isinstance(v, str):
        return (path or "the line") if _bad_text(v) else None
    if isinstance(v, dict):
        for k, x in v.items():
            sub = f"{path}.{k}" if path else str(k)
            if _bad_text(k):
                return sub
            found = _unstorable(x, sub)
            if found:
                return found
    elif isinstance(v, list):
        for i, x in enumerate(v):
            found = _unstorable(x, f"{path}[{i}]")
            if found:
                return found
    return None


def _bad_text(s: str) -> bool:
    if "\x00" in s:
        return True
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _seq_of(obj: Any) -> int | None:
    seq = obj.get("seq") if isinstance(obj, dict) else None
    return seq if type(seq) is int else None


def _guess_seq(line: str) -> int | None:
    """The seq of a line that is not JSON, when it can still be read: the box quarantines by seq."""
    m = _SEQ_GUESS.search(line)
    return int(m.group(1)) if m else None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{_clip(text)} is too large for a JSON number PostgreSQL can store")
    return v


def _clip(text: str, limit: int = _CLIP) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
