"""Contact-center KPIs as pure functions (issue 13, item 2); formulas and variants in docs/kpi.md.

- ``formulas``: the arithmetic over counts and durations, one definition shared with the central store;
- ``facts``: events → ``CallFacts`` / ``QueueVisit`` / ``CallbackRequestFacts`` (the only part that reads
  event fields);
- ``measures``: each KPI over facts, a ``Kpi`` with its variant and sample size;
- ``buckets``: hours and days of the site's zone, DST-correct;
- ``report``: ``build(...)`` → ``KpiReport``, what ``ivr kpi`` prints.

No I/O, no clock, no asyncio: "now", the period, the zone and the region are always passed in.
"""
