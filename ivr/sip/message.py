"""SIP message parsing and serialization (RFC 3261 sections 7, 18, 19, 20, 25), sans-I/O.

`parse_message(datagram)` turns one UDP datagram into a `SipRequest` or `SipResponse` and raises only
`SipParseError`. Header values are kept as text (unfolded) and parsed on demand by the typed helpers
(`parse_via`, `parse_cseq` here; `parse_name_addr`, `parse_uri` in `ivr.sip.uri`), which also raise only
`SipParseError` (`ivr.sip.lexical`).
`check_message` applies the semantic checks a UAS makes before handing a request to its core
(RFC 4475 section 3.1.2 and 3.3), returning the status code to answer with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ivr.sip.lexical import SCHEME_RE, TOKEN, TOKEN_FULL_RE, SipParseError, parse_params, parse_port, skip_ws
from ivr.sip.uri import AbsoluteUri, NameAddr, SipUri, parse_name_addr, parse_name_addrs, parse_uri

__all__ = [
    "CSeq",
    "Headers",
    "MessageProblem",
    "SipRequest",
    "SipResponse",
    "Via",
    "check_message",
    "make_response",
    "parse_cseq",
    "parse_message",
    "parse_via",
    "split_header_values",
]

SIP_VERSION = "SIP/2.0"
#: RFC 3261 section 8.1.1.7: a branch starting with the magic cookie was made by an RFC 3261 element.
BRANCH_MAGIC_COOKIE = "z9hG4bK"


# RFC 3261 section 7.3.3 compact forms, plus the extension compact forms registered since.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "v": "Via",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "u": "Allow-Events",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        *COMPACT_FORMS.values(),
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
        "Authorization", "CSeq", "Call-Info", "Content-Disposition", "Content-Language", "Date",
        "Error-Info", "Expires", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
        "Organization", "P-Asserted-Identity", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Require", "RAck", "RSeq", "Reason", "Record-Route", "Reply-To", "Require", "Retry-After",
        "Route", "Server", "Timestamp", "Unsupported", "User-Agent", "WWW-Authenticate", "Warning",
    )
}

# Header fields that RFC 3261 section 20 defines with a single value (RFC 4475 section 3.3.9, multi01).
_SINGLE_VALUED = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type")


def canonical_name(name: str) -> str:
    """The full, conventionally capitalised form of a header name (compact forms expanded)."""
    lower = name.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quoted strings and <...>.

    RFC 3261 section 7.3.1: several values of one header may be combined with commas.
    """
    if not value.strip():
        return []
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


