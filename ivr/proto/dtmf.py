"""DTMF: in-band detection (Goertzel), RFC 4733 telephone-events, and cross-path de-duplication.

Sans-I/O throughout: audio and payloads in, :class:`DtmfEvent` out; time is passed in (seconds, any
monotonic origin) or counted in 8 kHz samples.  Nothing here reads a clock or touches a socket.

Every path reports the same two events: ``START`` as soon as a key is known to be down (the engine
uses it for barge-in) and ``END`` once per key press carrying the digit to act on.
"""

from __future__ import annotations

import enum
import math
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DTMF_DIGITS",
    "DtmfBank",
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
_DIGIT_OF = "".join(_KEYPAD)
"""Digit of code row * 4 + column."""
_BLOCK = 40
"""Samples per analysis step (5 ms). Windows are whole blocks; the detector decides every block."""
_BLOCK_BYTES = 2 * _BLOCK
_ROW_BLOCKS = 4
"""Row tones: 160-sample window, first null at 50 Hz, under the 73 Hz row spacing."""
_COL_BLOCKS = 3
"""Column tones: 120-sample window, wider main lobe for their wider (relative) tolerance."""
_ROW_N = _BLOCK * _ROW_BLOCKS
_COL_N = _BLOCK * _COL_BLOCKS
_HISTORY = _ROW_BLOCKS
"""Blocks of state kept per stream between calls: the longest window."""


def _db(x: float) -> float:
    return 10.0 ** (x / 10.0)


_DBM0_MS = (32768.0 * 10.0 ** (-3.17 / 20.0)) ** 2 / 2.0
"""Mean square of a 0 dBm0 sine: G.711 puts full scale at +3.17 dBm0 (µ-law; A-law +3.14)."""
_MIN_TONE_MS = _DBM0_MS * _db(-36.0)
"""Per-tone floor. Q.24 operating range reaches -26 dBm0 per tone; with 8 dB twist the weaker one
can be 8 dB lower, so the floor sits 10 dB under it."""
_SILENCE_MS = _DBM0_MS * _db(-50.0)
"""Blocks quieter than this count as digital silence (their DFT and samples are taken as zero)."""
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

# The filter bank: a complex DFT of every block at the 8 tones, phase-referenced to the stream's
# origin. Referencing every block to absolute time lets windows be sums of blocks, and makes the
# phase step between two windows one block apart equal to (true - nominal) frequency x block length.
_FREQS = np.array(_ROWS + _COLS)
_OMEGA = 2.0 * np.pi * _FREQS / SAMPLE_RATE
_BASIS = np.ascontiguousarray(
    np.concatenate([np.cos(np.outer(np.arange(_BLOCK), _OMEGA)), -np.sin(np.outer(np.arange(_BLOCK), _OMEGA))], axis=1)
)
"""(40, 16): a block times this is the real parts of the 8 bins, then their imaginary parts."""
_PERIOD = SAMPLE_RATE // _BLOCK
"""Integer frequencies make the per-block rotation repeat every 200 blocks (1 s)."""
_ROTORS = np.exp(-1j * np.outer(np.arange(_PERIOD) * _BLOCK, _OMEGA))
"""(200, 8): phase of block b's first sample, for block number b modulo the period."""
_OFFSET_SCALE = SAMPLE_RATE / (2.0 * math.pi * _BLOCK)
"""Phase step between windows one block apart (radians) -> frequency offset (Hz)."""
_GROUP_FIRST = np.array([[0, 4]])
"""Bin of the first row, of the first column."""
_WINDOW_N = np.array([_ROW_N, _COL_N])
_LEVEL_SCALE = 2.0 / _WINDOW_N.astype(np.float64) ** 2
"""Bin energy -> mean square of the tone, rows and columns."""


def _dirichlet_gain(offset_hz: np.ndarray, n: int | np.ndarray) -> np.ndarray:
    """Power gain of an n-point rectangular DFT bin for tones offset_hz away from its centre."""
    x = np.pi * offset_hz / SAMPLE_RATE
    small = np.abs(x) < 1e-9
    x = np.where(small, 1.0, x)  # a placeholder where the limit (1) applies
    return np.where(small, 1.0, (np.sin(n * x) / (n * np.sin(x))) ** 2)


_NO_PARAMS = np.zeros((0, 0, 4))
_GEMM_ROWS = 256
"""Blocks per matrix product: 256 x 40 x 16 stays under OpenBLAS's size for going multi-threaded
(4 x 65536 multiply-adds), whose threads busy-wait for work and would burn the other core."""


