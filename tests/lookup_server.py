"""The accounts back end the sample flow ``account`` looks up: an aiohttp web server on 127.0.0.1, in a thread of
its own so it answers whichever loop (or process) the test drives calls from. Knobs: ``hang`` (a dead back
end: requests are taken and never answered), ``statuses`` (the next answers' error statuses)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

TOKEN = "Bearer test-token-7f3a"
ACCOUNTS: dict[str, dict[str, Any]] = {
    "345678": {"id": "345678", "name": "Ada Lovelace", "balance": "1234.50", "due": {"date": "2026-12-15"}},
}


class AccountServer:
    def __init__(self) -> None:
        self.hang = False
        self.statuses: list[int] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.bodies: list[Any] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="account-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def yaml(self, **more: object) -> str:
        """The config's ``lookups:`` section naming this server as the ``accounts`` back end."""
        extra = "".join(f", {k}: {v}" for k, v in more.items())
        return f"lookups: {{accounts: {{url: '{self.url}', headers: {{Authorization: '{TOKEN}'}}{extra}}}}}\n"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.headers.get("Authorization")))
        if request.can_read_body:
            self.bodies.append(await request.json())
        if self.hang:
            await self._release.wait()  # a dead back end: the connection is taken, no answer comes
        if request.headers.get("Authorization") != TOKEN:
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.statuses:
            return web.json_response({"error": "busy"}, status=self.statuses.pop(0))
        account = ACCOUNTS.get(request.match_info.get("id", ""))
        if account is None:
            return web.json_response({"error": "no such account"}, status=404)
        return web.json_response(account)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/accounts/{id}", self._handle)
        app.router.add_route("*", "/echo", self._handle)
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> AccountServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
