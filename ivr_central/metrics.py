"""The collector's Prometheus metrics (docs/central-collector.md lists them), on a CollectorRegistry of its own.

Counters and the latency histogram are kept by the ingest path as batches finish; the per-site gauges are
read from ``site_state`` when scraped (one row per site, one query), so they are PostgreSQL's truth and cost
nothing between scrapes. Site ids are the only open-ended label, and sites are registered by hand.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ivr_central.sites import Delivery

RESULTS = ("ok", "duplicate_only", "rejected", "unauthorized", "forbidden", "too_large", "unavailable", "incomplete",
           "error")
"""A batch's result: committed with new events, committed with only events already stored, refused as invalid
(400/415/422), no valid token (401), another site's (403), over a limit (413), PostgreSQL unreachable or the
collector busy (503), a body cut short by the client or its network, a bug (500)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SiteDeliveryCollector(Collector):
    """Per-site gauges from the last ``site_state`` read (``update`` before each scrape)."""

    def __init__(self) -> None:
        self.rows: list[Delivery] = []

    def update(self, rows: list[Delivery]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        acked = GaugeMetricFamily("ivr_central_site_acked_seq", "Highest seq of the site's committed batches.",
                                  labels=["site"])
        lag = GaugeMetricFamily("ivr_central_site_lag_events",
                                "Events the box held that are not acknowledged (its X-IVR-Head-Seq minus acked "
                                "seq), as of its last batch.", labels=["site"])
        event_age = GaugeMetricFamily("ivr_central_site_last_event_age_seconds",
                                      "Seconds since the wall time of the newest event received from the site.",
                                      labels=["site"])
        batch_age = GaugeMetricFamily("ivr_central_site_last_batch_age_seconds",
                                      "Seconds since the site's last committed batch.", labels=["site"])
        for r in self.rows:
            acked.add_metric([r.site_id], r.acked_seq)
            if r.lag is not None:
                lag.add_metric([r.site_id], r.lag)
            if r.event_age is not None:
                event_age.add_metric([r.site_id], r.event_age)
            if r.batch_age is not None:
                batch_age.add_metric([r.site_id], r.batch_age)
        yield from (acked, lag, event_age, batch_age)


class CentralMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.batches = Counter("ivr_central_batches", "Batches answered, by result.", ["result"], registry=r)
        for result in RESULTS:
            self.batches.labels(result)
        self.events_inserted = Counter("ivr_central_events_inserted", "Events written (new to the center).",
                                       registry=r)
        self.duplicates = Counter("ivr_central_duplicates_dropped",
                                  "Events received again (a resent batch) and not written twice.", registry=r)
        self.rejects = Counter("ivr_central_rejects", "Batches refused and recorded in rejects, by HTTP status.",
                               ["status"], registry=r)
        self.rejected_lines = Counter("ivr_central_rejected_lines", "Lines named as invalid in refused batches.",
                                      registry=r)
        self.batch_seconds = Histogram("ivr_central_batch_seconds",
                                       "Time from a batch's request to its committed answer.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("ivr_central_batches_in_flight", "Batches being read, checked or written.",
                               registry=r)
        self.database_up = Gauge("ivr_central_database_up",
                                 "1 when the last PostgreSQL use succeeded and the schema is migrated.", registry=r)
        self.sites = SiteDeliveryCollector()
        r.register(self.sites)
        ProcessCollector(registry=r)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) in the format the scraper asked for."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
