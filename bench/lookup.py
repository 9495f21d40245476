"""Data look-ups (``http`` nodes): what a caller waits, through the box's one shared client (ivr.adapters.lookup).

1. Latency: N callers at once each look an account up in a local aiohttp back end (127.0.0.1), for a number
   of rounds: p50 / p99 / max of the look-up as the engine waits it.
2. A dead back end (takes connections, never answers): M callers one after another, with the circuit breaker
   and without it (failures to open set beyond M): the callers' total wait and the requests the back end saw.

    .venv/bin/python bench/lookup.py [--callers 1 50 200] [--rounds 20] [--dead 50] [--timeout 2]

Figures, never asserts (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web  # noqa: E402

from ivr.adapters.lookup import HttpLookups  # noqa: E402
from ivr.config import LookupConfig  # noqa: E402
from ivr.engine.call import LookupRequest  # noqa: E402

ACCOUNT = {"id": "345678", "balance": {"dollars": 42, "cents": 17}, "due": {"month": 12, "day": 15}}


async def serve(dead: bool) -> tuple[web.AppRunner, str, list[int], asyncio.Event]:
    seen: list[int] = []
    forever = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        seen.append(1)
        if dead:
            await forever.wait()
        return web.json_response(ACCOUNT)

    app = web.Application()
    app.router.add_get("/accounts/{id}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", seen, forever


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def latency(callers: list[int], rounds: int) -> None:
    runner, url, _, _ = await serve(dead=False)
    lookups = HttpLookups({"accounts": LookupConfig("accounts", url, {"Authorization": "Bearer x"})})
    try:
        print("callers at once | look-up p50 / p99 / max (ms) | look-ups/s")
        for n in callers:
            waits: list[float] = []
            started = time.perf_counter()
            for _ in range(rounds):
                results = await asyncio.gather(*(lookups.fetch(LookupRequest("accounts", "GET", f"/accounts/{i}"))
                                                 for i in range(n)))
                waits += [r.seconds * 1000 for r in results]
            rate = len(waits) / (time.perf_counter() - started)
            print(f"{n:>15} | {statistics.median(waits):.2f} / {pct(waits, 0.99):.2f} / {max(waits):.2f}"
                  f" | {rate:.0f}")
    finally:
        await lookups.aclose()
        await runner.cleanup()


async def dead_backend(callers: int, timeout: float) -> None:
    print(f"\ndead back end, {callers} callers one after another, timeout {timeout:g} s")
    print("breaker | callers' total wait (s) | longest wait (s) | requests the back end saw")
    for label, failures in (("on", 1), ("off", callers + 1)):
        runner, url, seen, forever = await serve(dead=True)
        lookups = HttpLookups({"accounts": LookupConfig("accounts", url, timeout=timeout, breaker_failures=failures,
                                                        breaker_cool_down=3600)})
        try:
            waits = [(await lookups.fetch(LookupRequest("accounts", "GET", "/accounts/1"))).seconds
                     for _ in range(callers)]
        finally:
            forever.set()
            await lookups.aclose()
            await runner.cleanup()
        print(f"{label:>7} | {sum(waits):.2f} | {max(waits):.2f} | {len(seen)}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, nargs="+", default=[1, 50, 200])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--dead", type=int, default=20, help="callers against the dead back end")
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the adapter's "circuit open" warning is not a figure
    await latency(args.callers, args.rounds)
    await dead_backend(args.dead, args.timeout)


if __name__ == "__main__":
    asyncio.run(main())
