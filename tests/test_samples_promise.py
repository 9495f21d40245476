"""The sample flows promise only what the box can do (issue 18 item 3): the installed speech model is Korean,
so only the Korean flow listens and no English or Spanish prompt says "or say …"; and what is worth telling
an admin at start is told once, not again at every reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO, Env
from tests.integration.appliance import run_appliance


def test_only_flows_in_the_models_language_listen() -> None:
    for path in sorted((REPO / "flows").glob("*.yaml")):
        doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        languages = doc.get("languages") or [doc.get("language", "en")]
        listens = "say: [" in path.read_text(encoding="utf-8") or "speech:" in path.read_text(encoding="utf-8")
        prompts = str(doc.get("prompts", ""))
        assert "or say" not in prompts and "o diga" not in prompts, path.name
        if listens:
            assert languages == ["ko"], f"{path.name} listens in {languages}: the installed model hears Korean"


def test_the_samples_check_without_a_note_with_the_model_on(env: Env) -> None:
    env.config.write_text(env.config.read_text().replace("speech: {enabled: false}", "speech: {enabled: true}"))
    r = env.ivr("check", "--no-render")
    assert r.code == 0, r.out + r.err
    assert "note:" not in r.out + r.err and "warning" not in r.out + r.err, r.out + r.err


UNUSED = """
flow: oddity
numbers: ["900"]
start: bye
prompts:
  bye: "Goodbye."
  spare: "Never played."
nodes:
  bye:
    hangup: bye
"""


@pytest.fixture
def appliance(env: Env) -> Iterator[tuple[Env, int, Path]]:
    (env.flows / "oddity.yaml").write_text(UNUSED, encoding="utf-8")
    yield from run_appliance(env)


def test_a_warning_is_logged_once_not_at_every_reload(appliance: tuple[Env, int, Path]) -> None:
    env, _, log = appliance
    for _ in range(3):
        assert env.ivr("reload").code == 0
    assert log.read_text().count("prompt 'spare' is never played") == 1, log.read_text()[-3000:]
