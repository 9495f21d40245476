"""Promises are durable before they are said; navigation is not waited for, and a crash loses at most one
``unsaved_seconds`` span of it (issue 19 item 1; docs/event-log.md#durability). A real process writing the log
is SIGKILLed at a moment the test chooses, healthy disk and stalled disk alike."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ivr.store.eventlog import EventLog
from tests.conftest import REPO

WINDOW = 0.25

WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from ivr.store.eventlog import EventLog

    async def main(path, window, stall_at):
        log = await EventLog.open(Path(path), "site")
        log.unsaved_seconds = window
        out = sys.stdout
        started = time.monotonic()
        stalled = False
        for n in range(200000):
            if not stalled and time.monotonic() - started > stall_at:
                stalled = True
                async def hold(db):  # the writer held inside a transaction: a disk whose fsync hangs
                    await asyncio.sleep(600)
                asyncio.ensure_future(log.transaction(hold))
            if n % 6 == 5 and not stalled:  # stalled, the calls go on navigating menus: posts only
                await log.append("survey.answer", "call", n=n)
                out.write(f"P {n} {time.monotonic()}\\n")
            else:
                t = time.monotonic()
                await log.post("node.entered", "call", n=n)
                out.write(f"N {n} {t}\\n")
            out.flush()
            await asyncio.sleep(0.0005)

    asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
""")


def crash_while_writing(db: Path, stall_at: float, kill_after: float) -> tuple[dict[int, float], set[int], set[int]]:
    """Run the writer, SIGKILL it ``kill_after`` seconds in; (navigation posted: n → time it was posted,
    promises acknowledged, n found in the log after the crash)."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(WINDOW), str(stall_at)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    time.sleep(kill_after)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    posted: dict[int, float] = {}
    promised: set[int] = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # the line the kill cut short
        if parts[0] == "N":
            posted[int(parts[1])] = float(parts[2])
        else:
            promised.add(int(parts[1]))
    with sqlite3.connect(db) as conn:
        found = {int(r[0]) for r in conn.execute("SELECT json_extract(data, '$.n') FROM events")}
    return posted, promised, found


@pytest.mark.parametrize(("stall_at", "kill_after"), [(999.0, 2.0), (1.0, 2.5)], ids=["healthy-disk", "stalled-disk"])
def test_a_crash_loses_no_promise_and_at_most_one_window_of_navigation(tmp_path: Path, stall_at: float,
                                                                        kill_after: float) -> None:
    posted, promised, found = crash_while_writing(tmp_path / "ivr.db", stall_at, kill_after)
    assert len(promised) > 20 and len(posted) > 100
    assert promised <= found, f"acknowledged promises lost: {sorted(promised - found)[:10]}"
    last_promise = max(promised)
    lost = sorted(n for n in posted if n not in found)
    assert all(n > last_promise for n in lost), "navigation queued before an acknowledged promise was lost"
    if lost:
        span = posted[lost[-1]] - posted[lost[0]]
        assert span <= WINDOW + 0.1, f"lost navigation spans {span:.3f} s > {WINDOW} s: {lost[:5]}...{lost[-5:]}"
    if stall_at < kill_after:  # the disk hung 1 s in: posts went on for one window, then waited for the disk
        assert lost, "nothing was at risk: the stall did not hold the writer"
        stalled_posts = [t for t in posted.values() if t >= posted[lost[0]]]
        assert max(stalled_posts) - min(stalled_posts) <= WINDOW + 0.1


async def test_navigation_does_not_wait_for_the_disk_but_keeps_its_order(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "ivr.db", "site")
    try:
        gate = asyncio.Event()

        async def slow_commit(db: object) -> None:  # the writer busy: a commit in progress on a slow disk
            await gate.wait()

        held = asyncio.ensure_future(log.transaction(slow_commit))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        for n in range(3):
            await log.post("node.entered", "call", n=n)
        assert time.monotonic() - started < 0.05  # the call went on while nothing could be committed
        promise = asyncio.ensure_future(log.append("survey.answer", "call", n=3))
        await asyncio.sleep(0.05)
        assert not promise.done()  # a promise waits for its commit
        gate.set()
        await promise
        await held
        async with log.db.execute("SELECT json_extract(data, '$.n') FROM events ORDER BY seq") as cur:
            assert [r[0] for r in await cur.fetchall()] == [0, 1, 2, 3]
    finally:
        await log.close()
