"""A protocol-true stand-in for the central collector (docs/central.md, "The wire: box → center").

A real aiohttp HTTPS server on 127.0.0.1 (port 0) with trustme certificates. It checks what the real collector
checks — the bearer token, gzip NDJSON in the ``ivr events --json`` shape, the Idempotency-Key, the site —
stores events by id (so a resend is counted as duplicates, never stored twice), rejects events its
``invalid`` rule names with 422 and their lines, and can be told how to answer the next requests: a status
with headers, drop the connection after committing, a 2xx with a made-up ``acked_seq``. Nothing in it is the
box's code: it is written from the contract.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

FIELDS = ["seq", "id", "site", "boot_id", "wall_time", "mono_ns", "call_id", "type", "data"]
AS_SENT = object()
"""``Answer.acked``: the batch's last seq, as the real center answers."""
KEY = re.compile(r"^(?P<site>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<first>\d+)-(?P<last>\d+):(?P<hash>[0-9a-f]{16})$")


@dataclass
class Seen:
    """One request as the center received it."""

    headers: dict[str, str]
    seqs: list[int]
    status: int
    peer_cert: dict[str, Any] | None = None


@dataclass
class Answer:
    """How to answer one request: ``status`` (with ``body`` and ``headers``) before committing anything;
    ``drop``: commit, then cut the connection before the answer; ``acked``: commit, then answer 200 with this
    ``acked_seq`` instead of the batch's last (``...``: leave it out; None: JSON null)."""

    status: int | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    acked: Any = AS_SENT


class Center:
    def __init__(self, root: Path, *, token: str = "site-token-0123", require_client_cert: bool = False,
                 tls: bool = True) -> None:
        self.root = root
        self.tls = tls
        self.token = token
        self.ca = trustme.CA()
        self.ca_pem = root / "central-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.require_client_cert = require_client_cert
        self.events: dict[str, dict[str, Any]] = {}
        """Stored events by id, in the order first stored."""
        self.seen: list[Seen] = []
        self.script: deque[Answer] = deque()
        self.invalid: Callable[[dict[str, Any]], str | None] = lambda _e: None
        """The center's validation: a reason for an event it refuses, else None."""
        self.name_invalid = True
        """False: a 422 says only that the batch is invalid, naming no line (the contract allows it)."""
        self.max_events: int | None = None
        """A batch with more events is answered 413."""
        self.max_body: int | None = None
        """A batch with a longer (uncompressed) body is answered 413."""
        self._runner: web.AppRunner | None = None
        self.url = ""

    def client_files(self, name: str = "box.test-site") -> tuple[Path, Path]:
        """A client certificate and key the center's CA issued, for mutual TLS."""
        cert = self.ca.issue_cert(name)
        cert_path, key_path = self.root / f"{name}.crt", self.root / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        return cert_path, key_path

    async def start(self) -> str:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(ctx)
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/events", self._post)
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # check the gzip ourselves
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx if self.tls else None)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what a test reads --
    def stored(self) -> list[dict[str, Any]]:
        return list(self.events.values())

    def stored_seqs(self) -> list[int]:
        return [e["seq"] for e in self.events.values()]

    # -- the endpoint --
    async def _post(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(dict(request.headers), [], 0, request.transport.get_extra_info("peercert")
                    if request.transport else None)
        self.seen.append(seen)
        response = await self._answer(request, seen)
        seen.status = response.status
        return response

    async def _answer(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unknown token"}, status=401)
        if request.headers.get("Content-Type") != "application/x-ndjson" \
                or request.headers.get("Content-Encoding") != "gzip":
            return web.json_response({"error": "gzip NDJSON only"}, status=415)
        body = gzip.decompress(await request.read())
        key = KEY.match(request.headers.get("Idempotency-Key", ""))
        site = request.headers.get("X-IVR-Site", "")
        if not key or key["site"] != site or key["hash"] != hashlib.sha256(body).hexdigest()[:16] \
                or not request.headers.get("X-IVR-Head-Seq", "").isdigit():
            return web.json_response({"error": "bad Idempotency-Key, X-IVR-Site or X-IVR-Head-Seq"}, status=400)
        events, invalid = [], []
        for n, line in enumerate(body.decode().splitlines(), 1):
            try:
                event = json.loads(line)
            except ValueError:
                invalid.append({"line": n, "error": "not JSON"})
                continue
            if not isinstance(event, dict) or list(event) != FIELDS:
                invalid.append({"line": n, "error": "not an event"})
                continue
            why = self.invalid(event) or ("another site's event" if event["site"] != site else None)
            if why:
                invalid.append({"line": n, "seq": event["seq"], "error": why})
            events.append(event)
        seen.seqs = [e["seq"] for e in events]
        if events and (seen.seqs != sorted(seen.seqs) or (seen.seqs[0], seen.seqs[-1]) != (int(key["first"]),
                                                                                          int(key["last"]))):
            return web.json_response({"error": "seqs out of order or not as the key says"}, status=400)
        if (self.max_events is not None and len(events) > self.max_events) \
                or (self.max_body is not None and len(body) > self.max_body):
            return web.json_response({"error": "batch too large"}, status=413)
        answer = self.script.popleft() if self.script else Answer()
        if answer.status is not None:
            return web.json_response(answer.body or {}, status=answer.status, headers=answer.headers)
        if invalid:
            named = {"invalid": invalid} if self.name_invalid else {}
            return web.json_response({"error": f"{len(invalid)} invalid events", **named}, status=422)
        inserted = duplicates = 0
        for event in events:  # one transaction per batch, all or nothing: nothing above has written
            if event["id"] in self.events:
                duplicates += 1
            else:
                self.events[event["id"]] = event
                inserted += 1
        if answer.drop:
            assert request.transport is not None
            request.transport.abort()  # committed, but the box never reads the answer
            return web.Response(status=200)
        ack = {"acked_seq": events[-1]["seq"] if events else 0, "inserted": inserted, "duplicates": duplicates}
        if answer.acked is ...:
            del ack["acked_seq"]
        elif answer.acked is not AS_SENT:
            ack["acked_seq"] = answer.acked
        return web.json_response(ack)
