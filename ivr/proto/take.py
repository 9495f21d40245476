"""One recorded message ("leave a message after the tone"): 20 ms frames in, when to stop out. Pure.

Stops at the length limit, or after ``silence_seconds`` without speech (counted from the tone, so a caller
who says nothing is not kept waiting for the whole limit); the silence at the end is trimmed off, leaving a
little tail. Speech is a frame louder than ``threshold_dbfs`` (line noise sits well below -45 dBFS; quiet
speech well above).
"""

from __future__ import annotations

from ivr.proto.vad import frame_dbfs

FRAME_SECONDS = 0.02
TAIL_FRAMES = 15
"""Frames of the silence kept after the last speech (0.3 s): the end of a word is not cut."""


class Take:
    def __init__(self, max_seconds: float, silence_seconds: float, threshold_dbfs: float = -45.0) -> None:
        self.max_frames = max(1, round(max_seconds / FRAME_SECONDS))
        self.silence_frames = round(silence_seconds / FRAME_SECONDS) if silence_seconds > 0 else 0
        self.threshold = threshold_dbfs
        self.frames: list[bytes] = []
        self.last_voiced = -1  # index of the last frame with speech
        self.quiet = 0  # frames since the last speech (or since the start)

    @property
    def heard(self) -> bool:
        """Any speech at all: a take of only silence is no message."""
        return self.last_voiced >= 0

    def feed(self, frame: bytes) -> str | None:
        """One frame; ``"max"`` or ``"silence"`` when the take is over, else None."""
        self.frames.append(frame)
        if frame_dbfs(frame) > self.threshold:
            self.last_voiced = len(self.frames) - 1
            self.quiet = 0
        else:
            self.quiet += 1
        if len(self.frames) >= self.max_frames:
            return "max"
        if self.silence_frames and self.quiet >= self.silence_frames:
            return "silence"
        return None

    def audio(self) -> bytes:
        """The message: up to the last speech and a short tail; nothing when no speech was heard."""
        if not self.heard:
            return b""
        return b"".join(self.frames[: self.last_voiced + 1 + TAIL_FRAMES])

    @property
    def seconds(self) -> float:
        return len(self.audio()) / 2 / 8000
