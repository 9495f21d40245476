"""The media worker's control protocol: records between the daemon and its media worker process (sans-I/O).

A record is a tuple whose first item names it (the ``OP_*`` and ``EV_*`` below). Many records travel in one
AF_UNIX SOCK_SEQPACKET message (ivr.rtp.channel), each as a 4-byte length and its pickle: pickle because both
ends are this program, on a socketpair nothing else can write to, and it is the cheapest codec Python has for
small tuples of bytes, ints and strings (a call's whole prompt, its SRTP keys, a stats dict). A message stays
under :data:`MAX_MESSAGE`, well inside the socket's default send buffer (212,992 bytes on Linux), so a prompt
longer than :data:`PLAY_CHUNK_FRAMES` frames goes as a PLAY and MORE records.

Daemon → worker: OPEN (the RTP and RTCP sockets attached as SCM_RIGHTS), CONFIGURE, COMEDIA, AUDIO (whether
decoded audio is wanted), PLAY/MORE, CANCEL, RELAY/UNRELAY (a bridge's audio, worker-local), CLOSE.
Worker → daemon: READY, DTMF, DONE (a prompt's last frame went out), AUDIO (the caller's 20 ms and the frame we
sent meanwhile, for the echo check), RECEIVED (when each session last heard its caller), ENGINE (its tick
statistics), REPLY (to CLOSE and UNRELAY, by request id).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_MESSAGE", "PLAY_CHUNK_FRAMES", "ControlError", "pack", "unpack"]

MAX_MESSAGE = 64 * 1024
PLAY_CHUNK_FRAMES = 320
"""Frames (160 bytes each) in one PLAY or MORE record: 51,200 bytes, 6.4 s of audio."""

OP_OPEN = "open"
OP_CONFIGURE = "configure"
OP_COMEDIA = "comedia"
OP_AUDIO = "audio"
OP_PLAY = "play"
OP_MORE = "more"
OP_CANCEL = "cancel"
OP_RELAY = "relay"
OP_UNRELAY = "unrelay"
OP_CLOSE = "close"
OP_STOP = "stop"

EV_READY = "ready"
EV_DTMF = "dtmf"
EV_DONE = "done"
EV_AUDIO = "audio"
EV_RECEIVED = "received"
EV_ENGINE = "engine"
EV_REPLY = "reply"

_LENGTH = struct.Struct("!I")

Record = tuple[Any, ...]


class ControlError(ValueError):
    """A message that does not decode: the other end is not our worker (or not our version of it)."""


def pack(records: Iterable[Record]) -> list[bytes]:
    """Records into as few messages as fit :data:`MAX_MESSAGE` (a record larger than that goes alone)."""
    messages: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for record in records:
        blob = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        if parts and size + _LENGTH.size + len(blob) > MAX_MESSAGE:
            messages.append(b"".join(parts))
            parts, size = [], 0
        parts += (_LENGTH.pack(len(blob)), blob)
        size += _LENGTH.size + len(blob)
    if parts:
        messages.append(b"".join(parts))
    return messages


def unpack(message: bytes) -> list[Record]:
    """The records of one message, in order; :class:`ControlError` for a message that is not ours."""
    out: list[Record] = []
    view = memoryview(message)
    at = 0
    while at < len(view):
        if at + _LENGTH.size > len(view):
            raise ControlError("truncated record length")
        (n,) = _LENGTH.unpack_from(view, at)
        at += _LENGTH.size
        if at + n > len(view):
            raise ControlError("truncated record")
        try:
            record = pickle.loads(view[at:at + n])
        except Exception as exc:
            raise ControlError(f"undecodable record: {exc}") from exc
        if not isinstance(record, tuple) or not record or not isinstance(record[0], str):
            raise ControlError("not a control record")
        out.append(record)
        at += n
    return out
