"""Fixtures for the AMI tests: a test AMI peer on 127.0.0.1 and an adapter with short, test-sized limits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from ivr.adapters.ami import AmiAdapter
from ivr.adapters.ami_link import AmiSettings
from tests.ami.peer import AmiPeer


async def until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> None:
    """Poll ``pred`` with a bound (aiortc's sleepWhile): fail the test, never hang it."""
    for _ in range(int(timeout / step)):
        if pred():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition not reached in time")


def settings_for(peer: AmiPeer, **over: object) -> AmiSettings:
    base: dict[str, object] = dict(
        host="127.0.0.1",
        port=peer.port,
        username="ivr",
        secret="s3cret",
        auth="md5",
        ping_interval=30.0,
        action_timeout=2.0,
        reconnect_min=0.01,
        reconnect_max=0.05,
    )
    base.update(over)
    return AmiSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def peer() -> AsyncIterator[AmiPeer]:
    p = AmiPeer()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def ami(peer: AmiPeer) -> AsyncIterator[AmiAdapter]:
    adapter = AmiAdapter(settings_for(peer), rng=random.Random(7))
    await adapter.start()
    try:
        await adapter.wait_connected(5)
        yield adapter
    finally:
        await adapter.close()
