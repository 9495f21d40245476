"""The dashboard on a test collector: a real PostgreSQL database holding a small fleet's week of events, and
a minimal aiohttp app that mounts ``add_dashboard`` the way the collector does (its pool under an AppKey).

Also runnable, to look at the dashboard by hand: ``python -m tests.central.dash_app`` starts a throwaway
PostgreSQL, loads the fleet and serves http://127.0.0.1:8088/dashboard/ (token ``demo-token``)."""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
from aiohttp import web

from ivr_central.dashboard import add_dashboard, token_hash
from ivr_central.pgtemp import PgTemp
from tests.central.fleet import FLEET, load_fleet

FIRST_DAY = date(2026, 3, 3)  # a week over the US change to summer time (Sunday 2026-03-08)
DAYS = 7
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # the next morning: 08:00 in New York
TOKEN = "viewer-token-for-the-tests-0123456789"
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)

_names = itertools.count(1)


async def fleet_db(pg: PgTemp, scale: float = 1.0) -> str:
    """A new database on ``pg`` with the fleet's week in it (``scale``: of each site's calls a day)."""
    dsn = pg.create_db(f"dash{next(_names)}")
    conn = await asyncpg.connect(dsn)
    try:
        fleet = tuple(replace(s, calls_per_day=round(s.calls_per_day * scale)) for s in FLEET)
        await load_fleet(conn, FIRST_DAY, DAYS, fleet)
    finally:
        await conn.close()
    return dsn


def make_app(dsn: str, **options: object) -> web.Application:
    app = web.Application()

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        yield
        await app[POOL].close()

    app.cleanup_ctx.append(pool_ctx)
    opts: dict[str, object] = {"viewer_tokens": {"manager": token_hash(TOKEN)}, "clock": lambda: NOW}
    opts.update(options)
    add_dashboard(app, pool_key=POOL, **opts)  # type: ignore[arg-type]
    return app


@dataclass
class Served:
    runner: web.AppRunner
    url: str  # http://127.0.0.1:<port>

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(app: web.Application) -> Served:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Served(runner, f"http://127.0.0.1:{port}")


async def _demo(port: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pg = PgTemp(Path(tmp))
        pg.start()
        try:
            dsn = await fleet_db(pg)
            app = make_app(dsn, viewer_tokens={"demo": token_hash("demo-token")})
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            print(f"http://127.0.0.1:{port}/dashboard/  token: demo-token", flush=True)
            await asyncio.Event().wait()
        finally:
            pg.stop()


if __name__ == "__main__":
    asyncio.run(_demo(int(sys.argv[1]) if len(sys.argv) > 1 else 8088))