def _filter_bank(blocks: np.ndarray) -> np.ndarray:
    """(k, 40) blocks -> (k, 16): the 8 bins' real parts, then their imaginary parts."""
    if len(blocks) <= _GEMM_ROWS:
        return blocks @ _BASIS
    out = np.empty((len(blocks), 16))
    for start in range(0, len(blocks), _GEMM_ROWS):
        np.matmul(blocks[start : start + _GEMM_ROWS], _BASIS, out=out[start : start + _GEMM_ROWS])
    return out


def _tone_ms(x: np.ndarray, freq: float) -> float:
    """Mean square of the component at freq over x (one DFT bin; the occasional harmonic check)."""
    spectrum = x @ np.exp(-2j * np.pi * freq / SAMPLE_RATE * np.arange(len(x)))
    return float(2.0 * abs(spectrum) ** 2 / (len(x) * len(x)))


class DtmfBank:
    """The in-band detectors of many streams, analysed together: one numpy computation per :meth:`run`.

    Streams get a :class:`DtmfDetector` from :meth:`open`, :meth:`DtmfDetector.push` their audio as it
    comes, and once per media tick :meth:`run` analyses everything queued since the last run, for all of
    them at once; each detector then hands out its events with :meth:`DtmfDetector.take`. The filter
    bank, window sums and Q.24 checks run as array operations over streams x 5 ms blocks; only the
    per-stream key-down/key-up counting (a few comparisons per block, and only for streams where a tone
    is sounding or ending) and the rare second-harmonic check at a key's onset run per stream.
    """

    def __init__(self, capacity: int = 8) -> None:
        capacity = max(capacity, 1)
        self._energy = np.zeros((capacity, _HISTORY))
        """Per slot: the energies (sum of squares) of its last 4 blocks."""
        self._samples = np.zeros((capacity, _HISTORY * _BLOCK))
        """Per slot: its last 4 blocks' samples (silent blocks as zeros), for the harmonic checks."""
        self._blocks = np.zeros(capacity, dtype=np.int64)
        """Per slot: blocks analysed so far (the detector's clock, in blocks)."""
        self._window_ok = np.zeros(capacity, dtype=bool)
        """Per slot: whether the last block's windows were computed (enough history and level)."""
        self._free = list(range(capacity - 1, -1, -1))
        self._queued: list[DtmfDetector] = []
        self.open_detectors = 0

    def open(self) -> DtmfDetector:
        """A detector for one more stream, analysed with the others."""
        return DtmfDetector(self)

    def _allocate(self) -> int:
        if not self._free:
            old = len(self._blocks)
            new = 2 * old
            self._energy = np.concatenate([self._energy, np.zeros_like(self._energy)])
            self._samples = np.concatenate([self._samples, np.zeros_like(self._samples)])
            self._blocks = np.concatenate([self._blocks, np.zeros_like(self._blocks)])
            self._window_ok = np.concatenate([self._window_ok, np.zeros_like(self._window_ok)])
            self._free = list(range(new - 1, old - 1, -1))
        slot = self._free.pop()
        self._energy[slot] = 0
        self._samples[slot] = 0
        self._blocks[slot] = 0
        self._window_ok[slot] = False
        self.open_detectors += 1
        return slot

    def _release(self, detector: DtmfDetector) -> None:
        if detector._queued:
            self._queued.remove(detector)
            detector._queued = False
        self._free.append(detector._slot)
        self.open_detectors -= 1

    def run(self) -> int:
        """Analyse the audio every open detector was pushed since the last run; returns how many had some."""
        queued, self._queued = self._queued, []
        for detector in queued:
            detector._queued = False
        return self._analyse(queued)

    def _analyse(self, detectors: list[DtmfDetector]) -> int:
        """Analyse the whole blocks pending in ``detectors``; detectors with the same count go together."""
        groups: dict[int, list[DtmfDetector]] = {}
        for detector in detectors:
            blocks = len(detector._pending) // _BLOCK_BYTES
            if blocks:
                groups.setdefault(blocks, []).append(detector)
        for blocks, group in groups.items():
            self._analyse_group(group, blocks)
        return sum(len(g) for g in groups.values())

    def _analyse_group(self, detectors: list[DtmfDetector], nb: int) -> None:
        n = len(detectors)
        used = nb * _BLOCK_BYTES
        chunks = []
        for detector in detectors:
            pending = detector._pending
            if len(pending) == used:
                chunks.append(pending)
                detector._pending = b""
            else:
                chunks.append(pending[:used])
                detector._pending = pending[used:]
        slots = np.fromiter((d._slot for d in detectors), dtype=np.intp, count=n)
        x = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64).reshape(n, nb, _BLOCK)
        energy = np.einsum("ijk,ijk->ij", x, x)  # exact: 40 squares of int16 fit a double's mantissa
        silent = energy < _SILENCE_MS * _BLOCK
        if silent.any():
            x[silent] = 0.0  # digital silence: nothing detectable in it (its DFT is zero, its harmonics too)
        blocks0 = self._blocks[slots]
        # The 4 blocks before this run and the new ones side by side: new block j is column j + 4.
        ex = np.concatenate([self._energy[slots], energy], axis=1)
        total = (ex[:, 1 : nb + 1] + ex[:, 2 : nb + 2] + ex[:, 3 : nb + 3] + ex[:, 4 : nb + 4]) / _ROW_N
        window_ok = (blocks0[:, None] + np.arange(1, nb + 1) >= _ROW_BLOCKS) & (total >= _MIN_TONE_MS)
        hits: dict[int, int] = {}
        codes: list[list[int]] = []
        params = _NO_PARAMS
        loud = np.flatnonzero(window_ok.any(axis=1))
        if len(loud):
            hits, codes, params = self._decisions(loud, slots[loud], x[loud], ex[loud], total[loud], window_ok[loud])
        # Per stream: key-down/up counting, and the harmonic check where a new key may be going down.
        start = (blocks0 * _BLOCK).tolist()
        for i, detector in enumerate(detectors):
            k = hits.get(i)
            if k is None:
                if detector._busy:
                    detector._decide_none(nb, start[i])
                continue
            row = codes[k]
            active = detector._active
            if active is not None and detector._run_digit == active and row.count(_DIGIT_OF.index(active)) == nb:
                # a held key: every decision agrees with it
                detector._run += nb
                detector._misses = 0
                detector._last_hit = start[i] + nb * _BLOCK
                continue
            window = None
            for j, code in enumerate(row):
                digit = _DIGIT_OF[code] if code >= 0 else None
                if digit is not None and digit != detector._active:
                    # harmonics are checked when a key goes down (not again while it is held)
                    if window is None:
                        window = np.concatenate([self._samples[slots[i]], x[i].reshape(-1)])
                    begin = (j + 1) * _BLOCK
                    if not _harmonics_clear(window[begin : begin + _ROW_N], code, *params[k, j].tolist()):
                        digit = None
                detector._decide(digit, start[i] + (j + 1) * _BLOCK)
        # Keep the last 4 blocks' energies and samples for the next run.
        self._energy[slots] = ex[:, -_HISTORY:]
        if nb >= _HISTORY:
            self._samples[slots] = x[:, -_HISTORY:].reshape(n, _HISTORY * _BLOCK)
        else:
            kept = np.concatenate([self._samples[slots], x.reshape(n, nb * _BLOCK)], axis=1)
            self._samples[slots] = kept[:, -_HISTORY * _BLOCK :]
        self._blocks[slots] = blocks0 + nb
        self._window_ok[slots] = window_ok[:, -1]

    def _decisions(
        self,
        rows_of: np.ndarray,
        slots: np.ndarray,
        x: np.ndarray,
        ex: np.ndarray,
        total: np.ndarray,
        window_ok: np.ndarray,
    ) -> tuple[dict[int, int], list[list[int]], np.ndarray]:
        """The Q.24 checks for the streams that have a window loud enough this run.

        For the streams where some decision passed: their row of the group -> k, the decisions
        ``codes[k]`` (digit code or -1 per new block) and ``params[k]``, each decision's (row offset,
        column offset, row level, column level) for the harmonic check.
        """
        m, nb = window_ok.shape
        # The filter bank over the 4 blocks before the run and the new ones (earlier DFTs are not kept:
        # recomputing them for the loud streams is cheaper than computing every quiet stream's).
        xs = np.concatenate([self._samples[slots].reshape(m, _HISTORY, _BLOCK), x], axis=1)
        parts = _filter_bank(xs.reshape(m * (nb + _HISTORY), _BLOCK)).reshape(m, nb + _HISTORY, 16)
        index = (self._blocks[slots][:, None] + np.arange(-_HISTORY, nb)) % _PERIOD
        dx = (parts[..., :8] + 1j * parts[..., 8:]) * _ROTORS[index]
        # Windows ending at the last block before this run (t = 0) and at each new block (t = j + 1):
        # columns over 3 blocks, rows over those and one more.
        win = dx[:, 1 : nb + 2] + dx[:, 2 : nb + 3] + dx[:, 3 : nb + 4]
        win[..., :4] += dx[:, 0 : nb + 1, :4]
        # A decision compares a window with the one a block earlier: both must exist.
        prev_ok = np.concatenate([self._window_ok[slots][:, None], window_ok[:, :-1]], axis=1)
        ii, jj = np.nonzero(window_ok & prev_ok)
        nothing: tuple[dict[int, int], list[list[int]], np.ndarray] = ({}, [], _NO_PARAMS)
        if not len(ii):
            return nothing
        span = ex[ii[:, None], jj[:, None] + np.arange(_ROW_BLOCKS + 1)]  # the 5 blocks behind the decision
        steady = span.min(axis=1) * _STEADY >= span.max(axis=1)
        ii, jj = ii[steady], jj[steady]
        if not len(ii):
            return nothing
        code, *params = _classify(win[ii, jj + 1], win[ii, jj], total[ii, jj])
        passed = code >= 0
        if not passed.any():
            return nothing
        ii, jj = ii[passed], jj[passed]
        streams = np.unique(ii)
        k = np.searchsorted(streams, ii)
        codes = np.full((len(streams), nb), -1, dtype=np.int64)
        codes[k, jj] = code[passed]
        values = np.zeros((len(streams), nb, 4))
        values[k, jj] = np.stack([p[passed] for p in params], axis=1)
        return dict(zip(rows_of[streams].tolist(), range(len(streams)), strict=True)), codes.tolist(), values


