"""A TCP proxy between a box and the collector that can lose an answer on purpose: armed, it forwards the
request, lets the collector commit and answer, and then cuts both connections before a byte of the answer
reaches the box — the WAN failure where the center has the batch and the box does not know it.

Plain HTTP on loopback (which the box allows for loopback only): every byte from the collector is then its
answer, so the first one is where to cut. Over TLS the proxy could not tell the handshake from the answer."""

from __future__ import annotations

import asyncio
import contextlib


class AnswerDroppingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.drops_left = 0  # answers still to lose
        self.dropped = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def drop_next_answers(self, n: int) -> None:
        self.drops_left = n

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        done = asyncio.Event()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            try:
                while not done.is_set():
                    data = await src.read(65536)
                    if not data:
                        break
                    if answers and self.drops_left > 0:
                        # the collector has answered: it committed; the box must never see this answer
                        self.drops_left -= 1
                        self.dropped += 1
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                done.set()
                for w in (writer, up_writer):
                    with contextlib.suppress(Exception):
                        w.transport.abort()

        for coro in (pipe(reader, up_writer, False), pipe(up_reader, writer, True)):
            t = asyncio.create_task(coro)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
