"""The PBX link's connection: an asyncio adapter over Asterisk's Manager Interface, built around ``asterisk-ami`` 0.1.7.

asterisk-ami owns the socket and a reader thread that fires listeners; everything above is asyncio. The
thread hands each message to the loop with ``loop.call_soon_threadsafe``, holding one credit of a bounded
semaphore per message in flight (``inbox_size``): when the loop falls behind, the reader stops reading and TCP
pushes back on Asterisk, so no response is ever dropped and memory stays bounded. No asterisk-ami type leaves
this module: callers see ``ivr.proto.ami`` messages, and ``ivr.adapters.ami`` builds the typed
actions (Originate, DBGet, QueueStatus...) and the queue monitor on ``AmiLink.action``.

What asterisk-ami 0.1.7 does and does not do (read from its source, ``asterisk/ami/client.py``), and what we
do about each gap — each also noted where it is handled:

- socket + reader thread + listener dispatch (``AMIClient.connect``/``add_listener``/``_fire_on_*``): USED.
- framing (``_next_pack`` splits on CRLFCRLF; ``Event.read``/``Response.read``): REPLACED by our
  ``proto.ami.AmiParser`` in ``_ReaderClient.listen`` because it does not accept bare-LF line ends, keeps
  only the last of repeated keys in events (``Variable:``), drops lines without ``": "``, splits a legacy
  ``Response: Follows`` body at its first empty line, and on a bad banner raises inside the thread (the
  thread dies and ``on_disconnect`` never fires).
- socket timeout: ``AMIClient`` uses one timeout for connect and for every ``recv``, so an idle link
  (no events for ``timeout`` seconds) is torn down. We bound the connect by ``action_timeout``, then poll
  ``recv`` every ``_POLL`` s so the thread notices ``disconnect()``, and leave liveness to our ``Ping``.
- ``send`` uses ``socket.send`` (may write part of an action) with no lock: REPLACED by ``sendall`` under
  a lock, run on one ``ami-io`` worker thread so the event loop never blocks on the socket.
- ``send_action``/``FutureResponse``: blocking futures on a ``threading.Condition``, keyed by ActionID,
  resolved by the response only. NOT USED: list actions (events until ``…Complete``), async Originate
  (``OriginateResponse`` event), per-action timeouts and failing everything in flight on a disconnect
  are done by ``proto.ami.ActionCorrelator`` and asyncio futures.
- ``LoginAction`` is plain-text only: MD5 challenge login is ours (``Challenge`` then ``Login`` with
  ``AuthType: MD5`` and ``Key``).
- ``AutoReconnect``: a thread that pings and re-logs in every ``delay`` s with a fixed delay, blocking.
  NOT USED: reconnect with exponential backoff and jitter, re-subscription and resync hooks live in
  ``AmiLink._supervise``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Self

from asterisk.ami import AMIClient  # type: ignore[import-untyped]

from ivr.errors import IvrError
from ivr.proto.ami import (
    ActionCorrelator,
    ActionResult,
    AmiBanner,
    AmiEvent,
    AmiMessage,
    AmiParser,
    AmiResponse,
    FieldsIn,
    login_key,
    serialize_action,
)

log = logging.getLogger("ivr.ami")

#: how often the reader thread wakes from ``recv`` to notice a local ``disconnect()`` (seconds)
_POLL = 0.25
#: how long we wait for the reader thread to end after closing its socket
_JOIN = 2.0


@dataclass(frozen=True)
class AmiSettings:
    """How to reach and keep the Asterisk Manager Interface (manager.conf user; see docs/asterisk/)."""

    host: str = "127.0.0.1"
    """Asterisk's address (manager.conf ``bindaddr``)."""
    port: int = 5038
    """manager.conf ``port``."""
    username: str = ""
    """The manager.conf section name of the appliance's user."""
    secret: str = ""
    """Its ``secret``. With ``auth="md5"`` it never crosses the wire."""
    auth: Literal["md5", "plain"] = "md5"
    """``md5``: Challenge/Login with a digest key; ``plain``: the secret in clear text."""
    ping_interval: float = 20.0
    """Seconds between keep-alive ``Ping``s; a Ping unanswered within ``action_timeout`` drops the link."""
    action_timeout: float = 5.0
    """Default limit for one action (connect, banner and login too). List actions have the same limit."""
    reconnect_min: float = 0.5
    """First reconnect delay (s); doubles per failed attempt…"""
    reconnect_max: float = 30.0
    """…up to this. Each delay is jittered (half fixed, half random) so many boxes don't stampede."""


