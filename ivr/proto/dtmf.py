"""DTMF: in-band detection (Goertzel), RFC 4733 telephone-events, and cross-path de-duplication.

Sans-I/O throughout: audio and payloads in, :class:`DtmfEvent` out; time is passed in (seconds, any
monotonic origin) or counted in 8 kHz samples.  Nothing here reads a clock or touches a socket.

Every path reports the same two events: ``START`` as soon as a key is known to be down (the engine
uses it for barge-in) and ``END`` once per key press carrying the digit to act on.
"""

from __future__ import annotations

import cmath
import enum
import math
import struct
from array import array
from collections import deque
from dataclasses import dataclass
from operator import mul

__all__ = [
    "DTMF_DIGITS",
    "DtmfDeduplicator",
    "DtmfDetector",
    "DtmfEvent",
    "DtmfEventKind",
    "TelephoneEvent",
    "TelephoneEventError",
    "TelephoneEventFrame",
    "TelephoneEventReceiver",
    "telephone_event_frames",
]

DTMF_DIGITS = "0123456789*#ABCD"
"""RFC 4733 section 3.2 table 3: event codes 0..15 in this order."""


class DtmfEventKind(enum.Enum):
    START = "start"
    END = "end"


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """A key went down (``START``) or came up (``END``, the one to count)."""

    kind: DtmfEventKind
    digit: str
    timestamp: int
    """Start of the tone in samples: the RTP timestamp (RFC 4733) or the detector's sample clock."""
    duration: int = 0
    """Tone length in samples; 0 on ``START``."""


# ---------------------------------------------------------------------------------------------
# In-band detection
# ---------------------------------------------------------------------------------------------

SAMPLE_RATE = 8000
_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
_BLOCK = 40
"""Samples per analysis step (5 ms). Windows are whole blocks; the detector decides every block."""
_ROW_BLOCKS = 4
"""Row tones: 160-sample window, first null at 50 Hz, under the 73 Hz row spacing."""
_COL_BLOCKS = 3
"""Column tones: 120-sample window, wider main lobe for their wider (relative) tolerance."""
_ROW_N = _BLOCK * _ROW_BLOCKS
_COL_N = _BLOCK * _COL_BLOCKS


def _db(x: float) -> float:
    return 10.0 ** (x / 10.0)


_DBM0_MS = (32768.0 * 10.0 ** (-3.17 / 20.0)) ** 2 / 2.0
"""Mean square of a 0 dBm0 sine: G.711 puts full scale at +3.17 dBm0 (µ-law; A-law +3.14)."""
_MIN_TONE_MS = _DBM0_MS * _db(-36.0)
"""Per-tone floor. Q.24 operating range reaches -26 dBm0 per tone; with 8 dB twist the weaker one
can be 8 dB lower, so the floor sits 10 dB under it."""
_SILENCE_MS = _DBM0_MS * _db(-50.0)
"""Blocks quieter than this skip the Goertzel work: nothing detectable can be in them."""
_FREQ_TOLERANCE = 0.025
"""Q.24: accept within +/-1.5 %, reject beyond +/-3.5 %; decide at the midpoint."""
_NORMAL_TWIST = _db(9.0)
"""Q.24 (and Bellcore GR-506): accept the high group up to 8 dB weaker than the low group; the
1 dB margin absorbs measurement error (10 dB is rejected)."""
_REVERSE_TWIST = _db(5.0)
"""... and up to 4 dB stronger (6 dB is rejected)."""
_RELATIVE_PEAK = _db(8.0)
"""The winning row (column) must beat every other row (column) by this much."""
_TONE_TO_TOTAL = 0.7
"""The two tones must carry this share of all the energy in the window (speech spreads it out)."""
_ROW_HARMONIC = _db(-4.0)
"""Second harmonic ceiling for rows; loose because row harmonics fall near the column tones."""
_HARMONIC_CLEARANCE = 120.0
"""Hz between a row's second harmonic and the column tone below which the row check is skipped."""
_COL_HARMONIC = _db(-12.0)
"""Second harmonic ceiling for columns: nothing else lives at 2.4..3.3 kHz."""
_STEADY = _db(4.0)
"""Block energies across the two windows compared may differ by this much at most. A window
that is only partly filled with tone reads its frequency and level wrongly, so it is no evidence."""
_ON_BLOCKS = 3
"""Consecutive qualifying decisions for a key-down. Each needs five steady blocks (two windows one
block apart), so 3 decisions need 280 samples: a 40 ms tone always makes it, whatever its
alignment, and a 23 ms tone never does (Q.24 duration limits)."""
_OFF_BLOCKS = 9
"""Consecutive failed decisions for key-up: measured, pauses of 25 ms and more split two tones
(Q.24 interdigit pause 40 ms) and interruptions up to 20 ms are bridged (GR-506 asks 10 ms)."""


