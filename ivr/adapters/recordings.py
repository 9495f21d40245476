"""Recorded messages on disk: ``STATE_DIR/recordings/DAY/ID.wav`` (8 kHz 16-bit mono WAV, 0640), written
atomically and fsync'd before the flow is told it is saved (a power cut keeps it or never promised it), and
erased after ``recordings.retention_days``. The one adapter between the engine's ``record`` node and the
disk; ``ivr recordings`` lists, finds and prunes them.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uuid6
from aiohttp import web

from ivr.engine.context import SavedRecording

RATE = 8000


@dataclass(frozen=True)
class StoredRecording:
    id: str
    path: Path
    seconds: float
    saved_at: datetime


class RecordingFiles:
    def __init__(self, root: Path, retention_days: float = 30.0, url: str = "") -> None:
        self.root = root
        self.retention_days = retention_days
        self.url = url
        """Base of a message's link when served over HTTP (``recordings.url``), else "" (no link)."""

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
        return SavedRecording(rec_id, str(path.relative_to(self.root)), len(pcm) / 2 / RATE,
                              f"{self.url}{rec_id}.wav" if self.url else "")

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

    def erase(self, rec_ids: list[str]) -> int:
        """Delete these messages (a privacy erasure: the caller's voice); returns how many files were there."""
        erased = 0
        for rec_id in rec_ids:
            path = self.find(rec_id)
            if path is not None:
                path.unlink(missing_ok=True)
                erased += 1
        return erased

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


class RecordingsHttpError(Exception):
    """The endpoint could not start (address taken, token unreadable): one line for the log."""


class RecordingServer:
    """``GET /recordings/ID.wav`` for the agent's desktop or the center, with ``Authorization: Bearer TOKEN``
    (compared in constant time); nothing else is served. aiohttp, as the collector's side of the sync uses."""

    def __init__(self, files: RecordingFiles, token: str) -> None:
        self.files = files
        self.token = token
        self._runner: web.AppRunner | None = None
        self.address = ""

    @classmethod
    def from_config(cls, files: RecordingFiles, token_file: Path) -> RecordingServer:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RecordingsHttpError(f"recordings: cannot read token_file {token_file}: "
                                      f"{exc.strerror or exc}") from None
        if len(token) < 16:
            raise RecordingsHttpError(f"recordings: the token in {token_file} is shorter than 16 characters")
        return cls(files, token)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="recordings"'})
        rec_id = request.match_info["id"]
        path = self.files.find(rec_id) if re.fullmatch(r"[0-9a-f-]{36}", rec_id) else None
        if path is None:
            return web.Response(status=404, text="no such recording\n")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/recordings/{id}.wav", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise RecordingsHttpError(f"recordings: cannot listen on {host}:{port}: "
                                      f"{os.strerror(exc.errno) if exc.errno else exc}") from None
        server = site._server  # noqa: SLF001 - aiohttp keeps the bound socket there (port 0 → the real one)
        sock = server.sockets[0].getsockname() if server is not None and server.sockets else (host, port)  # type: ignore[attr-defined]
        self.address = f"{sock[0]}:{sock[1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
