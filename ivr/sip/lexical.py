"""The lexical rules shared by SIP message and URI parsing (RFC 3261 section 25.1), sans-I/O.

`ivr.sip.uri` (URIs, name-addr) and `ivr.sip.message` (messages, Via, CSeq) both build on these; this
module imports neither, so the two never import each other in a circle.
"""

from __future__ import annotations

import re

__all__ = [
    "SCHEME_RE",
    "TOKEN",
    "TOKEN_FULL_RE",
    "TOKEN_RE",
    "WS",
    "SipParseError",
    "parse_params",
    "parse_port",
    "parse_quoted",
    "skip_ws",
]


class SipParseError(ValueError):
    """The bytes or a header value are not valid SIP; `reason` says where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# RFC 3261 section 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)
TOKEN_FULL_RE = re.compile(TOKEN + r"\Z")
WS = " \t"
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")


def parse_port(text: str, where: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise SipParseError(f"bad port in {where}")
    return int(text)


def skip_ws(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in WS:
        pos += 1
    return pos


def parse_quoted(s: str, pos: int) -> tuple[str, int]:
    """Parse a quoted-string at s[pos] == '"' (RFC 3261 section 25.1); returns (unescaped, end)."""
    out: list[str] = []
    i = pos + 1
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            if i + 1 >= len(s):
                break
            out.append(s[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise SipParseError("unterminated quoted string")


def parse_params(s: str, pos: int, where: str) -> tuple[dict[str, str | None], int]:
    """Parse *( SEMI generic-param ) (RFC 3261 section 25.1); names lower-cased, quoted values kept quoted."""
    params: dict[str, str | None] = {}
    while True:
        pos = skip_ws(s, pos)
        if pos >= len(s) or s[pos] != ";":
            return params, pos
        pos = skip_ws(s, pos + 1)
        m = TOKEN_RE.match(s, pos)
        if not m:
            raise SipParseError(f"empty parameter in {where}")
        name = m.group().lower()
        pos = skip_ws(s, m.end())
        value: str | None = None
        if pos < len(s) and s[pos] == "=":
            pos = skip_ws(s, pos + 1)
            if s.startswith('"', pos):
                _, end = parse_quoted(s, pos)
                value = s[pos:end]
                pos = end
            elif s.startswith("[", pos):
                end = s.find("]", pos)
                if end < 0:
                    raise SipParseError(f"unterminated IPv6 reference in {where}")
                value = s[pos : end + 1]
                pos = end + 1
            else:
                vm = TOKEN_RE.match(s, pos)
                if not vm:
                    raise SipParseError(f"parameter {name!r} without value in {where}")
                value = vm.group()
                pos = vm.end()
        params[name] = value

