"""Data look-ups for ``http`` nodes: one shared aiohttp session, a circuit breaker per host, bounded retries.

The engine hands a ``LookupRequest`` (templates filled in) to ``fetch`` and gets a ``LookupResult`` back; no
aiohttp type leaves this module and no back end's fault is raised: a timeout, a refused connection, an error
status or an answer that is not JSON is an outcome the flow routes on (``on_timeout``, ``failure``).

- **Back ends** (``lookups:`` in the box config, ivr.config.LookupConfig): base URL, the secret headers, the
  timeout, retries and breaker settings. Flows name them; the secrets never appear in a flow, an event or a log
  line (nor does a filled-in URL, which may hold an account number: events carry the template).
- **Timeout**: one deadline for the whole look-up, retries included (default 2 s: a caller is waiting).
- **Retries**: idempotent methods only (GET, HEAD, PUT, DELETE), after a refused or dropped connection or a
  502/503/504, within the deadline; never after a timeout (that would cost the caller a second one).
- **Circuit breaker** per host (host:port): ``breaker_failures`` consecutive failures open it; while open every
  look-up to that host fails at once (``circuit_open``) so a dead back end costs one timeout, not one per
  caller. After ``breaker_cool_down`` seconds one look-up is let through as a probe (half-open): success closes
  the circuit, failure opens it for another cool-down; callers meanwhile fail fast.

``FixtureLookups`` answers from a file instead (``ivr simulate --http-fixture FILE``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ivr.adapters.central import user_agent
from ivr.config import LookupConfig
from ivr.engine.call import LookupOutcome, LookupRequest, LookupResult
from ivr.metrics.buckets import Buckets

__all__ = ["ANSWER_LIMIT", "IDEMPOTENT", "LATENCY_BOUNDS", "Breaker", "FixtureError", "FixtureLookups",
           "HttpLookups"]

log = logging.getLogger("ivr.lookup")

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
"""Methods retried after a refused connection or 502/503/504 (RFC 9110 section 9.2.2)."""
RETRY_STATUSES = frozenset({502, 503, 504})
ANSWER_LIMIT = 1 << 20
"""Bytes of an answer read at most: an account's record is far smaller; a broken back end cannot make the box
buffer more."""
DEFAULT_TIMEOUT = 2.0
LATENCY_BOUNDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Look-up latency, seconds: past a second a caller notices the silence (the comfort prompt's default)."""
OUTCOMES: tuple[LookupOutcome, ...] = ("ok", "http_error", "timeout", "unreachable", "circuit_open",
                                       "bad_response", "not_configured")


@dataclass
class Breaker:
    """One host's circuit: closed (look-ups go), open (they fail at once), half-open (one probe goes)."""

    failures_to_open: int
    cool_down: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.probing or self.clock() - self.opened_at >= self.cool_down else "open"

    def allow(self) -> bool:
        """May a look-up go now? In half-open only the first asker goes (the probe)."""
        if self.opened_at is None:
            return True
        if self.probing or self.clock() - self.opened_at < self.cool_down:
            return False
        self.probing = True
        return True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self) -> bool:
        """Count a failure; True when this one opened (or re-opened) the circuit."""
        self.failures += 1
        if self.probing or (self.opened_at is None and self.failures >= self.failures_to_open):
            self.opened_at, self.probing = self.clock(), False
            return True
        return False

    def released(self) -> None:
        """A probe that ended without saying anything of the host (cancelled): let the next asker probe."""
        self.probing = False


@dataclass
class LookupStats:
    """What /metrics shows (ivr.metrics.exporter): latency, outcomes per back end, circuits open."""

    latency: Buckets = field(default_factory=lambda: Buckets(LATENCY_BOUNDS))
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)


