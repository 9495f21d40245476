"""The media worker: the RTP media engine in a process of its own, so that media and signalling use both cores.

The daemon (ivr.rtp.remote) binds each call's RTP and RTCP sockets and hands them over with the OPEN record;
here the same :class:`~ivr.rtp.session.MediaEngine` as in-process runs them on its own event loop: the 20 ms
tick, jitter buffers, DTMF (RFC 4733 and the in-band bank), SRTP, RTCP, prompt playout, a bridge's audio. What
the call needs to know goes back as events (ivr.rtp.control). Measured first (bench/media_split.py, bench/
README.md "Both cores"): on the main loop the media made signalling wait 34-66 ms (p99) at 1,000 calls; here
the main loop's lag stays at 1-3 ms.

The worker lives as long as its control socket: when the daemon exits (or is killed) the socket closes and
the worker stops. Signals from a terminal or systemd are left to the daemon, which drains its calls first.

Run by the daemon as ``python -m ivr.rtp.worker --control-fd N ...``, never by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import signal
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from ivr.rtp import control as c
from ivr.rtp.bridge import AudioRelay
from ivr.rtp.channel import ControlChannel
from ivr.rtp.media import FRAME_BYTES, Prompt
from ivr.rtp.session import MediaEngine, RtpSession

__all__ = ["main"]

log = logging.getLogger("ivr.rtp.worker")

RECEIVED_EVERY = 0.2
"""Seconds between reports of when each session last heard its caller (the call's RTP inactivity timeout is
30 s by default and never under a second)."""
ENGINE_EVERY = 1.0
"""Seconds between the engine's statistics (``ivr status``, /metrics)."""
_AWAITING = frozenset((c.OP_OPEN, c.OP_CLOSE, c.OP_UNRELAY))
"""Commands that await (sockets' transports, a relay's or a session's end): they run in the command task."""
_SILENCE = {"ulaw": b"\xff" * FRAME_BYTES, "alaw": b"\xd5" * FRAME_BYTES}


class PromptFrames(Sequence[bytes]):
    """A prompt that arrives in chunks (PLAY then MORE records) but has its whole length from the start: a frame
    not here yet when its tick comes (not seen: a chunk is 6.4 s of audio) is sent as silence. Chunks, not a list
    of frames: a list of every frame (no Python call per packet) made the worker's gc traverse thousands of
    pointers per prompt, 25-39 ms pauses at 1,000 calls (bench/README.md "Less Python per packet")."""

    def __init__(self, total: int, first: bytes, silence: bytes) -> None:
        self._total = total
        self._chunks = [first]
        self._silence = silence

    def extend(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def __len__(self) -> int:
        return self._total

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]
        chunk, frame = divmod(index, c.PLAY_CHUNK_FRAMES)
        if chunk >= len(self._chunks):
            return self._silence
        at = frame * FRAME_BYTES
        data = self._chunks[chunk][at:at + FRAME_BYTES]
        return data if len(data) == FRAME_BYTES else self._silence

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            for at in range(0, len(chunk), FRAME_BYTES):
                yield chunk[at:at + FRAME_BYTES]


