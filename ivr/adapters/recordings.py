"""Recorded messages on disk: ``STATE_DIR/recordings/DAY/ID.wav`` (8 kHz 16-bit mono WAV, 0640), written
atomically and fsync'd before the flow is told it is saved (a power cut keeps it or never promised it), and
erased after ``recordings.retention_days``. The one adapter between the engine's ``record`` node and the
disk; ``ivr recordings`` lists, finds and prunes them.
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uuid6

from ivr.engine.context import SavedRecording

RATE = 8000


@dataclass(frozen=True)
class StoredRecording:
    id: str
    path: Path
    seconds: float
    saved_at: datetime


class RecordingFiles:
    def __init__(self, root: Path, retention_days: float = 30.0) -> None:
        self.root = root
        self.retention_days = retention_days

    async def save(self, call_id: str, node: str, pcm: bytes) -> SavedRecording:
        return await asyncio.to_thread(self._write, pcm)

    def _write(self, pcm: bytes) -> SavedRecording:
        rec_id = str(uuid6.uuid7())
        day = self.root / datetime.now(UTC).strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True, mode=0o750)
        path = day / f"{rec_id}.wav"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "wb") as f:
            with wave.open(f, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(day, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return SavedRecording(rec_id, str(path.relative_to(self.root)), len(pcm) / 2 / RATE)

    def all(self) -> Iterator[StoredRecording]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*/*.wav")):
            try:
                with wave.open(str(path), "rb") as w:
                    seconds = w.getnframes() / w.getframerate()
                mtime = path.stat().st_mtime
            except (OSError, wave.Error, EOFError):
                continue
            yield StoredRecording(path.stem, path, seconds, datetime.fromtimestamp(mtime, UTC))

    def find(self, rec_id: str) -> Path | None:
        hits = list(self.root.glob(f"*/{rec_id}.wav")) if rec_id and "/" not in rec_id else []
        return hits[0] if hits else None

    def prune(self, now: float | None = None) -> int:
        """Erase recordings older than the retention; returns how many."""
        cutoff = (time.time() if now is None else now) - self.retention_days * 86400
        erased = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.glob("*/*.wav"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    erased += 1
            except FileNotFoundError:
                continue
        for day in self.root.iterdir():
            if day.is_dir() and not any(day.iterdir()):
                day.rmdir()
        return erased
