"""Rendered prompt audio as calls play it: one prompt's G.711 frames, and a flow set's library of them.

Apart from the flow model on purpose: the model (FlowSet.library) names this library and the library needs
only a flow's name and first language, so neither imports the other's module back (the import contracts in
pyproject.toml: no circles inside a package).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Protocol

from ivr.proto import g711

FRAME_BYTES = 160  # 20 ms of 8 kHz G.711


class NamedFlow(Protocol):
    """What the library needs of a flow (ivr.flows.model.Flow): its name and its first language."""

    @property
    def name(self) -> str: ...

    @property
    def language(self) -> str: ...


@dataclass(frozen=True)
class Audio:
    """One rendered prompt in both G.711 laws, padded to whole 20 ms frames."""

    name: str
    lang: str
    text: str  # what it says (or the file it came from), for the simulator and logs
    ulaw: bytes
    alaw: bytes
    _frames: dict[str, tuple[bytes, ...]] = field(default_factory=dict, init=False, repr=False, compare=False,
                                                  hash=False)

    @property
    def duration(self) -> float:
        return len(self.ulaw) / 8000

    def frames(self, law: str = "ulaw") -> tuple[bytes, ...]:
        """The 20 ms frames, cut once per law and shared by every call that plays this prompt (a per-play
        copy was most of a call's memory: bench/README.md, load)."""
        cached = self._frames.get(law)
        if cached is None:
            data = self.ulaw if law == "ulaw" else self.alaw
            cached = self._frames[law] = tuple(data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES))
        return cached


@dataclass
class PromptLibrary:
    """Rendered audio of a flow set: (flow, prompt, language) → Audio."""

    audio: dict[tuple[str, str, str], Audio] = field(default_factory=dict)

    def get(self, flow: NamedFlow, name: str, lang: str) -> Audio:
        """The prompt in the caller's language, else in the flow's first language."""
        a = self.audio.get((flow.name, name, lang))
        return a if a is not None else self.audio[(flow.name, name, flow.language)]


def tone(name: str, hz: float = 1000.0, seconds: float = 0.4, dbfs: float = -12.0) -> Audio:
    """A sine tone (the "after the tone" beep), made here rather than rendered: no file, no program."""
    n = round(seconds * 8000)
    amp = 32767 * 10 ** (dbfs / 20)
    ramp = 80  # 10 ms in and out: no click
    pcm = array("h", (round(amp * min(1.0, i / ramp, (n - i) / ramp) * math.sin(2 * math.pi * hz * i / 8000))
                      for i in range(n))).tobytes()
    return Audio(name, "*", "(tone)", g711.ulaw_encode(pcm), g711.alaw_encode(pcm))
