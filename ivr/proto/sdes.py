"""SDES: SRTP keys in the SDP (RFC 4568 ``a=crypto``), for the answer to an offer that asks for SRTP.

Pure: lines in, the chosen suite and keys out. Two suites, the ones every SIP phone and PBX offers:
AES_CM_128_HMAC_SHA1_80 and _32 (RFC 4568 section 6.2): a 16-byte master key and a 14-byte salt, given
``inline:`` as base64 of the 30 bytes. Lines we cannot honour are skipped, as RFC 4568 section 7.1.1 asks:
an MKI (we would have to tag every packet), a lifetime below 2^31 packets (we never re-key), a key
parameter list of several keys, or any session parameter (UNENCRYPTED_SRTP, KDR...). The SRTP itself is
done by libsrtp (pylibsrtp) in the media adapter; nothing here touches packets.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

__all__ = ["SUITES", "Crypto", "SrtpKeys", "answered", "choose", "offer_crypto", "parse_crypto"]

#: The suites we answer, in our order of preference; the value is the length of key + salt in bytes.
SUITES = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30}
_LINE = re.compile(r"^(\d{1,9})\s+(\S+)\s+(\S+)(?:\s+(.*))?$")


@dataclass(frozen=True)
class Crypto:
    """One ``a=crypto`` line: its tag, suite and master key + salt (one key, no MKI, no session params)."""

    tag: int
    suite: str
    key: bytes

    def line(self) -> str:
        """The attribute's value, as our answer writes it."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


@dataclass(frozen=True)
class SrtpKeys:
    """What a call's media needs: the suite, the key we send with and the key the peer sends with."""

    suite: str
    local_key: bytes
    remote_key: bytes


def parse_crypto(value: str) -> Crypto | None:
    """An ``a=crypto`` value we can honour, else None (see the module doc for what is skipped)."""
    m = _LINE.match(value.strip())
    if m is None or m.group(4):
        return None  # malformed, or session parameters
    tag, suite, params = int(m.group(1)), m.group(2), m.group(3)
    if suite not in SUITES or ";" in params or not params.startswith("inline:"):
        return None  # another suite, several keys, or another key method
    key_b64, *rest = params[len("inline:"):].split("|")
    if len(rest) > 1 or any(":" in part for part in rest):
        return None  # an MKI
    if rest and not _long_lifetime(rest[0]):
        return None
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != SUITES[suite]:
        return None
    return Crypto(tag, suite, key)


def _long_lifetime(text: str) -> bool:
    """A key lifetime (``2^31`` or a number) that a call never reaches: we do not re-key."""
    m = re.fullmatch(r"2\^(\d+)|(\d+)", text)
    if m is None:
        return False
    packets = 2 ** int(m.group(1)) if m.group(1) else int(m.group(2))
    return packets >= 2**31


def choose(offered: list[str], new_key: bytes) -> tuple[Crypto, SrtpKeys] | None:
    """The offer's first ``a=crypto`` we can honour (the offerer's preference, RFC 4568 section 7.1.1), and
    our answer line with the same tag and suite and ``new_key`` (30 random bytes from the caller)."""
    for value in offered:
        crypto = parse_crypto(value)
        if crypto is not None:
            if len(new_key) != SUITES[crypto.suite]:
                raise ValueError(f"{crypto.suite} needs a {SUITES[crypto.suite]}-byte key and salt")
            answer = Crypto(crypto.tag, crypto.suite, new_key)
            return answer, SrtpKeys(crypto.suite, new_key, crypto.key)
    return None


def offer_crypto(key: bytes) -> Crypto:
    """The ``a=crypto`` of our own offer (a callback, the bridge's leg to an agent): the suite every peer
    has, with ``key`` (30 random bytes)."""
    return Crypto(1, "AES_CM_128_HMAC_SHA1_80", key)


def answered(offered: Crypto, lines: list[str]) -> SrtpKeys | None:
    """The keys once the answer accepted our ``a=crypto`` (its line with our tag and suite, RFC 4568 section
    7.1.2), or None: the answer took plain RTP, or gave nothing we can use."""
    for value in lines:
        crypto = parse_crypto(value)
        if crypto is not None and (crypto.tag, crypto.suite) == (offered.tag, offered.suite):
            return SrtpKeys(crypto.suite, offered.key, crypto.key)
    return None
