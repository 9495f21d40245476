"""Prompt audio as the engine uses it: built-in prompts, ready 20 ms G.711 frames, the library of a flow
version, and which (prompt, language) pairs a flow can play. Rendering (sox, espeak-ng) is the adapter
ivr.adapters.render; nothing here runs a program.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ivr.flows.callback_prompts import CALLBACK_TEXTS, NUMBER_TEXTS, PAUSE_TEXT
from ivr.flows.model import DigitsRef, Flow, Pos, PromptDef, PromptRef, PromptVariant

FRAME_BYTES = 160  # 20 ms of 8 kHz G.711
ULAW_SILENCE = b"\xff"
ALAW_SILENCE = b"\xd5"


@dataclass(frozen=True)
class Builtin:
    """A prompt every flow may use without defining it; ``*`` means "this text in any language"."""

    texts: dict[str, str]

    def text_for(self, lang: str) -> str | None:
        return self.texts.get(lang) or self.texts.get(lang.split("-")[0]) or self.texts.get("*")


DIGIT_PROMPTS = {f"digit_{d}": Builtin({"*": d}) for d in "0123456789"}
BUILTIN_PROMPTS: dict[str, Builtin] = {
    **DIGIT_PROMPTS,
    "digit_star": Builtin({"en": "star"}),
    "digit_pound": Builtin({"en": "pound"}),
    "you_entered": Builtin({"en": "You entered"}),
    "confirm_choice": Builtin({"en": "If that is correct, press 1. To enter it again, press 2."}),
    "goodbye": Builtin({"en": "Goodbye."}),
    "speech_unavailable": Builtin({"en": "Voice recognition is busy right now. Please use your keypad."}),
    **{name: Builtin(texts) for name, texts in {**CALLBACK_TEXTS, **NUMBER_TEXTS, **PAUSE_TEXT}.items()},
}
DIGIT_NAMES = {**{d: f"digit_{d}" for d in "0123456789"}, "*": "digit_star", "#": "digit_pound"}


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

    def get(self, flow: Flow, name: str, lang: str) -> Audio:
        """The prompt in the caller's language, else in the flow's first language."""
        a = self.audio.get((flow.name, name, lang))
        return a if a is not None else self.audio[(flow.name, name, flow.language)]


def needed_variants(flow: Flow) -> dict[tuple[str, str], tuple[PromptVariant, Pos]]:
    """Every (prompt, language) the flow can play, builtins included, with a position for errors."""
    out: dict[tuple[str, str], tuple[PromptVariant, Pos]] = {}
    for p in flow.prompts.values():
        for lang, v in p.variants.items():
            out[(p.name, lang)] = (v, p.pos)
    used: dict[str, Pos] = {}
    for node in flow.nodes.values():
        if getattr(node.action, "speech", False):  # told when no speech slot is free
            used.setdefault("speech_unavailable", node.pos)
        if getattr(node.action, "confirm", None) is not None:  # read-back of the entry
            for name in DIGIT_NAMES.values():
                used.setdefault(name, node.pos)
        for name in getattr(node.action, "spoken_builtins", ()):  # pieces a node assembles while running
            used.setdefault(name, node.pos)
        for item in _prompt_items(node.action):
            if isinstance(item, PromptRef) and item.name not in flow.prompts:
                used.setdefault(item.name, item.pos)
            if isinstance(item, DigitsRef):
                for name in DIGIT_NAMES.values():
                    used.setdefault(name, item.pos)
    for name, pos in used.items():
        builtin = BUILTIN_PROMPTS.get(name)
        if builtin is None:
            continue
        for lang in flow.languages:
            text = builtin.text_for(lang)
            if text is not None:
                voice = lang
                out[(name, lang)] = (PromptVariant("say", text, lang, voice), pos)
    return out


def _prompt_items(action: object) -> list[object]:
    items: list[object] = []
    for value in vars(action).values():
        if isinstance(value, tuple):
            for v in value:
                if isinstance(v, PromptRef | DigitsRef):
                    items.append(v)
        elif hasattr(value, "__dataclass_fields__"):
            items += _prompt_items(value)
    return items


def describe(flow: Flow, name: str, lang: str, library: PromptLibrary | None) -> str:
    """What a prompt says, for the simulator: its text, or the file it plays."""
    if library is not None:
        try:
            return library.get(flow, name, lang).text
        except KeyError:
            pass
    p: PromptDef | None = flow.prompts.get(name)
    if p is not None:
        v = p.variants.get(lang) or p.variants.get(flow.language)
        if v is not None:
            return v.source if v.kind == "say" else os.path.relpath(v.source)
    b = BUILTIN_PROMPTS.get(name)
    return (b.text_for(lang) or name) if b else name
