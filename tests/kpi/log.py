"""Small event logs written out by hand for the KPI tests: events shaped as ``ivr events --json`` prints them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def t(text: str) -> datetime:
    """``2026-03-08T06:30`` (UTC) as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Log:
    """Appends events in seq order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, at: datetime, call_id: str | None, type_: str, /, **data: Any) -> None:
        self.events.append({"seq": len(self.events) + 1, "wall_time": iso(at), "call_id": call_id, "type": type_,
                            "data": data})

    def call(self, call_id: str, start: datetime, seconds: float | None, outcome: str | None, *,
             caller: str = "+12125550100", flow: str = "main", path: tuple[str, ...] = ("greet",),
             detail: str = "", channel: str = "sip", between: tuple[tuple[float, str, dict[str, Any]], ...] = (),
             started: dict[str, Any] | None = None) -> None:
        """A call: call.started, node.entered for each node of ``path`` (one second apart), ``between``
        events (seconds after the start, type, data), then call.ended after ``seconds`` (None: still running)."""
        self.add(start, call_id, "call.started", channel=channel, caller=caller, dialed="+15550100", flow=flow,
                 flow_version="v1", **(started or {}))
        timed = [(float(i + 1) / 10, "node.entered", {"node": n, "kind": "play"}) for i, n in enumerate(path)]
        for dt, type_, data in sorted([*timed, *between], key=lambda x: x[0]):
            self.add(start + timedelta(seconds=dt), call_id, type_, **data)
        if seconds is not None:
            self.add(start + timedelta(seconds=seconds), call_id, "call.ended", outcome=outcome,
                     detail=detail or (path[-1] if path else ""), path=list(path))


def q(at: datetime, callid: str, queue: str, event: str, *data: str, agent: str = "NONE",
      ivr_call_id: str | None = None) -> dict[str, Any]:
    """A queue.log row as the daemon stores it (data1..data5; data5 keeps the rest, ``|`` and all)."""
    row: dict[str, Any] = {"time": at.timestamp(), "callid": callid, "queuename": queue, "agent": agent,
                           "event": event}
    for i in range(4):
        row[f"data{i + 1}"] = data[i] if i < len(data) else ""
    row["data5"] = "|".join(data[4:])
    if ivr_call_id:
        row["ivr_call_id"] = ivr_call_id
    return row
