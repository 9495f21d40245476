"""How steady is the shared 20 ms media tick? Send intervals seen by a receiver, for N sessions.

A receiver in a separate process (so it does not load the engine's loop) timestamps every packet
with the kernel receive time (SO_TIMESTAMPNS) and reports, per SSRC, the gaps between consecutive
packets. With ``--duplex`` it also echoes every packet back, so the engine's receive path (latching,
jitter buffer, G.711 decode into on_audio) runs too, as in real calls.

Run: .venv/bin/python bench/rtp_clock.py [--sessions 1 50 200] [--seconds 5] [--duplex]
(figures only; nothing here is asserted)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import statistics
import struct
import sys
import time
from collections import defaultdict
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.rtp.session import MediaEngine, RtpSession  # noqa: E402

WARMUP = 0.5
"""Seconds of each session's start ignored (socket setup, first ticks)."""
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


def receiver(conn: Connection, seconds: float, duplex: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    kernel_ts = True
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        kernel_ts = False
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    conn.send(sock.getsockname()[1])
    arrivals: dict[int, list[float]] = defaultdict(list)
    deadline = time.monotonic() + seconds + 30.0  # hard bound even if the parent never says stop
    while time.monotonic() < deadline and not conn.poll():
        try:
            data, ancdata, _flags, addr = sock.recvmsg(2048, 64)
        except TimeoutError:
            continue
        t = time.monotonic()
        for level, kind, cdata in ancdata:
            if kernel_ts and level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                t = sec + nsec * 1e-9
        if len(data) >= 12:
            arrivals[int.from_bytes(data[8:12], "big")].append(t)
            if duplex:
                sock.sendto(data, addr)
    gaps: list[float] = []
    means: list[float] = []
    packets = 0
    for times in arrivals.values():
        start = times[0] + WARMUP
        kept = [t for t in times if t >= start]
        packets += len(kept)
        gaps.extend(1000 * (b - a) for a, b in zip(kept, kept[1:], strict=False))
        if len(kept) > 1:
            means.append(1000 * (kept[-1] - kept[0]) / (len(kept) - 1))
    conn.send((gaps, means, packets, kernel_ts))
    sock.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


async def run(n: int, seconds: float, duplex: bool) -> None:
    parent, child = mp.Pipe()
    proc = mp.Process(target=receiver, args=(child, seconds, duplex), name="rtp-bench-receiver")
    proc.start()
    try:
        port = parent.recv()
        engine = MediaEngine("127.0.0.1", 30000, 30000 + 4 * n + 200)
        await engine.start()
        sessions: list[RtpSession] = []
        for k in range(n):
            s = await engine.open_session(call_id=f"bench-{k}")
            s.configure(remote=("127.0.0.1", port), payload_type=0, telephone_event_pt=101)
            s.on_audio = lambda _pcm: None
            sessions.append(s)
        prompt = [bytes([0x10 + k % 64]) * 160 for k in range(50)]  # 1 s prompts, played back to back

        async def talk(s: RtpSession) -> None:
            for _ in range(int(seconds + 2)):
                await s.play(prompt)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            async with asyncio.timeout(seconds + WARMUP), asyncio.TaskGroup() as tg:
                for s in sessions:
                    tg.create_task(talk(s))
        except TimeoutError:
            pass
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        stats = engine.stats
        received = sum(int(s.stats["received"]) for s in sessions)
        await engine.stop()
        parent.send("stop")
        gaps, means, packets, kernel_ts = parent.recv()
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    mode = "duplex" if duplex else "send"
    mean = statistics.fmean(means) if means else float("nan")
    print(
        f"{n:4d} sessions {mode:6s} send interval p50 {pct(gaps, 0.5):6.2f} ms  p99 {pct(gaps, 0.99):6.2f} ms  "
        f"max {max(gaps, default=float('nan')):6.2f} ms  mean {mean:.4f} ms"
        f"  | tick lateness p50 {stats['tick_lateness_p50_ms']:.2f} p99 {stats['tick_lateness_p99_ms']:.2f}"
        f" max {stats['tick_lateness_max_ms']:.2f} ms, skipped {stats['ticks_skipped']}"
        f"  | engine CPU {100 * cpu:5.1f} % of a core, {packets} pkts measured"
        + (f", {received} received" if duplex else "")
        + ("" if kernel_ts else "  (user-space receive times)")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--duplex", action="store_true", help="also echo packets back (receive path load)")
    args = parser.parse_args()
    for n in args.sessions:
        asyncio.run(run(n, args.seconds, args.duplex))


if __name__ == "__main__":
    main()
