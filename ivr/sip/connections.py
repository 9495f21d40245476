"""The asyncio adapter of SIP over TCP and TLS (RFC 3261 section 18): listening, connecting, reuse.

One table of connections by peer address serves both directions: a connection a peer opened carries our
responses (section 18.2.2) and our requests to the address its Via names (RFC 5923's alias, without which a
phone behind NAT could not be called back); one we opened to a registrar carries what the registrar sends us.
Messages are framed by ``ivr.sip.framing``; a keep-alive ping gets its pong here. TLS is the standard library's
``ssl``: our certificate to peers, theirs verified against the configured CAs (on by default), the name we
connected by checked unless the peer was configured by address (then the address is checked). A connection
that fails, breaks or stays idle is closed and reported (``on_failed``): what waited on it fails over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from ivr.sip.framing import PING, FramingError, StreamFramer

__all__ = ["StreamConnections", "TlsSettings", "client_context", "server_context"]

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Bounds on connections: how many at once, how long one may sit unused, how long a connect may take.
MAX_CONNECTIONS = 2048
IDLE_SECONDS = 1900.0  # beyond the default session interval: a live dialog's refresh keeps it
CONNECT_TIMEOUT = 10.0
#: Bytes a peer that does not read may leave queued before its connection is given up.
MAX_QUEUED = 1024 * 1024

_TOP_VIA = re.compile(rb"^(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*(?:TCP|TLS)[ \t]+"
                      rb"(\[[0-9A-Fa-f:.]+\]|[0-9.]+)(?::([0-9]{1,5}))?", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class TlsSettings:
    """``sip.tls``: our certificate and key, the CAs peers are checked against, and how strictly."""

    cert: Path
    key: Path
    #: CA file (PEM) or directory; None: the system's CAs.
    ca: Path | None = None
    #: Check the certificate of servers we connect to (registrars, trunks). Off only for a lab.
    verify_server: bool = True
    #: Clients' certificates: "none" (not asked), "optional" (checked if sent), "required".
    client_certs: str = "none"


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context of our TLS listener (raises OSError / ssl.SSLError for a missing or bad file)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_certs != "none":
        _load_cas(context, tls.ca)
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_certs == "required" else ssl.CERT_OPTIONAL
    return context


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context of connections we open: our certificate as the client's, the server's checked."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.verify_server:
        _load_cas(context, tls.ca)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_cas(context: ssl.SSLContext, ca: Path | None) -> None:
    if ca is None:
        context.load_default_certs()
    elif ca.is_dir():
        context.load_verify_locations(capath=str(ca))
    else:
        context.load_verify_locations(cafile=str(ca))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({exc.verify_message})" if isinstance(exc, ssl.SSLCertVerificationError) else exc.reason
    return str(exc) or type(exc).__name__


class _Connection(asyncio.Protocol):
    def __init__(self, owner: StreamConnections, transport_name: str, outbound: Address | None = None) -> None:
        self.owner = owner
        self.name = transport_name  # TCP or TLS
        self.peer: Address | None = outbound
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.queued: list[bytes] = []
        self.keys: set[Address] = set()
        self.last_used = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but is one
        self.owner._attach(self, self.peer)
        for data in self.queued:
            self.transport.write(data)
        self.queued.clear()

    def data_received(self, data: bytes) -> None:
        self.last_used = time.monotonic()
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            log.warning("sip %s from %s:%s closed: %s", self.name.lower(), *(self.peer or ("?", 0)), exc)
            self.close()
            return
        for message in messages:
            if self.closed or self.peer is None:
                return
            if message == PING:
                self.write(b"\r\n")  # RFC 5626 section 3.5.1: the pong
                continue
            via = _TOP_VIA.search(message[: message.find(b"\r\n\r\n")])
            if via is not None and not message.startswith(b"SIP/"):
                host = via.group(1).decode().strip("[]")
                if host == self.peer[0] and via.group(2) is not None:
                    self.owner._attach(self, (host, int(via.group(2))))
            self.owner.on_message(message, self.peer, self.name)

    def write(self, data: bytes) -> None:
        self.last_used = time.monotonic()
        if self.transport is None:
            self.queued.append(data)
            return
        if self.transport.get_write_buffer_size() > MAX_QUEUED:
            log.warning("sip %s to %s:%s closed: the peer does not read", self.name.lower(), *(self.peer or ("?", 0)))
            self.close()
            return
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        else:
            self.connection_lost(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.owner._detach(self)


class StreamConnections:
    """Every TCP and TLS connection of one SIP endpoint; ``on_message(data, source, "TCP"|"TLS")`` gets each
    framed message, ``on_failed(address)`` each address whose connection failed or closed."""

    def __init__(self, on_message: Callable[[bytes, Address, str], None], on_failed: Callable[[Address], None], *,
                 tls_server: ssl.SSLContext | None = None, tls_client: ssl.SSLContext | None = None) -> None:
        self.on_message = on_message
        self.on_failed = on_failed
        self.tls_server = tls_server
        self.tls_client = tls_client
        #: The name to check a TLS server's certificate against, by address (else the address itself).
        self.server_names: dict[Address, str] = {}
        self._by_address: dict[Address, _Connection] = {}
        self._all: set[_Connection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._listeners: list[socket.socket] = []
        #: When a refused TLS handshake from each host was last logged.
        self._refused_at: dict[str, float] = {}

    async def listen(self, transport_name: str, host: str, port: int) -> int:
        """Listen for TCP or TLS on host:port; the port bound (OSError when it cannot)."""
        loop = asyncio.get_running_loop()
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="sip-streams-idle")
        if transport_name == "TLS":
            listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                            backlog=512, reuse_port=False)
            listener.setblocking(False)
            self._listeners.append(listener)
            accepting = asyncio.create_task(self._accept_tls(listener), name="sip-tls-accept")
            self._connecting.add(accepting)
            accepting.add_done_callback(self._connecting.discard)
            bound = listener.getsockname()
        else:
            server = await loop.create_server(lambda: self._accepted(transport_name), host, port, reuse_address=True)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
        log.info("sip listening on %s %s:%s", transport_name.lower(), bound[0], bound[1])
        return int(bound[1])

    def _accepted(self, transport_name: str) -> _Connection:
        connection = _Connection(self, transport_name)
        if len(self._all) >= MAX_CONNECTIONS:
            log.warning("sip %s connection refused: %d open", transport_name.lower(), len(self._all))
            connection.closed = True  # connection_made closes it below
        return connection

    async def _accept_tls(self, listener: socket.socket) -> None:
        """Our TLS listener: each client's handshake in its own task (``connect_accepted_socket``), so that a
        refused one can be logged: the loop's own server-side TLS drops failures silently."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: a moment, then on
                log.warning("sip tls accept failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if len(self._all) >= MAX_CONNECTIONS:
                log.warning("sip tls connection refused: %d open", len(self._all))
                sock.close()
                continue
            task = asyncio.create_task(self._serve_tls(sock), name="sip-tls-handshake")
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _serve_tls(self, sock: socket.socket) -> None:
        """The server side of one TLS handshake; a refused one (a certificate from no CA we trust, none when
        one is required, a client speaking no TLS) is one log line per source and minute."""
        loop = asyncio.get_running_loop()
        peer = sock.getpeername()
        connection = _Connection(self, "TLS")
        try:
            await loop.connect_accepted_socket(lambda: connection, sock, ssl=self.tls_server,
                                               ssl_handshake_timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            sock.close()
            host = str(peer[0])
            now = time.monotonic()
            if now - self._refused_at.get(host, -120.0) >= 60.0:
                if len(self._refused_at) > 1024:
                    self._refused_at.clear()
                self._refused_at[host] = now
                log.warning("sip tls handshake from %s:%s refused: %s", host, peer[1], _reason(exc))

    def send(self, data: bytes, address: Address, transport_name: str) -> None:
        """Send on the connection to ``address``, opening one when there is none."""
        connection = self._by_address.get(address)
        if connection is not None and connection.name != transport_name:
            connection = None
        if connection is None:
            connection = self._connect(address, transport_name)
            if connection is None:
                return
        connection.write(data)

    def _connect(self, address: Address, transport_name: str) -> _Connection | None:
        if transport_name == "TLS" and self.tls_client is None:
            log.warning("sip tls to %s:%s not possible: no sip.tls certificate configured", *address)
            asyncio.get_running_loop().call_soon(self.on_failed, address)
            return None
        connection = _Connection(self, transport_name, outbound=address)
        self._by_address[address] = connection
        connection.keys.add(address)
        self._all.add(connection)
        task = asyncio.create_task(self._open(connection, address), name=f"sip-connect-{address[0]}:{address[1]}")
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return connection

    async def _open(self, connection: _Connection, address: Address) -> None:
        loop = asyncio.get_running_loop()
        tls = connection.name == "TLS"
        name = self.server_names.get(address, address[0]) if tls else None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.create_connection(lambda: connection, address[0], address[1],
                                             ssl=self.tls_client if tls else None, server_hostname=name)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("sip %s connection to %s:%s failed: %s", connection.name.lower(), *address, _reason(exc))
            connection.connection_lost(exc)

    def _attach(self, connection: _Connection, address: Address) -> None:
        if connection.closed:
            if connection.transport is not None:
                connection.transport.abort()
            return
        self._all.add(connection)
        connection.keys.add(address)
        self._by_address[address] = connection

    def _detach(self, connection: _Connection) -> None:
        self._all.discard(connection)
        for key in connection.keys:
            if self._by_address.get(key) is connection:
                del self._by_address[key]
                self.on_failed(key)

    async def _reap(self) -> None:
        """Close connections nobody used for IDLE_SECONDS (bounded memory against idle peers)."""
        while True:
            await asyncio.sleep(min(60.0, IDLE_SECONDS / 4))
            cutoff = time.monotonic() - IDLE_SECONDS
            for connection in [c for c in self._all if c.last_used < cutoff]:
                connection.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connecting):
            task.cancel()
        for task in list(self._connecting):
            with contextlib.suppress(BaseException):
                await task
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for connection in list(self._all):
            if connection.transport is not None:
                connection.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