class Worker:
    def __init__(self, sock: socket.socket, host: str, port_min: int, port_max: int, rtcp_interval: float) -> None:
        self.engine = MediaEngine(host, port_min, port_max)
        self.engine.rtcp_interval = rtcp_interval
        self._sock = sock
        self.sessions: dict[int, RtpSession] = {}
        self._prompts: dict[tuple[int, int], tuple[Prompt, Sequence[bytes]]] = {}
        self._tokens: dict[Prompt, tuple[int, int]] = {}
        self._relays: dict[int, AudioRelay] = {}
        self._reported: dict[int, float] = {}
        self._inbox: deque[tuple[list[c.Record], list[int]]] = deque()
        self._wake = asyncio.Event()
        self._busy = False
        """The command task is working through the inbox (maybe awaiting an OPEN): what arrives queues behind."""
        self._stop = asyncio.Event()
        self.channel: ControlChannel | None = None

    async def run(self) -> None:
        await self.engine.start()
        # What the start made (modules, numpy, the loop) lives as long as the process: out of the collector's
        # sight, a full collection walks only the calls' objects (a full one took ~19 ms with 1,000 sessions).
        gc.freeze()
        self.channel = ControlChannel(self._sock, self._received, self._stop.set)
        self.channel.send((c.EV_READY, os.getpid(), self.engine.cname))
        tasks = [asyncio.create_task(self._commands(), name="media-commands"),
                 asyncio.create_task(self._reports(), name="media-reports")]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        await self.engine.stop()
        self.channel.close()

    def _received(self, records: list[c.Record], fds: list[int]) -> None:
        """Records that need no waiting (a PLAY, a CANCEL) run here, as they arrive: a task's wake-up would put a
        loop turn, maybe a phase tick, between a key's answer and the caller. From the first one that waits
        (OPEN, CLOSE, UNRELAY) on, and while such a one is under way, they queue, in order."""
        if not self._inbox and not self._busy and not fds:
            for at, record in enumerate(records):
                if record[0] in _AWAITING:
                    records = records[at:]
                    break
                self._command_now(record)
            else:
                return
        self._inbox.append((records, fds))
        self._wake.set()

    async def _commands(self) -> None:
        """Records in the order they were sent: an OPEN (which awaits its sockets' transports) before the
        CONFIGURE and PLAY of the same call."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            while self._inbox:
                records, fds = self._inbox.popleft()
                for record in records:
                    if record[0] in _AWAITING:
                        try:
                            await self._command(record, fds)
                        except Exception:
                            log.exception("media command %s failed", record[0])
                    else:
                        self._command_now(record)
            self._busy = False

    def _command_now(self, record: c.Record) -> None:
        try:
            self._command_sync(record)
        except Exception:
            log.exception("media command %s failed", record[0])

    async def _command(self, record: c.Record, fds: list[int]) -> None:
        op = record[0]
        if op == c.OP_OPEN:
            await self._open(record, fds)
        elif op == c.OP_UNRELAY:
            _, rid, sid_a = record
            stopping = self._relays.pop(sid_a, None)
            stats: dict[str, int] = {}
            if stopping is not None:
                await stopping.stop()
                stats = stopping.stats
            self._reply(rid, stats)
        elif op == c.OP_CLOSE:
            _, rid, sid = record
            self._reply(rid, await self._close(sid))

    def _command_sync(self, record: c.Record) -> None:
        op = record[0]
        if op == c.OP_PLAY:
            _, sid, token, total, first = record
            session = self.sessions.get(sid)
            if session is None or session.closed:
                self._send_done(sid, token)
                return
            if total * FRAME_BYTES == len(first):  # the whole prompt in one record: a plain list ticks cheapest
                frames: Sequence[bytes] = [first[at:at + FRAME_BYTES] for at in range(0, len(first), FRAME_BYTES)]
            else:
                frames = PromptFrames(total, first, _SILENCE[session.law])
            prompt = session.start_prompt(frames)
            if prompt.done:
                self._send_done(sid, token)
            else:
                self._prompts[(sid, token)] = (prompt, frames)
                self._tokens[prompt] = (sid, token)
        elif op == c.OP_MORE:
            _, sid, token, chunk = record
            playing = self._prompts.get((sid, token))
            if playing is not None and isinstance(playing[1], PromptFrames):
                playing[1].extend(chunk)
        elif op == c.OP_CANCEL:
            _, sid, token = record
            playing = self._prompts.pop((sid, token), None)
            session = self.sessions.get(sid)
            if playing is not None:
                self._tokens.pop(playing[0], None)
                if session is not None:
                    session.cancel_prompt(playing[0])
        elif op == c.OP_CONFIGURE:
            _, sid, settings = record
            session = self.sessions.get(sid)
            if session is not None:
                session.configure(**settings)
        elif op == c.OP_COMEDIA:
            _, sid, on = record
            if sid in self.sessions:
                self.sessions[sid].comedia = on
        elif op == c.OP_AUDIO:
            _, sid, on = record
            self._audio(sid, on)
        elif op == c.OP_RELAY:
            _, sid_a, sid_b = record
            a, b = self.sessions.get(sid_a), self.sessions.get(sid_b)
            if a is not None and b is not None:
                relay = AudioRelay(a, b)
                relay.start()
                self._relays[sid_a] = relay
        elif op == c.OP_STOP:
            self._stop.set()
        else:
            log.warning("unknown media command %r", op)

    async def _open(self, record: c.Record, fds: list[int]) -> None:
        _, sid, call_id, comedia = record
        if len(fds) != 2:
            log.error("media OPEN without its two sockets (got %d)", len(fds))
            for fd in fds:
                os.close(fd)
            return
        rtp_sock = socket.socket(fileno=fds[0])
        rtcp_sock = socket.socket(fileno=fds[1])
        session = await self.engine.adopt_session(rtp_sock, rtcp_sock, call_id=call_id)
        session.comedia = comedia
        send = self._channel_send

        def on_dtmf(kind: str, digit: str, source: str) -> None:
            send((c.EV_DTMF, sid, kind, digit, source), now=True)  # the flow waits for it

        def on_prompt_sent(prompt: Prompt) -> None:
            key = self._tokens.pop(prompt, None)
            if key is not None:
                self._prompts.pop(key, None)
                send((c.EV_DONE, *key))

        session.on_dtmf = on_dtmf
        session.on_prompt_sent = on_prompt_sent
        self.sessions[sid] = session

    def _audio(self, sid: int, on: bool) -> None:
        session = self.sessions.get(sid)
        if session is None:
            return
        if not on:
            session.on_audio = None
            return
        send = self._channel_send

        def on_audio(pcm: bytes) -> None:
            send((c.EV_AUDIO, sid, pcm, session.last_frame))

        session.on_audio = on_audio

    async def _close(self, sid: int) -> dict[str, Any]:
        session = self.sessions.pop(sid, None)
        self._reported.pop(sid, None)
        ending = self._relays.pop(sid, None)
        if ending is not None:
            await ending.stop()
        for key in [k for k in self._prompts if k[0] == sid]:
            prompt, _ = self._prompts.pop(key)
            self._tokens.pop(prompt, None)
        if session is None:
            return {}
        await session.close()  # its sockets are closed when this returns: the daemon may hand the port out again
        return dict(session.stats)

    def _channel_send(self, record: c.Record, *, now: bool = False) -> None:
        assert self.channel is not None
        self.channel.send(record, now=now)

    def _send_done(self, sid: int, token: int) -> None:
        self._channel_send((c.EV_DONE, sid, token))

    def _reply(self, rid: int, payload: Any) -> None:
        self._channel_send((c.EV_REPLY, rid, payload))

    async def _reports(self) -> None:
        """When each session last heard its caller (for the call's RTP timeout), in the daemon's clock
        (CLOCK_MONOTONIC: the engine's ``time.monotonic()``, the daemon loop's ``time()``), and the engine's
        statistics."""
        loop = asyncio.get_running_loop()
        next_engine = loop.time()
        while True:
            await asyncio.sleep(RECEIVED_EVERY)
            changed = []
            for sid, session in self.sessions.items():
                heard = session.last_received
                if heard is not None and self._reported.get(sid) != heard:
                    self._reported[sid] = heard
                    changed.append((sid, heard))
            if changed:
                self._channel_send((c.EV_RECEIVED, changed))
            if loop.time() >= next_engine:
                next_engine = loop.time() + ENGINE_EVERY
                lateness = self.engine.lateness
                self._channel_send((c.EV_ENGINE, self.engine.stats, list(lateness.counts), lateness.sum))


def raise_priority(levels: int) -> int:
    """Lower our nice value by ``levels`` (as far as RLIMIT_NICE or CAP_SYS_NICE allow) and return the one we
    run at. The media has a 20 ms deadline every tick, signalling ~50 ms: when the two cores are busy the
    scheduler should pick the tick first, as Asterisk (``-p``) and FreeSWITCH (``-rp``) do for their media
    threads; a nice value, not a realtime class, so a runaway worker cannot starve the box (bench/README.md
    "Both cores")."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if levels <= 0:
        return current
    wanted = max(-20, current - levels)
    soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    floor = -20 if soft == resource.RLIM_INFINITY else 20 - soft  # RLIMIT_NICE n allows nice 20 - n unprivileged
    reason = f"RLIMIT_NICE allows {floor}"
    for nice in dict.fromkeys((wanted, max(wanted, floor))):
        if nice >= current:
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            continue
        log.info("media worker at nice %d (the daemon's %d)", nice, current)
        return nice
    log.info("media worker stays at nice %d (wanted %d: %s; systemd's LimitNICE= or CAP_SYS_NICE allows it)",
             current, wanted, reason)
    return current


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivr.rtp.worker", description=__doc__)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--ports", required=True, help="MIN-MAX")
    parser.add_argument("--rtcp-interval", type=float, default=5.0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text")
    parser.add_argument("--priority", type=int, default=0, help="nice levels above the daemon's")
    args = parser.parse_args(argv)
    from ivr.log import setup

    setup(args.log_level, args.log_format)
    raise_priority(args.priority)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the daemon stops us by closing the control socket, after its calls
    sock = socket.socket(fileno=args.control_fd)
    port_min, port_max = (int(x) for x in args.ports.split("-"))
    worker = Worker(sock, args.host, port_min, port_max, args.rtcp_interval)
    if os.environ.get("IVR_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(worker.run())
            return 0
    asyncio.run(worker.run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
