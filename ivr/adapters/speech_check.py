"""``ivr check --speech``: how well each menu's keywords are heard, tried before callers try them.

Every keyword of every listening menu (in the speech model's language) is spoken by espeak-ng in several
voices and speeds, through the telephone's 8 kHz µ-law, and decoded against *that menu's* grammar by the
real recogniser with the same rejection rule and node settings a call uses. A keyword recognised in fewer
than half the tries is flagged at its file:line:column as rarely recognised, one missed in more than one try
in five as often missed, and a keyword heard as another option's keyword (a pair the recogniser confuses),
each with a suggestion. Synthetic voices are not callers: a keyword
that passes here can still fail on the phone, but one that fails here fails on the phone too.

The project's frozen evaluation (bench/README.md, "Keywords") found four of twelve common Korean keywords
almost never recognised (결제 0 of 9, 주문 1, 취소 2, 요금 3); this check finds such words in a flow.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.adapters.speech import SpeechService
from ivr.config import Config
from ivr.errors import Problem
from ivr.flows import vocabulary
from ivr.flows.loader import normalize_words
from ivr.flows.model import FlowSet, Menu, Pos
from ivr.speech import synth
from ivr.yamlpos import load_yaml, position

log = logging.getLogger("ivr.speech.check")

VOICES = ("ko", "ko+f2", "ko+m3", "ko+f4", "ko+klatt")
SPEEDS = (130, 175, 210)
RARE = 0.5
"""Recognised in fewer than this share of the tries: flagged as rarely recognised."""
UNRELIABLE = 0.8
"""Recognised in fewer than this share: flagged as often missed. The speech issue's bar for a reliable
keyword is 90 % (bench/README.md, "The reliable set"); synthetic tries are kinder than callers, so a keyword
that misses one try in five here is not one to build a menu on."""
CONFUSED = 0.2
"""Heard as another option's keyword in at least this share of the tries: flagged as confused."""


@dataclass
class Rating:
    flow: str
    node: str
    option: str  # the option's key (or "speech")
    phrase: str
    pos: Pos
    tries: int = 0
    right: int = 0
    rejected: int = 0
    heard_as: Counter[str] = field(default_factory=Counter)  # another option's keyword → times

    @property
    def share(self) -> float:
        return self.right / self.tries if self.tries else 0.0


def _keyword_positions(flow_file: str, node: str) -> dict[tuple[str, int], Pos]:
    """(option key, index in say:) → where the keyword is written (the model keeps only the option's)."""
    doc, problems = load_yaml(Path(flow_file), flow_file, as_typed=True)
    out: dict[tuple[str, int], Pos] = {}
    if problems or doc is None:
        return out
    options = doc["nodes"][node]["menu"]["options"]
    for key in options:
        opt = options[key]
        if isinstance(opt, dict):
            for i, _ in enumerate(opt.get("say") or ()):
                line, col = position(doc, ("nodes", node, "menu", "options", key, "say", i))
                out[(str(key), i)] = Pos(flow_file, line, col)
    return out


async def _decode(service: SpeechService, pcm: bytes, phrases: list[str], menu: Menu,
                  verify_default: bool) -> Any:
    s = menu.speech_settings
    for _ in range(600):  # a slot frees as soon as another try ends; bounded wait (60 s)
        turn = service.open_turn(phrases, digits=False, verify=verify_default if s.verify is None else s.verify,
                                 min_margin=s.min_margin, max_free_gap=s.max_free_gap)
        if turn is not None:
            break
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError("no free speech slot for the check")
    return await decode_clip(service, turn, pcm)


async def decode_clip(service: SpeechService, turn: Any, pcm: bytes) -> Any:
    """A whole clip through an open turn, faster than real time but never past its queue (no frames dropped),
    then the turn's result (bounded). Shared with bench/speech.py."""
    async with turn:
        for frame in synth.frames(pcm):
            for _ in range(10_000):
                if turn.backlog < service.queue_frames // 2:
                    break
                await asyncio.sleep(0.005)
            turn.feed(frame)
        turn.end()
        return await asyncio.wait_for(turn.result(), 120)


