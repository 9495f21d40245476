"""Prompt audio as the engine uses it: built-in prompts, ready 20 ms G.711 frames, the library of a flow
version, and which (prompt, language) pairs a flow can play. Rendering (sox, espeak-ng) is the adapter
ivr.adapters.render; nothing here runs a program.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ivr.flows.audio import PromptLibrary
from ivr.flows.callback_prompts import CALLBACK_TEXTS, NUMBER_TEXTS, PAUSE_TEXT
from ivr.flows.model import DigitsRef, Flow, Pos, PromptDef, PromptRef, PromptVariant, ValueRef
from ivr.flows.spoken import FRAGMENTS, fragments_for

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
    **{name: Builtin(texts) for name, texts in FRAGMENTS.items()},  # spoken values (ivr/flows/spoken.py)
}
DIGIT_NAMES = {**{d: f"digit_{d}" for d in "0123456789"}, "*": "digit_star", "#": "digit_pound"}


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
            if isinstance(item, ValueRef):  # the value is known only in the call: every fragment of its languages
                for lang in flow.languages:
                    for name in fragments_for(lang, item.kind):
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
                if isinstance(v, PromptRef | DigitsRef | ValueRef):
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