class Headers:
    """Ordered header fields with case-insensitive names; compact forms are stored in full form."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, as written (one header line)."""
        key = canonical_name(name).lower()
        for item_name, value in self._items:
            if item_name.lower() == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every header line of `name`, in order, not split at commas."""
        key = canonical_name(name).lower()
        return [value for item_name, value in self._items if item_name.lower() == key]

    def values(self, name: str) -> list[str]:
        """Every value of a list-valued header (Via, Contact, Route...), split at commas."""
        out: list[str] = []
        for line in self.get_all(name):
            out.extend(split_header_values(line))
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every `name` header with one, kept at the position of the first."""
        key = canonical_name(name).lower()
        for index, (item_name, _) in enumerate(self._items):
            if item_name.lower() == key:
                self._items[index] = (canonical_name(name), value)
                self._items[index + 1 :] = [
                    item for item in self._items[index + 1 :] if item[0].lower() != key
                ]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [item for item in self._items if item[0].lower() != key]

    def copy(self) -> Headers:
        return Headers(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


# --------------------------------------------------------------------------------------------------
# Header field values


@dataclass
class Via:
    """One Via header value (RFC 3261 section 20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = SIP_VERSION

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        value = self.params.get("received")
        return value.strip("[]") if value else None

    @property
    def has_rport(self) -> bool:
        """RFC 3581: the client asked for symmetric response routing."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        if value is None or not value.isascii() or not value.isdigit() or int(value) > 65535:
            return None
        return int(value)

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host.strip("[]").lower(), self.port

    @property
    def has_magic_cookie(self) -> bool:
        """RFC 3261 section 17.2.3: a branch from an RFC 3261 element starts with z9hG4bK."""
        branch = self.branch
        return branch is not None and branch.startswith(BRANCH_MAGIC_COOKIE)

    def __str__(self) -> str:
        out = f"{self.protocol}/{self.transport} {self.host}"
        if self.port is not None:
            out += f":{self.port}"
        for name, value in self.params.items():
            out += f";{name}" if value is None else f";{name}={value}"
        return out


_VIA_RE = re.compile(
    rf"\s*({TOKEN})\s*/\s*({TOKEN})\s*/\s*({TOKEN})[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)"
    r"(?:\s*:\s*([0-9]+))?"
)


def parse_via(value: str) -> Via:
    """Parse one Via value (already split at commas)."""
    m = _VIA_RE.match(value)
    if not m:
        raise SipParseError("bad Via")
    port = parse_port(m.group(5), "Via") if m.group(5) is not None else None
    params, pos = parse_params(value, m.end(), "Via")
    if skip_ws(value, pos) != len(value):
        raise SipParseError("garbage in Via")
    return Via(
        protocol=f"{m.group(1)}/{m.group(2)}",
        transport=m.group(3).upper(),
        host=m.group(4),
        port=port,
        params=params,
    )


@dataclass(frozen=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_CSEQ_RE = re.compile(rf"\s*([0-9]{{1,10}})\s+({TOKEN})\s*\Z")


def parse_cseq(value: str) -> CSeq:
    """CSeq = 1*DIGIT LWS Method; the number must be below 2**31 (RFC 3261 section 8.1.1.5)."""
    m = _CSEQ_RE.match(value)
    if not m or int(m.group(1)) >= 2**31:
        raise SipParseError("bad CSeq")
    return CSeq(int(m.group(1)), m.group(2))


# --------------------------------------------------------------------------------------------------
# Messages


class _Message:
    headers: Headers
    body: bytes
    version: str

    def _start_line(self) -> str:
        raise NotImplementedError

    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if value is None or not value.strip():
            raise SipParseError("missing Call-ID")
        return value.strip()

    @property
    def cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq")
        return parse_cseq(value)

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.values("Via")]

    @property
    def via(self) -> Via:
        """The top Via."""
        values = self.headers.values("Via")
        if not values:
            raise SipParseError("missing Via")
        return parse_via(values[0])

    @property
    def from_addr(self) -> NameAddr:
        value = self.headers.get("From")
        if value is None:
            raise SipParseError("missing From")
        return parse_name_addr(value)

    @property
    def to_addr(self) -> NameAddr:
        value = self.headers.get("To")
        if value is None:
            raise SipParseError("missing To")
        return parse_name_addr(value)

    @property
    def contacts(self) -> list[NameAddr]:
        return parse_name_addrs(self.headers.values("Contact"))

    @property
    def routes(self) -> list[NameAddr]:
        return parse_name_addrs(self.headers.values("Route"))

    @property
    def record_routes(self) -> list[NameAddr]:
        return parse_name_addrs(self.headers.values("Record-Route"))

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value is not None else None

    def set_top_via(self, via: Via) -> None:
        """Rewrite the top Via (e.g. to add received/rport); Via headers end up one per line."""
        values = self.headers.values("Via")
        values[:1] = [str(via)]
        self.headers.remove("Via")
        for v in values:
            self.headers.add("Via", v)

    def to_bytes(self) -> bytes:
        """Canonical form: full header names, one line each, Content-Length equal to the body length."""
        headers = self.headers.copy()
        headers.set("Content-Length", str(len(self.body)))
        lines = [self._start_line()] + [f"{name}: {value}" for name, value in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


@dataclass(eq=True)
class SipRequest(_Message):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    @property
    def request_uri(self) -> SipUri | AbsoluteUri:
        return parse_uri(self.uri)


@dataclass(eq=True)
class SipResponse(_Message):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.IGNORECASE)
_HEADER_NAME_RE = re.compile(rf"({TOKEN})[ \t]*:")
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_CONTENT_LENGTH_RE = re.compile(r"[ \t]*([0-9]{1,9})[ \t]*\Z")


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(f"invalid UTF-8 in {where}") from None


def _parse_start_line(line: str) -> SipRequest | SipResponse:
    if line.startswith("SIP/") or line.startswith("sip/"):
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 section 7.2)
        version, sp, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not sp or not _VERSION_RE.match(version):
            raise SipParseError("bad status line")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError("bad status code")  # RFC 4475 section 3.1.2.18 (bigcode)
        if not reason.isprintable():
            raise SipParseError("bad reason phrase")
        return SipResponse(status=int(code), reason=reason, version=version.upper())
    # Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 section 7.1): exactly one SP each.
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("bad request line")
    method, uri, version = parts
    if not TOKEN_FULL_RE.match(method):
        raise SipParseError("bad method")
    if not _VERSION_RE.match(version):
        raise SipParseError("bad SIP version")
    m = SCHEME_RE.match(uri)
    if not m or uri[m.end() : m.end() + 1] != ":" or m.end() + 1 == len(uri) or not uri.isprintable():
        raise SipParseError("bad Request-URI")  # RFC 4475 section 3.1.2.6 (ltgtruri)
    return SipRequest(method=method, uri=uri, version=version.upper())


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one datagram (RFC 3261 section 7 and 18.3); raises only `SipParseError`.

    The body is Content-Length octets; without Content-Length it is the rest of the datagram, and a
    Content-Length beyond the datagram is an error. Octets after the body are ignored (section 18.3).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SipParseError("not bytes")
    data = bytes(data)
    # RFC 3261 section 7.5: CRLFs before the start line are ignored.
    start = 0
    while data.startswith(b"\r\n", start) or data.startswith(b"\n", start):
        start += 2 if data.startswith(b"\r\n", start) else 1
    end_crlf = data.find(b"\r\n\r\n", start)
    end_lf = data.find(b"\n\n", start)
    if end_crlf >= 0 and (end_lf < 0 or end_crlf < end_lf):
        head, body_start = data[start:end_crlf], end_crlf + 4
    elif end_lf >= 0:
        head, body_start = data[start:end_lf], end_lf + 2
    else:
        raise SipParseError("no empty line after headers" if start < len(data) else "empty message")
    if b"\x00" in head.replace(b"\\\x00", b""):
        raise SipParseError("NUL in header section")
    text = _decode(head, "header section")
    # RFC 3261 section 7.3.1: a line starting with whitespace continues the previous one.
    lines = _FOLD_RE.sub(" ", text).replace("\r\n", "\n").split("\n")
    if any("\r" in line for line in lines):
        raise SipParseError("bare CR in header section")
    message = _parse_start_line(lines[0])
    headers = Headers()
    for line in lines[1:]:
        m = _HEADER_NAME_RE.match(line)
        if not m:
            raise SipParseError("bad header line")
        headers.add(m.group(1), line[m.end() :].strip(" \t"))
    message.headers = headers
    remaining = data[body_start:]
    lengths = headers.get_all("Content-Length")
    if len(lengths) > 1:
        raise SipParseError("several Content-Length headers")  # RFC 4475 section 3.3.16 (mcl01)
    if lengths:
        m = _CONTENT_LENGTH_RE.match(lengths[0])
        if not m:
            raise SipParseError("bad Content-Length")  # includes negative values (ncl)
        length = int(m.group(1))
        if length > len(remaining):
            raise SipParseError("Content-Length larger than the datagram")  # RFC 4475 3.1.2.2 (clerr)
        message.body = remaining[:length]
    else:
        message.body = remaining
    return message


