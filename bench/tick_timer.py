"""How late does a 5 ms periodic tick fire: the loop's ``call_at`` or a timerfd, on uvloop and on asyncio's loop?

Run: .venv/bin/python bench/tick_timer.py [--ticks 4000]   (figures only; nothing here is asserted)

Each variant runs in a fresh process: ``--ticks`` ticks 5 ms apart on an absolute schedule (as the media
engine's phase tick), each tick's lateness taken with ``time.monotonic()`` against its nominal time. The media
engine moved from ``call_at`` to the timerfd (ivr/rtp/timerfd.py) by these figures (bench/README.md, "The
tick on a timerfd").
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.rtp.timerfd import open_periodic  # noqa: E402

PERIOD = 0.005


async def by_call_at(ticks: int) -> list[float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    late: list[float] = []
    start = time.monotonic() + 0.01

    def tick() -> None:
        late.append(time.monotonic() - (start + len(late) * PERIOD))
        if len(late) >= ticks:
            done.set_result(None)
        else:
            loop.call_at(start + len(late) * PERIOD, tick)

    loop.call_at(start, tick)
    await done
    return late


async def by_timerfd(ticks: int) -> list[float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    late: list[float] = []
    start = time.monotonic() + 0.01
    timer = open_periodic(start, PERIOD)
    if timer is None:
        raise SystemExit("no timerfd on this system")

    def ready() -> None:
        now = time.monotonic()
        for _ in range(timer.read()):
            late.append(now - (start + len(late) * PERIOD))
        if len(late) >= ticks and not done.done():
            loop.remove_reader(timer.fd)
            done.set_result(None)

    loop.add_reader(timer.fd, ready)
    try:
        await done
    finally:
        timer.close()
    return late


def one(timer: str, loop: str, ticks: int) -> None:
    run = by_timerfd if timer == "timerfd" else by_call_at
    if loop == "uvloop":
        import uvloop

        late = uvloop.run(run(ticks))
    else:
        late = asyncio.run(run(ticks))
    late.sort()
    pct = [1000 * late[min(int(q * len(late)), len(late) - 1)] for q in (0.5, 0.9, 0.99, 0.999)]
    print(f"| {timer} | {loop} | {ticks} | " + " / ".join(f"{v:.3f}" for v in pct) + f" / {1000 * late[-1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=4000)
    parser.add_argument("--one", nargs=2, metavar=("TIMER", "LOOP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one[0], args.one[1], args.ticks)
        return
    print("| timer | loop | ticks | lateness p50 / p90 / p99 / p99.9 / max ms |")
    print("| --- | --- | ---: | --- |")
    for timer in ("call_at", "timerfd"):
        for loop in ("uvloop", "asyncio"):
            subprocess.run([sys.executable, __file__, "--ticks", str(args.ticks), "--one", timer, loop],
                           check=True, timeout=120)


if __name__ == "__main__":
    main()
