"""A periodic CLOCK_MONOTONIC timer as a file descriptor (timerfd_create(2)), for the media tick.

Why not ``loop.call_at``: uvloop keeps time and timers in whole milliseconds (``loop.time()`` is libuv's
``uv_now``, epoll waits are in ms), so a 5 ms phase tick fired 0–1.1 ms late, spread over that whole
millisecond, and every packet's send time carried that spread; the standard loop rounds its epoll timeout up to
the millisecond too. A timerfd wakes the loop's epoll when the kernel timer expires (its slack: 50 µs), the tick
fires 0.1–0.2 ms late at p99 on this kind of box (bench/README.md, "The tick on a timerfd").

Python 3.11 has no ``os.timerfd_create`` (3.13 has), so libc is called through ctypes; on a system without
timerfd (not Linux) :func:`open_periodic` returns None and the engine keeps ``call_at``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

__all__ = ["PeriodicTimer", "open_periodic"]

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timespec(seconds: float) -> _Timespec:
    whole = int(seconds)
    return _Timespec(whole, int(round((seconds - whole) * 1e9)))


class PeriodicTimer:
    """Expires at ``first``, ``first + period``, ... (CLOCK_MONOTONIC seconds, as ``time.monotonic()``); the
    descriptor is readable once one has passed. Non-blocking and close-on-exec."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self) -> int:
        """Expirations since the last read (0 when none: a spurious wake-up)."""
        try:
            return int(struct.unpack("=Q", os.read(self.fd, 8))[0])
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_periodic(first: float, period: float) -> PeriodicTimer | None:
    """A :class:`PeriodicTimer`, or None where the system has no timerfd."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc (find_library would run ldconfig)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL):
            return None
        raise OSError(err, f"timerfd_create: {os.strerror(err)}")
    spec = _Itimerspec(_timespec(period), _timespec(first))
    if settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
    return PeriodicTimer(fd)
