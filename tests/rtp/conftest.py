"""Fixtures for the media engine tests: a started engine on free loopback ports, and a peer socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ivr.rtp.session import MediaEngine
from tests.rtp.udp_peer import Peer, free_port_range, open_peer


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    base = free_port_range(16)
    eng = MediaEngine("127.0.0.1", base, base + 15)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = await open_peer()
    try:
        yield p
    finally:
        p.close()
