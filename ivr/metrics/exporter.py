"""The daemon's Prometheus endpoint: ``GET /metrics`` on ``metrics.listen`` (docs/metrics.md lists every metric).

Served on the daemon's own asyncio loop, not prometheus_client's server thread: everything measured lives on
that loop (the calls, the SIP registrations, the AMI link, the dialer, the media tick's histogram) and is read
there with no lock and no torn reads; a scrape costs about a millisecond of the loop every scrape interval,
and a loop too stalled to answer is itself what the scrape should find out (Prometheus' ``up`` drops to 0).

Most values are read when scraped, from the same objects ``ivr status`` reads (a custom collector on a
CollectorRegistry of our own, never the process-global one). What the daemon does not keep is read from the
event log at scrape time on a read-only connection of its own (committed rows only): the callback queue by
state, and the calls and dialer attempts that ended since the daemon started (``call.ended``,
``callback.attempt.ended``, read incrementally by ``seq`` — the dialer itself is not touched). Histograms are
``ivr.metrics.buckets.Buckets`` kept by the code that measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ivr.config import MetricsConfig
from ivr.metrics import MetricsListenError
from ivr.metrics.buckets import LOOP_LAG_BOUNDS, Buckets
from ivr.store.callbacks import ACTIVE, ATTEMPT_OUTCOMES
from ivr.store.eventlog import parse_utc_text
from ivr.store.outbox import Outbox, Position

log = logging.getLogger("ivr.metrics")

OUTCOMES = ("hangup", "caller_hangup", "transferred", "queued", "callback", "failed", "error", "max_length",
            "shutdown", "interrupted")
# (rtp_timeout, session_expired, no_ack, transfer_failed appear when they happen)
"""Call outcomes shown at 0 before the first one (ivr.engine.context.Outcome); others appear when they happen."""
CHANNELS = ("sip", "simulator")
LOOP_PROBE_SECONDS = 0.25
"""How often the loop monitor wakes to measure how late the loop runs it."""
REGISTRATION_STATES = ("idle", "registering", "registered", "retrying", "unregistering", "unregistered")


@dataclass
class _EventTail:
    """Counters kept from the event log: what ended after ``seq`` (the log's end when the daemon started)."""

    seq: int = 0
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)


@dataclass
class _Outbox:
    """The outbox to the center as last read: its position, the oldest unsent event's wall time, the last
    acknowledgement (any process's: ``ivr sync --once`` too)."""

    position: Position | None = None
    oldest_unsent: float | None = None
    last_success: float | None = None


@dataclass
class _Queue:
    """The callback queue as last read: requests by (non-terminal) state, the oldest one's arrival."""

    by_state: dict[str, int] = field(default_factory=dict)
    oldest_arrival: float | None = None