class HttpLookups:
    """The box's look-up service: one aiohttp session for every call and back end (keep-alive, a bounded pool)."""

    def __init__(self, backends: Mapping[str, LookupConfig], *, clock: Callable[[], float] = time.monotonic,
                 agent: str | None = None) -> None:
        self.backends = dict(backends)
        self.clock = clock
        self.agent = agent or user_agent()
        self.breakers: dict[str, Breaker] = {}
        self.stats = LookupStats()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env=False: a proxy in the environment must not see the secrets; limit: a burst of callers
            # queues for connections instead of opening hundreds to one back end
            self._session = aiohttp.ClientSession(trust_env=False, headers={"User-Agent": self.agent},
                                                  connector=aiohttp.TCPConnector(limit=64, limit_per_host=16))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def open_circuits(self) -> list[str]:
        return sorted(h for h, b in self.breakers.items() if b.state != "closed")

    def _breaker(self, host: str, backend: LookupConfig | None) -> Breaker:
        b = self.breakers.get(host)
        if b is None:
            b = self.breakers[host] = Breaker(backend.breaker_failures if backend else 1,
                                              backend.breaker_cool_down if backend else 30.0, self.clock)
        return b

    async def fetch(self, request: LookupRequest) -> LookupResult:
        started = time.monotonic()
        result = await self._fetch(request)
        seconds = time.monotonic() - started
        result = LookupResult(result.outcome, result.status, result.body, result.detail, result.attempts, seconds,
                              result.host)
        if result.outcome not in ("not_configured", "circuit_open"):
            self.stats.latency.observe(seconds)
        self.stats.outcomes[(request.lookup or "", result.outcome)] += 1
        log.info("look-up %s %s host=%s outcome=%s status=%s attempts=%d ms=%d", request.lookup or "-",
                 request.method, result.host, result.outcome, result.status, result.attempts, seconds * 1000)
        return result

    async def _fetch(self, request: LookupRequest) -> LookupResult:
        backend = self.backends.get(request.lookup) if request.lookup else None
        if request.lookup and backend is None:
            known = ", ".join(sorted(self.backends)) or "none"
            return LookupResult("not_configured", detail=f"no back end '{request.lookup}' in the config's "
                                f"lookups: (back ends: {known})")
        url = request.url
        if backend is not None and not url.startswith(("http://", "https://")):
            url = backend.url.rstrip("/") + "/" + url.lstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return LookupResult("not_configured", detail="the URL is not http(s)://host/...")
        host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        breaker = self._breaker(host, backend)
        if not breaker.allow():
            return LookupResult("circuit_open", detail=f"{host} failed recently; next try in at most "
                                f"{breaker.cool_down:g} s", host=host)
        timeout = request.timeout or (backend.timeout if backend else DEFAULT_TIMEOUT)
        retries = (backend.retries if backend else 1) if request.method in IDEMPOTENT else 0
        headers = {"Accept": "application/json", **(backend.headers if backend else {})}
        result: LookupResult | None = None
        try:
            result = await self._attempts(request, url, host, headers, timeout, retries)
        finally:
            if result is None:  # cancelled (the caller hung up): nothing learnt of the host
                breaker.released()
            elif result.outcome in ("timeout", "unreachable") or (result.status or 0) >= 500:
                if breaker.failed():
                    log.warning("circuit open host=%s after %s (look-ups fail at once for %g s)", host,
                                result.outcome, breaker.cool_down)
            else:
                breaker.succeeded()  # the host answered: it is alive
        return result

    async def _attempts(self, request: LookupRequest, url: str, host: str, headers: dict[str, str],
                        timeout: float, retries: int) -> LookupResult:
        deadline = time.monotonic() + timeout
        attempts = 0
        last = LookupResult("unreachable", host=host)
        while attempts <= retries:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            attempts += 1
            try:
                async with asyncio.timeout(left):
                    async with self._client().request(
                            request.method, url, headers=headers,
                            json=request.body if request.body is not None else None) as resp:
                        raw = await resp.content.read(ANSWER_LIMIT + 1)
                        status = resp.status
            except TimeoutError:
                return LookupResult("timeout", detail=f"no answer in {timeout:g} s", attempts=attempts, host=host)
            except aiohttp.ClientError as exc:
                last = LookupResult("unreachable", detail=_why(exc), attempts=attempts, host=host)
                continue
            if status in RETRY_STATUSES and attempts <= retries:
                last = LookupResult("http_error", status, detail=f"HTTP {status}", attempts=attempts, host=host)
                continue
            if not 200 <= status < 300:
                return LookupResult("http_error", status, detail=f"HTTP {status}", attempts=attempts, host=host)
            if len(raw) > ANSWER_LIMIT:
                return LookupResult("bad_response", status, detail=f"answer over {ANSWER_LIMIT} bytes",
                                    attempts=attempts, host=host)
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                return LookupResult("bad_response", status, detail="the answer is not JSON", attempts=attempts,
                                    host=host)
            return LookupResult("ok", status, body, attempts=attempts, host=host)
        if attempts and last.outcome == "unreachable" and deadline - time.monotonic() <= 0:
            return LookupResult("timeout", detail=f"no answer in {timeout:g} s", attempts=attempts, host=host)
        return last


