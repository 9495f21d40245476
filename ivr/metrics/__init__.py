"""Metrics for the site's monitoring (docs/metrics.md).

``buckets``: a cumulative histogram with no dependencies, kept by the code that measures (the media tick,
the event log's commit, the recogniser) at the cost of a bisect and two additions per observation.
``exporter``: the Prometheus endpoint, which reads those and the daemon's live state when scraped.
"""


class MetricsListenError(Exception):
    """The endpoint's address cannot be bound; the message is the one line ``ivr run`` prints before exiting."""
