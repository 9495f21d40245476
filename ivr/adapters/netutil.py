"""Which local address faces a peer: shared by the telephony wiring, the transfer bridge and the callback
dialer (it lived in ``ivr.adapters.telephony``, which made ``transfer`` import it back: a circle)."""

from __future__ import annotations

import socket

__all__ = ["local_ip_towards"]


def local_ip_towards(peer: str, fallback: str) -> str:
    """The address this box would send from to reach ``peer`` (for SDP when listening on 0.0.0.0)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in peer else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer, 9))
            return str(s.getsockname()[0])
    except OSError:
        return fallback
