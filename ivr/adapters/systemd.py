"""systemd's service manager protocol (sd_notify(3)): READY, STATUS, RELOADING, STOPPING and the watchdog.

Why these few lines and not a library: the protocol is one datagram of ``KEY=value`` lines to the unix socket
named by ``$NOTIFY_SOCKET`` (an ``@`` prefix meaning the abstract namespace). The PyPI ``sdnotify`` package has
not been released since 2017 and sends with a blocking socket; ``systemd-python`` needs libsystemd's headers
and a compiler on the box. Here the socket is non-blocking, so a service manager that is slow to read can
never stall the event loop that answers calls: a datagram that would block is dropped and counted.

Without ``$NOTIFY_SOCKET`` (run by hand, under tests, in a container) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger("ivr.systemd")


class Notifier:
    """The daemon's line to systemd. ``watchdog_interval``: seconds within which systemd expects a
    ``WATCHDOG=1`` (``WatchdogSec=``), None when the unit asks for none."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_usec / 1e6 if watchdog_usec else None
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls) -> Notifier:
        """As sd_notify(3) and sd_watchdog_enabled(3) read it; ``WATCHDOG_PID`` naming another process (a
        wrapper's child) means the watchdog is not ours."""
        env = os.environ
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"]) or None
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of ``KEY=value`` lines; False when not under systemd or it could not be sent now."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), target)
            return True
        except BlockingIOError:
            self.dropped += 1
            return False
        except OSError as exc:  # the manager went away (a test's socket closed): say so once, serve on
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror or exc)
                self._warned = True
            return False

    def status(self, text: str) -> None:
        self.send(f"STATUS={_one_line(text)}")

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={_one_line(status)}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        """Before a reload; ``ready()`` after it. MONOTONIC_USEC as systemd 253's Type=notify-reload wants."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                  "STATUS=reloading flows")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={_one_line(status)}")

    async def keep_alive(self, stopping: asyncio.Event, status: Callable[[], str | None] | None = None) -> None:
        """``WATCHDOG=1`` from the event loop itself at half the interval, so a wedged loop (a blocking call,
        a stopped process) misses it and systemd restarts the service; with it, ``status()`` refreshed (when it
        says something: None while the start still reports its own steps)."""
        if self.address is None:
            return
        period = self.watchdog_interval / 2 if self.watchdog_interval else 10.0
        while not stopping.is_set():
            lines = ["WATCHDOG=1"] if self.watchdog_interval else []
            text = status() if status is not None else None
            if text is not None:
                lines.append(f"STATUS={_one_line(text)}")
            if lines:
                self.send(*lines)
            try:
                await asyncio.wait_for(stopping.wait(), period)
            except TimeoutError:
                pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
