"""The collector's HTTP side (aiohttp): ``POST /v1/events``, ``/healthz``, ``/readyz``, ``/metrics``.

One batch, in the order a box can act on: who it is (401/403, before the body is read), whether it fits
(415, 413), a slot among ``limits.max_concurrent_batches`` (else 503), the body read with its bounds and
checked line by line (ivr_central.validate, on a small thread pool so the loop keeps answering), then one
transaction (ivr_central.store.insert_batch). The 200 names the batch's highest seq only after the commit.
A refused batch writes nothing but a ``rejects`` row.

PostgreSQL down is an answer, not a crash: 503 with Retry-After, one WARNING line when it goes (then at most
one a minute), one INFO line when it is back; asyncpg's pool opens fresh connections by itself, so ingest
resumes without a restart. SIGTERM closes the listener, lets the batches in flight commit (up to
``shutdown_seconds``) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import asyncpg
from aiohttp import ClientError, http_exceptions, web

from ivr_central import db, sites
from ivr_central.config import CentralConfig, TlsConfig, format_address
from ivr_central.dashboard import add_dashboard
from ivr_central.dashboard_data import Targets
from ivr_central.metrics import CentralMetrics
from ivr_central.store import Stored, insert_batch
from ivr_central.validate import BatchRefused, check_content_type, check_encoding, read_batch

log = logging.getLogger("ivr_central.server")

RETRY_AFTER_DOWN = 5
"""Seconds a box is asked to wait when PostgreSQL is unreachable (it adds its own jittered back-off)."""
RETRY_AFTER_BUSY = 2
"""Seconds a box is asked to wait when every batch slot is taken."""
DOWN_LOG_SECONDS = 60.0
MAINTENANCE_SECONDS = 6 * 3600.0
"""How often the coming months' partitions are checked once the schema is ready."""
RETRY_SECONDS = 5.0
"""How often the start-up work (migrate, partitions) is retried while PostgreSQL is unreachable."""
VALIDATE_THREADS = 2

T = TypeVar("T")


class StartError(Exception):
    """The collector cannot start; the message is the one line ``ivr-central serve`` prints before exit 1."""


class BodyCut(Exception):  # noqa: N818 - the client's doing, answered (if anyone listens) with 400
    """The body stopped before its end: the box went away or its network did. Not a refusal of its data."""


