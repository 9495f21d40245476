"""SIP and other URIs and name-addr values (RFC 3261 sections 19.1, 20.10, 25.1), sans-I/O.

`parse_uri` reads sip/sips URIs in full and keeps any other scheme as written; `parse_name_addr` reads the
values of From, To, Contact, Route and Record-Route. Both raise only `SipParseError`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

from ivr.sip.lexical import (
    SCHEME_RE,
    TOKEN,
    SipParseError,
    parse_params,
    parse_port,
    parse_quoted,
    skip_ws,
)

__all__ = [
    "AbsoluteUri",
    "NameAddr",
    "SipUri",
    "parse_name_addr",
    "parse_name_addrs",
    "parse_uri",
]

_UNRESERVED = "-_.!~*'()"
_USER_SAFE = _UNRESERVED + "&=+$,;?/"  # user-unreserved
_PASSWORD_SAFE = _UNRESERVED + "&=+$,"
_PARAM_SAFE = _UNRESERVED + "[]/:&+$"  # param-unreserved
_HEADER_SAFE = _UNRESERVED + "[]/?:+$"  # hnv-unreserved
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+")


def _unescape(text: str, where: str) -> str:
    if _BAD_ESCAPE_RE.search(text):
        raise SipParseError(f"bad %-escape in {where}")
    return urllib.parse.unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    return urllib.parse.quote(text, safe=safe, errors="surrogateescape")


@dataclass
class SipUri:
    """A sip: or sips: URI; user, password, params and headers are stored %-unescaped."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    scheme: str = "sip"

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                out += [":", _escape(self.password, _PASSWORD_SAFE)]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out += [";", _escape(name, _PARAM_SAFE)]
            if value is not None:
                out += ["=", _escape(value, _PARAM_SAFE)]
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    f"{_escape(k, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}" for k, v in self.headers.items()
                )
            )
        return "".join(out)

    @property
    def host_port(self) -> tuple[str, int | None]:
        """Host without IPv6 brackets, and the port if one is given."""
        return self.host.strip("[]"), self.port


@dataclass
class AbsoluteUri:
    """A URI of a scheme we do not interpret (tel:, http:, isbn:...); kept as written."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


def parse_uri(text: str) -> SipUri | AbsoluteUri:
    """Parse a URI; sip/sips URIs in full (RFC 3261 section 19.1.1), others as scheme + opaque part."""
    m = SCHEME_RE.match(text)
    if not m or text[m.end() : m.end() + 1] != ":":
        raise SipParseError("URI without scheme")
    scheme = m.group()
    rest = text[m.end() + 1 :]
    if not rest or any(ch in rest for ch in " \t\r\n<>\"") or not rest.isprintable():
        raise SipParseError("bad characters in URI")
    if scheme.lower() not in ("sip", "sips"):
        return AbsoluteUri(scheme, rest)
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")  # '@' may only appear unescaped in userinfo
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo:
            raise SipParseError("empty user in URI")
        raw_user, colon, raw_password = userinfo.partition(":")
        user = _unescape(raw_user, "URI user")
        password = _unescape(raw_password, "URI password") if colon else None
    hm = _HOST_RE.match(rest)
    if not hm:
        raise SipParseError("bad host in URI")
    host = hm.group()
    rest = rest[hm.end() :]
    port: int | None = None
    if rest.startswith(":"):
        end = len(rest)
        for stop in ";?":
            found = rest.find(stop)
            if found >= 0:
                end = min(end, found)
        port = parse_port(rest[1:end], "URI")
        rest = rest[end:]
    raw_headers = ""
    if "?" in rest:
        rest, _, raw_headers = rest.partition("?")
    params: dict[str, str | None] = {}
    if rest:
        if not rest.startswith(";"):
            raise SipParseError("garbage after URI host")
        for piece in rest[1:].split(";"):
            if not piece:
                raise SipParseError("empty URI parameter")
            name, eq, value = piece.partition("=")
            if not name:
                raise SipParseError("empty URI parameter name")
            params[_unescape(name, "URI parameter").lower()] = (
                _unescape(value, "URI parameter") if eq else None
            )
    headers: dict[str, str] = {}
    if raw_headers:
        for piece in raw_headers.split("&"):
            name, eq, value = piece.partition("=")
            if not name or not eq:
                raise SipParseError("bad URI header")
            headers[_unescape(name, "URI header")] = _unescape(value, "URI header")
    return SipUri(
        host=host,
        user=user,
        password=password,
        port=port,
        params=params,
        headers=headers,
        scheme=scheme.lower(),
    )


@dataclass
class NameAddr:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route (RFC 3261 section 20)."""

    uri: SipUri | AbsoluteUri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        out = ""
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            out = f'"{escaped}" '
        out += f"<{self.uri}>"
        for name, value in self.params.items():
            out += f";{name}" if value is None else f";{name}={value}"
        return out


_DISPLAY_TOKENS_RE = re.compile(rf"(?:{TOKEN}[ \t]*)+")


def parse_name_addr(value: str) -> NameAddr:
    """Parse ( name-addr / addr-spec ) *( SEMI param ), RFC 3261 section 20.10 and 25.1."""
    pos = skip_ws(value, 0)
    display: str | None = None
    if value.startswith('"', pos):
        display, pos = parse_quoted(value, pos)
        pos = skip_ws(value, pos)
        if not value.startswith("<", pos):
            raise SipParseError("display name without <URI>")
    elif not value.startswith("<", pos) and "<" in value:
        dm = _DISPLAY_TOKENS_RE.match(value, pos)
        if not dm or dm.end() >= len(value) or value[dm.end()] != "<":
            raise SipParseError("bad display name")
        display = dm.group().strip()
        pos = dm.end()
    if value.startswith("<", pos):
        end = value.find(">", pos)
        if end < 0:
            raise SipParseError("unterminated <URI>")
        raw_uri = value[pos + 1 : end]
        if raw_uri != raw_uri.strip():
            # RFC 4475 section 3.1.2.13 (badaspec): no LWS inside the angle brackets.
            raise SipParseError("whitespace inside <URI>")
        pos = end + 1
    else:
        end = pos
        while end < len(value) and value[end] not in " \t;":
            end += 1
        raw_uri = value[pos:end]
        if "," in raw_uri or "?" in raw_uri:
            # RFC 3261 section 20.10: such a URI MUST be enclosed in angle brackets.
            raise SipParseError("URI with , or ? outside <>")
        pos = end
    uri = parse_uri(raw_uri)
    params, pos = parse_params(value, pos, "name-addr")
    if skip_ws(value, pos) != len(value):
        raise SipParseError("garbage after name-addr")
    return NameAddr(uri=uri, display_name=display, params=params)


def parse_name_addrs(values: Iterable[str]) -> list[NameAddr]:
    return [parse_name_addr(v) for v in values]
