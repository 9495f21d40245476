"""``ivr pbx-prompts DIR``: the recordings docs/asterisk's dialplan plays, as real audio Asterisk can play.

Issue #12: the sample dialplan played custom/callback-press-1, which nothing shipped, so Read() heard no
"press 1" and every callback was declined.
"""

from __future__ import annotations

import array
import math
import wave
from pathlib import Path

from ivr.adapters.pbx_prompts import PBX_PROMPTS
from tests.conftest import Env
from tests.pbxdocs.dialplan import parse

DIALPLAN = Path(__file__).resolve().parents[2] / "docs" / "asterisk" / "extensions-ivr.conf"


def test_pbx_prompts_writes_the_dialplans_prompts_as_8khz_wav(env: Env, tmp_path: Path) -> None:
    sounds = tmp_path / "sounds" / "en"
    r = env.ivr("pbx-prompts", str(sounds))
    assert r.code == 0, r.err
    played = parse(DIALPLAN.read_text(encoding="utf-8")).prompts()
    assert "custom/callback-press-1" in played
    for name in played | set(PBX_PROMPTS):
        path = sounds / f"{name}.wav"  # where Asterisk looks for Read(...,custom/callback-press-1,...)
        assert f"wrote {path}" in r.out
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
            samples = array.array("h", w.readframes(w.getnframes()))
        assert len(samples) / 8000 > 1.5  # a spoken sentence, not a stub
        rms_db = 20 * math.log10(math.sqrt(sum(x * x for x in samples) / len(samples)) / 32768)
        assert -26 < rms_db < -14  # at the appliance's prompt loudness (target_rms_db -20)


def test_pbx_prompts_says_why_it_cannot_write(env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = env.ivr("pbx-prompts", str(blocker))
    assert r.code == 1 and "cannot render the PBX prompts" in r.err
