"""Turn-taking for spoken input: speech onset (barge-in), end of speech, no input, too long.

Sans-I/O: 16-bit PCM frames in with the time they were received (seconds, any monotonic origin), events
out; ``get_timer()``/``handle_timer(now)`` cover the waits when no audio arrives (aioquic's shape).

An energy detector rather than ``webrtcvad``: the decisions a phone menu needs are about *level* — is the
caller louder than the line noise, and louder than the echo of our own prompt — and webrtcvad's
speech/non-speech GMM answers neither (it calls the prompt's echo speech, because it is speech). Energy
also keeps this module pure Python with no C extension, and espeak-ng test audio is clean enough that
level is what separates it from silence and noise.

Echo immunity: the line's hybrid returns the prompt 20-60 ms late and attenuated (ITU-T G.168 assumes an
echo return loss of at least 6 dB). With the frames we played passed in, a frame counts as voiced only when
it is louder than the loudest played frame of the recent echo window, less the assumed return loss, plus
a margin. A caller speaking over the prompt at ordinary level still gets through; the prompt's echo does
not. The assumed loss is a setting (config ``speech.echo_return_loss_db``); each turn also measures the
loss it sees (:meth:`VoiceActivityDetector.measured_echo_loss`), so a site can tell what its lines give.

Noise floor: the quietest non-echo frame of the last ``noise_window`` before speech, so the line's steady
noise is learned from the turn's first frames (while the prompt plays). A caller already talking in the
turn's very first frame is taken for the line until a quieter frame comes.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass

__all__ = [
    "NoInput",
    "SpeechEnded",
    "SpeechStarted",
    "TooLong",
    "VadConfig",
    "VadEvent",
    "VoiceActivityDetector",
    "frame_dbfs",
]

SAMPLE_RATE = 8000
SILENCE_DBFS = -100.0


def frame_dbfs(frame: bytes) -> float:
    """RMS level of 16-bit little-endian PCM in dB relative to full scale (a full-scale square is 0)."""
    samples = array("h", frame[: len(frame) & ~1])
    if not samples:
        return SILENCE_DBFS
    mean_square = sum(s * s for s in samples) / len(samples)
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / (32768.0 * 32768.0)))


@dataclass(frozen=True)
class VadConfig:
    """Turn-taking settings. Times in seconds."""

    onset: float = 0.12
    """Voiced time (within ``onset_window``) before speech counts as started: clicks and line noise bursts
    shorter than this never cut a prompt."""
    onset_window: float = 0.2
    hangover: float = 0.3
    """Unvoiced time after speech before it counts as ended: ~0.3 s for keywords, ≥0.8 s for digit strings
    (callers pause between groups of digits)."""
    no_input: float = 5.0
    """From the start of the turn to ``NoInput`` when no speech started."""
    max_speech: float = 10.0
    """Speech longer than this ends the turn with ``TooLong``."""
    min_dbfs: float = -45.0
    """Absolute floor: quieter frames are never speech (-45 dBFS ≈ -42 dBm0, under any talker)."""
    noise_margin_db: float = 10.0
    """A voiced frame is this much above the tracked noise floor."""
    echo_return_loss_db: float = 6.0
    """Least attenuation assumed for the prompt's echo (G.168's minimum ERL)."""
    echo_margin_db: float = 3.0
    """A voiced frame is this much above the echo estimate."""
    echo_window: float = 0.1
    """How far back played frames can echo from (hybrid echo arrives 20-60 ms late; jitter adds more)."""
    noise_window: float = 0.5
    """The noise floor is the quietest non-echo frame of this long a window, frozen while speech lasts."""
    frame: float = 0.02

    @property
    def onset_span(self) -> float:
        """How far back onset looks: a longer minimum speech gets a proportionally longer window (0.12 of
        0.2 s by default), since onset must fit in its window and speech has short gaps."""
        return max(self.onset_window, self.onset / 0.6)

    @classmethod
    def for_keywords(cls, **kw: float) -> VadConfig:
        return cls(**{"hangover": 0.3, **kw})

    @classmethod
    def for_digits(cls, **kw: float) -> VadConfig:
        return cls(**{"hangover": 0.8, "max_speech": 15.0, **kw})


@dataclass(frozen=True)
class SpeechStarted:
    """Speech onset: barge-in. ``started`` is the start of the first voiced frame of the run."""

    at: float
    started: float


@dataclass(frozen=True)
class SpeechEnded:
    """End of speech: time to ask the recognizer for its final result. ``ended`` is the end of the last
    voiced frame; ``at`` is when the hangover ran out."""

    at: float
    started: float
    ended: float


@dataclass(frozen=True)
class NoInput:
    at: float


@dataclass(frozen=True)
class TooLong:
    at: float
    started: float


VadEvent = SpeechStarted | SpeechEnded | NoInput | TooLong


class VoiceActivityDetector:
    """One listening turn's detector. After ``SpeechEnded``, ``NoInput`` or ``TooLong`` it is done."""

    def __init__(self, config: VadConfig, now: float) -> None:
        self.config = config
        self._turn_started = now
        self._events: deque[VadEvent] = deque()
        self._noise: deque[float] = deque(maxlen=max(1, round(config.noise_window / config.frame)))
        window = max(1, math.ceil(config.echo_window / config.frame) + 1)
        self._played: deque[float] = deque([SILENCE_DBFS] * window, maxlen=window)
        onset_frames = max(1, round(config.onset_span / config.frame))
        self._recent: deque[tuple[bool, float]] = deque(maxlen=onset_frames)  # (voiced, frame start)
        self._speech_started: float | None = None
        self._last_voiced_end: float | None = None
        self.done = False
        self.last_dbfs = SILENCE_DBFS
        self.last_echo_dbfs = SILENCE_DBFS
        # Power sent and received while the prompt plays and nobody speaks: their ratio is the echo loss.
        self._echo_frames = 0
        self._echo_sent = 0.0
        self._echo_back = 0.0
        self._echo_spoiled = False

    @property
    def in_speech(self) -> bool:
        return self._speech_started is not None and not self.done

    # -- input -------------------------------------------------------------------------------------------

    def receive(self, frame: bytes, now: float, played: bytes | None = None) -> None:
        """One received frame ending at ``now``; ``played`` is the frame we sent in the same 20 ms slot."""
        if self.done:
            return
        cfg = self.config
        self._played.append(frame_dbfs(played) if played else SILENCE_DBFS)
        level = frame_dbfs(frame)
        loudest = max(self._played)
        if self._speech_started is None and loudest >= cfg.min_dbfs:
            self._echo_frames += 1
            self._echo_sent += 10.0 ** (self._played[-1] / 10.0)
            self._echo_back += 10.0 ** (level / 10.0)
        echo = loudest - cfg.echo_return_loss_db
        self.last_dbfs, self.last_echo_dbfs = level, echo
        if self._speech_started is None and level >= echo + cfg.echo_margin_db:
            self._noise.append(level)  # echo-dominated frames say nothing about the line's noise
        noise = min(self._noise) if self._noise else cfg.min_dbfs - cfg.noise_margin_db
        voiced = (
            level >= cfg.min_dbfs
            and level >= noise + cfg.noise_margin_db
            and level >= echo + cfg.echo_margin_db
        )
        start = now - cfg.frame
        self._recent.append((voiced, start))
        if self._speech_started is None:
            voiced_time = sum(1 for v, _ in self._recent if v) * cfg.frame
            if voiced_time >= cfg.onset - 1e-9:
                if loudest >= cfg.min_dbfs:
                    self._echo_spoiled = True  # the caller talked over the prompt: those frames were not echo
                self._speech_started = next(t for v, t in self._recent if v)
                self._last_voiced_end = now
                self._events.append(SpeechStarted(now, self._speech_started))
        elif voiced:
            self._last_voiced_end = now
        self.handle_timer(now)

    # -- time --------------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` next has something to decide, or None when the turn is over."""
        if self.done:
            return None
        cfg = self.config
        if self._speech_started is None:
            return self._turn_started + cfg.no_input
        assert self._last_voiced_end is not None
        return min(self._last_voiced_end + cfg.hangover, self._speech_started + cfg.max_speech)

    def handle_timer(self, now: float) -> None:
        if self.done:
            return
        cfg = self.config
        eps = 1e-9
        if self._speech_started is None:
            if now >= self._turn_started + cfg.no_input - eps:
                self.done = True
                self._events.append(NoInput(now))
            return
        assert self._last_voiced_end is not None
        if now >= self._last_voiced_end + cfg.hangover - eps:
            self.done = True
            self._events.append(SpeechEnded(now, self._speech_started, self._last_voiced_end))
        elif now >= self._speech_started + cfg.max_speech - eps:
            self.done = True
            self._events.append(TooLong(now, self._speech_started))

    def measured_echo_loss(self, min_frames: int = 25) -> float | None:
        """Echo return loss seen by this turn (dB): power played over power received, summed over the
        frames where the prompt was audible and the caller had not started speaking (sums, so the echo's
        delay does not matter). None with fewer than ``min_frames`` such frames, or when the caller barged
        in (their voice was in them). Line noise makes it read lower than the true loss, never higher; on
        a line with no echo it is the prompt's level above the line's noise."""
        if self._echo_spoiled or self._echo_frames < min_frames or self._echo_back <= 0.0:
            return None
        return 10.0 * math.log10(self._echo_sent / self._echo_back)

    def next_event(self) -> VadEvent | None:
        return self._events.popleft() if self._events else None
