"""KPI facts derived from each batch at ingest (issue 14 item 3), in the batch's transaction.

Being built: see docs/central.md. ``derive`` is called by ivr_central.store.insert_batch with the events of
the batch that were new."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg


async def derive(conn: asyncpg.Connection, site_id: str, events: Sequence[dict[str, Any]]) -> None:
    """Update the typed fact tables for what ``events`` touched."""
    return None