def _classify(
    win: np.ndarray, prev: np.ndarray, total: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q.24 checks of k windows at once: (code or -1, row and column offset Hz, row and column level).

    ``win`` holds the (k, 8) windows' bins (4 rows, then 4 columns), ``prev`` the windows one block
    earlier; rows and columns go through every check side by side, as (k, 2) arrays.
    """
    k = len(total)
    power = (win.real**2 + win.imag**2).reshape(k, 2, 4)
    best = power.argmax(axis=2)
    top = np.take_along_axis(power, best[:, :, None], axis=2)
    # relative peaks (raw bin energies): every other row (column) this much under the winner; the
    # winner itself is over its own bar whenever it is above zero, hence "at most one".
    ok = ((power * _RELATIVE_PEAK > top).sum(axis=2) <= 1).all(axis=1)
    # frequency: phase advance over one block between consecutive windows (Q.24 tolerance)
    bins = best + _GROUP_FIRST
    offset = np.angle(np.take_along_axis(win, bins, axis=1) * np.take_along_axis(prev, bins, axis=1).conj())
    offset *= _OFFSET_SCALE
    ok &= ~(np.abs(offset) > _FREQ_TOLERANCE * _FREQS[bins]).any(axis=1)
    # levels, corrected for the bin's roll-off at the measured offset
    level = top[:, :, 0] * _LEVEL_SCALE / _dirichlet_gain(offset, _WINDOW_N)
    row_ms, col_ms = level[:, 0], level[:, 1]
    ok &= ~(level.min(axis=1) < _MIN_TONE_MS)
    ok &= ~((row_ms > col_ms * _NORMAL_TWIST) | (col_ms > row_ms * _REVERSE_TWIST))  # Q.24 twist
    ok &= ~(row_ms + col_ms < _TONE_TO_TOTAL * total)  # noise or speech around the tones
    code = np.where(ok, best[:, 0] * 4 + best[:, 1], -1)
    return code, offset[:, 0], offset[:, 1], row_ms, col_ms


def _harmonics_clear(window: np.ndarray, code: int, row_off: float, col_off: float, row_ms: float,
                     col_ms: float) -> bool:
    """Second harmonics under their ceilings (speech has them, clean DTMF has not) over the 160-sample window."""
    r, c = divmod(code, 4)
    row_harmonic = 2 * (_ROWS[r] + row_off)
    # 2 x 697 Hz can sit on top of a detuned 1336 Hz column: only look where the column is not.
    if abs(row_harmonic - _COLS[c] - col_off) > _HARMONIC_CLEARANCE and (
        _tone_ms(window, row_harmonic) > row_ms * _ROW_HARMONIC
    ):
        return False
    return not _tone_ms(window[-_COL_N:], 2 * (_COLS[c] + col_off)) > col_ms * _COL_HARMONIC


class DtmfDetector:
    """In-band DTMF receiver for 8 kHz 16-bit little-endian PCM, fed in any chunk size.

    Decisions follow ITU-T Q.24 as receivers commonly implement it (Goertzel filters like
    spandsp and Asterisk): frequency within tolerance (measured from the phase advance of the
    DFT bins, not just bin energy), level floor, twist limits, relative peaks, tone-to-total
    energy, second harmonics, then duration and pause counted in 5 ms decisions.

    On its own (``DtmfDetector()``) it analyses what :meth:`feed` gives it at once. Opened from a
    :class:`DtmfBank` it is one stream of many: :meth:`push` queues audio, the bank's ``run()``
    analyses all streams together, :meth:`take` returns the events; :meth:`feed` still works (it
    analyses this stream alone). :meth:`close` gives its place in the bank back.
    """

    def __init__(self, bank: DtmfBank | None = None) -> None:
        self._bank = bank if bank is not None else DtmfBank(1)
        self._slot = self._bank._allocate()
        self._pending = b""
        self._queued = False
        self._closed = False
        self._events: list[DtmfEvent] = []
        self._busy = False
        """A key is down or a run of qualifying decisions is under way: blocks without a digit count."""
        self._run_digit: str | None = None
        self._run = 0
        self._run_start = 0
        self._last_hit = 0
        self._active: str | None = None
        self._active_start = 0
        self._misses = 0

    def push(self, pcm16: bytes) -> None:
        """Queue audio for the bank's next ``run()``."""
        if len(pcm16) & 1:
            raise ValueError("16-bit PCM needs an even number of bytes")
        if self._closed:
            raise ValueError("the detector is closed")
        self._pending = self._pending + pcm16 if self._pending else pcm16
        if not self._queued:
            self._queued = True
            self._bank._queued.append(self)

    def take(self) -> list[DtmfEvent]:
        """The events completed since the last take (usually none)."""
        events, self._events = self._events, []
        return events

    def feed(self, pcm16: bytes) -> list[DtmfEvent]:
        """Consume audio now (this stream alone); returns the events it completes (usually none)."""
        self.push(pcm16)
        return self.flush()

    def flush(self) -> list[DtmfEvent]:
        """Analyse what was pushed and not analysed yet, now (this stream alone); returns :meth:`take`."""
        if self._queued:
            self._bank._queued.remove(self)
            self._queued = False
            self._bank._analyse([self])
        return self.take()

    def close(self) -> None:
        """Leave the bank (idempotent); the detector takes no more audio."""
        if not self._closed:
            self._closed = True
            self._bank._release(self)

    def _decide_none(self, nb: int, start: int) -> None:
        """``nb`` decisions without a digit, the first ending at ``start`` + one block."""
        for j in range(1, nb + 1):
            self._decide(None, start + j * _BLOCK)
            if not self._busy:
                return  # the rest change nothing that matters: the next digit starts a new run

    def _decide(self, digit: str | None, samples: int) -> None:
        """One 5 ms decision; ``samples`` is the detector's clock after the block it ends."""
        if digit is not None and digit == self._run_digit:
            self._run += 1
        else:
            self._run_digit, self._run = digit, 1
            self._run_start = samples
        self._busy = self._active is not None or self._run_digit is not None
        if self._active is not None:
            if digit == self._active:
                self._misses = 0
                self._last_hit = samples
                return
            self._misses += 1
            if self._misses < _OFF_BLOCKS:
                return
            # Decisions pass until the tone's end reaches the newest block.
            duration = max(self._last_hit - self._active_start, 0)
            self._events.append(DtmfEvent(DtmfEventKind.END, self._active, self._active_start, duration))
            self._active = None
            self._busy = self._run_digit is not None
        if digit is not None and self._run >= _ON_BLOCKS:
            self._active = digit
            self._busy = True
            self._misses = 0
            self._last_hit = samples
            # The first passing decision needs both windows (five blocks) full of tone.
            self._active_start = max(self._run_start - _ROW_N - _BLOCK - _BLOCK // 2, 0)
            self._events.append(DtmfEvent(DtmfEventKind.START, digit, self._active_start))


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
    # Attributes in the object, not in a dict: the media tick reads them for every call every 20 ms, mostly
    # from a cold cache (bench/README.md, "Less Python per packet").
    __slots__ = ("end_timeout", "_current", "_finished")

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