async def rate_keywords(flowset: FlowSet, config: Config, *, voices: Sequence[str] = VOICES,
                        speeds: Sequence[int] = SPEEDS, service: SpeechService | None = None) -> list[Rating]:
    """Every keyword of every listening menu in the model's language, tried ``len(voices) × len(speeds)``
    times through the real recogniser with its menu's grammar."""
    own = service is None
    if service is None:
        service = SpeechService.from_config(config.speech, config.prompt_cache.parent)
        await service.start()
    try:
        vocab_lang = config.speech.language
        ratings: list[Rating] = []
        jobs = []
        for flow in flowset.flows.values():
            if vocab_lang and flow.language.lower().split("-")[0] != vocab_lang:
                continue
            for name, node in flow.nodes.items():
                menu = node.action
                if not isinstance(menu, Menu) or not menu.speech:
                    continue
                positions = _keyword_positions(flow.file, name)
                phrases = [w for o in menu.options for w in o.keywords]
                owner = {normalize_words(w): (o.key or "speech") for o in menu.options for w in o.keywords}
                for o in menu.options:
                    for i, phrase in enumerate(o.keywords):
                        r = Rating(flow.name, name, o.key or "speech", phrase,
                                   positions.get((o.key or "speech", i), o.pos))
                        ratings.append(r)
                        for voice in voices:
                            for speed in speeds:
                                jobs.append((r, phrase, voice, speed, phrases, menu, owner))
        sem = asyncio.Semaphore(max(1, service.max_streams))

        async def one(r: Rating, phrase: str, voice: str, speed: int, phrases: list[str], menu: Menu,
                      owner: dict[str, str]) -> None:
            async with sem:
                spoken = await asyncio.to_thread(synth.speak, phrase, voice, speed)
                pcm = synth.silence(0.3) + spoken + synth.silence(0.4)
                result = await _decode(service, pcm, phrases, menu, config.speech.verify)
            r.tries += 1
            if not result.accepted:
                r.rejected += 1
                return
            heard = normalize_words(result.value)
            option = owner.get(heard)
            if option == r.option:
                r.right += 1
            elif option is not None:
                r.heard_as[result.value] += 1

        await asyncio.gather(*(one(*job) for job in jobs))
        return ratings
    finally:
        if own:
            await service.aclose()


def problems(ratings: Sequence[Rating]) -> list[Problem]:
    """Warnings at each weak keyword: rarely recognised, or heard as another option's keyword."""
    out: list[Problem] = []
    for r in ratings:
        if not r.tries:
            continue
        confused = [(w, n) for w, n in r.heard_as.most_common() if n / r.tries >= CONFUSED]
        if r.share < RARE:
            also = f"; heard as '{confused[0][0]}' {confused[0][1]} times" if confused else \
                f"; rejected {r.rejected} times" if r.rejected else ""
            out.append(Problem(r.pos.file, r.pos.line, r.pos.column,
                               f"keyword '{r.phrase}' (menu '{r.node}', option {r.option}) was recognised in "
                               f"{r.right} of {r.tries} synthetic tries{also}: callers will rarely be understood "
                               "— use a longer phrase (two or three words) or a synonym, and keep the key",
                               warning=True))
        elif r.share < UNRELIABLE:
            out.append(Problem(r.pos.file, r.pos.line, r.pos.column,
                               f"keyword '{r.phrase}' (menu '{r.node}', option {r.option}) was missed in "
                               f"{r.tries - r.right} of {r.tries} synthetic tries: often not understood — a longer "
                               "phrase or a synonym would be heard more surely", warning=True))
        elif confused:
            w, n = confused[0]
            out.append(Problem(r.pos.file, r.pos.line, r.pos.column,
                               f"keyword '{r.phrase}' (menu '{r.node}', option {r.option}) was heard as '{w}' in "
                               f"{n} of {r.tries} synthetic tries: the two sound alike to the recogniser — make "
                               "one of them longer or different", warning=True))
    return sorted(out)


def summary(ratings: Sequence[Rating], voices: Sequence[str], speeds: Sequence[int]) -> list[str]:
    """One line per keyword (for the admin's eye), then the totals."""
    lines = [f"speech: {len(ratings)} keywords, {len(voices) * len(speeds)} tries each (espeak-ng voices "
             f"{', '.join(voices)}; {', '.join(map(str, speeds))} words/min; 8 kHz µ-law)"]
    for r in ratings:
        misses = ([f"no match {r.rejected}"] if r.rejected else []) + \
            [f"as '{w}' {n}" for w, n in r.heard_as.most_common(2)]
        lines.append(f"  {r.flow}.{r.node} {r.option:<6} {r.right:>3}/{r.tries:<3} {r.phrase}"
                     + (f"  ({', '.join(misses)})" if misses else ""))
    return lines


def listening(flowset: FlowSet) -> bool:
    return vocabulary.flows_listen(flowset)