# -- errors -------------------------------------------------------------------------------------------------


class AmiError(IvrError):
    """An action failed: ``response`` is Asterisk's ``Response: Error`` (None when there was no answer)."""

    def __init__(self, action: str, response: AmiResponse | None = None, reason: str | None = None) -> None:
        self.action = action
        self.response = response
        self.reason = reason or (response.message if response is not None else "failed")
        super().__init__(f"AMI {action}: {self.reason}")


class AmiTimeout(AmiError):
    """No (complete) answer within the action's limit."""


class AmiConnectionLost(AmiError):
    """The link dropped (or was down) while the action was in flight; ``events`` is what had arrived of a
    list. The action may or may not have taken effect in Asterisk."""

    def __init__(self, action: str, response: AmiResponse | None = None, events: tuple[AmiEvent, ...] = ()) -> None:
        super().__init__(action, response, "connection lost")
        self.events = events


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Reconnect delay for the ``attempt``-th consecutive failure (0-based): exponential from ``low``, capped
    at ``high``, "equal jitter" (half fixed so it never collapses to zero, half random)."""
    base = min(high, low * (2.0 ** min(attempt, 30)))
    return base / 2 + rng.uniform(0, base / 2)


# -- asterisk-ami, with its reader replaced -----------------------------------------------------------------


class _ReaderClient(AMIClient):  # type: ignore[misc]
    """asterisk-ami's client: its socket, thread and listener dispatch; our framing and our writes.

    See the module docstring for why each overridden method is overridden.
    """

    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        super().__init__(address=host, port=port, timeout=connect_timeout)
        self._send_lock = threading.Lock()

    def connect(self) -> None:
        # Override: AMIClient.connect leaves its connect timeout on recv too (an idle link would drop).
        sock = socket.create_connection((self._address, self._port), timeout=self._timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(_POLL)
        self._socket = sock
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self.listen, name=f"ami-reader-{self._address}:{self._port}")
        self._thread.daemon = True
        self._thread.start()

    def listen(self) -> None:
        # Override: AMIClient.listen/_next_pack frame with a regex on CRLFCRLF; we use proto.ami.AmiParser.
        parser = AmiParser()
        error: BaseException | None = None
        try:
            while not self.finished.is_set():
                try:
                    data = self._socket.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                for item in parser.feed(data):
                    if isinstance(item, AmiBanner):
                        self._fire_on_connect(banner=item)
                    elif isinstance(item, AmiResponse):
                        self._fire_on_response(response=item)
                    elif isinstance(item, AmiEvent):
                        self._fire_on_event(event=item)
                    else:
                        self._fire_on_unknown(pack=item)
        except OSError as exc:
            error = exc
        finally:
            self.finished.set()
            with contextlib.suppress(OSError):
                self._socket.close()
            self._fire_on_disconnect(error=error)

    def send_bytes(self, data: bytes) -> None:
        # Replaces AMIClient.send (socket.send may write part of a frame; no lock between writers).
        with self._send_lock:
            self._socket.sendall(data)

    def disconnect(self) -> None:
        # Override: shut the socket down first so a blocked recv/sendall returns at once.
        if self.finished is not None:
            self.finished.set()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._socket.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN)


# -- event subscription -------------------------------------------------------------------------------------


class EventStream:
    """A bounded view of live AMI events (list items excluded). When full the oldest event is dropped and
    ``dropped`` counts it: a consumer that keeps state must then resync (QueueMonitor does). ``get`` returns
    None when ``wake()`` is called (used to ask a consumer to resync after a reconnect)."""

    def __init__(self, owner: AmiLink, names: Collection[str] | None, maxsize: int) -> None:
        self._owner = owner
        self._names = frozenset(names) if names is not None else None
        self._queue: asyncio.Queue[AmiEvent | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _put(self, item: AmiEvent | None) -> None:
        if item is not None and self._names is not None and item.name not in self._names:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def wake(self) -> None:
        self._put(None)

    async def get(self) -> AmiEvent | None:
        return await self._queue.get()

    def close(self) -> None:
        self._owner._unsubscribe(self)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ConnectHook = Callable[[], Awaitable[None]]
#: called (synchronously, on the loop) the moment a logged-in link is given up
DisconnectHook = Callable[[], None]


# -- the link -----------------------------------------------------------------------------------------------


class AmiLink:
    """One managed AMI link: connects, logs in, subscribes, keeps alive, reconnects; runs actions on it
    (``action``; the typed ones are ``ivr.adapters.ami.AmiAdapter``'s).

    ``await start()`` begins connecting in the background (``wait_connected`` to wait); actions issued while
    the link is down wait for it within their own timeout. ``event_mask`` is re-sent with the ``Events``
    action after every login (that is the re-subscription), then every connect hook runs.
    """

    def __init__(
        self,
        settings: AmiSettings,
        *,
        event_mask: str = "call,agent,user",
        inbox_size: int = 1000,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.event_mask = event_mask
        self.version: str | None = None
        self.logins = 0
        self._rng = rng or random.Random()
        self._correlator = ActionCorrelator()
        self._futures: dict[str, asyncio.Future[ActionResult]] = {}
        self._streams: list[EventStream] = []
        self._hooks: list[ConnectHook] = []
        self._down_hooks: list[DisconnectHook] = []
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._lost = asyncio.Event()
        self._banner: asyncio.Future[AmiBanner] | None = None
        self._client: _ReaderClient | None = None
        self._generation = 0
        self._ids = itertools.count(1)
        self._credits = threading.BoundedSemaphore(inbox_size)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ami-io")
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._supervise(), name="ami-supervisor")

    async def close(self) -> None:
        self._closing.set()
        self._lost.set()
        for t in list(self._hook_tasks):
            t.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=_JOIN + self.settings.action_timeout)
        await self._teardown()
        self._io.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def link_generation(self) -> int:
        """Changes each time the link drops: a consumer of live events compares it to know it missed some."""
        return self._generation

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    def add_connect_hook(self, hook: ConnectHook) -> None:
        """Run ``hook()`` (as a task) after every login+subscribe: resync what events may have missed."""
        self._hooks.append(hook)

    def add_disconnect_hook(self, hook: DisconnectHook) -> None:
        """Call ``hook()`` when a logged-in link is lost (or closed), before the actions in flight fail:
        state kept from events (queue figures) is no longer current from that moment."""
        self._down_hooks.append(hook)

    def events(self, names: Collection[str] | None = None, maxsize: int = 1000) -> EventStream:
        stream = EventStream(self, names, maxsize)
        self._streams.append(stream)
        return stream

    def _unsubscribe(self, stream: EventStream) -> None:
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)

    # -- the connection loop --
    async def _supervise(self) -> None:
        attempt = 0
        s = self.settings
        while not self._closing.is_set():
            self._lost = asyncio.Event()
            try:
                await self._open()
            except (OSError, AmiError, TimeoutError) as exc:
                log.warning("ami connect failed host=%s port=%s error=%r", s.host, s.port, exc)
                await self._teardown()
            else:
                attempt = 0
                self.logins += 1
                self._connected.set()
                log.info("ami connected host=%s port=%s version=%s", s.host, s.port, self.version)
                for hook in self._hooks:
                    self._spawn(hook)
                pinger = asyncio.create_task(self._ping_loop(self._lost), name="ami-ping")
                try:
                    await self._lost.wait()
                finally:
                    pinger.cancel()
                    await asyncio.wait({pinger}, timeout=_JOIN)
                log.warning("ami connection lost host=%s port=%s", s.host, s.port)
                await self._teardown()
            if self._closing.is_set():
                break
            delay = backoff_delay(attempt, s.reconnect_min, s.reconnect_max, self._rng)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    def _spawn(self, hook: ConnectHook) -> None:
        async def run() -> None:
            try:
                await hook()
            except AmiError as exc:
                log.warning("ami connect hook failed hook=%s error=%r", getattr(hook, "__name__", hook), exc)

        task = asyncio.create_task(run(), name="ami-connect-hook")
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    async def _open(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        gen = self._generation
        client = _ReaderClient(s.host, s.port, s.action_timeout)
        client.add_listener(
            on_connect=lambda source, banner: self._post(gen, source, banner),
            on_response=lambda source, response: self._post(gen, source, response),
            on_event=lambda source, event: self._post(gen, source, event),
            on_unknown=lambda source, pack: self._post(gen, source, pack),
            on_disconnect=lambda source, error=None: self._post_closed(gen, error),
        )
        self._banner = loop.create_future()
        self._client = client
        await loop.run_in_executor(self._io, client.connect)
        try:
            async with asyncio.timeout(s.action_timeout):
                banner = await self._banner
        except TimeoutError:
            raise AmiTimeout("Login", None, "no AMI banner") from None
        self.version = banner.version
        if s.auth == "md5":
            challenge = await self._exchange("Challenge", {"AuthType": "MD5"}, timeout=s.action_timeout)
            key = login_key(challenge.response.get("Challenge") or "", s.secret)
            login: FieldsIn = {"Username": s.username, "AuthType": "MD5", "Key": key, "Events": "off"}
        else:
            login = {"Username": s.username, "Secret": s.secret, "Events": "off"}
        await self._exchange("Login", login, timeout=s.action_timeout)
        # The subscription: re-sent after every login, since a new session starts with our Login's "off".
        await self._exchange("Events", {"EventMask": self.event_mask}, timeout=s.action_timeout)

    async def _ping_loop(self, lost: asyncio.Event) -> None:
        s = self.settings
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), s.ping_interval)
                return
            try:
                await self._exchange("Ping", {}, timeout=s.action_timeout)
            except AmiError as exc:
                log.warning("ami keep-alive failed error=%r", exc)
                lost.set()
                return

    async def _teardown(self) -> None:
        """Forget the connection: fail every action in flight, close the socket, stop the reader."""
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._generation += 1
        if was_connected:
            for hook in self._down_hooks:
                try:
                    hook()
                except Exception:  # one consumer's bug must not keep the link from being torn down
                    log.exception("ami disconnect hook failed hook=%s", getattr(hook, "__name__", hook))
        for aid, action in self._correlator.pending().items():
            response, events = self._correlator.partial(aid)
            fut = self._futures.pop(aid, None)
            if fut is not None and not fut.done():
                fut.set_exception(AmiConnectionLost(action, response, events))
        self._correlator.clear()
        if self._banner is not None and not self._banner.done():
            self._banner.cancel()
        client, self._client = self._client, None
        if client is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(RuntimeError, TimeoutError):  # executor already shut down / join slow
                await asyncio.wait_for(loop.run_in_executor(self._io, client.disconnect), _JOIN + 1)

    # -- thread → loop --
    def _post(self, gen: int, client: _ReaderClient, item: AmiMessage | AmiBanner) -> None:
        """Reader thread: hand one message to the loop, waiting (bounded, re-checked) for a free credit."""
        while not self._credits.acquire(timeout=_POLL):
            if self._closing.is_set() or client.finished.is_set():
                return
        loop = self._loop
        try:
            assert loop is not None
            loop.call_soon_threadsafe(self._on_message, gen, item)
        except (RuntimeError, AssertionError):  # loop closed: the adapter is gone
            self._credits.release()

    def _post_closed(self, gen: int, error: BaseException | None) -> None:
        loop = self._loop
        with contextlib.suppress(RuntimeError, AttributeError):
            loop.call_soon_threadsafe(self._on_closed, gen, error)  # type: ignore[union-attr]

    def _on_closed(self, gen: int, error: BaseException | None) -> None:
        if gen == self._generation:
            log.info("ami socket closed error=%r", error)
            self._lost.set()
            if self._banner is not None and not self._banner.done():
                self._banner.set_exception(AmiConnectionLost("Login"))

    def _on_message(self, gen: int, item: AmiMessage | AmiBanner) -> None:
        try:
            if gen != self._generation:
                return  # from a connection we already gave up on
            if isinstance(item, AmiBanner):
                if self._banner is not None and not self._banner.done():
                    self._banner.set_result(item)
                return
            corr = self._correlator.feed(item)
            if corr.done is not None:
                fut = self._futures.pop(corr.done.action_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(corr.done)
            if corr.consumed:
                return
            if isinstance(item, AmiEvent):
                for stream in list(self._streams):
                    stream._put(item)
            elif isinstance(item, AmiResponse):
                log.debug("ami response for no pending action action_id=%s", item.action_id)
            else:
                log.warning("ami malformed message ignored fields=%r unparsed=%r", item.fields[:3], item.unparsed[:3])
        finally:
            self._credits.release()

    # -- actions --
    async def _exchange(
        self,
        action: str,
        values: FieldsIn,
        *,
        variables: Mapping[str, str] | None = None,
        timeout: float,
        list_events: bool = False,
        final_event: str | None = None,
    ) -> ActionResult:
        """Send one action on the current connection and wait for its result (no waiting for a link)."""
        client = self._client
        if client is None:
            raise AmiConnectionLost(action)
        aid = f"ivr-{self._generation}-{next(self._ids)}"
        data = serialize_action(action, aid, values, variables)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ActionResult] = loop.create_future()
        self._correlator.expect(aid, action, list_events=list_events, final_event=final_event)
        self._futures[aid] = fut
        try:
            async with asyncio.timeout(timeout):
                try:
                    await loop.run_in_executor(self._io, client.send_bytes, data)
                except OSError as exc:
                    self._lost.set()
                    raise AmiConnectionLost(action) from exc
                result = await fut
        except TimeoutError:
            response, events = self._correlator.partial(aid)
            raise AmiTimeout(action, response, f"no complete answer within {timeout:g}s") from None
        finally:
            self._correlator.cancel(aid)
            self._futures.pop(aid, None)
        if result.response.is_error:
            raise AmiError(action, result.response)
        return result

    async def action(
        self,
        action: str,
        values: FieldsIn = (),
        *,
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
        list_events: bool = False,
        final_event: str | None = None,
    ) -> ActionResult:
        """Run any AMI action. Waits for the link (within ``timeout``), then for the response — or, for a list
        action, the ``…Complete`` event; or for ``final_event``. Raises ``AmiError`` on ``Response: Error``,
        ``AmiTimeout``, or ``AmiConnectionLost`` when the link drops first."""
        limit = self.settings.action_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            async with asyncio.timeout(limit):
                await self._connected.wait()
        except TimeoutError:
            raise AmiTimeout(action, None, "AMI not connected") from None
        return await self._exchange(
            action,
            values,
            variables=variables,
            timeout=max(0.0, deadline - time.monotonic()),
            list_events=list_events,
            final_event=final_event,
        )

    async def ping(self) -> None:
        await self.action("Ping")
