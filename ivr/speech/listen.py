"""One listening turn's turn-taking: caller frames → our voice detector and the recogniser turn.

Shared by a live call (``ivr.adapters.sip_call``) and ``ivr simulate --input wav:`` so both decide end of
speech the same way. Sans-I/O like the detector under it: frames come in with the time they end, events
go out; the caller of this class owns the clock (the event loop's for a call, the file's for a WAV) and
awaits the recogniser's result itself.

End of speech is our detector's call (about 0.3 s after the words for keywords, 0.8 s for digit strings),
not Vosk's slower endpointer (issue: median ~1 s, p95 ~2.4 s); on it the turn is told ``end()`` and the
recogniser gives its final result.

The recogniser hears nothing until the detector hears speech: frames wait in a short pre-roll, and at onset
the last ``PRE_ROLL`` seconds before the first voiced frame go to the recogniser, then everything after.
A listening turn is mostly silence or the prompt's echo (the caller listens before answering), and
decoding it would cost the CPU that other calls' RTP needs (bench/README.md, "Speech beside load"); the
recogniser's answer cannot change, because without onset there is no end of speech to ask it for one.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Protocol

from ivr.proto.vad import NoInput, SpeechEnded, SpeechStarted, TooLong, VadConfig, VadEvent, VoiceActivityDetector

__all__ = ["PRE_ROLL", "Listening", "RecognizerTurn", "vad_config"]

PRE_ROLL = 0.3
"""Seconds before the first voiced frame that the recogniser still hears: the soft start of a word, and
the lead the accuracy figures were measured with (bench/speech.py clips start with 0.2 s of silence)."""


def vad_config(*, digits: bool, end_of_speech: float | None = None, max_length: float | None = None,
               barge_in_min: float | None = None, echo_return_loss_db: float | None = None) -> VadConfig:
    """The detector's settings for one turn: the keyword or digit defaults, with a flow node's own
    ``speech:`` values (``ivr.flows.model.SpeechSettings``) and the box's echo assumption (config
    ``speech.echo_return_loss_db``) where they are set."""
    overrides = {k: v for k, v in (("hangover", end_of_speech), ("max_speech", max_length),
                                   ("onset", barge_in_min), ("echo_return_loss_db", echo_return_loss_db))
                 if v is not None}
    return VadConfig.for_digits(**overrides) if digits else VadConfig.for_keywords(**overrides)


class RecognizerTurn(Protocol):
    """What listening needs of a recogniser turn (``ivr.adapters.speech.SpeechTurn``)."""

    def feed(self, frame: bytes) -> None: ...

    def end(self) -> None: ...


class Listening:
    """Feeds every frame to the detector, and to the recogniser from just before speech onset; ends the
    recogniser's turn at end of speech.

    ``no_input``: seconds from the turn's start with no speech before ``NoInput``; None leaves no-input to
    whoever waits on the caller (a live call's receive timeout), so speech that starts late in a long
    prompt is still heard.
    """

    def __init__(self, turn: RecognizerTurn, *, digits: bool, now: float, no_input: float | None = None,
                 config: VadConfig | None = None) -> None:
        base = config or (VadConfig.for_digits() if digits else VadConfig.for_keywords())
        self.config = dataclasses.replace(base, no_input=math.inf if no_input is None else no_input)
        self.turn = turn
        self.vad = VoiceActivityDetector(self.config, now=now)
        self.started: SpeechStarted | None = None
        self.ended: SpeechEnded | TooLong | None = None
        """Set once speech ended (or ran too long): the recogniser's final result is then due."""
        self.no_input: NoInput | None = None
        # Frames not yet given to the recogniser, with the time each ends; long enough to reach PRE_ROLL
        # before the first voiced frame when onset is declared (the detector's onset window after it).
        self._pre_roll: deque[tuple[bytes, float]] = deque(
            maxlen=math.ceil((self.config.onset_span + PRE_ROLL) / self.config.frame) + 2)

    @property
    def done(self) -> bool:
        return self.ended is not None or self.no_input is not None

    def receive(self, frame: bytes, now: float, played: bytes | None = None) -> list[VadEvent]:
        """One 20 ms frame of 16-bit 8 kHz PCM ending at ``now``; ``played`` is what we sent meanwhile
        (echo immunity). Returns the detector's events; ignored once the turn is done."""
        if self.done:
            return []
        if self.started is None:
            self._pre_roll.append((frame, now))
        else:
            self.turn.feed(frame)
        self.vad.receive(frame, now, played)
        return self._drain()

    def get_timer(self) -> float | None:
        timer = self.vad.get_timer()
        return None if timer is None or math.isinf(timer) else timer

    def handle_timer(self, now: float) -> list[VadEvent]:
        """When no frames arrive (a gap in RTP): the detector's waits still run out."""
        if self.done:
            return []
        self.vad.handle_timer(now)
        return self._drain()

    def _drain(self) -> list[VadEvent]:
        events: list[VadEvent] = []
        while (event := self.vad.next_event()) is not None:
            events.append(event)
            if isinstance(event, SpeechStarted):
                self.started = event
                for frame, ends in self._pre_roll:  # the pre-roll, then (in receive) every frame after
                    if ends > event.started - PRE_ROLL:
                        self.turn.feed(frame)
                self._pre_roll.clear()
            elif isinstance(event, SpeechEnded | TooLong):
                self.ended = event
                self.turn.end()
            elif isinstance(event, NoInput):
                self.no_input = event
        return events