_QUIET_BLOCK = [0.0] * _BLOCK


def _dirichlet_gain(offset_hz: float, n: int) -> float:
    """Power gain of an n-point rectangular DFT bin for a tone offset_hz away from its centre."""
    x = math.pi * offset_hz / SAMPLE_RATE
    if abs(x) < 1e-9:
        return 1.0
    return (math.sin(n * x) / (n * math.sin(x))) ** 2


class _Bank:
    """Complex DFT of one block at a set of frequencies, phase-referenced to the stream origin.

    Referencing every block to absolute time lets windows be sums of blocks, and makes the phase
    step between two windows one block apart equal to (true - nominal) frequency x block length.
    """

    _PERIOD = SAMPLE_RATE // _BLOCK
    """Integer frequencies make the per-block rotation repeat every 200 blocks (1 s)."""

    def __init__(self, freqs: tuple[float, ...]) -> None:
        self.freqs = freqs
        w = [2 * math.pi * f / SAMPLE_RATE for f in freqs]
        self._cos = [[math.cos(wi * k) for k in range(_BLOCK)] for wi in w]
        self._msin = [[-math.sin(wi * k) for k in range(_BLOCK)] for wi in w]
        self._rotors = [[cmath.exp(-1j * wi * _BLOCK * (b % self._PERIOD)) for wi in w] for b in range(self._PERIOD)]
        self._silence = [0j] * len(freqs)

    def block(self, x: list[float], index: int, silent: bool) -> list[complex]:
        """DFT of the block at absolute block number ``index``."""
        if silent:
            return self._silence
        return [
            rotor * complex(sum(map(mul, x, c)), sum(map(mul, x, s)))
            for rotor, c, s in zip(self._rotors[index % self._PERIOD], self._cos, self._msin, strict=True)
        ]


def _goertzel_ms(x: list[float], freq: float) -> float:
    """Mean square of the component at freq over x (Goertzel, for the occasional harmonic check)."""
    coeff = 2.0 * math.cos(2 * math.pi * freq / SAMPLE_RATE)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2.0 * power / (len(x) * len(x))


