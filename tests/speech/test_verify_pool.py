"""The free-form second opinion (``verify``) reuses pooled recognizers: a reset one, after other turns'
audio, gives exactly the decision a freshly built one gives, and the pool stays within its bound."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from ivr.speech import synth
from tests.speech.test_recognizer import recognize, spoken

KEYWORDS: list[str] = json.loads((Path(__file__).parent / "data" / "eval_set.json").read_text())["keywords"]


async def test_pooled_free_form_recognizer_decides_like_a_fresh_one(speech: Any) -> None:
    oog, keyword, other = spoken("안녕하세요", "ko+f2"), spoken("아니요"), spoken("감사합니다", "ko", 140)
    bound = speech.free_pool
    try:
        speech.clear_free_pool()
        speech.free_pool = 0  # nothing kept: every verify turn builds its own
        created = speech.free_created
        fresh = [await recognize(speech.open_turn(KEYWORDS, digits=False, verify=True), pcm) for pcm in (oog, keyword)]
        assert speech.free_created == created + 2 and speech.free_idle == 0
        speech.free_pool = 1
        await recognize(speech.open_turn(KEYWORDS, digits=False, verify=True), other)  # leaves one warm
        assert speech.free_idle == 1
        reused = speech.free_reused
        pooled = [await recognize(speech.open_turn(KEYWORDS, digits=False, verify=True), pcm) for pcm in (oog, keyword)]
        assert speech.free_reused == reused + 2 and speech.free_created == created + 3
    finally:
        speech.free_pool = bound
    for f, p in zip(fresh, pooled, strict=True):
        assert f.free_text is not None and f.free_text == p.free_text
        assert (f.decision, f.alternatives, f.text) == (p.decision, p.alternatives, p.text)
    assert fresh[0].decision.free_gap is not None  # the free-form pass ran and was compared
    assert not fresh[0].accepted  # out-of-grammar speech: no match either way


async def test_pool_is_bounded_and_turns_closed_early_give_theirs_back(speech: Any) -> None:
    bound = speech.free_pool
    try:
        speech.clear_free_pool()
        speech.free_pool = 2
        turns = [speech.open_turn(KEYWORDS, digits=False, verify=True) for _ in range(3)]
        for turn in turns:
            for frame in synth.frames(spoken("네")):
                turn.feed(frame)
        for _ in range(400):  # each turn's first job builds its recognizers; wait until all have decoded
            if all(t.backlog == 0 and not t.decoding for t in turns):
                break
            await asyncio.sleep(0.05)
        for turn in turns:
            turn.close()  # the caller pressed a key: no result, but the recognizer is not lost
        assert speech.free_idle == 2  # three in use, two kept
        again = speech.open_turn(KEYWORDS, digits=False, verify=True)
        reused = speech.free_reused
        result = await recognize(again, spoken("아니요"))
        assert speech.free_reused == reused + 1 and result.free_text is not None
    finally:
        speech.free_pool = bound
