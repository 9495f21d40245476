"""Fixtures for the sync tests: the HTTPS stand-in of the center, a real event log, a relay between them."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ivr.config import CentralConfig
from ivr.store.eventlog import EventLog
from ivr.sync.relay import Relay, open_relay
from tests.ami.conftest import until
from tests.sync.center import Center

__all__ = ["Box", "Waits", "central_for", "until"]


class Waits:
    """The relay's ``sleep``: records each wait it chose (what the tests assert on) and returns at once."""

    def __init__(self) -> None:
        self.chosen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.chosen.append(seconds)
        await asyncio.sleep(0.01)


def central_for(center: Center, **over: Any) -> CentralConfig:
    base = CentralConfig(url=center.url, token=center.token, ca_file=center.ca_pem, timeout=5.0, interval=0.2)
    return dataclasses.replace(base, **over)


@dataclass
class Box:
    """A box's event log in a temporary state dir, and relays over it."""

    root: Path
    log: EventLog
    relays: list[Relay]

    @property
    def db(self) -> Path:
        return self.root / "ivr.db"

    async def write(self, n: int, type: str = "test.event", **data: Any) -> list[int]:
        return [await self.log.append(type, None, n=i, **data) for i in range(n)]

    async def relay(self, settings: CentralConfig, *, waits: Waits | None = None, seed: int = 7) -> Relay:
        relay = await open_relay(settings, self.log, db_path=self.db, lock_path=self.root / "sync.lock",
                                 rng=random.Random(seed), sleep=waits)
        self.relays.append(relay)
        return relay

    async def run(self, relay: Relay, done: Callable[[], bool], timeout: float = 20) -> None:
        """``relay.run()`` (the daemon's loop) until ``done()``, bounded."""
        task = asyncio.create_task(relay.run())
        try:
            await until(done, timeout=timeout)
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)


@pytest.fixture
async def center(tmp_path: Path) -> AsyncIterator[Center]:
    c = Center(tmp_path)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    root = tmp_path / "box"
    log = await EventLog.open(root / "ivr.db", "test-site", "UTC")
    b = Box(root, log, [])
    try:
        yield b
    finally:
        for relay in b.relays:
            await relay.close()
        await log.close()
