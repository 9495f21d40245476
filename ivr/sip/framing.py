"""Cutting SIP messages out of a TCP or TLS byte stream (RFC 3261 section 18.3), sans-I/O.

Over a stream a message ends where its Content-Length says (mandatory there); CRLFs between messages are
RFC 5626 keep-alives: a double CRLF is a ping, answered with one CRLF (section 3.5.1), a lone CRLF a pong.
A message without Content-Length, or larger than the limits, makes the stream unusable: ``FramingError``,
and the connection is closed (its peer reconnects; nothing else can tell where the next message starts).
"""

from __future__ import annotations

import re

__all__ = ["MAX_BODY", "MAX_HEAD", "PING", "FramingError", "StreamFramer"]

#: Bounds: a peer cannot make us buffer more than this per connection.
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
#: What ``StreamFramer.feed`` returns for a keep-alive ping (answer it with b"\r\n").
PING = b"\r\n\r\n"

_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


class FramingError(Exception):
    """The stream cannot be framed any further (the reason is for the log)."""


class StreamFramer:
    """Feed bytes as they arrive; get whole messages (and keep-alive pings) back, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while self._buffer:
            if self._buffer[:1] in (b"\r", b"\n"):
                if self._buffer.startswith(PING):
                    out.append(PING)
                    del self._buffer[:4]
                elif len(self._buffer) < 4 and PING.startswith(bytes(self._buffer)):
                    break  # the rest of a ping may follow (or it was a pong: dropped with what follows)
                else:
                    del self._buffer[: 2 if self._buffer.startswith(b"\r\n") else 1]
                continue
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise FramingError(f"no end of headers within {MAX_HEAD} bytes")
                break
            if end > MAX_HEAD:
                raise FramingError(f"headers longer than {MAX_HEAD} bytes")
            head = bytes(self._buffer[:end])
            lengths = _CONTENT_LENGTH.findall(head)
            if not lengths:
                raise FramingError("message without Content-Length")
            if len(set(lengths)) > 1:
                raise FramingError("conflicting Content-Length headers")
            length = int(lengths[0])
            if length > MAX_BODY:
                raise FramingError(f"body of {length} bytes is larger than {MAX_BODY}")
            total = end + 4 + length
            if len(self._buffer) < total:
                break
            out.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
        return out
