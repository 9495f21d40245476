"""Asterisk Manager Interface framing, sans-I/O: bytes in, messages out; actions out as bytes.

Shared by the asyncio adapter (``ivr.adapters.ami_link``) and the test AMI peer (``tests/ami/peer.py``), so both
ends speak exactly one reading of the protocol. No sockets, no clock, no asyncio.

The wire format (Asterisk docs, "Asterisk Manager Interface (AMI)" / "AMI v2 Specification"):

- on connect the server sends one banner line, ``Asterisk Call Manager/<version>``;
- then each message is a block of ``Key: Value`` lines ended by an empty line. Lines end in CRLF; we also
  accept bare LF (proxies and hand-written transcripts send it);
- keys may repeat (``Variable:``, ``ChanVariable:``, ``Output:``): every occurrence is kept, in order;
- a message's first key says what it is: ``Response:`` (Success, Error, Follows, Goodbye), ``Event:``,
  or, from a client, ``Action:``;
- legacy ``Response: Follows`` (the ``Command`` action before Asterisk 14) carries free-form output lines,
  possibly with empty lines in them, up to a ``--END COMMAND--`` line;
- list actions (QueueStatus, QueueSummary, CoreShowChannels …) answer ``Response: Success`` with
  ``EventList: start``, then events carrying the same ActionID, then a ``…Complete`` event with
  ``EventList: Complete`` (docs "AMI v2 Specification", section "Event lists"). Unrelated events may arrive
  in between; ``ActionCorrelator`` sorts them out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

CRLF = b"\r\n"
END_COMMAND = "--END COMMAND--"
BANNER_RE = re.compile(r"^(?P<product>[^/\r\n]*Call Manager[^/\r\n]*)/(?P<version>\d+(?:\.\d+)*)\s*$", re.IGNORECASE)

#: Bounds that keep a broken or hostile peer from growing our buffers without end.
MAX_LINE = 64 * 1024
MAX_MESSAGE_LINES = 10_000

#: Keys allowed before the free-form body of a legacy ``Response: Follows``.
_FOLLOWS_HEADERS = frozenset({"privilege", "actionid", "message"})

Fields = tuple[tuple[str, str], ...]
FieldsIn = Mapping[str, str | int | float | bool | None] | Iterable[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True)
class AmiBanner:
    """The greeting line: ``Asterisk Call Manager/5.0.2`` → product ``Asterisk Call Manager``, version."""

    product: str
    version: str

    def serialize(self) -> bytes:
        return f"{self.product}/{self.version}".encode() + CRLF


@dataclass(frozen=True)
class AmiMessage:
    """One AMI message: its ``Key: Value`` fields in wire order (repeats kept), plus legacy output lines."""

    fields: Fields
    output: tuple[str, ...] = ()
    #: lines of the block that were not ``Key: Value`` (garbage a peer sent); kept for the log
    unparsed: tuple[str, ...] = ()

    # -- lookup (AMI keys are case-insensitive: Asterisk compares them with strcasecmp) --
    def get(self, key: str, default: str | None = None) -> str | None:
        k = key.lower()
        for name, value in self.fields:
            if name.lower() == k:
                return value
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get_all(self, key: str) -> list[str]:
        k = key.lower()
        return [value for name, value in self.fields if name.lower() == k]

    def as_dict(self) -> dict[str, str]:
        """First value of each key (repeats dropped: use ``get_all`` for those)."""
        out: dict[str, str] = {}
        for name, value in self.fields:
            out.setdefault(name, value)
        return out

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def kind(self) -> str:
        if not self.fields:
            return "unknown"
        first = self.fields[0][0].lower()
        return first if first in ("response", "event", "action") else "unknown"

    @property
    def name(self) -> str:
        """The value of the first key: the Event name, Response status or Action name."""
        return self.fields[0][1] if self.fields else ""

    def variables(self) -> dict[str, str]:
        """Channel variables carried by the message, from ``Variable: k=v`` and ``ChanVariable…: k=v`` lines.

        Asterisk 12+ sends ``ChanVariable: name=value`` (one line per variable, the key repeated); older
        versions sent ``ChanVariable(SIP/100-0001): name=value``. Both are read. A ``Getvar`` response's
        ``Variable:``/``Value:`` pair has no ``=``, so it is not mistaken for one.
        """
        out: dict[str, str] = {}
        for name, value in self.fields:
            low = name.lower()
            if (low == "variable" or low.startswith("chanvariable")) and "=" in value:
                k, v = value.split("=", 1)
                out[k] = v
        return out

    def serialize(self) -> bytes:
        lines = [f"{k}: {v}" for k, v in self.fields]
        if self.output:
            lines.extend(self.output)
            lines.append(END_COMMAND)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class AmiResponse(AmiMessage):
    """``Response: Success|Error|Follows|Goodbye``."""

    @property
    def status(self) -> str:
        return self.name

    @property
    def is_error(self) -> bool:
        return self.status.lower() == "error"

    @property
    def message(self) -> str:
        return self.get("Message", "") or ""

    @property
    def starts_list(self) -> bool:
        return (self.get("EventList") or "").lower() == "start"


@dataclass(frozen=True)
class AmiEvent(AmiMessage):
    """``Event: <name>``."""

    @property
    def list_complete(self) -> bool:
        """True for the event that closes an EventList (``EventList: Complete``, e.g. QueueStatusComplete)."""
        return (self.get("EventList") or "").lower() == "complete"


@dataclass(frozen=True)
class AmiAction(AmiMessage):
    """``Action: <name>``: what a client sends (the test peer parses these)."""


Parsed = AmiBanner | AmiMessage


def _typed(fields: Fields, output: tuple[str, ...], unparsed: tuple[str, ...]) -> AmiMessage:
    first = fields[0][0].lower() if fields else ""
    cls: type[AmiMessage] = {"response": AmiResponse, "event": AmiEvent, "action": AmiAction}.get(first, AmiMessage)
    return cls(fields, output, unparsed)


def _split_field(line: str) -> tuple[str, str] | None:
    key, sep, value = line.partition(":")
    key = key.strip()
    if not sep or not key or " " in key:
        return None
    return key, value.strip()


@dataclass
class AmiParser:
    """Incremental parser: ``feed(bytes)`` returns every complete message (and the banner) in the data so far.

    Survives partial reads (any split point, even inside a CRLF), bare-LF line ends, undecodable bytes
    (replaced, never raised), lines without a colon (kept in ``unparsed``), blocks of pure garbage (dropped
    and counted in ``errors``) and over-long lines (cut and counted). ``expect_banner`` is True on the client
    side; the test peer parses actions with it False.
    """

    expect_banner: bool = True
    encoding: str = "utf-8"
    banner: AmiBanner | None = None
    errors: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _lines: list[str] = field(default_factory=list)
    _follows: bool = False
    _skipping_long_line: bool = False

    def feed(self, data: bytes) -> list[Parsed]:
        self._buf += data
        out: list[Parsed] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:  # a line with no end in sight: drop what we have of it
                    self.errors += 1
                    self._buf.clear()
                    self._skipping_long_line = True
                break
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._skipping_long_line:  # the tail of a line already cut
                self._skipping_long_line = False
                continue
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            line = raw.decode(self.encoding, errors="replace")
            item = self._line(line)
            if item is not None:
                out.append(item)
        return out

    def _line(self, line: str) -> Parsed | None:
        if self.expect_banner and self.banner is None and not self._lines:
            if not line.strip():
                return None
            m = BANNER_RE.match(line.strip())
            if m:
                self.banner = AmiBanner(m["product"].strip(), m["version"])
                return self.banner
            # Not a banner: no greeting from this peer. Read on as messages; the adapter decides.
            self.expect_banner = False
        if self._follows:
            if line.rstrip().endswith(END_COMMAND):
                head = line.rstrip()[: -len(END_COMMAND)]
                if head:
                    self._lines.append(head)
                self._lines.append(END_COMMAND)
                self._follows = False
                return None  # the blank line after it ends the message
            self._lines.append(line)
            return None
        if line.strip() == "":
            return self._finish() if self._lines else None
        self._lines.append(line)
        if len(self._lines) == 1 and line.replace(" ", "").lower() == "response:follows":
            self._follows = True
        if len(self._lines) > MAX_MESSAGE_LINES:
            self.errors += 1
            self._lines.clear()
            self._follows = False
        return None

    def _finish(self) -> AmiMessage | None:
        lines, self._lines = self._lines, []
        fields: list[tuple[str, str]] = []
        output: list[str] = []
        unparsed: list[str] = []
        follows = bool(lines) and lines[0].replace(" ", "").lower() == "response:follows"
        in_body = False
        for line in lines:
            if follows:
                if line == END_COMMAND:
                    continue
                kv = None if in_body else _split_field(line)
                if kv is not None and (not fields or kv[0].lower() in _FOLLOWS_HEADERS):
                    fields.append(kv)
                else:
                    in_body = True
                    output.append(line)
                continue
            kv = _split_field(line)
            if kv is None:
                unparsed.append(line)
            else:
                fields.append(kv)
        if not fields:
            self.errors += 1
            return None
        msg = _typed(tuple(fields), tuple(output), tuple(unparsed))
        if msg.kind == "unknown" or unparsed:
            self.errors += 1
        return msg


# -- building messages --------------------------------------------------------------------------------------


def _clean(text: str, what: str) -> str:
    if "\r" in text or "\n" in text:  # a newline would let a value inject a whole new action
        raise ValueError(f"AMI {what} may not contain a line break: {text!r}")
    return text


def _value(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def make_fields(first: tuple[str, str], values: FieldsIn = (), variables: Mapping[str, str] | None = None) -> Fields:
    """Fields in order: the first key, then ``values`` (None values skipped), then ``Variable: k=v`` lines."""
    items = values.items() if isinstance(values, Mapping) else values
    out: list[tuple[str, str]] = [first]
    for k, v in items:
        if v is None:
            continue
        out.append((_clean(k, "key"), _clean(_value(v), "value")))
    for k, v in (variables or {}).items():
        out.append(("Variable", _clean(f"{k}={v}", "variable")))
    return tuple(out)


def serialize_action(
    name: str, action_id: str, values: FieldsIn = (), variables: Mapping[str, str] | None = None
) -> bytes:
    """``Action: <name>`` + ``ActionID`` + fields + one ``Variable: k=v`` line per variable, CRLF framed.

    Repeated keys are allowed by passing ``values`` as a sequence of pairs.
    """
    fields = make_fields(("Action", _clean(name, "action")), [("ActionID", action_id), *_pairs(values)], variables)
    return AmiAction(fields).serialize()


def _pairs(values: FieldsIn) -> list[tuple[str, str | int | float | bool | None]]:
    return list(values.items()) if isinstance(values, Mapping) else list(values)


def response(status: str, action_id: str | None, values: FieldsIn = (), output: Sequence[str] = ()) -> AmiResponse:
    pairs = ([("ActionID", action_id)] if action_id is not None else []) + _pairs(values)
    return AmiResponse(make_fields(("Response", status), pairs), tuple(output))


def event(name: str, values: FieldsIn = (), action_id: str | None = None) -> AmiEvent:
    pairs = _pairs(values) + ([("ActionID", action_id)] if action_id is not None else [])
    return AmiEvent(make_fields(("Event", name), pairs))


def login_key(challenge: str, secret: str) -> str:
    """MD5 challenge login: ``md5(challenge + secret)`` as 32 lower-case hex digits (docs, AMI action Login)."""
    return hashlib.md5((challenge + secret).encode(), usedforsecurity=False).hexdigest()


# -- ActionID correlation -----------------------------------------------------------------------------------

Waiting = Literal["response", "list", "final"]


@dataclass(frozen=True)
class ActionResult:
    """What an action came back with: its response, the list events (if a list action) and the closing event
    (the ``…Complete`` event of a list, or the final event of an async action such as OriginateResponse)."""

    action_id: str
    action: str
    response: AmiResponse
    events: tuple[AmiEvent, ...] = ()
    final: AmiEvent | None = None


@dataclass
class _Pending:
    action: str
    list_events: bool
    final_event: str | None
    response: AmiResponse | None = None
    events: list[AmiEvent] = field(default_factory=list)
    early: list[AmiEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Correlation:
    """The effect of one incoming message: ``consumed`` when it belonged to a pending action (a list item: not
    a live event for subscribers); ``done`` when it completed one."""

    consumed: bool
    done: ActionResult | None = None


class ActionCorrelator:
    """Matches responses and events to the actions in flight by ActionID; pure bookkeeping, no waiting.

    - a plain action is done at its ``Response``;
    - a list action (``list_events=True``) is done at the event with ``EventList: Complete``; events carrying
      its ActionID are collected, anything else passes through untouched (interleaved unrelated events);
    - an async action with ``final_event`` (Originate → OriginateResponse) is done at that event;
    - ``Response: Error`` ends any of them at once.
    """

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    def expect(self, action_id: str, action: str, *, list_events: bool = False, final_event: str | None = None) -> None:
        if action_id in self._pending:
            raise ValueError(f"ActionID {action_id!r} already in flight")
        self._pending[action_id] = _Pending(action, list_events, final_event)

    def cancel(self, action_id: str) -> None:
        self._pending.pop(action_id, None)

    def pending(self) -> dict[str, str]:
        """ActionID → action name of everything in flight."""
        return {aid: p.action for aid, p in self._pending.items()}

    def partial(self, action_id: str) -> tuple[AmiResponse | None, tuple[AmiEvent, ...]]:
        p = self._pending.get(action_id)
        return (p.response, tuple(p.events)) if p else (None, ())

    def clear(self) -> dict[str, str]:
        """Forget everything in flight (the connection is gone); returns what was pending."""
        out = self.pending()
        self._pending.clear()
        return out

    def feed(self, msg: AmiMessage) -> Correlation:
        aid = msg.action_id
        p = self._pending.get(aid) if aid is not None else None
        if p is None or aid is None:
            return Correlation(False)
        if isinstance(msg, AmiResponse):
            if p.response is not None:  # a second response with the same id: not ours to judge
                return Correlation(False)
            p.response = msg
            if msg.is_error or (not p.list_events and p.final_event is None):
                return Correlation(True, self._done(aid))
            for ev in p.early:  # events that overtook their response
                r = self._event(aid, p, ev)
                if r.done:
                    return r
            p.early.clear()
            return Correlation(True)
        if isinstance(msg, AmiEvent):
            if p.response is None:
                if p.list_events or p.final_event:
                    p.early.append(msg)
                    return Correlation(True)
                return Correlation(False)
            return self._event(aid, p, msg)
        return Correlation(False)

    def _event(self, aid: str, p: _Pending, ev: AmiEvent) -> Correlation:
        if p.final_event is not None and ev.name.lower() == p.final_event.lower():
            return Correlation(True, self._done(aid, final=ev))
        if p.list_events:
            if ev.list_complete:
                return Correlation(True, self._done(aid, final=ev))
            p.events.append(ev)
            return Correlation(True)
        return Correlation(False)

    def _done(self, aid: str, final: AmiEvent | None = None) -> ActionResult:
        p = self._pending.pop(aid)
        assert p.response is not None
        return ActionResult(aid, p.action, p.response, tuple(p.events), final)