# --------------------------------------------------------------------------------------------------
# Semantic checks


@dataclass(frozen=True)
class MessageProblem:
    """Why a parsed message is unusable; for a request, the response to send (for a response, drop it)."""

    status: int
    reason: str


_MAX_UINT32 = 2**32 - 1


def _delta_seconds_ok(value: str) -> bool:
    value = value.strip()
    return value.isascii() and value.isdigit() and int(value) <= _MAX_UINT32


def check_message(msg: SipRequest | SipResponse) -> MessageProblem | None:
    """The checks of RFC 3261 section 8.2 and RFC 4475 a UAS makes before its core sees a request."""
    try:
        return _check(msg)
    except SipParseError as exc:
        return MessageProblem(400, f"Bad Request ({exc.reason})")


def _check(msg: SipRequest | SipResponse) -> MessageProblem | None:
    if msg.version != SIP_VERSION:
        return MessageProblem(505, "Version Not Supported")  # RFC 3261 section 8.2.2 (badvers)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not msg.headers.get_all(name):
            return MessageProblem(400, f"Missing {name}")  # RFC 3261 section 8.1.1 (insuf)
    for name in _SINGLE_VALUED:
        if len(msg.headers.get_all(name)) > 1:
            return MessageProblem(400, f"Multiple {name}")  # RFC 4475 section 3.3.9 (multi01)
    cseq = msg.cseq
    _ = msg.call_id, msg.from_addr, msg.to_addr, msg.vias, msg.contacts, msg.routes, msg.record_routes
    max_forwards = msg.headers.get("Max-Forwards")
    if max_forwards is not None:
        value = max_forwards.strip()
        if not value.isascii() or not value.isdigit() or int(value) > 255:
            return MessageProblem(400, "Bad Max-Forwards")  # RFC 4475 section 3.1.2.4 (scalar02)
    expires = msg.headers.get("Expires")
    if expires is not None and not _delta_seconds_ok(expires):
        return MessageProblem(400, "Bad Expires")
    for contact in msg.contacts:
        contact_expires = contact.params.get("expires")
        if contact_expires is not None and not _delta_seconds_ok(contact_expires):
            return MessageProblem(400, "Bad Contact expires")
    date = msg.headers.get("Date")
    if date is not None and not date.rstrip().endswith(" GMT"):
        return MessageProblem(400, "Bad Date")  # RFC 3261 section 20.17 (baddate)
    if isinstance(msg, SipResponse):
        return None
    if cseq.method != msg.method:
        return MessageProblem(400, "CSeq method does not match")  # RFC 4475 3.1.2.16 (mismatch01)
    uri = msg.request_uri
    if isinstance(uri, AbsoluteUri):
        if uri.scheme.lower() != "tel":
            return MessageProblem(416, "Unsupported URI Scheme")  # RFC 3261 section 8.2.2.1 (unkscm)
    elif uri.headers:
        return MessageProblem(400, "Headers in Request-URI")  # RFC 4475 section 3.1.2.10 (escruri)
    return None


# --------------------------------------------------------------------------------------------------
# Building responses

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "Version Not Supported", 600: "Busy Everywhere", 603: "Decline",
}


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to `request` per RFC 3261 section 8.2.6.2 (Via, From, To, Call-ID, CSeq copied).

    `to_tag` is added to To unless it already has one; Record-Route is copied into responses that can
    establish a dialog (section 12.1.1).
    """
    out = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            out.add(name, value)
    if to_tag is not None and status != 100:
        to_value = request.headers.get("To")
        if to_value is not None and parse_name_addr(to_value).tag is None:
            out.set("To", f"{to_value};tag={to_tag}")
    if 100 < status < 300:
        for value in request.headers.get_all("Record-Route"):
            out.add("Record-Route", value)
    if status == 100:
        for value in request.headers.get_all("Timestamp"):
            out.add("Timestamp", value)  # RFC 3261 section 8.2.6.1
    for name, value in headers:
        out.add(name, value)
    return SipResponse(
        status=status, reason=reason or REASON_PHRASES.get(status, "Unknown"), headers=out, body=body
    )
