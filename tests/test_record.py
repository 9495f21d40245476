"""Record a message (issue 17 item 8): prompt, tone, the caller's words until the end key, silence, the limit
or a hang-up; kept as a WAV (fsync'd before the flow goes on), its id in a variable for the agent, listed by
`ivr recordings`, erased after the retention — by the simulator and by a real SIP call (sipp)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.adapters.recordings import RecordingFiles
from ivr.proto.take import Take
from ivr.speech import synth
from ivr.store.eventlog import read_events
from tests.conftest import Env

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                reason="espeak-ng and sox make the caller's voice")

FLOW = """
flow: voicemail
numbers: ["730"]
languages: [en]
start: message
prompts:
  leave: "Please leave a message after the tone, then press pound."
  thanks: "Thank you. Your message was saved."
  nothing: "We did not hear a message. Goodbye."
nodes:
  message:
    record: {prompt: leave, into: message, max_seconds: 20, silence_seconds: 2}
    next: thanks
    failure: nothing
  thanks:
    hangup: thanks
  nothing:
    hangup: nothing
"""


@pytest.fixture
def voicemail(env: Env) -> Env:
    (env.flows / "voicemail.yaml").write_text(FLOW, encoding="utf-8")
    return env


def words(path: Path, text: str) -> Path:
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True)
    return path


def simulate(env: Env, *inputs: str) -> dict[str, Any]:
    r = env.ivr("simulate", "voicemail", *[a for i in inputs for a in ("-i", i)], "--json")
    assert r.code == 0, r.err
    return r.json()  # type: ignore[no-any-return]


def test_a_message_is_kept_and_its_id_given_to_the_flow(voicemail: Env) -> None:
    wav = words(voicemail.root / "msg.wav", "Hello, this is Jane. Please call me back about my order.")
    r = simulate(voicemail, f"wav:{wav}")
    assert r["path"] == ["message", "thanks"]
    rec_id = r["variables"]["message"]
    listed = json.loads(voicemail.ivr("recordings", "--simulated", "--json").out)
    [mine] = [x for x in listed if x["id"] == rec_id]
    spoken = len(synth.speak("Hello, this is Jane. Please call me back about my order.", "en-us", 175,
                             ulaw=False)) / 16000
    # the words, a short tail, not the 2 s of silence that ended it
    assert spoken - 0.5 < mine["seconds"] < spoken + 1.0, (mine, spoken)
    with wave.open(mine["file"], "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert oct(os.stat(mine["file"]).st_mode & 0o777) == "0o640"
    ev = voicemail.ivr("events", "--simulated", "--json", "--call", r["call_id"], "--type", "recording.saved")
    [saved] = [json.loads(line)["data"] for line in ev.out.splitlines()]
    assert saved["recording_id"] == rec_id and saved["ended"] == "silence"
    assert voicemail.ivr("recordings", "path", rec_id, "--simulated").out.strip() == mine["file"]


def test_silence_or_an_early_pound_is_no_message(voicemail: Env) -> None:
    assert simulate(voicemail, "silence")["path"] == ["message", "nothing"]
    assert simulate(voicemail, "#")["path"] == ["message", "nothing"]
    assert json.loads(voicemail.ivr("recordings", "--simulated", "--json").out) == []


def test_the_take_ends_on_silence_or_the_limit_and_trims_the_silence() -> None:
    voice = synth.noise(1.0, 3000, seed=3)  # 1 s of loud "speech"
    quiet = synth.silence(0.02)
    take = Take(max_seconds=10, silence_seconds=1)
    frames = synth.frames(voice) + [quiet] * 100
    ended = next(why for f in frames if (why := take.feed(f)) is not None)
    assert ended == "silence" and 1.2 <= take.seconds <= 1.4  # 1 s and the 0.3 s tail
    short = Take(max_seconds=0.5, silence_seconds=5)
    assert next(why for f in synth.frames(voice) if (why := short.feed(f))) == "max"
    nothing = Take(max_seconds=10, silence_seconds=1)
    assert next(why for f in [quiet] * 100 if (why := nothing.feed(f))) == "silence" and nothing.audio() == b""


def test_retention_erases_old_messages(tmp_path: Path) -> None:
    files = RecordingFiles(tmp_path / "recordings", retention_days=30)
    old = asyncio.run(files.save("c1", "message", bytes(16000)))
    new = asyncio.run(files.save("c2", "message", bytes(16000)))
    old_path = files.find(old.id)
    assert old_path is not None
    month_ago = time.time() - 31 * 86400
    os.utime(old_path, (month_ago, month_ago))
    assert files.prune() == 1
    assert files.find(old.id) is None and files.find(new.id) is not None


# -- a real call -----------------------------------------------------------------------------------------


TOKEN = "s3cret-agent-desktop-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def appliance(voicemail: Env) -> Iterator[tuple[Env, int, Path]]:
    """The daemon serving recordings over HTTP to the agent's side, with a bearer token."""
    from tests.integration.appliance import run_appliance

    (voicemail.root / "recordings.token").write_text(TOKEN + "\n", encoding="utf-8")
    port = free_port()
    with voicemail.config.open("a", encoding="utf-8") as f:
        f.write(f"recordings: {{listen: '127.0.0.1:{port}', token_file: recordings.token}}\n")
    yield from run_appliance(voicemail)


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed")
def test_a_caller_leaves_a_message_over_sip_and_ends_it_with_pound(appliance: tuple[Env, int, Path]) -> None:
    from tests.integration import scenarios
    from tests.integration.test_calls import last_call, sipp

    env, port, _ = appliance
    wav = words(env.root / "msg.wav", "Hi, it is Sam. My parcel did not arrive. Please call me.")
    audio = env.root / "msg.ul"
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(audio),
                    "pad", "0", "0.5"], check=True)
    seconds = len(audio.read_bytes()) / 8000
    # the prompt and the tone (~4.5 s), the words, then # (RFC 4733)
    steps = [("pause", "5000"), ("stream", str(audio)), ("pause", str(round(seconds * 1000) + 300)),
             ("pcap", "#")]
    sipp(scenarios.call("leave a message", steps), port, env.root, service="730")
    call = last_call(env)
    assert call["path"] == ["message", "thanks"], call
    events = asyncio.run(read_events(env.state / "ivr.db", call["call_id"]))
    saved = next(e.data for e in events if e.type == "recording.saved")
    assert saved["ended"] == "key"
    path = env.state / "recordings" / saved["file"]
    with wave.open(str(path), "rb") as w:
        got = w.getnframes() / 8000
    assert seconds - 1.5 < got < seconds + 1.5, (got, seconds)  # the caller's words, not the prompt's time
    # the agent's desktop fetches it by the link the flow got (message_url), with the token only
    url = call["variables"]["message_url"]
    assert url == saved["url"] and url.endswith(f"/recordings/{saved['recording_id']}.wav")
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"}),
                                timeout=10) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
        assert resp.read() == path.read_bytes()
    for headers, status in (({}, 401), ({"Authorization": "Bearer wrong-token-wrong-token"}, 401)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert err.value.code == status
    missing = url.replace(saved["recording_id"], "00000000-0000-7000-8000-000000000000")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(missing, headers={"Authorization": f"Bearer {TOKEN}"}),
                               timeout=10)
    assert err.value.code == 404
    # a data-subject request for the caller takes the message (their voice) with the rest of their data
    r = env.ivr("privacy", "erase", "--caller", call["caller"])
    assert r.code == 0 and "1 call record(s)" in r.out and "1 recorded message(s)" in r.out, r.out + r.err
    assert not path.exists()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"}),
                               timeout=10)
    assert err.value.code == 404


def test_recordings_over_http_need_a_token_file(tmp_path: Path) -> None:
    from ivr.config import load_config
    from ivr.errors import ConfigError

    cfg = tmp_path / "ivr.yaml"
    cfg.write_text("recordings: {listen: '127.0.0.1:9466'}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "recordings: listen needs token_file" in str(err.value)
    cfg.write_text("recordings: {listen: '127.0.0.1:9466', token_file: t, url: 'https://box.example/rec'}\n",
                   encoding="utf-8")
    rh = load_config(cfg).recordings_http
    assert rh is not None and rh.base_url == "https://box.example/rec/" and rh.token_file == tmp_path / "t"
