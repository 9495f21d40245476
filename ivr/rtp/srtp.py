"""SRTP for one call's media: libsrtp through ``pylibsrtp`` (the binding aiortc uses), the one adapter
between our RTP (and RTCP: SRTCP) and the cipher. The keys come from the SDP (ivr/proto/sdes.py); a packet that fails
authentication (the peer's key is not the one its SDP gave, or it sends plain RTP) is dropped and counted,
never played."""

from __future__ import annotations

import pylibsrtp

from ivr.proto.sdes import SrtpKeys

_PROFILES = {"AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
             "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32}


def _session(key: bytes, suite: str, ssrc_type: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, srtp_profile=_PROFILES[suite], ssrc_type=ssrc_type))


class SrtpContext:
    """The two directions of one call: what we send (our key) and what we receive (the peer's)."""

    def __init__(self, keys: SrtpKeys) -> None:
        self.keys = keys
        self._tx = _session(keys.local_key, keys.suite, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._rx = _session(keys.remote_key, keys.suite, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self.failed = 0
        """Packets received that failed authentication or replay checks: dropped."""
        self.rtcp_failed = 0
        """RTCP packets received that failed SRTCP authentication: dropped."""
        self.rtcp_error = ""
        """Why the last one failed (libsrtp's status), for the log."""

    def update(self, keys: SrtpKeys) -> None:
        """A re-INVITE's keys. Our direction keeps its libsrtp state while our key stays: a fresh one would
        start its rollover counter at 0 again and, after a sequence wrap, encrypt with a keystream already
        used (the one thing a stream cipher must never do)."""
        if (keys.local_key, keys.suite) != (self.keys.local_key, self.keys.suite):
            self._tx = _session(keys.local_key, keys.suite, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        if (keys.remote_key, keys.suite) != (self.keys.remote_key, self.keys.suite):
            self._rx = _session(keys.remote_key, keys.suite, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self.keys = keys

    def protect(self, packet: bytes) -> bytes:
        return bytes(self._tx.protect(packet))

    def unprotect(self, packet: bytes) -> bytes | None:
        """The plain RTP packet, or None (counted in ``failed``) when it does not authenticate."""
        try:
            return bytes(self._rx.unprotect(packet))
        except pylibsrtp.Error:
            self.failed += 1
            return None

    def protect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP (RFC 3711 section 3.4): our reports encrypted and authenticated with the same key."""
        return bytes(self._tx.protect_rtcp(packet))

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The plain RTCP packet, or None (counted in ``rtcp_failed``) when it does not authenticate."""
        try:
            return bytes(self._rx.unprotect_rtcp(packet))
        except pylibsrtp.Error as exc:
            self.rtcp_failed += 1
            self.rtcp_error = f"{exc} ({len(packet)} bytes, first {packet[:2].hex()})"
            return None
