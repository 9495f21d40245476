"""A prompt library shared across flows (issue 17 item 5): a file without ``flow:`` defines prompts every
flow may play, in the languages each flow speaks; a flow's own prompt of the same name wins."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Env

LIBRARY = """
# shared prompts: no flow here
languages: [en, es]
voices: {en: en-us, es: es}
prompts:
  thanks: {say: {en: "Thank you for calling Acme.", es: "Gracias por llamar a Acme."}}
  legal: "Calls may be recorded."
"""

FLOW_A = """
flow: a
numbers: ["710"]
languages: [en, es]
voices: {en: en-us, es: es}
start: hello
nodes:
  hello:
    play: [thanks, legal]
    next: bye
  bye:
    hangup: thanks
"""

FLOW_C = """
flow: c
numbers: ["712"]
languages: [es]
start: hello
nodes:
  hello:
    hangup: thanks
"""

FLOW_B = """
flow: b
numbers: ["711"]
languages: [en]
start: hello
prompts:
  thanks: "Thanks from flow b."
nodes:
  hello:
    hangup: thanks
"""


@pytest.fixture
def shared(env: Env) -> Env:
    for name, text in (("library", LIBRARY), ("a", FLOW_A), ("b", FLOW_B), ("c", FLOW_C)):
        (env.flows / f"{name}.yaml").write_text(text, encoding="utf-8")
    return env


def said(env: Env, flow: str, *args: str) -> list[str]:
    r = env.ivr("simulate", flow, *args, "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()
    return [line.removeprefix("  ♪ ") for line in out["transcript"] if line.startswith("  ♪ ")]


def test_flows_play_the_library_and_their_own_prompt_wins(shared: Env) -> None:
    assert said(shared, "a")[:2] == ["Thank you for calling Acme.", "Calls may be recorded."]
    assert said(shared, "c") == ["Gracias por llamar a Acme."]  # in the flow's language
    assert said(shared, "b") == ["Thanks from flow b."]


def test_check_passes_and_warns_only_for_an_unused_shared_prompt(shared: Env) -> None:
    r = shared.ivr("check", "--no-render")
    assert r.code == 0 and "never played" not in r.out + r.err, r.out + r.err
    (shared.flows / "library.yaml").write_text(LIBRARY + '  unused: "Nobody plays this."\n', encoding="utf-8")
    r = shared.ivr("check", "--no-render")
    text = r.out + r.err
    assert r.code == 0 and "library.yaml:8:" in text and "shared prompt 'unused' is never played" in text, text
    assert text.count("never played") == 1  # not once per flow


def test_a_prompt_shared_twice_is_an_error(shared: Env) -> None:
    (shared.flows / "more.yaml").write_text('prompts:\n  legal: "Again."\n', encoding="utf-8")
    r = shared.ivr("check", "--no-render")
    assert r.code == 1 and "more.yaml:2:" in r.out and "shared prompt 'legal' is also defined in" in r.out, r.out
