"""A small adaptive jitter buffer, sans-I/O: arrival and playout times are passed in (seconds).

One packet plays per ``pop`` (one 20 ms tick by default). The playout delay follows the RFC 3550
section 6.4.1 interarrival jitter estimate, bounded to ``[min_delay, max_delay]``; it grows at an
underrun or at the start of a talkspurt and shrinks by dropping one frame per second spent above
target. Sequence
numbers are extended across the 65535 wrap; an SSRC change or a sequence jump confirmed by a
second packet re-synchronises instead of stalling (RFC 3550 appendix A.1).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from ivr.rtp.packet import RtpPacket

__all__ = ["Gap", "GapReason", "JitterBuffer", "JitterStats"]

_MAX_DROPOUT = 3000
"""RFC 3550 appendix A.1: a forward jump beyond this needs confirming before we follow it."""
_MAX_MISORDER = 100
"""RFC 3550 appendix A.1: a backward step beyond this is a restarted source, not reordering."""
_SETTLE = 16
"""Transit differences to see before trusting J over ``initial_delay`` (the estimator's 1/16 gain)."""
_SHRINK_AFTER = 1.0
"""Seconds above target before one frame is dropped: slow, so a steady stream is rarely cut."""
_MAX_TRANSIT_STEP = 2.0
"""Seconds. A transit change this big is a timestamp jump, not jitter: restart the estimator."""


class GapReason(enum.Enum):
    BUFFERING = "buffering"
    """Nothing played yet: filling up to the playout delay."""
    LOST = "lost"
    """The packet for this slot did not arrive in time (newer ones did)."""
    UNDERRUN = "underrun"
    """Nothing newer has arrived either: the sender is late or silent; playout waits."""
    ADAPT = "adapt"
    """A slot of extra delay inserted at a talkspurt start to grow the buffer."""


@dataclass(frozen=True, slots=True)
class Gap:
    """No frame for this tick: play comfort noise or conceal."""

    reason: GapReason


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0
    """Slots played as gaps whose packet never arrived (late arrivals are taken back out)."""
    late: int = 0
    """Packets that arrived after their slot had been played as a gap (dropped)."""
    duplicate: int = 0
    """Copies of packets already buffered or played (dropped)."""
    discarded: int = 0
    """Frames dropped to shrink the delay, plus stray packets of unconfirmed jumps."""
    resyncs: int = 0
    """SSRC changes and confirmed sequence jumps."""


_BUFFERING, _LOST, _UNDERRUN, _ADAPT = (Gap(r) for r in (GapReason.BUFFERING, GapReason.LOST, GapReason.UNDERRUN,
                                                           GapReason.ADAPT))
"""One of each (a frozen value): a gap is returned on every tick of a silent stream."""


class JitterBuffer:
    """Reorders RTP packets of one stream and releases one per playout tick."""
    # Attributes in the object, not in a dict: the media tick reads them for every call every 20 ms, mostly
    # from a cold cache (bench/README.md, "Less Python per packet").
    __slots__ = (
        "clock_rate", "frame", "min_delay", "max_delay", "_max_frames", "initial_delay", "jitter_factor", "stats",
        "_ssrc", "_packets", "_max_seq", "_offset", "_max_slot", "_next", "_first_arrival", "_skipped", "_over",
        "_adapt", "_probation", "_last_ts", "_last_arrival", "_jitter", "_measured", "_target"
    )

    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        frame: float = 0.020,
        min_delay: float = 0.020,
        max_delay: float = 0.200,
        initial_delay: float = 0.060,
        jitter_factor: float = 3.0,
    ) -> None:
        if not 0 < min_delay <= initial_delay <= max_delay:
            raise ValueError("need 0 < min_delay <= initial_delay <= max_delay")
        self.clock_rate = clock_rate
        self.frame = frame
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._max_frames = max(math.ceil(max_delay / frame - 1e-9), 1)
        self.initial_delay = initial_delay
        self.jitter_factor = jitter_factor
        self.stats = JitterStats()
        self._reset_stream(None)

    def _reset_stream(self, ssrc: int | None) -> None:
        self._ssrc = ssrc
        self._packets: dict[int, RtpPacket] = {}
        """Buffered packets by slot: the sequence number unwrapped, plus ``_offset``."""
        self._max_seq: int | None = None
        """Highest sequence number received, unwrapped (RFC 3550 appendix A.1 cycles)."""
        self._offset = 0
        """Slot = unwrapped sequence number + offset; re-syncs move it so slots stay contiguous."""
        self._max_slot: int | None = None
        self._next: int | None = None
        """Slot to play next; None until playout starts."""
        self._first_arrival: float | None = None
        self._skipped: set[int] = set()
        self._over = 0
        """Consecutive ticks spent holding more than target + 1 frame."""
        self._adapt: tuple[int, int] | None = None
        """(slot, gaps still allowed) while growing the delay before a talkspurt."""
        self._probation: tuple[RtpPacket, float] | None = None
        self._last_ts: int | None = None
        self._last_arrival = 0.0
        self._jitter = 0.0
        """RFC 3550 section 6.4.1 estimate J, in seconds."""
        self._measured = 0
        self._target = self.initial_delay

    def _rebase(self, packet: RtpPacket) -> None:
        """Start a new numbering (new SSRC or confirmed jump) right after what is buffered."""
        self.stats.resyncs += 1
        self._ssrc = packet.ssrc
        self._max_seq = packet.sequence_number + 0x10000 - 1
        after = self._max_slot if self._max_slot is not None else self._max_seq
        self._offset = after - self._max_seq
        self._last_ts = None  # a new timestamp base: no transit difference across it
        self._probation = None

    # -- measurements --------------------------------------------------------------------------

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in seconds (RFC 3550 section 6.4.1)."""
        return self._jitter

    @property
    def highest_sequence(self) -> int | None:
        """The extended highest sequence number received (RFC 3550 section 6.4.1: cycles << 16 | seq)."""
        return None if self._max_seq is None else self._max_seq - 0x10000

    @property
    def target_delay(self) -> float:
        """The playout delay the buffer is steering towards, in seconds."""
        return self._target

    @property
    def depth(self) -> float:
        """Audio held from the next slot to the newest packet, in seconds."""
        if self._max_slot is None:
            return 0.0
        start = self._next if self._next is not None else min(self._packets, default=self._max_slot + 1)
        return max(self._max_slot - start + 1, 0) * self.frame

    def _update_jitter(self, packet: RtpPacket, arrival: float) -> None:
        # RFC 3550 section 6.4.1 / appendix A.8: J += (|D| - J) / 16, D from transit differences.
        if self._last_ts is not None:
            ts_delta = ((packet.timestamp - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            d = (arrival - self._last_arrival) - ts_delta / self.clock_rate
            if abs(d) > _MAX_TRANSIT_STEP:
                pass  # a timestamp (or clock) jump: start measuring afresh from this packet
            else:
                self._jitter += (abs(d) - self._jitter) / 16.0
                self._measured += 1
        self._last_ts = packet.timestamp
        self._last_arrival = arrival
        if self._measured >= _SETTLE:
            wanted = self.frame + self.jitter_factor * self._jitter
            self._target = min(max(wanted, self.min_delay), self.max_delay)

    # -- input ---------------------------------------------------------------------------------

    def push(self, packet: RtpPacket, arrival: float) -> None:
        """Accept one packet that arrived at ``arrival`` (seconds, the clock ``pop`` uses)."""
        self.stats.received += 1
        if self._max_seq is None:
            self._ssrc = packet.ssrc
            self._max_seq = packet.sequence_number + 0x10000
            self._accept(packet, self._max_seq, arrival)
            return
        if packet.ssrc != self._ssrc:
            self._rebase(packet)  # a new source: its numbering has nothing to do with the old
        delta = ((packet.sequence_number - self._max_seq + 0x8000) & 0xFFFF) - 0x8000
        if delta > _MAX_DROPOUT or delta < -_MAX_MISORDER:
            self._jump(packet, arrival)
            return
        if self._probation is not None:
            self.stats.discarded += 1  # the jump was a stray packet: the stream went on
            self._probation = None
        seq = self._max_seq + delta
        slot = seq + self._offset
        if slot in self._packets or (self._next is not None and slot < self._next and slot not in self._skipped):
            self.stats.duplicate += 1
            return
        if self._next is not None and slot < self._next:
            self._skipped.discard(slot)
            self.stats.late += 1
            self.stats.lost -= 1
            return
        self._accept(packet, seq, arrival)

    def _jump(self, packet: RtpPacket, arrival: float) -> None:
        """RFC 3550 appendix A.1: follow a big jump once the next packet confirms it."""
        held = self._probation
        if held is not None and packet.sequence_number == (held[0].sequence_number + 1) & 0xFFFF:
            self._rebase(held[0])
            assert self._max_seq is not None
            self._accept(held[0], self._max_seq + 1, held[1])
            self._accept(packet, self._max_seq + 1, arrival)
            return
        if held is not None:
            self.stats.discarded += 1
        self._probation = (packet, arrival)

    def _accept(self, packet: RtpPacket, seq: int, arrival: float) -> None:
        slot = seq + self._offset
        self._packets[slot] = packet
        if self._max_seq is None or seq > self._max_seq:
            self._max_seq = seq
        if self._max_slot is None or slot > self._max_slot:
            self._max_slot = slot
        if self._first_arrival is None:
            self._first_arrival = arrival
        self._update_jitter(packet, arrival)

    # -- output --------------------------------------------------------------------------------

    def pop(self, now: float) -> RtpPacket | Gap:
        """The frame for this playout tick, or a :class:`Gap` saying why there is none."""
        if self._next is None:
            if not self._packets or self._first_arrival is None:
                return _BUFFERING
            if now - self._first_arrival < self._target:
                return _BUFFERING
            self._next = min(self._packets)
        assert self._max_slot is not None
        if self._next > self._max_slot:
            # Nothing newer has arrived (a silent caller, or one sending only keys): nothing ahead to shrink
            # (what _shrink does then) and no packet in the slot. Asked first: a worker pops every call each tick.
            self._over = 0
            return _UNDERRUN  # hold the slot: the packet may still come
        self._shrink()
        packet = self._packets.get(self._next)
        if packet is not None:
            if packet.marker and self._grow_before(self._next):
                return _ADAPT  # grow the delay in the silence before a talkspurt
            del self._packets[self._next]
            self._next += 1
            self.stats.played += 1
            return packet
        self._skip(1)
        return _LOST

    def _grow_before(self, slot: int) -> bool:
        """Whether to hold a talkspurt's first packet one more tick (bounded, never a stall)."""
        if self._adapt is None or self._adapt[0] != slot:
            missing = math.ceil(self._target / self.frame - 1e-9) - self._frames_ahead()
            self._adapt = (slot, max(missing, 0))
        slot_, allowed = self._adapt
        if allowed <= 0:
            return False
        self._adapt = (slot_, allowed - 1)
        return True

    def _frames_ahead(self) -> int:
        assert self._max_slot is not None and self._next is not None
        return self._max_slot - self._next + 1

    def _skip(self, count: int) -> None:
        assert self._next is not None
        for ext in range(self._next, self._next + count):
            if self._packets.pop(ext, None) is None:
                self.stats.lost += 1
                self._skipped.add(ext)
            else:
                self.stats.discarded += 1
        self._next += count
        if len(self._skipped) > 4 * _MAX_MISORDER:  # forget holes too old to be filled
            floor = self._next - _MAX_MISORDER
            self._skipped = {e for e in self._skipped if e >= floor}

    def _shrink(self) -> None:
        """Drop one frame after a second spent above target; everything past max at once."""
        ahead = self._frames_ahead()
        target_frames = max(math.ceil(self._target / self.frame - 1e-9), 1)
        max_frames = self._max_frames
        if ahead > max_frames:
            self._skip(ahead - target_frames)
            self._over = 0
        elif ahead > target_frames + 1:
            self._over += 1
            if self._over * self.frame >= _SHRINK_AFTER:
                self._skip(1)
                self._over = 0
        else:
            self._over = 0
