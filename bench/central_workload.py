"""A busy day of a site's events, made from the simulator's own output (bench/central.py's workload).

The sample flows are driven through their branches by ``ivr simulate`` (the real engine, recording in a
scratch ``simulate.db``); each recorded call is a template. A site's day is then those templates replayed at
Poisson arrival times with fresh ids and callers (some repeating, for FCR), plus what the PBX would add for
calls handed to a queue: Asterisk queue_log rows (ENTERQUEUE, then CONNECT + COMPLETECALLER or ABANDON) with
waits and talk times drawn from plausible distributions, and callback requests with their ``callback.kept``
records. The result is the event mix a box really sends, in the ``ivr events --json`` shape.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OPEN = "2026-12-01T10:00"
#: branches of the sample flows, as callers take them (inputs from tests/test_simulate.py)
SCENARIOS: list[tuple[str, list[str], int]] = [  # flow, inputs, weight
    ("main", ["1", "1234567#", "1", "1", "4", "10"], 5),
    ("main", ["silence", "silence", "silence"], 2),
    ("main", ["7", "silence", "8", "2"], 2),
    ("main", ["9", "0"], 6),
    ("main", ["hangup"], 3),
    ("main", [], 2),
    ("billing", ["123#", "555123#", "2", "5551234#", "1", "2"], 2),
    ("billing", ["0123456#", "hangup"], 1),
    ("billing", ["555", "1234567890", "1", "1"], 2),
    ("survey", ["9", "3", "silence", "silence"], 1),
]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def uuid7_at(t: datetime, rng: random.Random) -> str:
    """A UUIDv7 whose time is ``t`` (the box makes its ids at the event's wall time, so the center's monthly
    partitions by id are partitions by time)."""
    ms = int(t.timestamp() * 1000)
    rand = rng.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def record_templates(work: Path | None = None) -> list[tuple[list[dict[str, Any]], int]]:
    """Run every scenario through ``ivr simulate`` once; each call's events (relative times) and its weight."""
    work = Path(tempfile.mkdtemp(prefix="central-bench-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    config = work / "ivr.yaml"
    config.write_text(f"site:\n  id: template\n  timezone: America/New_York\nstate_dir: {work / 'var'}\n"
                      f"flows_dir: {REPO / 'flows'}\n")
    env = {**os.environ, "IVR_CONFIG": str(config), "PYTHONPATH": str(REPO)}
    calls: list[str] = []
    for flow, inputs, _ in SCENARIOS:
        args = [sys.executable, "-m", "ivr.cli", "simulate", flow, "--json"]
        if flow == "main":
            args += ["--at", OPEN]
        for i in inputs:
            args += ["-i", i]
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"ivr simulate {flow} {inputs} failed: {out.stderr.strip()[-400:]}")
        calls.append(json.loads(out.stdout)["call_id"])
    dump = subprocess.run([sys.executable, "-m", "ivr.cli", "events", "--simulated", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=True).stdout
    by_call: dict[str, list[dict[str, Any]]] = {}
    for line in dump.splitlines():
        e = json.loads(line)
        if e.get("call_id") in calls:
            by_call.setdefault(e["call_id"], []).append(e)
    out_templates = []
    for (_, _, weight), call_id in zip(SCENARIOS, calls, strict=True):
        evs = by_call[call_id]
        t0 = datetime.fromisoformat(evs[0]["wall_time"].replace("Z", "+00:00"))
        rel = [{"dt": (datetime.fromisoformat(e["wall_time"].replace("Z", "+00:00")) - t0).total_seconds(),
                "type": e["type"], "data": e["data"]} for e in evs]
        out_templates.append((rel, weight))
    return out_templates


class SiteDay:
    """One site's events for one day, in seq order (a generator: 10⁷ events never sit in memory at once)."""

    def __init__(self, site: str, day: datetime, calls: int, templates: list[tuple[list[dict[str, Any]], int]],
                 seed: int) -> None:
        self.site, self.day, self.calls, self.templates = site, day, calls, templates
        self.rng = random.Random(seed)
        self.boot_id = str(uuid.UUID(int=self.rng.getrandbits(128)))

    def events(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        weights = [w for _, w in self.templates]
        # arrivals: busier 9–17 local-ish, as a contact center's day is
        starts = sorted(self.day + timedelta(hours=rng.triangular(7, 20, 12), seconds=rng.random())
                        for _ in range(self.calls))
        callers = [f"+1212555{rng.randrange(10000):04d}" for _ in range(max(1, self.calls * 3 // 4))]
        pending: list[tuple[datetime, dict[str, Any]]] = []
        for start in starts:
            template, _ = rng.choices(self.templates, weights)[0]
            call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            caller = rng.choice(callers)
            for ev in template:
                data = dict(ev["data"])
                if ev["type"] == "call.started":
                    data["caller"] = caller
                    data["channel"] = "sip"
                pending.append((start + timedelta(seconds=ev["dt"]), {"call_id": call_id, "type": ev["type"],
                                                                      "data": data}))
            end = start + timedelta(seconds=template[-1]["dt"])
            outcome = template[-1]["data"].get("outcome")
            if outcome in ("queued", "transferred"):
                pending += self._queue(call_id, caller, end)
        pending.sort(key=lambda p: p[0])
        mono0 = rng.randrange(10**12)
        for seq, (at, ev) in enumerate(pending, start=1):
            yield {"seq": seq, "id": uuid7_at(at, rng), "site": self.site, "boot_id": self.boot_id,
                   "wall_time": _iso(at), "mono_ns": mono0 + int((at - self.day).total_seconds() * 1e9), **ev}

    def _queue(self, call_id: str, caller: str, at: datetime) -> list[tuple[datetime, dict[str, Any]]]:
        """What Asterisk's queue_log adds for a call handed to a queue (columns as app_queue writes them)."""
        rng = self.rng
        callid = f"{at.timestamp():.6f}"
        wait = rng.expovariate(1 / 40)
        rows: list[tuple[datetime, dict[str, Any]]] = []

        def row(t: datetime, event: str, agent: str, *data: str) -> None:
            r: dict[str, Any] = {"time": t.timestamp(), "callid": callid, "queuename": "support", "agent": agent,
                                 "event": event, "ivr_call_id": call_id}
            for i in range(5):
                r[f"data{i + 1}"] = data[i] if i < len(data) else ""
            rows.append((t, {"call_id": None, "type": "queue.log", "data": r}))

        row(at, "ENTERQUEUE", "NONE", "", caller, "1")
        if rng.random() < 0.12:  # abandoned in queue
            row(at + timedelta(seconds=wait), "ABANDON", "NONE", "1", "1", f"{int(wait)}")
        else:
            talk = rng.lognormvariate(5.0, 0.6)
            agent = f"PJSIP/agent{rng.randrange(40):02d}"
            row(at + timedelta(seconds=wait), "CONNECT", agent, f"{int(wait)}", "1700000000.1", "3")
            row(at + timedelta(seconds=wait + talk), "COMPLETECALLER", agent, f"{int(wait)}", f"{int(talk)}", "1")
        return rows
