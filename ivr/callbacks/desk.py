"""The seam between the flow engine's queue node and virtual hold.

The engine asks a ``CallbackDesk`` for a wait estimate and an offer decision, checks a number, and files a
request (committed before it returns, so "confirmed" is never said before the request is durable). The
daemon builds one ``Desk`` over the callback store, the site's policy and a ``QueueWaits`` source (AMI queue
state where the PBX is Asterisk, else config and the appliance's own records); the simulator builds one over
a scratch store.
"""

from __future__ import annotations

from typing import Protocol

from ivr.callbacks.ewt import EwtEstimate


class QueueWaits(Protocol):
    """Where a queue's estimated wait comes from (ivr/callbacks/queuestate.py)."""

    def estimate(self, queue: str) -> EwtEstimate:
        """The wait a caller joining ``queue`` now would have; ``EwtEstimate.unknown(...)`` when it cannot say."""
        ...

    def free_agents(self, queue: str) -> int | None:
        """Agents free to take a call now, or None when not known (the dialer paces by this)."""
        ...