class Unavailable(Exception):  # noqa: N818 - a state of the world, answered with 503
    def __init__(self, reason: str, retry_after: int = RETRY_AFTER_DOWN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def is_unavailable(exc: BaseException) -> bool:
    """PostgreSQL cannot be used right now (retry later), as opposed to a bug: no connection (OSError, which
    covers timeouts), a connection closed under us, or SQLSTATE classes 08 (connection), 53 (resources), 57
    (shut down / starting), 40001/40P01 (serialization, deadlock)."""
    if isinstance(exc, OSError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in ("08", "53", "57") or state in ("40001", "40P01")
    return False


def _conn_died(exc: BaseException) -> bool:
    """The connection we held went away (PostgreSQL restarted): worth one more try on a fresh one."""
    if isinstance(exc, asyncpg.InterfaceError | ConnectionError):
        return True
    return isinstance(exc, asyncpg.PostgresError) and str(getattr(exc, "sqlstate", "")) in ("57P01", "57P02")


def _no_partition(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and "no partition" in str(exc)


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"


class Availability:
    """PostgreSQL as the last use found it. One WARNING when it goes down, then at most one per
    ``every`` seconds with the count (a fleet of boxes retrying must not flood the log with tracebacks), one
    INFO when it is back."""

    def __init__(self, metrics: CentralMetrics, every: float = DOWN_LOG_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.every = every
        self.clock = clock
        self.up = True
        self.failures = 0
        self.since = 0.0
        self.last_log = 0.0

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        if self.up:
            self.since, self.failures = now, 0
        self.failures += 1
        if self.up or now - self.last_log >= self.every:
            log.warning("PostgreSQL unavailable: %s (answering 503 with Retry-After; %d failure%s in %.0f s)",
                        describe(exc), self.failures, "s" if self.failures != 1 else "", now - self.since)
            self.last_log = now
        self.up = False
        self.metrics.database_up.set(0)

    def succeeded(self) -> None:
        if not self.up:
            log.info("PostgreSQL reachable again after %.0f s (%d failures)", self.clock() - self.since,
                     self.failures)
        self.up = True
        self.metrics.database_up.set(1)


def months_around(today: date) -> set[date]:
    """The partitions to have ready: last month (late boxes), this one and the next two."""
    this = db.month_of(today)
    prev = date(this.year - (this.month == 1), (this.month - 2) % 12 + 1, 1)
    nxt = db.next_month(this)
    return {prev, this, nxt, db.next_month(nxt)}


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.2+ with the certificate chain; with ``client_ca`` a client certificate it signed is required in
    the handshake (CERT_REQUIRED: no certificate, or another CA's, and the handshake fails)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.client_ca is not None:
            ctx.load_verify_locations(cafile=str(tls.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as exc:
        raise StartError(f"tls: cannot load {tls.cert} / {tls.key}"
                         + (f" / {tls.client_ca}" if tls.client_ca else "") + f": {describe(exc)}") from None
    return ctx


class Collector:
    """What the handlers share: config, the pool, metrics, the months known to have partitions."""

    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        self.metrics = CentralMetrics()
        self.db = Availability(self.metrics)
        self.pool: asyncpg.Pool | None = None
        self.ready = False
        """The schema is migrated and this month's partitions exist: ingest may start."""
        self.schema_version = max((v for v, _, _ in db.migrations()), default=0)
        self.known_months: set[date] = set()
        self.in_flight = 0
        self.slots = asyncio.Semaphore(config.limits.max_concurrent_batches)
        self.executor = ThreadPoolExecutor(VALIDATE_THREADS, thread_name_prefix="ivr-central-validate")

    async def open_pool(self) -> None:
        """A pool that connects lazily (min_size 0), so the collector starts, and /readyz says why, while
        PostgreSQL is down."""
        if not self.config.dsn:
            raise StartError("no database: set database: in the config or $IVR_CENTRAL_DSN")
        p = self.config.pool
        try:
            self.pool = await asyncpg.create_pool(self.config.dsn, min_size=0, max_size=p.size,
                                                  timeout=p.connect_timeout, command_timeout=60,
                                                  max_inactive_connection_lifetime=120)
        except (ValueError, asyncpg.InterfaceError) as exc:  # a DSN asyncpg cannot read
            raise StartError(f"database: {describe(exc)}") from None

    async def use(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection; PostgreSQL unreachable or the pool exhausted → Unavailable.
        A connection that died under us (PostgreSQL restarted) is given one more try on a fresh one: every
        ``work`` here is idempotent (a batch twice adds nothing the second time)."""
        assert self.pool is not None
        for attempt in (1, 2):
            try:
                async with self.pool.acquire(timeout=self.config.pool.acquire_timeout) as conn:
                    result = await work(conn)
            except Exception as exc:
                if attempt == 1 and (_conn_died(exc) or _no_partition(exc)):
                    if _no_partition(exc):  # a month was dropped or detached under us: look again
                        self.known_months.clear()
                    continue
                if is_unavailable(exc):
                    self.db.failed(exc)
                    raise Unavailable(f"the database is unavailable ({type(exc).__name__})") from exc
                raise
            self.db.succeeded()
            return result
        raise AssertionError("unreachable")

    async def maintain(self) -> None:
        """Migrate at start (forward-only, under an advisory lock: several collectors may start at once),
        then keep the coming months' partitions made ahead, so ingest almost never runs DDL itself."""
        while True:
            try:
                await self.use(self._maintain_once)
                self.ready = True
                wait = MAINTENANCE_SECONDS
            except Unavailable:
                wait = RETRY_SECONDS
            except Exception:
                log.exception("start-up work on the database failed")
                wait = RETRY_SECONDS * 6
            await asyncio.sleep(wait)

    async def _maintain_once(self, conn: asyncpg.Connection) -> None:
        if not self.ready:
            version = await db.migrate(conn)
            log.info("database schema at version %d", version)
        months = months_around(datetime.now(UTC).date())
        self.known_months |= await db.ensure_partitions(conn, months)

    async def store(self, site: str, events: list[dict[str, Any]], head_seq: int | None) -> Stored:
        return await self.use(functools.partial(insert_batch, site_id=site, events=events, head_seq=head_seq,
                                                known_months=self.known_months))

    async def record_reject(self, site: str, key: str | None, refusal: BatchRefused) -> None:
        """Best effort: a reject that cannot be recorded (PostgreSQL down) is still answered and counted."""
        with contextlib.suppress(Unavailable):
            await self.use(functools.partial(sites.record_reject, site_id=site, idempotency_key=key,
                                             status=refusal.status, error=refusal.summary()))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


COLLECTOR = web.AppKey("collector", Collector)


def _json(status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(doc, separators=(",", ":")),
                        content_type="application/json", headers=headers)


def _unavailable(c: Collector, exc: Unavailable) -> web.Response:
    c.metrics.batches.labels("unavailable").inc()
    return _json(503, {"error": exc.reason}, {"Retry-After": str(exc.retry_after)})


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body as sent, refusing (413) once it passes ``limit`` (before it all arrives, when it says)."""
    if request.content_length is not None and request.content_length > limit:
        raise BatchRefused(413, f"the body is {request.content_length} bytes: more than limits.max_body_bytes "
                                f"({limit})")
    buf = bytearray()
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            buf += chunk
            if len(buf) > limit:
                raise BatchRefused(413, f"the body is more than limits.max_body_bytes ({limit})")
    except (ClientError, OSError, http_exceptions.HttpProcessingError, asyncio.IncompleteReadError) as exc:
        raise BodyCut(describe(exc)) from None
    return bytes(buf)


def _head_seq(value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    v = value.strip()
    if not v.isdigit() or len(v) > 18:
        raise BatchRefused(400, f"X-IVR-Head-Seq must be a non-negative integer (got {v[:40]!r})")
    return int(v)


async def ingest(request: web.Request) -> web.Response:
    """POST /v1/events: one batch, committed whole or refused whole (docs/central-collector.md)."""
    c = request.app[COLLECTOR]
    started = time.perf_counter()
    token = sites.bearer(request.headers.get("Authorization"))
    if token is None:
        c.metrics.batches.labels("unauthorized").inc()
        return _json(401, {"error": "missing bearer token"}, {"WWW-Authenticate": "Bearer"})
    if not c.ready:
        return _unavailable(c, Unavailable("the database is not reachable or not migrated yet"))
    claimed = request.headers.get("X-IVR-Site")
    try:
        auth = await c.use(functools.partial(sites.authenticate, token=token, claimed=claimed))
    except Unavailable as exc:
        return _unavailable(c, exc)
    if auth.status == 401:
        c.metrics.batches.labels("unauthorized").inc()
        return _json(401, {"error": auth.error}, {"WWW-Authenticate": "Bearer"})
    assert auth.site is not None
    site = auth.site
    key = request.headers.get("Idempotency-Key")
    c.metrics.in_flight.inc()
    c.in_flight += 1
    try:
        if auth.status == 403:
            raise BatchRefused(403, auth.error)
        head_seq = _head_seq(request.headers.get("X-IVR-Head-Seq"))
        check_content_type(request.headers.get("Content-Type"))
        encoding = check_encoding(request.headers.get("Content-Encoding"))
        try:
            await asyncio.wait_for(c.slots.acquire(), c.config.limits.queue_seconds)
        except TimeoutError:
            return _unavailable(c, Unavailable("busy: every batch slot is taken", RETRY_AFTER_BUSY))
        try:
            lim = c.config.limits
            body = await _read_body(request, lim.max_body_bytes)
            batch = await asyncio.get_running_loop().run_in_executor(c.executor, functools.partial(
                read_batch, body, content_type="application/x-ndjson", content_encoding=encoding, site=site,
                max_decompressed=lim.max_decompressed_bytes, max_events=lim.max_events))
            if head_seq is not None:
                head_seq = max(head_seq, batch.last_seq)
            stored = await c.store(site, batch.events, head_seq)
        finally:
            c.slots.release()
    except BatchRefused as refusal:
        return await _refuse(c, site, key, refusal)
    except Unavailable as exc:
        return _unavailable(c, exc)
    except BodyCut as exc:
        log.info("batch %s from site %s: the body stopped short (%s)", key or "-", site, exc)
        c.metrics.batches.labels("incomplete").inc()
        return _json(400, {"error": "the body ended before its end"})
    except Exception:
        log.exception("batch %s from site %s failed", key or "-", site)
        c.metrics.batches.labels("error").inc()
        return _json(500, {"error": "internal error; the batch was not written"})
    finally:
        c.metrics.in_flight.dec()
        c.in_flight -= 1
    c.metrics.batches.labels("ok" if stored.inserted else "duplicate_only").inc()
    c.metrics.events_inserted.inc(stored.inserted)
    c.metrics.duplicates.inc(stored.duplicates)
    c.metrics.batch_seconds.observe(time.perf_counter() - started)
    return _json(200, {"acked_seq": stored.acked_seq, "inserted": stored.inserted, "duplicates": stored.duplicates})


async def _refuse(c: Collector, site: str, key: str | None, refusal: BatchRefused) -> web.Response:
    result = {403: "forbidden", 413: "too_large"}.get(refusal.status, "rejected")
    c.metrics.batches.labels(result).inc()
    c.metrics.rejects.labels(str(refusal.status)).inc()
    c.metrics.rejected_lines.inc(len(refusal.invalid))
    log.info("batch %s from site %s refused (%d): %s", key or "-", site, refusal.status, refusal.summary(300))
    await c.record_reject(site, key, refusal)
    headers = {"Connection": "close"} if refusal.status == 413 else None  # don't read the rest of a huge body
    return _json(refusal.status, refusal.as_json(), headers)


async def healthz(request: web.Request) -> web.Response:
    """The process answers (liveness): no database look-up, so a PostgreSQL outage does not get it killed."""
    return _json(200, {"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """PostgreSQL reachable and migrated to this collector's schema: 200, else 503 saying why."""
    c = request.app[COLLECTOR]
    if c.pool is None:
        return _json(503, {"ready": False, "error": "no database pool"})
    try:
        version = await c.use(_schema_version)
    except Unavailable as exc:
        return _json(503, {"ready": False, "error": exc.reason}, {"Retry-After": str(exc.retry_after)})
    except asyncpg.UndefinedTableError:
        return _json(503, {"ready": False, "error": "the database is not migrated (ivr-central migrate)"})
    if version < c.schema_version or not c.ready:
        return _json(503, {"ready": False, "schema": version,
                           "error": f"schema at version {version}, this collector needs {c.schema_version}"})
    return _json(200, {"ready": True, "schema": version})


async def _schema_version(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def metrics(request: web.Request) -> web.Response:
    """Counters kept in memory; per-site delivery read from site_state now (left out if PostgreSQL is down)."""
    c = request.app[COLLECTOR]
    rows: list[sites.Delivery] = []
    if c.ready:
        with contextlib.suppress(Unavailable, asyncpg.PostgresError):
            rows = await c.use(sites.deliveries)
    c.metrics.sites.update(rows)
    body, content_type = c.metrics.render(request.headers.get("Accept", ""))
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


def make_app(c: Collector, *, ingest_routes: bool = True, metrics_route: bool = True) -> web.Application:
    app = web.Application()
    app[COLLECTOR] = c
    if ingest_routes:
        app.router.add_post("/v1/events", ingest)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if metrics_route:
        app.router.add_get("/metrics", metrics)
    d = c.config.dashboard
    if d.enabled and ingest_routes:
        add_dashboard(app, get_pool=lambda request: request.config_dict[COLLECTOR].pool,
                      viewer_tokens={v.name: v.token_sha256 for v in d.viewers},
                      trusted_proxy_header=d.trusted_proxy_header, trusted_proxies=d.trusted_proxies,
                      session_secret=d.session_secret_file.read_bytes().strip() if d.session_secret_file else None,
                      targets=Targets(service_level=d.target_service_level, asa_s=d.target_asa_s))
    return app


class CentralService:
    """The collector running: ``start()`` binds (StartError with one line when it cannot), ``stop()`` drains
    and closes. ``addresses``: what it listens on (port 0 becomes a real one)."""

    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        self.collector = Collector(config)
        self._runners: list[web.AppRunner] = []
        self._maintenance: asyncio.Task[None] | None = None
        self.addresses: list[str] = []

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.addresses[0]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.addresses[1]}" if len(self.addresses) > 1 else self.url

    async def start(self) -> None:
        cfg = self.config
        ctx = server_ssl_context(cfg.tls) if cfg.tls else None
        await self.collector.open_pool()
        separate = cfg.metrics.enabled and cfg.metrics.listen is not None
        main = make_app(self.collector, metrics_route=cfg.metrics.enabled and not separate)
        try:
            self.addresses.append(await self._bind(main, cfg.host, cfg.port, ctx))
            if separate and cfg.metrics.listen is not None:
                side = make_app(self.collector, ingest_routes=False)
                self.addresses.append(await self._bind(side, *cfg.metrics.listen, None))
        except StartError:
            await self.stop()
            raise
        self._maintenance = asyncio.create_task(self.collector.maintain(), name="ivr-central-maintenance")
        log.info("ivr-central listening on %s (%s)%s", self.url,
                 "mTLS" if cfg.tls and cfg.tls.client_ca else "TLS" if cfg.tls else "plain HTTP on loopback",
                 f"; metrics on {self.metrics_url}/metrics" if separate else "")

    async def _bind(self, app: web.Application, host: str, port: int, ctx: ssl.SSLContext | None) -> str:
        runner = web.AppRunner(app, handle_signals=False, auto_decompress=False,
                               access_log=log if self.config.access_log else None,
                               shutdown_timeout=self.config.shutdown_seconds)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, ssl_context=ctx)
        try:
            await site.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartError(f"cannot listen on {format_address(host, port)}: {reason}") from None
        bound = runner.addresses[-1]
        return format_address(str(bound[0]), int(bound[1]))

    async def stop(self) -> None:
        """Stop accepting, let the batches in flight finish (up to ``shutdown_seconds``), close the pool."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None
        if self.collector.pool is not None:
            try:
                await asyncio.wait_for(self.collector.pool.close(), 10)
            except TimeoutError:
                self.collector.pool.terminate()
        self.collector.close()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the start-up work has run (tests and the bench: ingest before it answers 503)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.collector.ready:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the collector's database work did not finish")
            await asyncio.sleep(0.05)


async def serve(config: CentralConfig) -> int:
    """``ivr-central serve``: run until SIGTERM or SIGINT, then drain and exit 0; 1 when it cannot start."""
    import signal

    from ivr.adapters.systemd import Notifier

    notify = Notifier.from_environment()  # systemd/ivr-central.service is Type=notify with a watchdog
    service = CentralService(config)
    try:
        await service.start()
    except StartError as exc:
        log.error("%s", exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notify.ready(f"collecting on {', '.join(service.addresses)}")
    keeper = asyncio.create_task(notify.keep_alive(stop), name="watchdog")
    await stop.wait()
    notify.stopping(f"stopping: {service.collector.in_flight} batches in flight")
    log.info("stopping: no new batches; %d in flight may take up to %.0f s", service.collector.in_flight,
             config.shutdown_seconds)
    await service.stop()
    await keeper
    log.info("stopped")
    return 0