class DtmfDetector:
    """In-band DTMF receiver for 8 kHz 16-bit little-endian PCM, fed in any chunk size.

    Decisions follow ITU-T Q.24 as receivers commonly implement it (Goertzel filters like
    spandsp and Asterisk): frequency within tolerance (measured from the phase advance of the
    DFT bins, not just bin energy), level floor, twist limits, relative peaks, tone-to-total
    energy, second harmonics, then duration and pause counted in 5 ms decisions.
    """

    def __init__(self) -> None:
        self._rows = _Bank(_ROWS)
        self._cols = _Bank(_COLS)
        self._pending = array("h")
        self._history: deque[tuple[list[complex], list[complex], float]] = deque(maxlen=_ROW_BLOCKS)
        self._recent: deque[list[float]] = deque(maxlen=_ROW_BLOCKS)
        self._energies: deque[float] = deque(maxlen=_ROW_BLOCKS + 1)
        self._prev_windows: tuple[list[complex], list[complex]] | None = None
        self._samples = 0
        """Samples consumed so far: the detector's clock."""
        self._run_digit: str | None = None
        self._run = 0
        self._run_start = 0
        self._last_hit = 0
        self._active: str | None = None
        self._active_start = 0
        self._misses = 0

    def feed(self, pcm16: bytes) -> list[DtmfEvent]:
        """Consume audio; returns the events it completes (usually none)."""
        if len(pcm16) & 1:
            raise ValueError("16-bit PCM needs an even number of bytes")
        self._pending.frombytes(pcm16)
        events: list[DtmfEvent] = []
        usable = len(self._pending) - len(self._pending) % _BLOCK
        for start in range(0, usable, _BLOCK):
            ints = self._pending[start : start + _BLOCK].tolist()
            self._block(ints, sum(map(mul, ints, ints)), events)
        del self._pending[:usable]
        return events

    def _block(self, ints: list[int], energy: float, events: list[DtmfEvent]) -> None:
        silent = energy < _SILENCE_MS * _BLOCK
        x = _QUIET_BLOCK if silent else list(map(float, ints))  # float products are faster
        index = self._samples // _BLOCK
        self._history.append((self._rows.block(x, index, silent), self._cols.block(x, index, silent), energy))
        self._recent.append(x)
        self._energies.append(energy)
        self._samples += _BLOCK
        total = sum(h[2] for h in self._history) / _ROW_N
        if len(self._history) < _ROW_BLOCKS or total < _MIN_TONE_MS:
            self._prev_windows = None  # nothing to hear: skip the window sums
            self._decide(None, events)
            return
        h0, h1, h2, h3 = self._history
        rows = [a + b + c + d for a, b, c, d in zip(h0[0], h1[0], h2[0], h3[0], strict=True)]
        cols = [b + c + d for b, c, d in zip(h1[1], h2[1], h3[1], strict=True)]
        prev = self._prev_windows
        self._prev_windows = (rows, cols)
        digit = None
        if prev is not None and min(self._energies) * _STEADY >= max(self._energies):
            digit = self._classify(rows, cols, total, prev)
        self._decide(digit, events)

    def _classify(
        self,
        rows: list[complex],
        cols: list[complex],
        total: float,
        prev: tuple[list[complex], list[complex]],
    ) -> str | None:
        if total < _MIN_TONE_MS:
            return None
        row_p = [abs(w) ** 2 for w in rows]
        col_p = [abs(w) ** 2 for w in cols]
        r = max(range(4), key=row_p.__getitem__)
        c = max(range(4), key=col_p.__getitem__)
        # relative peaks (raw bin energies)
        if any(i != r and row_p[i] * _RELATIVE_PEAK > row_p[r] for i in range(4)):
            return None
        if any(i != c and col_p[i] * _RELATIVE_PEAK > col_p[c] for i in range(4)):
            return None
        # frequency: phase advance over one block between consecutive windows (Q.24 tolerance)
        row_off = cmath.phase(rows[r] * prev[0][r].conjugate()) * SAMPLE_RATE / (2 * math.pi * _BLOCK)
        col_off = cmath.phase(cols[c] * prev[1][c].conjugate()) * SAMPLE_RATE / (2 * math.pi * _BLOCK)
        if abs(row_off) > _FREQ_TOLERANCE * _ROWS[r] or abs(col_off) > _FREQ_TOLERANCE * _COLS[c]:
            return None
        # levels, corrected for the bin's roll-off at the measured offset
        row_ms = 2.0 * row_p[r] / (_ROW_N * _ROW_N) / _dirichlet_gain(row_off, _ROW_N)
        col_ms = 2.0 * col_p[c] / (_COL_N * _COL_N) / _dirichlet_gain(col_off, _COL_N)
        if row_ms < _MIN_TONE_MS or col_ms < _MIN_TONE_MS:
            return None
        if row_ms > col_ms * _NORMAL_TWIST or col_ms > row_ms * _REVERSE_TWIST:
            return None  # Q.24 twist
        if row_ms + col_ms < _TONE_TO_TOTAL * total:
            return None  # noise or speech around the tones
        digit = _KEYPAD[r][c]
        if digit == self._active:
            return digit  # harmonics were checked when the key went down
        window = [v for block in self._recent for v in block]
        row_harmonic = 2 * (_ROWS[r] + row_off)
        # 2 x 697 Hz can sit on top of a detuned 1336 Hz column: only look where the column is not.
        if abs(row_harmonic - _COLS[c] - col_off) > _HARMONIC_CLEARANCE and (
            _goertzel_ms(window, row_harmonic) > row_ms * _ROW_HARMONIC
        ):
            return None
        if _goertzel_ms(window[-_COL_N:], 2 * (_COLS[c] + col_off)) > col_ms * _COL_HARMONIC:
            return None
        return digit

    def _decide(self, digit: str | None, events: list[DtmfEvent]) -> None:
        if digit is not None and digit == self._run_digit:
            self._run += 1
        else:
            self._run_digit, self._run = digit, 1
            self._run_start = self._samples
        if self._active is not None:
            if digit == self._active:
                self._misses = 0
                self._last_hit = self._samples
                return
            self._misses += 1
            if self._misses < _OFF_BLOCKS:
                return
            # Decisions pass until the tone's end reaches the newest block.
            duration = max(self._last_hit - self._active_start, 0)
            events.append(DtmfEvent(DtmfEventKind.END, self._active, self._active_start, duration))
            self._active = None
        if digit is not None and self._run >= _ON_BLOCKS:
            self._active = digit
            self._misses = 0
            self._last_hit = self._samples
            # The first passing decision needs both windows (five blocks) full of tone.
            self._active_start = max(self._run_start - _ROW_N - _BLOCK - _BLOCK // 2, 0)
            events.append(DtmfEvent(DtmfEventKind.START, digit, self._active_start))


# ---------------------------------------------------------------------------------------------
# RFC 4733 telephone-event
# ---------------------------------------------------------------------------------------------

_EVENT = struct.Struct("!BBH")


class TelephoneEventError(ValueError):
    """A telephone-event payload that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """RFC 4733 section 2.3 payload: event, E bit, R bit, volume, duration."""

    event: int
    end: bool = False
    volume: int = 10
    """Power level of the tone in -dBm0 (0..63)."""
    duration: int = 0
    """Duration so far in timestamp units (16 bits)."""
    reserved: bool = False
    """The R bit: senders send 0, receivers ignore it (RFC 4733 section 2.3)."""

    @property
    def digit(self) -> str | None:
        """The DTMF digit for events 0..15 (RFC 4733 section 3.2), None otherwise."""
        return DTMF_DIGITS[self.event] if self.event < len(DTMF_DIGITS) else None

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        # RFC 4733 section 2.3: exactly one 4-octet event per payload (redundancy uses RFC 2198).
        if len(payload) < 4:
            raise TelephoneEventError(f"telephone-event payload too short ({len(payload)} bytes)")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(
            event=event,
            end=bool(flags & 0x80),
            reserved=bool(flags & 0x40),
            volume=flags & 0x3F,
            duration=duration,
        )

    def build(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63 or not 0 <= self.duration <= 0xFFFF:
            raise ValueError("telephone-event field out of range")
        flags = (0x80 if self.end else 0) | (0x40 if self.reserved else 0) | self.volume
        return _EVENT.pack(self.event, flags, self.duration)

    @classmethod
    def for_digit(cls, digit: str, **fields: int | bool) -> TelephoneEvent:
        code = DTMF_DIGITS.find(digit.upper())
        if code < 0 or len(digit) != 1:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        return cls(event=code, **fields)  # type: ignore[arg-type]


def _ts_before(a: int, b: int) -> bool:
    """True when RTP timestamp a precedes b, modulo 2**32 (RFC 3550 section 5.1 wrap)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


@dataclass(slots=True)
class _Current:
    timestamp: int
    event: int
    duration: int
    last_seen: float


class TelephoneEventReceiver:
    """Turns received telephone-event packets into exactly one START and one END per key press.

    Keyed on the RTP timestamp, which is the same in every packet of one event (RFC 4733
    section 2.5.1). The END is reported at the first E packet and the usual retransmissions of
    it are ignored; a lost END is inferred from a newer event or from ``end_timeout`` of quiet.
    Unknown events (16..255) are tracked so their packets end a previous digit correctly, but
    produce no events themselves.
    """

    def __init__(self, *, end_timeout: float = 0.25, remember: int = 16) -> None:
        self.end_timeout = end_timeout
        self._current: _Current | None = None
        self._finished: deque[int] = deque(maxlen=remember)

    def receive(self, payload: bytes, timestamp: int, now: float, *, marker: bool = False) -> list[DtmfEvent]:
        """Handle one telephone-event RTP payload; raises TelephoneEventError if malformed."""
        ev = TelephoneEvent.parse(payload)
        timestamp &= 0xFFFFFFFF
        out: list[DtmfEvent] = []
        cur = self._current
        if timestamp in self._finished:
            return out  # RFC 4733 section 2.5.1.4: retransmitted end packets
        if cur is not None and timestamp != cur.timestamp:
            if _ts_before(timestamp, cur.timestamp):
                return out  # a late packet of an older event
            if self._is_long_event_segment(cur, ev, timestamp, marker):
                cur.timestamp, cur.duration, cur.last_seen = timestamp, 0, now
            else:
                out.extend(self._finish(cur))  # a new event ends the previous one (lost E bit)
                cur = None
        if cur is None:
            cur = self._current = _Current(timestamp, ev.event, ev.duration, now)
            if ev.digit is not None:
                out.append(DtmfEvent(DtmfEventKind.START, ev.digit, timestamp))
        cur.duration = max(cur.duration, ev.duration)
        cur.last_seen = now
        if ev.end:
            out.extend(self._finish(cur))
        return out

    @staticmethod
    def _is_long_event_segment(cur: _Current, ev: TelephoneEvent, timestamp: int, marker: bool) -> bool:
        # RFC 4733 section 2.5.1.3: past 0xFFFF the sender restarts the duration with a new
        # timestamp, same event, no marker.
        return (
            not marker
            and ev.event == cur.event
            and cur.duration >= 0xFF00
            and ((timestamp - cur.timestamp) & 0xFFFFFFFF) <= 0x10000
        )

    def _finish(self, cur: _Current) -> list[DtmfEvent]:
        self._current = None
        self._finished.append(cur.timestamp)
        digit = DTMF_DIGITS[cur.event] if cur.event < len(DTMF_DIGITS) else None
        if digit is None:
            return []
        return [DtmfEvent(DtmfEventKind.END, digit, cur.timestamp, cur.duration)]

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run, or None."""
        return None if self._current is None else self._current.last_seen + self.end_timeout

    def handle_timer(self, now: float) -> list[DtmfEvent]:
        """End an event whose end packets were all lost."""
        cur = self._current
        if cur is not None and now >= cur.last_seen + self.end_timeout:
            return self._finish(cur)
        return []


@dataclass(frozen=True, slots=True)
class TelephoneEventFrame:
    """One telephone-event packet to send: all share the event's start RTP timestamp."""

    payload: bytes
    marker: bool
    offset: int
    """When to send it, in timestamp units after the event start."""


def telephone_event_frames(
    digit: str,
    duration: int,
    *,
    volume: int = 10,
    interval: int = 160,
    end_repeats: int = 3,
) -> list[TelephoneEventFrame]:
    """Packets for one key press of ``duration`` samples (RFC 4733 section 2.5.1).

    The first packet carries the marker; updates follow every ``interval``; the final packet has
    the E bit and is sent ``end_repeats`` times (section 2.5.1.4: three times is customary).
    """
    if duration <= 0 or duration > 0xFFFF:
        raise ValueError("duration must be 1..65535 samples")  # longer events need segments
    frames: list[TelephoneEventFrame] = []
    elapsed = interval
    while elapsed < duration:
        ev = TelephoneEvent.for_digit(digit, volume=volume, duration=elapsed)
        frames.append(TelephoneEventFrame(ev.build(), not frames, elapsed))
        elapsed += interval
    end = TelephoneEvent.for_digit(digit, volume=volume, duration=duration, end=True).build()
    for k in range(end_repeats):
        frames.append(TelephoneEventFrame(end, not frames, duration + k * interval))
    return frames


# ---------------------------------------------------------------------------------------------
# One digit, many paths
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Press:
    digit: str
    at: float
    sources: set[str]


class DtmfDeduplicator:
    """Counts a key press once when it arrives by several paths (RFC 4733, SIP INFO, in-band).

    Each counted digit opens a press; the same digit from a source that press has not heard yet,
    within ``window`` seconds, is a copy of it. The same source twice is two presses: "1 1" typed
    quickly stays two digits.
    """

    def __init__(self, window: float = 0.5) -> None:
        self.window = window
        self._presses: deque[_Press] = deque()

    def accept(self, digit: str, source: str, now: float) -> bool:
        """True if the caller should act on this digit; False for a copy from another path."""
        while self._presses and now - self._presses[0].at > self.window:
            self._presses.popleft()
        for press in self._presses:
            if press.digit == digit and source not in press.sources:
                press.sources.add(source)
                return False
        self._presses.append(_Press(digit, now, {source}))
        return True
