"""ITU-T G.711 µ-law and A-law codecs by precomputed tables (pure Python, no ``audioop``).

Linear PCM is 16-bit signed little-endian, as on the wire of every sound file and of our RTP
engine.  The tables are built once at import from the ITU-T G.191 reference algorithms (the
STL ``g711.c``), so encoder and decoder agree bit for bit with the standard's test vectors.

Hot-path shape: decoding is two ``bytes.translate`` calls (low and high byte tables) interleaved
by slice assignment; encoding gathers from one 64 Ki-entry table indexed by the unsigned 16-bit
sample with ``operator.itemgetter``.
"""

from __future__ import annotations

import sys
from array import array
from operator import itemgetter

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_decode_sample",
    "alaw_encode",
    "alaw_encode_sample",
    "ulaw_decode",
    "ulaw_decode_sample",
    "ulaw_encode",
    "ulaw_encode_sample",
]

ULAW_SILENCE = 0xFF
"""µ-law code for +0 (G.711 table 2a: all bits inverted, so positive zero is 0xFF)."""
ALAW_SILENCE = 0xD5
"""A-law code for the smallest positive level (G.711 table 1a: 0x80 with even bits inverted)."""

_ULAW_BIAS = 0x84
"""µ-law bias, 132 = 33 << 2: G.711 section 3.2 offsets the segment boundaries by 33 (14-bit units)."""
_ULAW_MAX_14 = 0x1FFF
"""Largest biased 14-bit magnitude; larger inputs clip to the last code (G.191 ``ulaw_compress``)."""
_LITTLE = sys.byteorder == "little"


def ulaw_encode_sample(x: int) -> int:
    """Encode one 16-bit sample; G.191 ``ulaw_compress`` (G.711 section 3.2, table 2a)."""
    # G.191: negative values use the one's complement, then drop to 14 bits and add the bias 33.
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    if absno > _ULAW_MAX_14:
        absno = _ULAW_MAX_14  # clipping at +/-8158 (14-bit), i.e. +/-32635 (16-bit)
    segno = (absno >> 6).bit_length() + 1
    high = 8 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    return code | 0x80 if x >= 0 else code  # G.711: sign bit 1 = positive; all bits inverted


def ulaw_decode_sample(code: int) -> int:
    """Decode one µ-law code to 16-bit linear; G.191 ``ulaw_expand``."""
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - _ULAW_BIAS
    return magnitude if code & 0x80 else -magnitude


def alaw_encode_sample(x: int) -> int:
    """Encode one 16-bit sample; G.191 ``alaw_compress`` (G.711 section 3.1, table 1a)."""
    ix = (~x) >> 4 if x < 0 else x >> 4  # one's complement magnitude, 12 bits (13 with sign)
    if ix > 15:
        exponent = 1
        while ix > 16 + 15:
            ix >>= 1
            exponent += 1
        ix = (ix - 16) + (exponent << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55  # G.711 section 3.1: even bits inverted on the line


def alaw_decode_sample(code: int) -> int:
    """Decode one A-law code to 16-bit linear; G.191 ``alaw_expand``."""
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0x0F
    if exponent > 0:
        mantissa += 16
    mantissa = (mantissa << 4) + 8  # reconstruct at the middle of the interval
    if exponent > 1:
        mantissa <<= exponent - 1
    return mantissa if code & 0x80 else -mantissa


def _decode_tables(decode: object) -> tuple[bytes, bytes]:
    assert callable(decode)
    values = [decode(code) & 0xFFFF for code in range(256)]
    return bytes(v & 0xFF for v in values), bytes(v >> 8 for v in values)


def _encode_table(encode: object, shift: int) -> bytes:
    """64 Ki table indexed by the unsigned 16-bit sample; the codec only sees ``x >> shift``."""
    assert callable(encode)
    step = 1 << shift
    coarse = bytes(encode(((i << shift) ^ 0x8000) - 0x8000) for i in range(0x10000 >> shift))
    table = bytearray(0x10000)
    for k in range(step):
        table[k::step] = coarse
    return bytes(table)


_ULAW_DEC_LO, _ULAW_DEC_HI = _decode_tables(ulaw_decode_sample)
_ALAW_DEC_LO, _ALAW_DEC_HI = _decode_tables(alaw_decode_sample)
# µ-law looks at 14 bits (x >> 2), A-law at 12 bits plus sign (x >> 4): G.191 input scaling.
_ULAW_ENC = _encode_table(ulaw_encode_sample, 2)
_ALAW_ENC = _encode_table(alaw_encode_sample, 4)


def _decode(data: bytes, lo: bytes, hi: bytes) -> bytes:
    out = bytearray(2 * len(data))
    if _LITTLE:
        out[0::2] = data.translate(lo)
        out[1::2] = data.translate(hi)
    else:  # pragma: no cover - big-endian hosts still produce little-endian PCM
        out[1::2] = data.translate(lo)
        out[0::2] = data.translate(hi)
    return bytes(out)


def _encode(pcm16: bytes, table: bytes) -> bytes:
    if len(pcm16) & 1:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(pcm16)}")
    if _LITTLE:
        samples = memoryview(pcm16).cast("H").tolist()
    else:  # pragma: no cover
        swapped = array("H", pcm16)
        swapped.byteswap()
        samples = swapped.tolist()
    if len(samples) < 2:  # itemgetter returns a bare item (not a tuple) for one index
        return bytes(table[u] for u in samples)
    # One C-level gather: measured ~2x faster than bytes(map(table.__getitem__, ...)).
    return bytes(itemgetter(*samples)(table))


def ulaw_decode(data: bytes) -> bytes:
    """µ-law bytes to 16-bit signed little-endian PCM."""
    return _decode(data, _ULAW_DEC_LO, _ULAW_DEC_HI)


def ulaw_encode(pcm16: bytes) -> bytes:
    """16-bit signed little-endian PCM to µ-law bytes (clips beyond +/-32635)."""
    return _encode(pcm16, _ULAW_ENC)


def alaw_decode(data: bytes) -> bytes:
    """A-law bytes to 16-bit signed little-endian PCM."""
    return _decode(data, _ALAW_DEC_LO, _ALAW_DEC_HI)


def alaw_encode(pcm16: bytes) -> bytes:
    """16-bit signed little-endian PCM to A-law bytes."""
    return _encode(pcm16, _ALAW_ENC)
