"""The daemon's side of the media workers (ivr.rtp.worker): the same engine and session API as ivr.rtp.session,
with the media in other processes so that the RTP of 1,000 calls and the SIP and flows beside it use both cores.

:class:`RemoteMediaEngine` starts the workers (``sip.media_workers``, one by default), binds each call's RTP/RTCP
port pair here (so a busy port or an exhausted range is this process's error, at once) and passes the sockets to
the worker with the fewest calls, or to the worker of the session it is to be bridged with (``beside``: a
bridge's audio is relayed inside one worker). :class:`RemoteRtpSession` is what the call holds: ``play`` sends
the prompt and waits for its worker's DONE, ``on_dtmf``/``on_audio`` hear its events. If a worker dies, its
calls' media ends with :class:`SessionClosedError` (as a hang-up would), one ERROR line says so, and a new
process takes its place; the other workers' calls go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ivr.metrics.buckets import LATENESS_BOUNDS, Buckets
from ivr.proto import rtcp
from ivr.proto.g711 import alaw_decode, ulaw_decode
from ivr.proto.sdes import SrtpKeys
from ivr.rtp import control as c
from ivr.rtp.channel import ControlChannel
from ivr.rtp.media import FRAME_BYTES, law_of
from ivr.rtp.session import MediaError, PortPairs, PortsExhaustedError, SessionClosedError

__all__ = ["RemoteMediaEngine", "RemoteRtpSession", "WorkerStartError"]

log = logging.getLogger("ivr.rtp.remote")

START_TIMEOUT = 20.0
"""Seconds for a new worker to say READY (a Python start with numpy and uvloop: ~0.5 s on the box)."""
_SILENCE_FRAME = b"\xff" * FRAME_BYTES


class WorkerStartError(MediaError):
    pass


class RemoteRtpSession:
    """One call's RTP, run by one of the media workers; the API of :class:`ivr.rtp.session.RtpSession`."""

    def __init__(self, worker: _Worker, sid: int, local_port: int, call_id: str) -> None:
        self.local_port = local_port
        self.call_id = call_id
        self.worker_pid = worker.pid
        """The process that runs this session's media (its worker's pid when it was opened)."""
        self.on_dtmf: Callable[[str, str, str], None] | None = None
        """Called with (kind ``"start"|"end"``, digit, source ``"rfc4733"|"inband"``)."""
        self._on_audio: Callable[[bytes], None] | None = None
        self._worker = worker
        self._sid = sid
        self._loop = asyncio.get_running_loop()
        self._law = "ulaw"
        self._srtp: SrtpKeys | None = None
        self._comedia = False
        self._closed = False
        self._heard: float | None = None
        self._last_frame = _SILENCE_FRAME
        self._tokens = 0
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._stats: dict[str, Any] = {}

    @property
    def on_audio(self) -> Callable[[bytes], None] | None:
        """Called with 20 ms of 16-bit LE PCM per tick once media flows; the worker decodes and sends it only
        while a listener is set."""
        return self._on_audio

    @on_audio.setter
    def on_audio(self, listener: Callable[[bytes], None] | None) -> None:
        wanted = listener is not None
        if wanted != (self._on_audio is not None):
            self._worker.send((c.OP_AUDIO, self._sid, wanted))
        self._on_audio = listener

    @property
    def srtp_keys(self) -> SrtpKeys | None:
        return self._srtp

    @property
    def law(self) -> str:
        return self._law

    @property
    def last_played(self) -> bytes:
        """The frame sent at the tick of the latest audio frame heard, as 16-bit PCM (the echo check's)."""
        return alaw_decode(self._last_frame) if self._law == "alaw" else ulaw_decode(self._last_frame)

    @property
    def last_received(self) -> float | None:
        """Loop time of the last RTP packet heard (the worker reports it every 0.2 s)."""
        return self._heard

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def comedia(self) -> bool:
        return self._comedia

    @comedia.setter
    def comedia(self, on: bool) -> None:
        self._comedia = on
        self._worker.send((c.OP_COMEDIA, self._sid, on))

    @property
    def stats(self) -> dict[str, Any]:
        """The worker's counters for this session, as of its close (empty before)."""
        return dict(self._stats)

    def configure(self, *, remote: tuple[str, int] | None, payload_type: int, telephone_event_pt: int | None,
                  ptime_ms: int = 20, send: bool = True, srtp: SrtpKeys | None = None) -> None:
        """As :meth:`ivr.rtp.session.RtpSession.configure`; a payload type that is not G.711 raises here."""
        self._law, self._srtp = law_of(payload_type, telephone_event_pt), srtp
        self._worker.send((c.OP_CONFIGURE, self._sid, {
            "remote": remote, "payload_type": payload_type, "telephone_event_pt": telephone_event_pt,
            "ptime_ms": ptime_ms, "send": send, "srtp": srtp}))

    async def play(self, frames: Sequence[bytes]) -> None:
        """As :meth:`ivr.rtp.session.RtpSession.play`: returns once the worker sent the last frame."""
        await self.start_play(frames)

    def start_play(self, frames: Sequence[bytes]) -> asyncio.Future[None]:
        """As :meth:`ivr.rtp.session.RtpSession.start_play`: the PLAY leaves before this returns; the future is
        done once the worker sent the last frame; cancelling it (a barge-in) stops the prompt."""
        if self._closed:
            raise SessionClosedError(self.call_id)
        if set(map(len, frames)) - {FRAME_BYTES}:  # the check without a Python loop over a long prompt's frames
            i, frame = next((i, f) for i, f in enumerate(frames) if len(f) != FRAME_BYTES)
            raise ValueError(f"frame {i} is {len(frame)} bytes, G.711 20 ms frames are {FRAME_BYTES}")
        waiter: asyncio.Future[None] = self._loop.create_future()
        total = len(frames)
        if total == 0:
            waiter.set_result(None)
            return waiter
        self._tokens += 1
        token = self._tokens
        self._waiters[token] = waiter
        step = c.PLAY_CHUNK_FRAMES
        send = self._worker.send
        send((c.OP_PLAY, self._sid, token, total, b"".join(frames[:step])), now=True)  # the caller hears it next
        for at in range(step, total, step):
            send((c.OP_MORE, self._sid, token, b"".join(frames[at:at + step])))
        waiter.add_done_callback(lambda done: self._play_ended(token, done))
        return waiter

    def _play_ended(self, token: int, waiter: asyncio.Future[None]) -> None:
        self._waiters.pop(token, None)
        if waiter.cancelled() and not self._closed:
            self._worker.send((c.OP_CANCEL, self._sid, token), now=True)  # a barge-in: the prompt stops at once

    def relay_audio(self, other: RemoteRtpSession) -> _RemoteRelay:
        """A bridge's audio between this session and ``other``, both ways, inside their worker (ivr.rtp.bridge);
        :class:`MediaError` when ``other`` is on another worker (open it with ``beside=`` this session)."""
        if other._worker is not self._worker:
            raise MediaError(f"cannot bridge call {self.call_id or '?'} (media worker pid={self.worker_pid}) with "
                             f"call {other.call_id or '?'} (pid={other.worker_pid}): a bridge's audio is relayed "
                             "inside one worker; open the second session with beside= the first")
        return _RemoteRelay(self._worker, self, other)

    async def close(self) -> None:
        """Stop sending, fail waiting prompts, release the port pair once the worker closed it (idempotent)."""
        if self._closed:
            return
        self._lost()
        reply = await self._worker.request(c.OP_CLOSE, self._sid)
        if isinstance(reply, dict):
            self._stats = reply
        self._worker.release(self)
        log.debug("rtp closed port=%d stats=%s", self.local_port, self._stats, extra={"call_id": self.call_id})

    # -- from the engine ------------------------------------------------------------------------

    def _lost(self) -> None:
        self._closed = True
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(SessionClosedError(self.call_id))

    def _event(self, record: c.Record) -> None:
        op = record[0]
        if op == c.EV_AUDIO:
            self._last_frame = record[3]
            if self._on_audio is not None:
                self._on_audio(record[2])
        elif op == c.EV_DONE:
            waiter = self._waiters.get(record[2])
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif op == c.EV_DTMF:
            log.debug("dtmf %s source=%s", record[2], record[4], extra={"call_id": self.call_id})
            if self.on_dtmf is not None:
                self.on_dtmf(record[2], record[3], record[4])


