"""HTTP Digest authentication for SIP (RFC 3261 section 22, RFC 7616, RFC 8760), client side, sans-I/O.

`parse_challenge` reads one `WWW-Authenticate`/`Proxy-Authenticate` value; `digest_response` is the
pure computation (checked against the RFC 7616 section 3.9.1 and RFC 2617 section 3.5 examples);
`DigestAuth` is the per-account (or per-call) state: the challenges it knows, the nonce count of each
nonce, and whether a new 401/407 means "answer again" (first challenge of a request, or stale=true once)
or "wrong credentials" (stop and report).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ivr.sip.message import SipRequest, SipResponse

__all__ = [
    "ALGORITHMS",
    "AuthFailure",
    "Challenge",
    "DigestAuth",
    "DigestError",
    "digest_response",
    "parse_challenge",
]


class DigestError(ValueError):
    """A challenge we cannot read or answer; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


#: RFC 7616 section 6.1 (and RFC 8760 for SIP): algorithm -> hash; "-sess" variants share the hash.
ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
try:
    _sha512_256(b"")
    ALGORITHMS["SHA-512-256"] = _sha512_256
except ValueError:  # OpenSSL without SHA-512/256: the algorithm is simply not offered
    pass


def _hash_for(algorithm: str) -> Callable[[bytes], str] | None:
    base = algorithm.upper().removesuffix("-SESS")
    return ALGORITHMS.get(base)


@dataclass(frozen=True)
class Challenge:
    """One Digest challenge (RFC 7616 section 3.3); `header` is where it came from."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    #: The qop options offered, lower-cased; empty for an RFC 2069 style challenge.
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    header: str = "WWW-Authenticate"

    @property
    def supported(self) -> bool:
        qop_ok = not self.qop or "auth" in self.qop or "auth-int" in self.qop
        return _hash_for(self.algorithm) is not None and qop_ok

    @property
    def answer_header(self) -> str:
        """RFC 3261 section 22.2 / 22.3: Authorization answers a 401, Proxy-Authorization a 407."""
        return "Proxy-Authorization" if self.header.lower() == "proxy-authenticate" else "Authorization"


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|\Z)')


def _auth_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _PARAM_RE.match(text, pos)
        if not m:
            raise DigestError(f"bad auth-param at {text[pos:pos + 20]!r}")
        quoted, token = m.group(2), m.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token or ""
        params[m.group(1).lower()] = value
        pos = m.end()
    return params


def parse_challenge(value: str, header: str = "WWW-Authenticate") -> Challenge:
    """Parse `Digest realm="...", nonce="...", ...` (RFC 7616 section 3.3); raises only DigestError."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"scheme {scheme!r} is not Digest")
    params = _auth_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        header=header,
    )


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str = "",
    cnonce: str = "",
    qop: str = "",
    body: bytes = b"",
) -> str:
    """The `response` value (RFC 7616 section 3.4.1, RFC 2617 section 3.2.2.1).

    A1 = user:realm:password (for -sess: H(A1):nonce:cnonce); A2 = method:uri (auth-int adds
    :H(body)); response = H(H(A1):nonce:nc:cnonce:qop:H(A2)), or H(H(A1):nonce:H(A2)) without qop.
    """
    h = _hash_for(algorithm)
    if h is None:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + h(body)
    ha2 = h(a2.encode())
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default_cnonce() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class AuthFailure:
    """Why a 401/407 cannot be answered: "wrong credentials", "unsupported challenge: ..."."""

    status: int
    reason: str


class DigestAuth:
    """Digest credentials for one account (REGISTER) or one call (INVITE), with their challenges.

    Per logical request: call `begin()`, send it with `authorize(request)`; on a 401/407 call
    `on_challenge(response)` and, when it returns None, send the request again (new CSeq, new branch)
    through `authorize`. A second challenge in the same attempt means wrong credentials, except one
    retry on `stale=true` (RFC 7616 section 3.3: the nonce expired, the credentials were right).
    """

    def __init__(self, username: str, password: str, *, cnonce: Callable[[], str] = _default_cnonce) -> None:
        self.username = username
        self.password = password
        self._cnonce = cnonce
        #: Challenges in force, by (header, realm): used for every request, pre-emptively after the first.
        self._challenges: dict[tuple[str, str], Challenge] = {}
        #: Nonce count per nonce (RFC 7616 section 3.4: nc counts requests sent with that nonce).
        self._nc: dict[str, int] = {}
        self._answered: set[tuple[str, str]] = set()
        self._stale_retries = 0

    def begin(self) -> None:
        """A new logical request: challenges answered so far no longer count against it."""
        self._answered.clear()
        self._stale_retries = 0

    def on_challenge(self, response: SipResponse) -> AuthFailure | None:
        """Learn the challenges of a 401/407; None when the request may be sent again with them."""
        header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
        chosen: dict[str, Challenge] = {}
        problems: list[str] = []
        for value in response.headers.get_all(header):
            try:
                challenge = parse_challenge(value, header)
            except DigestError as exc:
                problems.append(exc.reason)
                continue
            if not challenge.supported:
                problems.append(f"algorithm {challenge.algorithm} qop {','.join(challenge.qop)}")
                continue
            # RFC 8760 section 2.4: use the topmost challenge we support for each realm.
            chosen.setdefault(challenge.realm, challenge)
        if not chosen:
            detail = "; ".join(problems) or f"no {header}"
            return AuthFailure(response.status, f"unsupported challenge: {detail}")
        for realm, challenge in chosen.items():
            key = (header.lower(), realm)
            if key in self._answered:
                if not challenge.stale or self._stale_retries >= 1:
                    return AuthFailure(response.status, "wrong credentials")
                self._stale_retries += 1
            self._answered.add(key)
            old = self._challenges.get(key)
            if old is not None and old.nonce != challenge.nonce:
                self._nc.pop(old.nonce, None)
            self._challenges[key] = challenge
        return None

    def forget(self) -> None:
        """Drop every cached challenge (the next request goes without credentials)."""
        self._challenges.clear()
        self._nc.clear()

    @property
    def has_challenge(self) -> bool:
        return bool(self._challenges)

    def authorize(self, request: SipRequest) -> None:
        """Set Authorization / Proxy-Authorization on `request` for every challenge in force."""
        request.headers.remove("Authorization")
        request.headers.remove("Proxy-Authorization")
        for challenge in self._challenges.values():
            request.headers.add(challenge.answer_header, self.credentials(challenge, request.method,
                                                                          request.uri, request.body))

    def credentials(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        """One credentials value (RFC 7616 section 3.4), counting the nonce's use."""
        qop = ""
        if challenge.qop:
            qop = "auth" if "auth" in challenge.qop else "auth-int"
        nc = cnonce = ""
        if qop or challenge.algorithm.upper().endswith("-SESS"):
            cnonce = self._cnonce()
        if qop:
            count = self._nc.get(challenge.nonce, 0) + 1
            self._nc[challenge.nonce] = count
            nc = f"{count:08x}"
        response = digest_response(
            algorithm=challenge.algorithm, username=self.username, realm=challenge.realm,
            password=self.password, method=method, uri=uri, nonce=challenge.nonce, nc=nc, cnonce=cnonce,
            qop=qop, body=body,
        )
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={challenge.algorithm}",
        ]
        if cnonce:
            parts.append(f"cnonce={_quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc}"]
        return "Digest " + ", ".join(parts)
