"""Delivering the site's event log to the central collector (issue 14, item 1; docs/central.md).

- ``wire``: the box → center contract without I/O: batches, their key and headers, what an answer means,
  Retry-After, the jittered back-off, the outbox bounds;
- ``relay``: the asyncio loop that reads the outbox (``ivr.store.outbox``), posts through the HTTP adapter
  (``ivr.adapters.central``) and records what the center acknowledged or refused.

The event log is the outbox and ``seq`` its cursor: there is no second copy of an event to lose.
"""
