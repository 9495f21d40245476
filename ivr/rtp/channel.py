"""The asyncio end of the media worker's control socket (AF_UNIX SOCK_SEQPACKET), used by both processes.

Records sent in one turn of the loop leave as one message (ivr.rtp.control.pack), after the turn: a burst of
prompt starts or DTMF events costs one system call, not one each. A message with file descriptors (OPEN) goes
in order with the rest. When the socket's buffer is full the messages wait for it to drain (add_writer);
nothing is dropped. What arrives is handed to ``on_records`` message by message, with its descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable

from ivr.rtp.control import MAX_MESSAGE, ControlError, Record, pack, unpack

__all__ = ["ControlChannel"]

log = logging.getLogger(__name__)

_MAX_FDS = 16
_RECV_BURST = 64
"""Messages read per readiness callback before the loop gets a turn (the media tick must not wait long)."""


class ControlChannel:
    def __init__(self, sock: socket.socket, on_records: Callable[[list[Record], list[int]], None],
                 on_closed: Callable[[], None]) -> None:
        self._sock = sock
        sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._on_records = on_records
        self._on_closed = on_closed
        self._pending: list[Record] = []
        self._outbox: deque[tuple[bytes, list[int]]] = deque()
        self._flush_scheduled = False
        self._writing = False
        self._empty: asyncio.Event | None = None
        self.closed = False
        self.sent_messages = 0
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, record: Record, *, now: bool = False) -> None:
        """Queue one record; it leaves with the others of this loop turn, or at once with those queued before it
        when ``now``: a key on its way to the flow, the flow's answer to it (the next prompt, a barge-in's
        cancel). The loop turn may first run a phase tick (~4 ms at 1,000 calls) or other calls' callbacks,
        and the caller waits for each hop (bench/README.md "Both cores": key -> next prompt)."""
        if self.closed:
            return
        self._pending.append(record)
        if now:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def send_with_fds(self, record: Record, fds: list[int]) -> None:
        """One record with descriptors, after everything queued before it. The descriptors are duplicated into
        the other process when it leaves (the caller closes its own once this returns: they are dup'd here)."""
        if self.closed:
            return
        self._move_pending()
        (message,) = pack([record])
        self._outbox.append((message, [socket.dup(fd) for fd in fds]))
        self._write()

    def _move_pending(self) -> None:
        if self._pending:
            for message in pack(self._pending):
                self._outbox.append((message, []))
            self._pending = []

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._move_pending()
        self._write()

    def _write(self) -> None:
        outbox = self._outbox
        while outbox and not self.closed:
            message, fds = outbox[0]
            try:
                if fds:
                    socket.send_fds(self._sock, [message], fds)
                else:
                    self._sock.send(message)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self._sock.fileno(), self._drained)
                return
            except OSError:
                self._lost()
                return
            outbox.popleft()
            for fd in fds:
                socket.close(fd)
            self.sent_messages += 1
        if not outbox:
            if self._writing:
                self._writing = False
                self._loop.remove_writer(self._sock.fileno())
            if self._empty is not None:
                self._empty.set()

    def _drained(self) -> None:
        self._write()

    def _readable(self) -> None:
        for _ in range(_RECV_BURST):
            try:
                message, fds, _flags, _addr = socket.recv_fds(self._sock, MAX_MESSAGE + 1024, _MAX_FDS)
            except BlockingIOError:
                return
            except OSError:
                self._lost()
                return
            if not message and not fds:
                self._lost()  # the other end closed (SEQPACKET: a zero-length read is the end)
                return
            try:
                records = unpack(message)
            except ControlError as exc:
                log.warning("media control message dropped: %s", exc)
                for fd in fds:
                    socket.close(fd)
                continue
            self._on_records(records, fds)
            if self.closed:
                return

    def _lost(self) -> None:
        if self.closed:
            return
        self.close()
        self._on_closed()

    def close(self) -> None:
        """Stop reading and writing and close the socket (queued records are dropped)."""
        if self.closed:
            return
        self.closed = True
        fileno = self._sock.fileno()
        if fileno >= 0:
            self._loop.remove_reader(fileno)
            if self._writing:
                self._loop.remove_writer(fileno)
        for _message, fds in self._outbox:
            for fd in fds:
                socket.close(fd)
        self._outbox.clear()
        self._pending = []
        self._sock.close()

    async def drain(self, timeout: float = 1.0) -> None:
        """Send what is queued now (the last records before a close)."""
        self._flush()
        if not self._outbox or self.closed:
            return
        self._empty = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._empty.wait()
