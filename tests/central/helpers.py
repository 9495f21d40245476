"""The box's side of the wire for the center's tests: events in the shape of ``ivr events --json``, batches as
the relay posts them (gzip NDJSON, the headers of docs/central-collector.md)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from typing import Any

import uuid6

from ivr.store.eventlog import utc_now_text

BOOT = "0b7c3c1e-8f1e-4c52-9d61-1f0a6c3c2f11"


def events(site: str, first: int, n: int, *, call_every: int = 5) -> list[dict[str, Any]]:
    """``n`` events of ``site`` from seq ``first``: calls of ``call_every`` events each."""
    out = []
    for seq in range(first, first + n):
        call = f"{site}-call-{seq // call_every}"
        kind = "call.started" if seq % call_every == 0 else "call.node"
        out.append({"seq": seq, "id": str(uuid6.uuid7()), "site": site, "boot_id": BOOT, "wall_time": utc_now_text(),
                    "mono_ns": 1_000_000 * seq, "call_id": call, "type": kind,
                    "data": {"node": f"n{seq % 7}", "flow": "main", "caller": "+15555550100", "note": "ça va"}})
    return out


def ndjson(evs: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in evs)


def headers(site: str, token: str, evs: list[dict[str, Any]], body: bytes, *, head_seq: int | None = None,
            encoding: str = "gzip") -> dict[str, str]:
    first, last = (evs[0]["seq"], evs[-1]["seq"]) if evs else (0, 0)
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson",
         "Idempotency-Key": f"{site}:{first}-{last}:{hashlib.sha256(body).hexdigest()[:16]}",
         "X-IVR-Site": site, "User-Agent": "edge-ivr/test"}
    if encoding != "identity":
        h["Content-Encoding"] = encoding
    if head_seq is not None:
        h["X-IVR-Head-Seq"] = str(head_seq)
    return h


def gz(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=6, mtime=0)


def bomb(size: int) -> bytes:
    """A small gzip body (about a thousandth of ``size``) that inflates to ``size`` bytes of blank lines."""
    return gzip.compress(b"\n" * size, compresslevel=9, mtime=0)


def random_token() -> str:
    return os.urandom(16).hex()
