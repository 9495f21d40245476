"""Two RTP sessions joined: what one party says is played to the other, and their keys are relayed.

Used when the appliance connects a caller to an agent itself (the transfer fallback when REFER is refused).
Audio goes through each session's own jitter buffer and decoder (``on_audio``: 20 ms of 16-bit PCM per
tick) and is re-encoded in the other session's law, so a µ-law caller can talk to an A-law agent. The
frames reach the other session through one never-ending prompt fed from a short queue (oldest dropped):
no task per frame, and the shared 20 ms media tick paces both directions. Keys (RFC 4733 or in-band,
reported at their end) are handed to ``send_digit`` callbacks, which relay them as SIP INFO.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, overload

from ivr.proto.g711 import alaw_encode, ulaw_encode

__all__ = ["AudioRelay", "BridgedMedia", "LiveFeed", "MediaBridge", "Relay"]

log = logging.getLogger(__name__)

FRAME_BYTES = 160
#: Frames waiting for the other side's tick; beyond it the oldest go (a late loop must not grow delay).
QUEUE_FRAMES = 5


class BridgedMedia(Protocol):
    """What the bridge needs of an RTP session (ivr.rtp.session.RtpSession)."""

    on_dtmf: Callable[[str, str, str], None] | None
    on_audio: Callable[[bytes], None] | None

    @property
    def law(self) -> str: ...

    async def play(self, frames: Sequence[bytes]) -> None: ...


class LiveFeed(Sequence[bytes]):
    """A prompt with no end: each read takes the next queued frame, or silence when none is queued.

    RtpSession.play reads ``frames[index]`` once per tick and finishes when ``index == len(frames)``;
    this sequence always claims one frame more than it has served, until ``close`` — then the prompt ends
    after one more frame. Iterating it (play's length check) yields nothing: frames are checked in ``push``.
    """

    def __init__(self, silence: bytes, maxlen: int = QUEUE_FRAMES) -> None:
        self._silence = silence
        self._queue: deque[bytes] = deque(maxlen=maxlen)
        self._served = 0
        self._closed = False
        self.dropped = 0
        self.relayed = 0

    def push(self, frame: bytes) -> None:
        if len(frame) != FRAME_BYTES:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(frame)

    def close(self) -> None:
        self._closed = True

    def __len__(self) -> int:
        return self._served if self._closed and self._served else self._served + 1

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return []
        self._served = index + 1
        if self._queue:
            self.relayed += 1
            return self._queue.popleft()
        return self._silence

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


def _encoder(law: str) -> Callable[[bytes], bytes]:
    return alaw_encode if law == "alaw" else ulaw_encode


class AudioRelay:
    """What each of two sessions in this process hears is played to the other, re-encoded for its law, from
    ``start`` until ``stop`` (their previous ``on_audio`` listeners are put back then). The media worker runs
    this for sessions it holds (ivr.rtp.worker: a bridge's audio never crosses to the daemon)."""

    def __init__(self, a: BridgedMedia, b: BridgedMedia) -> None:
        self.a = a
        self.b = b
        self.to_a = LiveFeed(_encoder(a.law)(bytes(2 * FRAME_BYTES)))
        self.to_b = LiveFeed(_encoder(b.law)(bytes(2 * FRAME_BYTES)))
        self._saved: list[Callable[[bytes], None] | None] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._saved = [self.a.on_audio, self.b.on_audio]
        encode_for_a, encode_for_b = _encoder(self.a.law), _encoder(self.b.law)
        self.a.on_audio = lambda pcm: self.to_b.push(encode_for_b(pcm))
        self.b.on_audio = lambda pcm: self.to_a.push(encode_for_a(pcm))
        self._tasks = [asyncio.create_task(self._feed(self.a, self.to_a), name="bridge-to-a"),
                       asyncio.create_task(self._feed(self.b, self.to_b), name="bridge-to-b")]

    @staticmethod
    async def _feed(session: BridgedMedia, feed: LiveFeed) -> None:
        try:
            await session.play(feed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the session closed under us: the bridge is ending anyway
            log.debug("bridge feed ended: %s", exc)

    async def stop(self) -> None:
        self.to_a.close()
        self.to_b.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        self._tasks = []
        if self._saved:
            self.a.on_audio, self.b.on_audio = self._saved
            self._saved = []

    @property
    def stats(self) -> dict[str, int]:
        return {"to_a": self.to_a.relayed, "to_b": self.to_b.relayed, "dropped": self.to_a.dropped + self.to_b.dropped}


class Relay(Protocol):
    """A running audio relay: :class:`AudioRelay`, or the media worker's (ivr.rtp.remote)."""

    async def stop(self) -> None: ...

    @property
    def stats(self) -> dict[str, int]: ...


class MediaBridge:
    """Relays audio and keys between sessions ``a`` and ``b`` from ``start`` until ``stop``.

    The sessions' previous ``on_dtmf`` listeners are put back on ``stop``. The audio goes through an
    :class:`AudioRelay` here, or stays in the media worker when the sessions are its (their ``relay_audio``).
    """

    def __init__(self, a: BridgedMedia, b: BridgedMedia, *, digit_to_a: Callable[[str], None],
                 digit_to_b: Callable[[str], None]) -> None:
        self.a = a
        self.b = b
        self.digit_to_a = digit_to_a
        self.digit_to_b = digit_to_b
        self.digits_a_to_b: list[str] = []
        self.digits_b_to_a: list[str] = []
        self._saved: list[Callable[[str, str, str], None] | None] = []
        self._audio: Relay | None = None
        self._audio_stats: dict[str, int] = {"to_a": 0, "to_b": 0, "dropped": 0}

    def start(self) -> None:
        self._saved = [self.a.on_dtmf, self.b.on_dtmf]
        self.a.on_dtmf = self._key(self.digits_a_to_b, self.digit_to_b)
        self.b.on_dtmf = self._key(self.digits_b_to_a, self.digit_to_a)
        remote = getattr(self.a, "relay_audio", None)
        if remote is not None:
            self._audio = remote(self.b)
        else:
            relay = AudioRelay(self.a, self.b)
            relay.start()
            self._audio = relay

    @staticmethod
    def _key(seen: list[str], send: Callable[[str], None]) -> Callable[[str, str, str], None]:
        def on_dtmf(kind: str, digit: str, source: str) -> None:
            if kind != "end":
                return  # the key is relayed once, at its end (its length is not kept)
            seen.append(digit)
            try:
                send(digit)
            except Exception:
                log.exception("bridge key relay failed digit=%s", digit)

        return on_dtmf

    async def stop(self) -> None:
        if self._audio is not None:
            await self._audio.stop()
            self._audio_stats = self._audio.stats
            self._audio = None
        if self._saved:
            self.a.on_dtmf, self.b.on_dtmf = self._saved
            self._saved = []

    @property
    def stats(self) -> dict[str, int]:
        audio = self._audio.stats if self._audio is not None else self._audio_stats
        return {**audio, "keys_a_to_b": len(self.digits_a_to_b), "keys_b_to_a": len(self.digits_b_to_a)}