def _why(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return type(exc).__name__


# -- the simulator's stand-in -----------------------------------------------------------------------------


class FixtureError(ValueError):
    """A fixture file that cannot be used; the message says where."""


@dataclass(frozen=True)
class _Fixture:
    method: str
    url: str  # a glob over the filled-in URL as the flow wrote it (relative to its back end)
    lookup: str | None
    status: int
    body: Any
    outcome: LookupOutcome | None  # timeout, unreachable: no answer at all


class FixtureLookups:
    """Answers look-ups from a file (``ivr simulate --http-fixture FILE``), JSON or YAML: a list of

    ``{method: GET, url: "/accounts/123456", lookup: accounts, status: 200, json: {...}}``; ``url`` may use
    ``*`` (any run of characters), ``method`` and ``lookup`` are optional; ``outcome: timeout`` or
    ``unreachable`` stands for a back end that does not answer. The first entry that matches answers; a look-up
    no entry matches fails as ``not_configured`` (the narration says which request it was)."""

    def __init__(self, entries: list[_Fixture]) -> None:
        self.entries = entries
        self.seen: list[LookupRequest] = []

    @classmethod
    def from_file(cls, path: Path) -> FixtureLookups:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FixtureError(f"{path}: {exc.strerror}") from None
        try:
            from ruamel.yaml import YAML

            doc = YAML(typ="safe").load(text)
        except Exception as exc:  # ruamel's errors have no common base worth naming
            raise FixtureError(f"{path}: not YAML or JSON: {exc}") from None
        if isinstance(doc, dict):
            doc = doc.get("responses", [doc])
        if not isinstance(doc, list):
            raise FixtureError(f"{path}: expected a list of responses ({{url: ..., status: 200, json: {{...}}}})")
        entries = []
        for i, e in enumerate(doc):
            if not isinstance(e, dict) or "url" not in e:
                raise FixtureError(f"{path}: response {i + 1} needs url:")
            outcome = e.get("outcome")
            if outcome not in (None, "timeout", "unreachable"):
                raise FixtureError(f"{path}: response {i + 1}: outcome is timeout or unreachable")
            entries.append(_Fixture(str(e.get("method", "*")).upper(), str(e["url"]),
                                    str(e["lookup"]) if "lookup" in e else None, int(e.get("status", 200)),
                                    e.get("json"), outcome))
        return cls(entries)

    async def fetch(self, request: LookupRequest) -> LookupResult:
        self.seen.append(request)
        for e in self.entries:
            if e.method not in ("*", request.method) or (e.lookup and e.lookup != request.lookup):
                continue
            if not fnmatch.fnmatchcase(request.url, e.url):
                continue
            host = f"fixture:{request.lookup or urlsplit(request.url).netloc}"
            if e.outcome is not None:
                return LookupResult(e.outcome, detail=f"fixture: {e.outcome}", attempts=1, host=host)
            if not 200 <= e.status < 300:
                return LookupResult("http_error", e.status, detail=f"HTTP {e.status} (fixture)", attempts=1,
                                    host=host)
            return LookupResult("ok", e.status, e.body, attempts=1, host=host)
        return LookupResult("not_configured", detail=f"no fixture answers {request.method} {request.url}")