def _hist(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    cumulative = buckets.cumulative()
    return HistogramMetricFamily(name, doc, buckets=[("+Inf" if b == float("inf") else repr(b), n)
                                                      for b, n in cumulative],
                                 sum_value=buckets.sum)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class DaemonCollector(Collector):
    """The daemon's state as Prometheus metrics. ``refresh()`` (async, before each scrape) reads the event log;
    ``collect()`` (sync, on the loop) reads everything else live."""

    def __init__(self, daemon: Any, db_path: Path) -> None:
        self.daemon = daemon
        self.db_path = db_path
        self.loop_lag = Buckets(LOOP_LAG_BOUNDS)
        self._tail = _EventTail(seq=_log_end(db_path))
        self._queue = _Queue()
        self._outbox = _Outbox()
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # -- the event log, read before each scrape --
    async def refresh(self) -> None:
        if self.daemon.events is None:  # still starting: nothing committed by us to read yet
            return
        async with self._lock:
            if self._db is None:
                self._db = await aiosqlite.connect(f"file:{self.db_path}?mode=ro", uri=True)
                await self._db.execute("PRAGMA busy_timeout=2000")
            await self._read_ended(self._db)
            if self.daemon.dialer is not None:
                await self._read_queue(self._db)
            if self.daemon.relay is not None:
                await self._read_outbox(self._db)

    async def _read_ended(self, db: aiosqlite.Connection) -> None:
        """Calls and dialer attempts ended since the last scrape (seq is gap-free in commit order, and this
        connection sees committed rows only, so nothing is counted twice or skipped)."""
        async with db.execute(
            "SELECT e.seq, e.type, coalesce(c.channel, ''), json_extract(e.data, '$.outcome') FROM events e"
            " LEFT JOIN calls c ON e.type = 'call.ended' AND c.call_id = e.call_id"
            " WHERE e.type IN ('call.ended', 'callback.attempt.ended') AND e.seq > ? ORDER BY e.seq",
            (self._tail.seq,)) as cur:
            rows = await cur.fetchall()
        for seq, type_, channel, outcome in rows:
            if type_ == "call.ended":
                self._tail.calls[(str(channel), str(outcome))] += 1
            else:
                self._tail.attempts[str(outcome)] += 1
            self._tail.seq = max(self._tail.seq, int(seq))

    async def _read_queue(self, db: aiosqlite.Connection) -> None:
        async with db.execute(
            "SELECT state, count(*), min(arrival_at) FROM callback_requests"
            " WHERE state NOT IN ('done', 'expired', 'cancelled') GROUP BY state") as cur:
            rows = await cur.fetchall()
        arrivals = [parse_utc_text(str(a)).timestamp() for _, _, a in rows if a]
        self._queue = _Queue({str(s): int(n) for s, n, _ in rows}, min(arrivals) if arrivals else None)

    async def _read_outbox(self, db: aiosqlite.Connection) -> None:
        outbox = Outbox(self.daemon.events, db)
        pos = await outbox.position()
        oldest = await outbox.oldest_unsent(pos.acked_seq)
        last = await outbox.last_success()
        self._outbox = _Outbox(pos, parse_utc_text(oldest[1]).timestamp() if oldest else None,
                               parse_utc_text(last).timestamp() if last else None)

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                await self._db.close()
                self._db = None

    # -- everything else, live --
    def collect(self) -> Iterable[Metric]:
        d = self.daemon
        info = GaugeMetricFamily("ivr_info", "This box: its site id and the flow version in force (always 1).",
                                 labels=["site", "flows_version"])
        info.add_metric([d.config.site_id, d.flows.version if d.flows else ""], 1)
        yield info
        yield _gauge("ivr_calls_active", "Calls in progress (ivr status: calls_in_progress).", len(d.calls))
        ended = CounterMetricFamily("ivr_calls_ended", "Calls ended since the daemon started, by channel and "
                                    "outcome (committed call.ended events).", labels=["channel", "outcome"])
        calls = Counter({(c, o): 0 for c in CHANNELS for o in OUTCOMES})
        calls.update(self._tail.calls)
        for (channel, outcome), n in sorted(calls.items()):
            ended.add_metric([channel, outcome], n)
        yield ended
        reloads = CounterMetricFamily("ivr_flow_reloads", "Flow reloads since start, by result.", labels=["result"])
        reloads.add_metric(["loaded"], d.reloads)
        reloads.add_metric(["rejected"], d.rejected_reloads)
        yield reloads
        yield from self._sip()
        if d.ami is not None:
            yield _gauge("ivr_ami_up", "1 while the AMI link to Asterisk is logged in, else 0 (ivr status: ami).",
                         1 if d.ami.connected else 0)
        yield from self._callbacks()
        yield from self._sync()
        yield from self._speech()
        yield from self._lookups()
        yield from self._media()
        yield _hist("ivr_event_loop_lag_seconds", "How late the event loop ran a timer due every "
                    f"{LOOP_PROBE_SECONDS:g} s (what every call's RTP and SIP waits for).", self.loop_lag)
        if d.events is not None:
            yield _hist("ivr_event_log_commit_seconds", "Each group commit of the event log, BEGIN to COMMIT "
                        "with its fsync; every promise waits for one.", d.events.commit_seconds)
            waits = CounterMetricFamily("ivr_event_log_post_waits", "Navigation events that had to wait for the "
                                        "disk: the oldest unsaved one was older than "
                                        "calls.navigation_unsaved_seconds.")
            waits.add_metric([], d.events.post_waits)
            yield waits

    def _sip(self) -> Iterator[Metric]:
        tel = self.daemon.telephony
        if tel is None:
            return
        now = asyncio.get_running_loop().time()
        registered = GaugeMetricFamily("ivr_sip_registered", "1 while the registrar holds this account's binding, "
                                       "else 0.", labels=["aor"])
        state = GaugeMetricFamily("ivr_sip_registration_state", "The account's registration state: 1 for the "
                                  "current one (ivr status: registrations).", labels=["aor", "state"])
        for s in tel.endpoint.registrations():
            registered.add_metric([s.aor], 1 if s.registered(now) else 0)
            for name in REGISTRATION_STATES:
                state.add_metric([s.aor, name], 1 if s.state.value == name else 0)
        yield registered
        yield state

    def _callbacks(self) -> Iterator[Metric]:
        dialer = self.daemon.dialer
        if dialer is None:
            return
        q = self._queue
        depth = GaugeMetricFamily("ivr_callback_requests", "Callback requests not finished (not done, expired or "
                                  "cancelled), by state.", labels=["state"])
        for s in ACTIVE:
            depth.add_metric([s], q.by_state.get(s, 0))
        yield depth
        age = 0.0 if q.oldest_arrival is None else max(0.0, time.time() - q.oldest_arrival)
        yield _gauge("ivr_callback_oldest_request_age_seconds", "Since the original arrival of the oldest callback "
                     "request not finished; 0 when there is none.", age)
        attempts = CounterMetricFamily("ivr_callback_attempts", "Dialer attempts ended since the daemon started, "
                                       "by result (committed callback.attempt.ended events).", labels=["result"])
        counts = Counter(dict.fromkeys(ATTEMPT_OUTCOMES, 0))
        counts.update(self._tail.attempts)
        for result, n in sorted(counts.items()):
            attempts.add_metric([result], n)
        yield attempts
        st = dialer.status()
        yield _gauge("ivr_callback_attempts_active", "Callback attempts in flight now (ivr status: "
                     "callbacks.active).", st["active"])
        yield _gauge("ivr_callback_dialer_paused", "1 while the dialer dials nothing (the PBX link down or its queue "
                     "figures stale; ivr status: callbacks.paused), else 0.", 1 if st["paused"] else 0)

    def _sync(self) -> Iterator[Metric]:
        """The outbox and the relay to the center (docs/central.md); only with ``central.url``: without a center
        there is no outbox, and a 0 backlog would claim that everything was sent."""
        relay = self.daemon.relay
        if relay is None:
            return
        ob = self._outbox
        pos = ob.position
        yield _gauge("ivr_outbox_events", "Events not yet delivered to the center (after the cursor, not "
                     "quarantined).", pos.backlog if pos else 0)
        age = 0.0 if ob.oldest_unsent is None else max(0.0, time.time() - ob.oldest_unsent)
        yield _gauge("ivr_outbox_oldest_unsent_age_seconds", "Since the oldest undelivered event was written; 0 "
                     "when caught up.", age)
        yield _gauge("ivr_sync_acked_seq", "The outbox cursor: the center acknowledged every event up to this seq "
                     "(or a sync.gap skipped it).", pos.acked_seq if pos else 0)
        batches = CounterMetricFamily("ivr_sync_batches", "Batches posted to the center since the daemon started, "
                                      "by result.", labels=["result"])
        for result, n in sorted(relay.batches.items()):
            batches.add_metric([result], n)
        yield batches
        yield CounterMetricFamily("ivr_sync_events_sent", "Events in batches the center acknowledged since the "
                                  "daemon started.", value=relay.events_sent)
        yield CounterMetricFamily("ivr_sync_quarantined_events", "Events the center refused as invalid, kept out of "
                                  "every later batch (ivr sync status lists them).", value=relay.quarantined_total)
        yield CounterMetricFamily("ivr_sync_gap_events", "Unsent events skipped because the outbox outgrew "
                                  "central.outbox.max_events or max_age (each skip is a sync.gap event).",
                                  value=relay.skipped_total)
        yield _gauge("ivr_sync_last_success_timestamp_seconds", "When the center last acknowledged a batch (Unix "
                     "time); 0 if never.", ob.last_success or 0.0)

    def _speech(self) -> Iterator[Metric]:
        sp = self.daemon.speech
        if sp is None:
            return
        yield _gauge("ivr_speech_turns_active", "Listening turns decoding now.", sp.active_turns)
        yield CounterMetricFamily("ivr_speech_turns", "Listening turns opened since start.", value=sp.turns_opened)
        yield CounterMetricFamily("ivr_speech_turns_refused", "Listening turns refused (every stream busy, or "
                                  "nothing the model can hear): the caller had keys only.", value=sp.turns_refused)
        yield CounterMetricFamily("ivr_speech_frames_dropped", "20 ms frames dropped because decoding was behind.",
                                  value=sp.frames_dropped)
        yield _hist("ivr_speech_recognition_latency_seconds", "End of speech to the recogniser's final result.",
                    sp.latency)

    def _lookups(self) -> Iterator[Metric]:
        """Data look-ups of http nodes (ivr.adapters.lookup), once the config names a back end."""
        lk = getattr(self.daemon, "lookups", None)
        if lk is None or not lk.backends:
            return
        done = CounterMetricFamily("ivr_lookups", "Data look-ups since start, by back end and outcome (ok, "
                                   "http_error, timeout, unreachable, circuit_open, bad_response, not_configured).",
                                   labels=["lookup", "outcome"])
        counts = Counter({(name, "ok"): 0 for name in lk.backends})
        counts.update(lk.stats.outcomes)
        for (name, outcome), n in sorted(counts.items()):
            done.add_metric([name, outcome], n)
        yield done
        yield _gauge("ivr_lookup_circuits_open", "Hosts whose circuit breaker is open or probing: their look-ups "
                     "fail at once.", len(lk.open_circuits()))
        yield _hist("ivr_lookup_seconds", "Each data look-up that was sent, retries included, as the caller waited "
                    "it.", lk.stats.latency)

    def _media(self) -> Iterator[Metric]:
        tel = self.daemon.telephony
        if tel is None:
            return
        media = tel.media
        stats = media.stats
        yield _gauge("ivr_rtp_sessions", "RTP sessions open (one per call leg with media).", stats["sessions"])
        yield CounterMetricFamily("ivr_rtp_packets_sent", "RTP packets sent since start.",
                                  value=stats["packets_sent"])
        yield CounterMetricFamily("ivr_rtp_ticks_skipped", "Media phase ticks skipped because the loop was more "
                                  "than 60 ms late (their frames were not sent).", value=stats["ticks_skipped"])
        yield _hist("ivr_rtp_send_lateness_seconds", "How late each 5 ms phase of the shared 20 ms media tick "
                    "ran, i.e. how late its calls' RTP packets left.", media.lateness)
        if "worker_restarts" in stats:
            yield CounterMetricFamily("ivr_rtp_worker_restarts", "Times a media worker process died and a new "
                                      "one was started (its calls lost their media).", value=stats["worker_restarts"])


def _log_end(db_path: Path) -> int:
    """The event log's last seq now (0 for a new or unmigrated one): counters start from here."""
    if not db_path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as db:
            row = db.execute("SELECT max(seq) FROM events").fetchone()
    except sqlite3.Error:  # no events table yet: nothing to skip
        return 0
    return int(row[0] or 0) if row else 0


class MetricsServer:
    """``GET /metrics`` over HTTP/1.1 on the daemon's loop (one request per connection), plus the loop
    monitor task."""

    def __init__(self, collector: DaemonCollector) -> None:
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # CPU, memory, open fds, start time: read from /proc at scrape
        self._server: asyncio.Server | None = None
        self._monitor: asyncio.Task[None] | None = None
        self.address = ""

    async def start(self, config: MetricsConfig) -> None:
        try:
            self._server = await asyncio.start_server(self._client, config.host, config.port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # uvloop's own text repeats the address
            raise MetricsListenError(f"metrics: cannot listen on {config.address}: {reason} "
                                     "(set metrics.listen, or metrics: {enabled: false})") from None
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._monitor = asyncio.create_task(self._watch_loop(), name="metrics-loop-monitor")
        log.info("metrics on http://%s/metrics", self.address)

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.wait({self._monitor}, timeout=2)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        await self.collector.close()

    async def _watch_loop(self) -> None:
        """Event-loop lag: how much later than asked a sleep comes back."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + LOOP_PROBE_SECONDS
            await asyncio.sleep(LOOP_PROBE_SECONDS)
            self.collector.loop_lag.observe(max(0.0, loop.time() - asked))

    async def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) in the format the scraper accepts (Prometheus' text format unless it asks for
        OpenMetrics): the event log read first, then every metric, on this loop."""
        await self.collector.refresh()
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            request, *fields = head.decode("latin-1").split("\r\n")
            method, target, *_ = request.split(" ")
            path = target.split("?", 1)[0]
            headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
            if method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
            elif path == "/metrics":
                body, ctype = await self.scrape(headers.get("accept", ""))
                status = "200 OK"
            elif path == "/":
                status, ctype, body = "200 OK", "text/plain", b"edge-ivr: metrics at /metrics\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found; metrics at /metrics\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
            pass  # a client that went away or sent no HTTP: nothing to answer
        except Exception:  # a bug in a collector: logged, the daemon serves on
            log.exception("metrics scrape failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def start_metrics(daemon: Any) -> MetricsServer:
    """Bind the endpoint (MetricsListenError when the address is taken or not ours) and start the loop
    monitor. Called before the event log opens, so counters count from the log's end at start-up."""
    server = MetricsServer(DaemonCollector(daemon, daemon.config.db_path))
    await server.start(daemon.config.metrics)
    return server
