"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol with aiohttp's websocket client:
navigate, evaluate, click, wait for a condition, screenshot — each wait bounded. What the page fetched and
what it logged (CSP violations included) are kept for the test to check."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page. ``async with Browser.launch(tmp) as b: await b.goto(url)``."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: aiohttp.ClientWebSocketResponse,
                 http: aiohttp.ClientSession, profile: Path) -> None:
        self.proc, self.ws, self.http, self.profile = proc, ws, http, profile
        self.session: str | None = None
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.requests: list[str] = []  # every URL the page asked for
        self.log: list[dict[str, Any]] = []  # console messages and browser log entries (CSP violations)
        self.load_events = 0
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, tmp: Path, *, width: int = 1400, height: int = 2400, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        exe = chromium()
        if exe is None:
            raise CdpError("chromium not installed")
        profile = tmp / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a former run's
        args = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", "--no-first-run",
                "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--mute-audio", "about:blank"]
        with (tmp / "chromium.log").open("wb") as err:
            proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL, stderr=err,
                                                        start_new_session=True)
        http = aiohttp.ClientSession()
        browser = None
        try:
            port_file = profile / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
                if proc.returncode is not None:
                    raise CdpError(f"chromium exited {proc.returncode}: {(tmp / 'chromium.log').read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise CdpError("chromium did not open its DevTools port")
                await asyncio.sleep(0.1)
            port, path = port_file.read_text().splitlines()[:2]
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
            browser = cls(proc, ws, http, profile)
            await browser._open_page(width, height)
            yield browser
        finally:
            if browser is not None:
                await browser.close()
            await http.close()
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await asyncio.wait_for(proc.wait(), 5)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close", browser=True), 5)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader
        await self.ws.close()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            if "id" in m:
                fut = self.waiting.pop(m["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(m)
                continue
            method, params = m.get("method"), m.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.log.append({"source": "console", "level": params.get("type"), "text": text})
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.log.append({"source": "exception", "level": "error",
                                 "text": d.get("exception", {}).get("description") or d.get("text", "")})
            elif method == "Log.entryAdded":
                e = params["entry"]
                self.log.append({"source": e.get("source"), "level": e.get("level"), "text": e.get("text", "")})
            elif method == "Page.loadEventFired":
                self.load_events += 1
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(CdpError("DevTools connection closed"))

    async def send(self, method: str, timeout: float = 30.0, browser: bool = False, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[i] = fut
        msg: dict[str, Any] = {"id": i, "method": method, "params": params}
        if self.session and not browser:
            msg["sessionId"] = self.session
        await self.ws.send_str(json.dumps(msg))
        try:
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(i, None)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def _open_page(self, width: int, height: int) -> None:
        target = await self.send("Target.createTarget", url="about:blank", browser=True)
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True, browser=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)

    async def goto(self, url: str, timeout: float = 30.0) -> None:
        before = self.load_events
        reply = await self.send("Page.navigate", url=url)
        if reply.get("errorText"):
            raise CdpError(f"navigate {url}: {reply['errorText']}")
        await self._until(lambda: self.load_events > before, timeout, f"load of {url}")

    async def eval(self, expression: str, timeout: float = 30.0) -> Any:
        r = await self.send("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                            returnByValue=True)
        if "exceptionDetails" in r:
            raise CdpError(f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = await self.eval(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise CdpError(f"not true after {timeout:.0f} s: {expression}")
            await asyncio.sleep(0.1)

    async def _until(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise CdpError(f"no {what} after {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def click(self, selector: str) -> None:
        ok = await self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                             f"if (!e) return false; e.click(); return true; }})()")
        if not ok:
            raise CdpError(f"nothing to click at {selector}")

    async def click_to_load(self, selector: str, timeout: float = 30.0) -> None:
        """Click something that navigates (a submit button, a link) and wait for the new page's load."""
        before = self.load_events
        await self.click(selector)
        await self._until(lambda: self.load_events > before, timeout, f"page load after clicking {selector}")

    async def screenshot(self, path: Path, clip: tuple[float, float, float, float] | None = None) -> Path:
        """The whole page (beyond the window), or the ``clip`` (x, y, width, height) of it, as PNG."""
        if clip is None:
            size = await self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            clip = (0, 0, size[0], size[1])
        x, y, w, h = clip
        r = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": x, "y": y, "width": w, "height": h, "scale": 1})
        path.write_bytes(base64.b64decode(r["data"]))
        return path
