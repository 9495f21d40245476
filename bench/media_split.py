"""Both cores: where should the media plane run? The variants measured side by side (issue 19 item 2).

For N sessions, each playing a 1 s prompt back to back (first prompts staggered over 50 ticks) to a receiver
process (kernel receive timestamps, gaps per SSRC, each stream's first 0.5 s left out, as
``rtp_clock.receiver``; by default a C version of it, built here, since the Python one drops packets at
50,000/s — ``--receiver python`` uses rtp_clock's), the main process also runs a stand-in for signalling on its
asyncio loop (uvloop, as ``ivr run``): it echoes UDP pings from a pinger process (one every 10 ms; the round
trip is what a SIP request would wait for) and runs a 5 ms timer whose lateness is the loop's lag;
``--main-load P`` adds P % of a core of Python work on that loop. CPU per process from /proc (load.py's
Sampler). Variants:

``a``  today: the real :class:`~ivr.rtp.session.MediaEngine` (4-phase tick) in the main process, beside the
       signalling stand-in on the same loop.
``b``  a media worker process: the main process binds the RTP/RTCP sockets and passes their fds over an
       AF_UNIX SOCK_SEQPACKET socketpair (``socket.send_fds``) to a forked worker that runs the same
       MediaEngine on its own uvloop (only ``_bind`` is changed, to adopt the passed socket). Control is a
       tiny binary protocol on that socketpair: OPEN (fds attached), CONF (remote, payload type), PLAY
       prompt-id token, STOP, CLOSE; the worker answers DONE token when a prompt's last frame went out, and the
       main process plays the next. The prompt is loaded once in the worker and played by reference. ``b2``:
       two such workers, the sessions split between them.
``c``  a send thread in the main process: the real sans-I/O :class:`~ivr.rtp.media.MediaStream` and
       :class:`~ivr.rtp.media.TickClock` tick in a thread (4 phases), packets are built in Python and sent by
       ONE foreign call per phase into a small C function (compiled here with cc, loaded with ctypes, which
       releases the GIL for the call) that loops ``sendto``; ``c-libc`` sends with one ctypes call to libc's
       ``sendto`` per packet instead (no compiler needed). Prompt-done events reach the loop by
       ``call_soon_threadsafe``.
``bc`` c's send thread in a worker process, fds and commands as in b.

Send-only, plain RTP (no SRTP, nothing received): the media side of ``rtp_clock.py`` without ``--duplex``.

Run: .venv/bin/python bench/media_split.py [--sessions 200 500 1000] [--variants a b bc c] [--seconds 10]
     [--main-load 30] [--media-nice -10] [--repeat 3]
(figures only; nothing here is asserted; bench/README.md "Both cores — which split")
"""

from __future__ import annotations

import argparse
import array
import asyncio
import ctypes
import ctypes.util
import multiprocessing as mp
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from load import Sampler  # noqa: E402
from rtp_clock import WARMUP, pct, receiver  # noqa: E402  (rtp_clock puts the repo root on sys.path)

from ivr.rtp.media import FRAME_SECONDS, MediaStream, PromptSent, TickClock  # noqa: E402
from ivr.rtp.session import (  # noqa: E402
    MAX_BURST,
    PHASES,
    MediaEngine,
    RtpSession,
    _RtcpProtocol,
    _RtpProtocol,
)

try:
    import uvloop
except ImportError:  # the daemon falls back to asyncio the same way
    uvloop = None  # type: ignore[assignment]

HOST = "127.0.0.1"
PORT_BASE = 50000
"""RTP ports from here up (pairs taken by other programs are skipped)."""
PROMPT = [bytes([0x10 + k % 64]) * 160 for k in range(50)]
"""The 1 s prompt of rtp_clock.py, played back to back."""
PROMPT_ID = 0
STAGGER = 50
"""Session k plays its first prompt (k % STAGGER) ticks after the start: calls' prompts do not all end in the
same tick (they do not in life, and when they did, every worker turn began with a burst of early starts)."""
LAG_PERIOD = 0.005
PING_PERIOD = 0.010

# -- the command protocol (variant b) ---------------------------------------------------------------------
# Fixed 16-byte records, many per SEQPACKET message: op, session id, a, b, c.
REC = struct.Struct("!BxHIIi")
OP_OPEN, OP_CONF, OP_PLAY, OP_STOP, OP_CLOSE, OP_DONE, OP_READY, OP_BYE, OP_STATS = range(1, 10)
FDS_PER_MSG = 200
"""SCM_RIGHTS takes at most 253 fds a message; OPEN carries two (RTP, RTCP)."""
MSG_MAX = 64 * 1024


# -- processes beside the media: pinger -------------------------------------------------------------------