class _RemoteRelay:
    def __init__(self, worker: _Worker, a: RemoteRtpSession, b: RemoteRtpSession) -> None:
        self._worker, self._a = worker, a
        self._stats: dict[str, int] = {"to_a": 0, "to_b": 0, "dropped": 0}
        worker.send((c.OP_RELAY, a._sid, b._sid))

    async def stop(self) -> None:
        reply = await self._worker.request(c.OP_UNRELAY, self._a._sid)
        if isinstance(reply, dict) and reply:
            self._stats = reply

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)


def _worker_log_settings() -> tuple[str, str]:
    """The daemon's log level and format, for the worker's lines to read the same."""
    from ivr.log import JsonFormatter

    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers) else "text"
    return logging.getLevelName(root.getEffectiveLevel()).lower(), fmt


class _Worker:
    """One media worker process as the daemon sees it: its control socket, its calls, the replies it owes, its
    last statistics. The object outlives the process: when the process dies a new one takes its place here."""

    def __init__(self, engine: RemoteMediaEngine, index: int) -> None:
        self.engine = engine
        self.index = index
        self.sessions: dict[int, RemoteRtpSession] = {}
        self._next_rid = 0
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self.channel: ControlChannel | None = None
        self._ready: asyncio.Future[None] | None = None
        self.restarting: asyncio.Task[None] | None = None
        """A start under way (at start, after a death, or for a call that found no worker running)."""
        self.stats: dict[str, Any] = {}
        """The process's engine statistics, as of its last report (every second)."""
        self.lateness = Buckets(LATENESS_BOUNDS)
        """The process's phase tick lateness since it started, as of its last report."""
        self.pid: int | None = None
        self.cname = ""
        self.restarts = 0

    @property
    def running(self) -> bool:
        """Said READY and its control socket is open: it takes calls."""
        return self.channel is not None and self.pid is not None

    def launch(self, why: str) -> None:
        """Start the process in the background; a failure is an ERROR line (the next call tries again)."""
        if self.restarting is None:
            self.restarting = asyncio.get_running_loop().create_task(
                self._launch(), name=f"media-worker-{self.index}-{why}")

    async def revive(self) -> None:
        """Start the process for a call that found no worker running (a start under way is shared); raises
        :class:`WorkerStartError` when it does not come up."""
        if self.restarting is None:
            self.restarting = asyncio.get_running_loop().create_task(
                self._spawn_once(), name=f"media-worker-{self.index}-revive")
        await asyncio.shield(self.restarting)

    async def _launch(self) -> None:
        try:
            await self._spawn_once()
        except MediaError as exc:
            log.error("%s", exc)

    async def _spawn_once(self) -> None:
        try:
            await self._spawn()
        finally:
            if self.restarting is asyncio.current_task():
                self.restarting = None

    async def _spawn(self) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        level, fmt = _worker_log_settings()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the tree ivr is imported from, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ivr.rtp.worker", "--control-fd", str(theirs.fileno()),
                "--host", engine.host, "--ports", f"{engine.port_min}-{engine.port_max}",
                "--rtcp-interval", str(engine.rtcp_interval), "--log-level", level, "--log-format", fmt,
                "--priority", str(engine.priority),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, env=env)
        except OSError as exc:
            ours.close()
            raise WorkerStartError(f"cannot start the media worker: {exc}") from exc
        finally:
            theirs.close()
        self._ready = loop.create_future()
        channel = self.channel = ControlChannel(ours, self._records, self._lost)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self._ready
        except (TimeoutError, MediaError) as exc:
            channel.close()
            self.channel = None
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
            raise WorkerStartError(f"the media worker did not start ({exc or 'no READY'})") from None
        log.info("media worker started pid=%s", self.pid)

    def open(self, session: RemoteRtpSession, pair: tuple[socket.socket, socket.socket]) -> None:
        """Hand a session's sockets to the process (they are duplicated into it: the caller closes its own)."""
        assert self.channel is not None
        self.sessions[session._sid] = session
        self.channel.send_with_fds((c.OP_OPEN, session._sid, session.call_id, False), [s.fileno() for s in pair])

    def release(self, session: RemoteRtpSession) -> None:
        if self.sessions.pop(session._sid, None) is not None:
            self.engine._pairs.free(session.local_port)

    def send(self, record: c.Record, *, now: bool = False) -> None:
        if self.channel is not None:
            self.channel.send(record, now=now)

    async def request(self, op: str, *args: Any, timeout: float = 2.0) -> Any:
        """A record the worker answers with a REPLY; None when it does not (gone, or slower than ``timeout``)."""
        if self.channel is None or self.channel.closed:
            return None
        self._next_rid += 1
        rid = self._next_rid
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[rid] = reply
        self.channel.send((op, rid, *args))
        try:
            async with asyncio.timeout(timeout):
                return await reply
        except TimeoutError:
            log.warning("media worker pid=%s did not answer %s in %.0f s", self.pid, op, timeout)
            return None
        finally:
            self._replies.pop(rid, None)

    def _records(self, records: list[c.Record], fds: list[int]) -> None:
        for fd in fds:  # the worker sends none
            os.close(fd)
        sessions = self.sessions
        for record in records:
            op = record[0]
            try:
                if op in (c.EV_AUDIO, c.EV_DONE, c.EV_DTMF):
                    session = sessions.get(record[1])
                    if session is not None and not session._closed:
                        session._event(record)
                elif op == c.EV_RECEIVED:
                    to_loop = time.monotonic() - asyncio.get_running_loop().time()
                    for sid, heard in record[1]:
                        session = sessions.get(sid)
                        if session is not None:
                            session._heard = heard - to_loop
                elif op == c.EV_REPLY:
                    reply = self._replies.get(record[1])
                    if reply is not None and not reply.done():
                        reply.set_result(record[2])
                elif op == c.EV_ENGINE:
                    self.stats = record[1]
                    self.lateness.counts = list(record[2])
                    self.lateness.sum = record[3]
                elif op == c.EV_READY:
                    self.pid, self.cname = record[1], record[2]
                    if self._ready is not None and not self._ready.done():
                        self._ready.set_result(None)
                else:
                    log.warning("unknown media event %r", op)
            except Exception:
                # A listener's bug must not stop this call's media, let alone everyone else's.
                log.exception("media event listener failed")

    def _lost(self) -> None:
        """The control socket closed: the process exited. Its calls' media is gone (the other workers' calls go
        on); a new process takes its place."""
        self.channel = None
        for reply in self._replies.values():
            if not reply.done():
                reply.set_result(None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(MediaError("the media worker exited at start"))
            return
        if self.engine._stopping:
            return
        lost = list(self.sessions.values())
        for session in lost:
            session._lost()
            self.release(session)
        pid, self.pid = self.pid, None
        log.error("media worker pid=%s exited: %d calls lost their media; starting a new one", pid, len(lost))
        self.restarting = asyncio.get_running_loop().create_task(
            self._restart(pid), name=f"media-worker-{self.index}-restart")

    async def _restart(self, pid: int | None) -> None:
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    code = await self._process.wait()
                    log.info("media worker pid=%s exit status %s", pid, code)
        self.restarts += 1
        await self._launch()

    async def stop(self) -> None:
        """Stop the process (it exits when its control socket closes); its sessions are closed before."""
        channel, process = self.channel, self._process
        self.channel = None
        if channel is not None:
            channel.send((c.OP_STOP,))
            await channel.drain()
            channel.close()
        if process is not None:
            try:
                async with asyncio.timeout(5.0):
                    await process.wait()
            except TimeoutError:
                log.warning("media worker pid=%s did not stop: killed", self.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._process = None


class RemoteMediaEngine:
    """The media engine's API (:class:`ivr.rtp.session.MediaEngine`) with the engine in ``workers`` processes,
    each call's session in one of them."""

    def __init__(self, host: str, port_min: int, port_max: int, *, rtcp_interval: float = rtcp.INTERVAL,
                 priority: int = 0, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be 1 or more, not {workers}")
        self._pairs = PortPairs(port_min, port_max)
        self.host = host
        self.port_min = port_min
        self.port_max = port_max
        self.rtcp_interval = rtcp_interval
        self.priority = priority
        """Nice levels the workers ask for above the daemon's (``sip.media_priority``)."""
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._next_sid = 0
        self._stopping = False
        self._workers = [_Worker(self, k) for k in range(workers)]

    @property
    def pid(self) -> int | None:
        """The first worker's pid (None while it is down); every worker's is in ``stats["worker_pids"]``."""
        return self._workers[0].pid

    @property
    def cname(self) -> str:
        """The first worker's RTCP CNAME (each worker has its own)."""
        return self._workers[0].cname

    @property
    def restarts(self) -> int:
        """Worker deaths replaced, all workers together."""
        return sum(w.restarts for w in self._workers)

    @property
    def lateness(self) -> Buckets:
        """The workers' phase tick lateness since each started (for /metrics), as of their last reports, merged."""
        merged = Buckets(LATENESS_BOUNDS)
        for worker in self._workers:
            merged.counts = [a + b for a, b in zip(merged.counts, worker.lateness.counts, strict=True)]
            merged.sum += worker.lateness.sum
        return merged

    async def start(self) -> None:
        """Start the workers; the first call waits for a READY (~0.5 s) while the daemon goes on starting (its
        callback dialer, its READY to systemd). A worker that does not come up is an ERROR line, and calls go to
        the others, or get 503 until one is up (each new call tries again)."""
        self._stopping = False
        for worker in self._workers:
            if worker.channel is None:
                worker.launch("start")

    async def open_session(self, *, call_id: str = "",
                           beside: RemoteRtpSession | None = None) -> RemoteRtpSession:
        """Bind the next free even port (and port + 1 for RTCP) and hand both to a worker: ``beside``'s (a session
        this one will be bridged with), else the running one with the fewest calls. Raises
        :class:`PortsExhaustedError`, :class:`SessionClosedError` when ``beside`` lost its media, or
        :class:`WorkerStartError` when no worker runs."""
        worker = await self._worker_for(beside)
        for port in self._pairs.candidates():
            pair = self._bind(port)
            if pair is None:
                continue
            self._pairs.taken(port)
            self._next_sid += 1
            session = RemoteRtpSession(worker, self._next_sid, port, call_id)
            worker.open(session, pair)
            for sock in pair:
                sock.close()
            return session
        raise PortsExhaustedError(self.host, self.port_min, self.port_max)

    async def _worker_for(self, beside: RemoteRtpSession | None) -> _Worker:
        if beside is not None:
            if beside._worker.engine is not self:
                raise ValueError(f"beside= a session of another media engine (call {beside.call_id or '?'})")
            if beside.closed or not beside._worker.running:
                raise SessionClosedError(beside.call_id)
            return beside._worker
        running = [w for w in self._workers if w.running]
        while not running:  # at start, or every worker died: the first one up takes the call
            starting = [w.restarting for w in self._workers if w.restarting is not None]
            if not starting:
                break
            await asyncio.wait(starting, return_when=asyncio.FIRST_COMPLETED)
            running = [w for w in self._workers if w.running]
        if not running and not self._stopping:
            await self._workers[0].revive()  # the starts failed: try again for this call
            running = [w for w in self._workers if w.running]
        if not running:
            raise WorkerStartError("no media worker is running")
        return min(running, key=lambda w: len(w.sessions))

    def _bind(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        socks: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(self._family, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setblocking(False)
                sock.bind((self.host, p))
        except OSError:
            for sock in socks:
                sock.close()
            return None  # taken by another program: try the next pair
        return socks[0], socks[1]

    async def stop(self) -> None:
        """Close every session, then stop the workers."""
        for worker in self._workers:
            if worker.restarting is not None:
                with contextlib.suppress(Exception):
                    await worker.restarting
        for worker in self._workers:
            for session in list(worker.sessions.values()):
                await session.close()
        self._stopping = True
        await asyncio.gather(*(worker.stop() for worker in self._workers))

    @property
    def stats(self) -> dict[str, Any]:
        """As :attr:`ivr.rtp.session.MediaEngine.stats` (the workers' reports, every second), summed over the
        workers; the tick lateness p50 and p99 are the worst worker's (percentiles do not add), the max the
        max. ``worker_pid`` is the first worker's, ``worker_pids`` every worker's (0: down), ``worker_restarts``
        all of theirs."""
        reports = [w.stats for w in self._workers]

        def total(key: str) -> int:
            return sum(int(r.get(key, 0)) for r in reports)

        def worst(key: str) -> float:
            return max(float(r.get(key, 0.0)) for r in reports)

        return {
            "sessions": sum(len(w.sessions) for w in self._workers),
            "ticks": total("ticks"),
            "ticks_skipped": total("ticks_skipped"),
            "tick_lateness_p50_ms": worst("tick_lateness_p50_ms"),
            "tick_lateness_p99_ms": worst("tick_lateness_p99_ms"),
            "tick_lateness_max_ms": worst("tick_lateness_max_ms"),
            "packets_sent": total("packets_sent"),
            "worker_pid": self.pid or 0,
            "worker_pids": [w.pid or 0 for w in self._workers],
            "worker_restarts": self.restarts,
        }
