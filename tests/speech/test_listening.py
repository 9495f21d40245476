"""A listening turn gives the recogniser only what is worth decoding: from just before speech onset on."""

from __future__ import annotations

from ivr.speech.listen import PRE_ROLL, Listening
from tests.speech.test_vad import F, tone


class HeardTurn:
    """Records what the recogniser would have decoded (our own RecognizerTurn interface)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended = False

    def feed(self, frame: bytes) -> None:
        assert not self.ended, "no audio after end()"
        self.frames.append(frame)

    def end(self) -> None:
        self.ended = True


def numbered(level: int, k: int) -> bytes:
    """A frame at ``level`` whose last sample says which frame it is (to check order and range)."""
    return tone(level)[:-2] + k.to_bytes(2, "little", signed=True)


def test_silence_before_speech_is_not_decoded_but_the_pre_roll_and_the_words_are() -> None:
    silent, voiced = 2.0, 0.6  # the caller listens for 2 s, then speaks for 0.6 s
    frames = [numbered(3, k) for k in range(int(silent / F))]
    frames += [numbered(6000, len(frames) + k) for k in range(int(voiced / F))]
    frames += [numbered(3, len(frames) + k) for k in range(int(1.0 / F))]
    turn = HeardTurn()
    listening = Listening(turn, digits=False, now=0.0)
    for i, frame in enumerate(frames):
        listening.receive(frame, (i + 1) * F)
        if listening.done:
            break
    assert listening.started is not None and turn.ended
    heard = [int.from_bytes(f[-2:], "little", signed=True) for f in turn.frames]
    first_word_frame = int(silent / F)
    assert heard == list(range(heard[0], heard[-1] + 1))  # in order, nothing skipped
    assert heard[0] == first_word_frame - round(PRE_ROLL / F)  # 0.3 s before the words, not the 2 s of silence
    assert heard[-1] >= first_word_frame + int(voiced / F)  # the words and the hangover after them


def test_a_turn_without_speech_decodes_nothing() -> None:
    turn = HeardTurn()
    listening = Listening(turn, digits=False, now=0.0, no_input=1.0)
    for i in range(100):
        listening.receive(tone(3), (i + 1) * F)
        if listening.done:
            break
    assert listening.no_input is not None and turn.frames == [] and not turn.ended