def pinger(conn: Connection, port: int, seconds: float) -> None:
    """Ping the main loop's echo socket every 10 ms; report the round trips (ms) after the warm-up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    rtts: list[tuple[float, float]] = []
    lost = 0
    end = time.monotonic() + seconds + 60.0  # hard bound even if the parent never says stop
    seq = 0
    while time.monotonic() < end and not conn.poll():
        seq += 1
        t0 = time.monotonic()
        sock.sendto(seq.to_bytes(4, "big"), (HOST, port))
        while True:
            try:
                data = sock.recv(64)
            except TimeoutError:
                lost += 1
                break
            if int.from_bytes(data[:4], "big") == seq:
                rtts.append((t0, 1000 * (time.monotonic() - t0)))
                break
        time.sleep(max(0.0, PING_PERIOD - (time.monotonic() - t0)))
    conn.send((rtts, lost))
    sock.close()


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


class Signalling:
    """The main loop's stand-in for SIP and flows: an echo socket for the pinger and a 5 ms lag probe."""

    def __init__(self, on_end: Callable[[], None], load: float = 0.0) -> None:
        self.load = load
        """Share of a core the stand-in for flows and SIP spends in Python on this loop (``--main-load``)."""
        self.lags: list[float] = []
        self.port = 0
        self.ended_at = 0.0
        self._on_end = on_end
        self._tasks: list[asyncio.Task[None]] = []
        self._transport: Any = None
        self._measure_from = float("inf")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        self._tasks.append(asyncio.create_task(self._probe()))
        if self.load > 0:
            self._tasks.append(asyncio.create_task(self._busy()))

    def measure(self) -> None:
        """From now on (after the warm-up) the media runs: lag samples count."""
        self._measure_from = time.monotonic() + WARMUP

    @property
    def measure_from(self) -> float:
        return self._measure_from

    def end(self) -> None:
        """The measured part is over (before the teardown): stop the lag probe, the receiver and the pinger."""
        if not self.ended_at:
            self.ended_at = time.monotonic()
            self._on_end()

    async def _probe(self) -> None:
        due = time.monotonic()
        while True:
            due += LAG_PERIOD
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            if now >= self._measure_from and not self.ended_at:
                self.lags.append(1000 * (now - due))
            if now - due > LAG_PERIOD:
                due = now  # a long stall is one sample, not a burst of catch-up ones

    async def _busy(self) -> None:
        """Every 10 ms, ``load`` x 10 ms of pure-Python work in 0.25 ms slices, each a loop turn of its own (as
        many small SIP and flow events would be): it holds the GIL and the loop as the real work does."""
        window = 0.010
        while True:
            t0 = time.perf_counter()
            end = t0 + self.load * window
            while time.perf_counter() < end:
                until = min(end, time.perf_counter() + 0.00025)
                x = 0
                while time.perf_counter() < until:
                    x += 1
                await asyncio.sleep(0)
            await asyncio.sleep(max(0.0, window - (time.perf_counter() - t0)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._transport is not None:
            self._transport.close()


def bind_pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    """n RTP/RTCP socket pairs on even/odd ports from PORT_BASE up, as the MediaEngine binds them."""
    pairs: list[tuple[socket.socket, socket.socket]] = []
    for port in range(PORT_BASE, PORT_BASE + 4 * n + 200, 2):
        if len(pairs) == n:
            break
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((HOST, port))
            rtcp.bind((HOST, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        for s in (rtp, rtcp):
            s.setblocking(False)
        pairs.append((rtp, rtcp))
    if len(pairs) < n:
        raise RuntimeError(f"only {len(pairs)} free RTP port pairs from {PORT_BASE}")
    return pairs


# -- variant a: today ---------------------------------------------------------------------------------------

async def variant_a(n: int, seconds: float, rport: int, sig: Signalling) -> dict[str, Any]:
    engine = MediaEngine(HOST, PORT_BASE, PORT_BASE + 4 * n + 200)
    await engine.start()
    sessions: list[RtpSession] = []
    for k in range(n):
        sessions.append(await engine.open_session(call_id=f"bench-{k}"))
    for s in sessions:  # all start sending together, after the opens (the receiver's warm-up is per stream)
        s.configure(remote=(HOST, rport), payload_type=0, telephone_event_pt=101)

    async def talk(k: int, s: RtpSession) -> None:
        await asyncio.sleep((k % STAGGER) * FRAME_SECONDS)
        for _ in range(int(seconds + 3)):
            await s.play(PROMPT)

    sig.measure()
    try:
        async with asyncio.timeout(seconds + WARMUP), asyncio.TaskGroup() as tg:
            for k, s in enumerate(sessions):
                tg.create_task(talk(k, s))
    except TimeoutError:
        pass
    sig.end()
    stats = engine.stats
    await engine.stop()
    return {"media": f"tick lateness p99 {stats['tick_lateness_p99_ms']:.2f} ms, skipped {stats['ticks_skipped']}"}


# -- variant b: a media worker process ---------------------------------------------------------------------

class FdEngine(MediaEngine):
    """The daemon's MediaEngine, adopting sockets bound by another process instead of binding its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passed: dict[int, tuple[socket.socket, socket.socket]] = {}
        self.refreshes = 0
        self.refresh_seconds = 0.0
        """Calls of the engine's _refresh_active (every open, close and phase move rebuilds all phases), and
        their time: counted here because they turned out to matter (bench/README.md)."""

    def _refresh_active(self) -> None:
        t0 = time.perf_counter()
        super()._refresh_active()
        self.refreshes += 1
        self.refresh_seconds += time.perf_counter() - t0

    async def _bind(self, port: int, call_id: str) -> RtpSession | None:
        socks = self.passed.pop(port, None)
        if socks is None:
            return None  # not ours (yet): open_session moves on
        assert self._loop is not None
        session = RtpSession(self, port, call_id)
        rtp_protocol, rtcp_protocol = _RtpProtocol(session), _RtcpProtocol(session)
        rtp, _ = await self._loop.create_datagram_endpoint(lambda: rtp_protocol, sock=socks[0])
        rtcp, _ = await self._loop.create_datagram_endpoint(lambda: rtcp_protocol, sock=socks[1])
        session._attach(rtp, rtcp, [rtp_protocol, rtcp_protocol])
        return session


def _records(data: bytes) -> list[tuple[int, int, int, int, int]]:
    return [REC.unpack_from(data, off) for off in range(0, len(data) - REC.size + 1, REC.size)]


def media_worker(ctl: socket.socket, port_min: int, port_max: int, media_nice: int,
                 send_batch: Callable[..., int] | None = None) -> None:
    """The worker's whole life: a uvloop running the MediaEngine, obeying the commands on ``ctl``; with
    ``send_batch`` (variant ``bc``) the loop only reads commands and variant c's send thread does the media."""
    if media_nice:
        os.setpriority(os.PRIO_PROCESS, 0, media_nice)
    if uvloop is not None:
        uvloop.install()
    if send_batch is not None:
        asyncio.run(_worker_batch(ctl, send_batch))
    else:
        asyncio.run(_worker_main(ctl, port_min, port_max))


async def _worker_batch(ctl: socket.socket, send_batch: Callable[..., int]) -> None:
    loop = asyncio.get_running_loop()
    socks: dict[int, tuple[socket.socket, socket.socket]] = {}
    outbox: list[bytes] = []
    bye = asyncio.Event()
    ctl.setblocking(False)

    def flush() -> None:
        if outbox:
            ctl.send(b"".join(outbox))
            outbox.clear()

    def send(op: int, sid: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        if not outbox:
            loop.call_soon(flush)
        outbox.append(REC.pack(op, sid, a, b, c))

    def on_done(batch: list[tuple[int, int]]) -> None:
        for sid, token in batch:
            send(OP_DONE, sid, token)

    thread = SendThread(send_batch, on_done, loop, 0)  # the process is niced already: its threads inherit

    def readable() -> None:
        for _ in range(64):
            try:
                data, fds, _flags, _addr = socket.recv_fds(ctl, MSG_MAX, FDS_PER_MSG + 2)
            except BlockingIOError:
                return
            if not data:
                bye.set()
                return
            fd_iter = iter(fds)
            records = _records(data)
            for op, sid, a, b, c in records:
                if op == OP_OPEN:
                    socks[sid] = (socket.socket(fileno=next(fd_iter)), socket.socket(fileno=next(fd_iter)))
                elif op == OP_CONF:
                    remote = (socket.inet_ntoa(a.to_bytes(4, "big")), c)
                    thread.commands.append((OP_OPEN, sid, socks[sid][0].fileno(), remote))
                elif op == OP_PLAY:
                    thread.commands.append((OP_PLAY, sid, b))
                elif op == OP_BYE:
                    bye.set()
            if records and records[-1][0] == OP_OPEN:
                send(OP_READY, records[-1][1])

    thread.start()
    loop.add_reader(ctl.fileno(), readable)
    await bye.wait()
    thread.halt.set()
    thread.join(timeout=5)
    late = sorted(thread.lateness[int(len(thread.lateness) * 0.1):])
    send(OP_BYE, 0, int(1e6 * pct(late, 0.99)), thread.skipped)
    flush()
    loop.remove_reader(ctl.fileno())
    for a, b in socks.values():
        a.close()
        b.close()


async def _worker_main(ctl: socket.socket, port_min: int, port_max: int) -> None:
    loop = asyncio.get_running_loop()
    prompts = {PROMPT_ID: PROMPT}  # loaded once here; commands name it
    engine = FdEngine(HOST, port_min, port_max)
    await engine.start()
    sessions: dict[int, RtpSession] = {}
    playing: dict[int, asyncio.Task[None]] = {}
    inbox: asyncio.Queue[tuple[list[tuple[int, int, int, int, int]], list[int]]] = asyncio.Queue()
    outbox: list[bytes] = []
    bye = asyncio.Event()
    ctl.setblocking(False)

    def flush() -> None:
        if outbox:
            ctl.send(b"".join(outbox))  # SEQPACKET: one message per loop turn; small, never blocks long
            outbox.clear()

    def send(op: int, sid: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        if not outbox:
            loop.call_soon(flush)
        outbox.append(REC.pack(op, sid, a, b, c))

    def readable() -> None:
        for _ in range(64):  # bounded per wake-up
            try:
                data, fds, _flags, _addr = socket.recv_fds(ctl, MSG_MAX, FDS_PER_MSG + 2)
            except BlockingIOError:
                return
            if not data:
                bye.set()
                return
            inbox.put_nowait((_records(data), fds))

    async def play(sid: int, prompt_id: int, token: int) -> None:
        session = sessions.get(sid)
        if session is None:
            return
        try:
            await session.play(prompts[prompt_id])
        except asyncio.CancelledError:
            return
        send(OP_DONE, sid, token)

    async def obey() -> None:
        while not bye.is_set():
            records, fds = await inbox.get()
            fd_iter = iter(fds)
            for op, sid, a, b, c in records:
                if op == OP_OPEN:
                    rtp = socket.socket(fileno=next(fd_iter))
                    rtcp = socket.socket(fileno=next(fd_iter))
                    port = rtp.getsockname()[1]
                    engine.passed[port] = (rtp, rtcp)
                    sessions[sid] = await engine.open_session(call_id=f"bench-{sid}")
                elif op == OP_CONF:
                    sessions[sid].configure(remote=(socket.inet_ntoa(a.to_bytes(4, "big")), c), payload_type=b,
                                            telephone_event_pt=101)
                elif op == OP_PLAY:
                    playing[sid] = asyncio.create_task(play(sid, a, b))
                elif op == OP_STOP:
                    task = playing.pop(sid, None)
                    if task is not None:
                        task.cancel()
                elif op == OP_CLOSE:
                    task = playing.pop(sid, None)
                    if task is not None:
                        task.cancel()
                    s = sessions.pop(sid, None)
                    if s is not None:
                        await s.close()
                elif op == OP_BYE:
                    bye.set()
            if records and records[-1][0] == OP_OPEN:
                send(OP_READY, records[-1][1])

    loop.add_reader(ctl.fileno(), readable)
    consumer = asyncio.create_task(obey())
    await bye.wait()
    consumer.cancel()
    stats = engine.stats
    send(OP_STATS, 0, engine.refreshes, int(engine.refresh_seconds * 1e6))
    send(OP_BYE, 0, int(stats["tick_lateness_p99_ms"] * 1000), int(stats["ticks_skipped"]))
    for task in playing.values():
        task.cancel()
    await engine.stop()
    flush()
    loop.remove_reader(ctl.fileno())


class WorkerClient:
    """The main process's side of the protocol: batches commands per loop turn, reads DONE events."""

    def __init__(self, ctl: socket.socket, on_done: Callable[[int, int], None]) -> None:
        self.ctl = ctl
        self.on_done = on_done
        self.loop = asyncio.get_running_loop()
        self.out: list[bytes] = []
        self.ready: asyncio.Future[int] | None = None
        self.refreshes: tuple[int, int] | None = None
        self.closing = False
        """BYE was sent: a worker that has gone may leave late PLAYs (answers to its last DONEs) unread."""
        self.bye: asyncio.Future[tuple[int, int]] = self.loop.create_future()
        ctl.setblocking(False)
        self.loop.add_reader(ctl.fileno(), self._readable)

    def command(self, op: int, sid: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        if op == OP_BYE:
            self.closing = True
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append(REC.pack(op, sid, a, b, c))

    def flush(self) -> None:
        if self.out:
            self._send(b"".join(self.out))
            self.out.clear()

    def _send(self, data: bytes, fds: list[int] | None = None) -> None:
        for _ in range(2000):  # bounded: 2 s of a worker that does not read
            try:
                if fds:
                    socket.send_fds(self.ctl, [data], fds)
                else:
                    self.ctl.send(data)
                return
            except BlockingIOError:
                time.sleep(0.001)
            except BrokenPipeError:
                if self.closing:
                    return
                raise
        raise RuntimeError("media worker stopped reading its commands")

    async def open(self, sids: list[int], pairs: list[tuple[socket.socket, socket.socket]]) -> None:
        """OPEN a batch of sessions (their fds in the message); wait for the worker to have them."""
        self.flush()
        data = b"".join(REC.pack(OP_OPEN, sid, 0, 0, 0) for sid in sids)
        self.ready = self.loop.create_future()
        self._send(data, [s.fileno() for pair in pairs for s in pair])
        await asyncio.wait_for(self.ready, 10)

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data = self.ctl.recv(MSG_MAX)
            except BlockingIOError:
                return
            if not data:
                return
            for op, sid, a, b, _c in _records(data):
                if op == OP_DONE:
                    self.on_done(sid, a)
                elif op == OP_READY and self.ready is not None and not self.ready.done():
                    self.ready.set_result(sid)
                elif op == OP_STATS:
                    self.refreshes = (a, b)
                elif op == OP_BYE and not self.bye.done():
                    self.bye.set_result((a, b))

    def close(self) -> None:
        self.loop.remove_reader(self.ctl.fileno())


async def variant_b(n: int, seconds: float, rport: int, sig: Signalling, sampler: Sampler,
                    workers: int, media_nice: int, send_batch: Callable[..., int] | None = None) -> dict[str, Any]:
    """``workers`` media worker processes; session ``sid`` lives in worker ``sid % workers``."""
    ctx = mp.get_context("fork")
    loop = asyncio.get_running_loop()
    procs: list[Any] = []
    clients: list[WorkerClient] = []
    tokens = {"played": 0}

    def on_done_for(k: int) -> Callable[[int, int], None]:
        def on_done(sid: int, token: int) -> None:
            tokens["played"] += 1
            clients[k].command(OP_PLAY, sid, PROMPT_ID, token + 1)  # the flow plays on: the next prompt
        return on_done

    results: list[tuple[int, int]] = []
    try:
        for k in range(workers):
            main_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for s in (main_end, worker_end):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            worker = ctx.Process(target=media_worker, name=f"media-worker-{k}",
                                 args=(worker_end, PORT_BASE, PORT_BASE + 4 * n + 200, media_nice, send_batch))
            worker.start()
            worker_end.close()
            procs.append(worker)
            assert worker.pid is not None
            sampler.watch(f"worker{k}" if workers > 1 else "worker", worker.pid)
            clients.append(WorkerClient(main_end, on_done_for(k)))
        pairs = bind_pairs(n)
        for k, client in enumerate(clients):
            mine = list(range(k, n, workers))
            for first in range(0, len(mine), FDS_PER_MSG // 2):
                batch = mine[first:first + FDS_PER_MSG // 2]
                await client.open(batch, [pairs[sid] for sid in batch])
        for a, b in pairs:  # the workers hold their own copies now; the daemon would keep none either
            a.close()
            b.close()
        sig.measure()
        ip = int.from_bytes(socket.inet_aton(HOST), "big")
        for sid in range(n):  # the SDP answer: all start sending together, after the opens
            client = clients[sid % workers]
            client.command(OP_CONF, sid, ip, 0, rport)
            loop.call_later((sid % STAGGER) * FRAME_SECONDS, client.command, OP_PLAY, sid, PROMPT_ID, 1)
        await asyncio.sleep(seconds + WARMUP)
        sig.end()
        for sid in range(n):
            clients[sid % workers].command(OP_CLOSE, sid)
        for client in clients:
            client.command(OP_BYE, 0)
            client.flush()
        for client in clients:
            results.append(await asyncio.wait_for(client.bye, 30))
    finally:
        for client in clients:
            client.close()
            client.ctl.close()
        for worker in procs:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    late = ", ".join(f"{late_us / 1000:.2f}" for late_us, _ in results)
    skipped = sum(skip for _, skip in results)
    refresh = [c.refreshes for c in clients if c.refreshes is not None]
    calls = sum(r[0] for r in refresh)
    refresh_ms = sum(r[1] for r in refresh) / 1000
    return {"media": f"{workers} worker(s), tick lateness p99 {late} ms, skipped {skipped}; "
                     f"{tokens['played']} prompts done"
                     + (f"; _refresh_active {calls} calls, {refresh_ms:.0f} ms" if refresh else "")}


# -- variant c: a send thread, syscalls without the GIL ---------------------------------------------------

C_SOURCE = r"""
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
/* Send n datagrams, packet k on fds[k] to addrs[k], bytes buf[offs[k] .. offs[k+1]); returns the errors. */
int send_batch(int n, const int *fds, const char *buf, const int *offs, const struct sockaddr_in *addrs) {
    int errors = 0;
    for (int k = 0; k < n; k++) {
        if (sendto(fds[k], buf + offs[k], (size_t)(offs[k + 1] - offs[k]), MSG_DONTWAIT,
                   (const struct sockaddr *)&addrs[k], sizeof(struct sockaddr_in)) < 0)
            errors++;
    }
    return errors;
}
"""


def build_sender(workdir: Path) -> Callable[..., int] | None:
    """Compile the batch sender (cc -O2 -shared) and load it with ctypes: None without a compiler."""
    lib = compile_c(workdir, "send_batch.so", C_SOURCE, "-shared", "-fPIC")
    if lib is None:
        return None
    fn = ctypes.CDLL(str(lib)).send_batch  # CDLL: the GIL is released for the call
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_char_p]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def sockaddr_in(host: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


class SendThread(threading.Thread):
    """The 20 ms tick in a thread, in PHASES phases, over real MediaStreams; sends by foreign calls."""

    def __init__(self, send_batch: Callable[..., int] | None, on_done: Callable[[list[tuple[int, int]]], None],
                 loop: asyncio.AbstractEventLoop, media_nice: int) -> None:
        super().__init__(daemon=True, name="media-send")
        self.media_nice = media_nice
        self.send_batch = send_batch
        self.on_done = on_done
        self.loop = loop
        self.commands: deque[tuple[Any, ...]] = deque()
        self.halt = threading.Event()
        self.phases: list[list[tuple[int, MediaStream, int, bytes]]] = [[] for _ in range(PHASES)]
        self.tokens: dict[Any, tuple[int, int]] = {}
        self.streams: dict[int, MediaStream] = {}
        self.lateness: list[float] = []
        self.errors = 0
        self.skipped = 0
        self.cpu = 0.0
        self.user = 0.0
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.sendto = libc.sendto
        self.sendto.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p,
                                ctypes.c_uint]
        self.sendto.restype = ctypes.c_ssize_t

    def run(self) -> None:
        if self.media_nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.media_nice)  # this thread only
        cpu0, wall0 = time.thread_time(), time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_THREAD)
        clock = TickClock(time.monotonic(), FRAME_SECONDS / PHASES, MAX_BURST * PHASES)
        while not self.halt.is_set():
            delay = clock.deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            times, late = clock.advance(time.monotonic())
            self.lateness.append(late)
            while self.commands:
                self._obey(self.commands.popleft())
            done: list[tuple[int, int]] = []
            for now in times:
                phase = round((now - clock.start) / clock.period) % PHASES
                self._tick(self.phases[phase], now, done)
            if done:
                self.loop.call_soon_threadsafe(self.on_done, done)
        self.skipped = clock.skipped
        wall = time.monotonic() - wall0
        self.cpu = (time.thread_time() - cpu0) / wall
        ru = resource.getrusage(resource.RUSAGE_THREAD)
        self.user = (ru.ru_utime - ru0.ru_utime) / wall
        """User time: the Python part (and the C loop, a few instructions a packet), under the GIL; system time is
        the sendto calls, without it."""

    def _obey(self, cmd: tuple[Any, ...]) -> None:
        if cmd[0] == OP_OPEN:
            _, sid, fd, remote = cmd
            stream = MediaStream(ssrc=int.from_bytes(os.urandom(4), "big"), sequence_number=0, timestamp=0)
            stream.configure(remote=remote, payload_type=0, telephone_event_pt=101)
            counts = [len(p) for p in self.phases]
            self.phases[counts.index(min(counts))].append((sid, stream, fd, sockaddr_in(*remote)))
            self.streams[sid] = stream
        elif cmd[0] == OP_PLAY:
            _, sid, token = cmd
            self.tokens[self.streams[sid].play(PROMPT)] = (sid, token)

    def _tick(self, sessions: list[tuple[int, MediaStream, int, bytes]], now: float,
              done: list[tuple[int, int]]) -> None:
        fds = array.array("i")
        offs = array.array("i", [0])
        bufs: list[bytes] = []
        addrs: list[bytes] = []
        total = 0
        for _sid, stream, fd, addr in sessions:
            datagram = stream.tick(now)
            if datagram is not None:
                if self.send_batch is None:
                    if self.sendto(fd, datagram, len(datagram), socket.MSG_DONTWAIT, addr, 16) < 0:
                        self.errors += 1
                else:
                    fds.append(fd)
                    bufs.append(datagram)
                    total += len(datagram)
                    offs.append(total)
                    addrs.append(addr)
            events = stream.events
            while events:
                ev = events.popleft()
                if isinstance(ev, PromptSent):
                    token = self.tokens.pop(ev.prompt, None)
                    if token is not None:
                        done.append(token)
        if fds and self.send_batch is not None:
            fd_ptr = fds.buffer_info()[0]
            off_ptr = offs.buffer_info()[0]
            self.errors += self.send_batch(len(fds), fd_ptr, b"".join(bufs), off_ptr, b"".join(addrs))


async def variant_c(n: int, seconds: float, rport: int, sig: Signalling, workdir: Path,
                    libc_only: bool, media_nice: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    send_batch = None if libc_only else build_sender(workdir)
    played = {"n": 0}
    thread: SendThread

    def on_done(batch: list[tuple[int, int]]) -> None:
        for sid, token in batch:  # on the loop: the flow plays the next prompt
            played["n"] += 1
            thread.commands.append((OP_PLAY, sid, token + 1))

    thread = SendThread(send_batch, on_done, loop, media_nice)
    pairs = bind_pairs(n)
    try:
        thread.start()
        for sid, (rtp, _rtcp) in enumerate(pairs):
            thread.commands.append((OP_OPEN, sid, rtp.fileno(), (HOST, rport)))
        await asyncio.sleep(0.1)
        sig.measure()
        for sid in range(n):
            loop.call_later((sid % STAGGER) * FRAME_SECONDS, thread.commands.append, (OP_PLAY, sid, 1))
        await asyncio.sleep(seconds + WARMUP)
        sig.end()
    finally:
        thread.halt.set()
        thread.join(timeout=5)
        for a, b in pairs:
            a.close()
            b.close()
    late = sorted(thread.lateness[int(len(thread.lateness) * 0.1):])
    kind = "libc sendto per packet" if send_batch is None else "C batch per phase"
    return {"media": f"{kind}; thread tick lateness p99 {1000 * pct(late, 0.99):.2f} ms, skipped {thread.skipped}, "
                     f"send errors {thread.errors}, {played['n']} prompts done",
            "thread_cpu": thread.cpu, "thread_user": thread.user}


# -- one run ------------------------------------------------------------------------------------------------

def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at a local UDP socket (its receive buffer was full): /proc/net/udp."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want:
            return int(fields[-1])
    return -1


def niced_receiver(conn: Connection, seconds: float, nice: int) -> None:
    """rtp_clock's receiver, niced: its arrival times are the kernel's, taken when the packet arrives, so
    reading late costs nothing as long as its socket buffer holds (the packet counts show any loss), and the
    appliance under test, not the stand-in for the phones, gets the CPU when the two want it at once."""
    os.nice(nice)
    receiver(conn, seconds, False)


RX_SOURCE = r"""
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
/* rtp_clock's receiver in C: one UDP socket on 127.0.0.1, kernel receive times (SO_TIMESTAMPNS), read by
   recvmmsg 64 at a time; prints its port, then writes (ssrc u32, seconds f64) per packet to argv[2] until a
   line or EOF on stdin, or argv[1] seconds. */
#define BATCH 64
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0), big = 8 << 20, on = 1;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(s, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(s, (struct sockaddr *)&a, &alen) < 0) return 1;
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    FILE *out = fopen(argv[2], "wb");
    if (!out) return 1;
    static char bufs[BATCH][2048], ctrl[BATCH][128];
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double limit = atof(argv[1]);
    struct pollfd p[2] = {{s, POLLIN, 0}, {0, POLLIN, 0}};
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) + 1e-9 * (now.tv_nsec - t0.tv_nsec) > limit) break;
        if (poll(p, 2, 200) < 0) break;
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        for (int k = 0; k < BATCH; k++) {
            iov[k].iov_base = bufs[k];
            iov[k].iov_len = sizeof bufs[k];
            memset(&m[k].msg_hdr, 0, sizeof m[k].msg_hdr);
            m[k].msg_hdr.msg_iov = &iov[k];
            m[k].msg_hdr.msg_iovlen = 1;
            m[k].msg_hdr.msg_control = ctrl[k];
            m[k].msg_hdr.msg_controllen = sizeof ctrl[k];
        }
        int got = recvmmsg(s, m, BATCH, MSG_DONTWAIT, NULL);
        for (int k = 0; k < got; k++) {
            if (m[k].msg_len < 12) continue;
            double t = 0;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&m[k].msg_hdr); c; c = CMSG_NXTHDR(&m[k].msg_hdr, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    t = ts.tv_sec + 1e-9 * ts.tv_nsec;
                }
            unsigned char *b = (unsigned char *)bufs[k];
            uint32_t ssrc = ((uint32_t)b[8] << 24) | ((uint32_t)b[9] << 16) | ((uint32_t)b[10] << 8) | b[11];
            fwrite(&ssrc, 4, 1, out);
            fwrite(&t, 8, 1, out);
        }
    }
    fclose(out);
    return 0;
}
"""


def compile_c(workdir: Path, name: str, source: str, *flags: str) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, target = workdir / f"{name}.c", workdir / name
    src.write_text(source)
    subprocess.run([cc, "-O2", *flags, "-o", str(target), str(src)], check=True, timeout=60)
    return target


class PyReceiver:
    """rtp_clock.receiver in its own process (niced)."""

    def __init__(self, seconds: float, nice: int) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=niced_receiver, args=(child, seconds, nice), name="rtp-bench-receiver")
        self.proc.start()
        self.port: int = self.conn.recv()
        assert self.proc.pid is not None
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.conn.send("stop")

    def result(self) -> tuple[list[float], int]:
        gaps, _means, packets, _kernel_ts = self.conn.recv()
        return gaps, packets

    def close(self) -> None:
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()


class CReceiver:
    """The same receiver in C (RX_SOURCE), and rtp_clock's gap arithmetic over what it wrote."""

    def __init__(self, binary: Path, workdir: Path, seconds: float, nice: int) -> None:
        self.path = workdir / "arrivals.bin"
        self.proc = subprocess.Popen(
            [str(binary), str(seconds + 60.0), str(self.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            preexec_fn=lambda: os.nice(nice),  # only a nice(2) between fork and exec
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.pid = self.proc.pid

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def result(self) -> tuple[list[float], int]:
        self.proc.wait(timeout=30)
        arrivals: dict[int, list[float]] = {}
        for ssrc, t in struct.iter_unpack("=Id", self.path.read_bytes()):
            arrivals.setdefault(ssrc, []).append(t)
        gaps: list[float] = []
        packets = 0
        for times in arrivals.values():  # as rtp_clock.receiver: each stream's first WARMUP s left out
            start = times[0] + WARMUP
            kept = [t for t in times if t >= start]
            packets += len(kept)
            gaps.extend(1000 * (b - a) for a, b in zip(kept, kept[1:], strict=False))
        return gaps, packets

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def run_one(variant: str, n: int, seconds: float, workdir: Path, nice: int, rx_binary: Path | None,
            main_load: float, media_nice: int) -> dict[str, Any]:
    sampler = Sampler()
    sampler.watch("main", os.getpid())
    sampler.start()
    recv: PyReceiver | CReceiver
    if rx_binary is not None:
        recv = CReceiver(rx_binary, workdir, seconds, nice)
    else:
        recv = PyReceiver(seconds, nice)
    rport = recv.port
    sampler.watch("receiver", recv.pid)
    pparent, pchild = mp.Pipe()
    ping: mp.Process | None = None
    out: dict[str, Any] = {"variant": variant, "n": n}
    try:

        async def main() -> None:
            nonlocal ping
            def on_end() -> None:
                out["receiver_drops"] = udp_drops(rport)
                recv.stop()
                pparent.send("stop")

            sig = Signalling(on_end, main_load / 100)
            await sig.start()
            ping = mp.Process(target=pinger, args=(pchild, sig.port, seconds), name="pinger")
            ping.start()
            assert ping.pid is not None
            sampler.watch("pinger", ping.pid)
            if variant == "a":
                out.update(await variant_a(n, seconds, rport, sig))
            elif variant == "bc":
                out.update(await variant_b(n, seconds, rport, sig, sampler, 1, media_nice, build_sender(workdir)))
            elif variant.startswith("b"):
                out.update(await variant_b(n, seconds, rport, sig, sampler, int(variant[1:] or 1), media_nice))
            else:
                out.update(await variant_c(n, seconds, rport, sig, workdir, variant == "c-libc", media_nice))
            out["t1"] = sig.ended_at
            out["t0"] = sig.measure_from
            out["lag"] = sig.lags
            await sig.stop()

        if uvloop is not None:
            uvloop.run(main())
        else:
            asyncio.run(main())
        out["gaps"], out["packets"] = recv.result()
        rtts, out["ping_lost"] = pparent.recv()
        out["rtts"] = [rtt for t, rtt in rtts if out["t0"] <= t <= out["t1"]]
    finally:
        sampler.halt.set()
        recv.close()
        if ping is not None:
            ping.join(timeout=5)
            if ping.is_alive():
                ping.kill()
    # CPU over the measured part: from the start of media (after the opens) to its end
    span = (out["t0"], out["t1"])
    out["cpu"] = {name: sampler.cpu(name, *span)[0] for name in sampler.samples}
    return out


def report(r: dict[str, Any], seconds: float) -> str:
    gaps, lag, rtts = r["gaps"], r["lag"], r["rtts"]
    cpu = r["cpu"]
    expected = r["n"] * int(seconds / FRAME_SECONDS)
    parts = [f"{name} {v:5.1f}" for name, v in cpu.items() if v is not None]
    total = sum(v for v in cpu.values() if v is not None)
    line = (
        f"{r['variant']:>6} {r['n']:5d} | send p50 {pct(gaps, 0.5):6.2f} p99 {pct(gaps, 0.99):6.2f} "
        f"max {max(gaps, default=float('nan')):7.2f} ms | loop lag p50 {pct(lag, 0.5):5.2f} p99 {pct(lag, 0.99):6.2f} "
        f"max {max(lag, default=float('nan')):7.2f} ms | ping rtt p50 {pct(rtts, 0.5):5.2f} p99 {pct(rtts, 0.99):6.2f}"
        f" max {max(rtts, default=float('nan')):7.2f} ms, lost {r['ping_lost']} | CPU % {', '.join(parts)}, "
        f"total {total:5.1f}"
    )
    if "thread_cpu" in r:
        line += f" (send thread {100 * r['thread_cpu']:.1f}, of which user {100 * r['thread_user']:.1f})"
    line += f" | {r['packets']} pkts (~{expected} sent), receiver drops {r['receiver_drops']} | {r['media']}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1000])
    parser.add_argument("--variants", nargs="+", default=["a", "b", "bc", "c"],
                        choices=["a", "b", "b2", "bc", "c", "c-libc"],
                        help="b2: two media worker processes; bc: one worker process running c's send thread")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--main-load", type=float, default=0.0,
                        help="%% of a core of pure-Python work on the main loop, a stand-in for flows and SIP")
    parser.add_argument("--media-nice", type=int, default=0,
                        help="nice value of the media worker processes (b) or the send thread (c); < 0 needs root "
                             "or CAP_SYS_NICE")
    parser.add_argument("--receiver", choices=["c", "python"], default="c",
                        help="c: the receiver in C (recvmmsg; built here with cc); python: rtp_clock.receiver")
    parser.add_argument("--repeat", type=int, default=1, help="run the variants this many times, interleaved")
    parser.add_argument("--receiver-nice", type=int, default=0,
                        help="nice value of the receiver process (0: compete with the appliance as an equal)")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs, "
          f"loop {'uvloop' if uvloop is not None else 'asyncio'}, receiver {args.receiver}, nice {args.receiver_nice}, "
          f"main load {args.main_load:g} %, media nice {args.media_nice}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="media-split-") as tmp:
        rx = compile_c(Path(tmp), "rx", RX_SOURCE) if args.receiver == "c" else None
        if args.receiver == "c" and rx is None:
            print("# no C compiler: rtp_clock's receiver in Python instead", flush=True)
        for n in args.sessions:
            for variant in [v for _ in range(max(args.repeat, 1)) for v in args.variants]:
                result = run_one(variant, n, args.seconds, Path(tmp), args.receiver_nice, rx, args.main_load,
                                  args.media_nice)
                print(report(result, args.seconds), flush=True)


if __name__ == "__main__":
    main()
