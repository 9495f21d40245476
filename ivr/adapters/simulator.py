"""The simulated call: a caller in the terminal or a script of inputs, no phone.

Script tokens (``ivr simulate --input``): ``1`` or ``5551234#`` (keys typed in one burst), ``say:billing``
(an utterance, confidence 1.0; ``say:billing@0.4`` sets the confidence), ``wav:path.wav`` (spoken audio,
through the real recogniser), ``silence`` (the caller says nothing until the wait times out) and
``hangup``. A burst ends where the token ends: waiting for more keys of an entry then times out, as a real
caller's pause would. When the script runs out the caller hangs up.

``wav:`` input runs the live call's path (:class:`ivr.speech.listen.Listening`: our voice detector and a
Vosk turn with the listening prompt's grammar), on the file's own clock: the audio starts when the caller
is asked (after a short quiet lead-in), silence is added after it until the detector decides (end of
speech, or no input once the prompt's timeout has passed in the audio), and decoding runs as fast as the box
allows.
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.callbacks.desk import Desk
from ivr.callbacks.ewt import EwtEstimate
from ivr.callbacks.policy import CallbackPolicy
from ivr.config import TransferConfig
from ivr.engine.call import (
    CallerInput,
    Grammar,
    Recording,
    RecordingEnd,
    TransferProgress,
    TransferResult,
    TransferTarget,
)
from ivr.errors import CallerHungUp
from ivr.flows.audio import Audio
from ivr.proto.take import Take
from ivr.proto.vad import TooLong
from ivr.speech.listen import Listening, vad_config
from ivr.store.callbacks import CallbackStore
from ivr.store.eventlog import EventLog

if TYPE_CHECKING:
    from ivr.adapters.speech import SpeechService

VALID_KEYS = set("0123456789*#ABCD")
RATE = 8000
FRAME = 0.02
FRAME_BYTES = 320
"""20 ms of 16-bit 8 kHz mono PCM: what a call delivers to the recogniser."""
LEAD = 0.3
"""Quiet line before the recording starts, as between the prompt and a caller's answer: the detector
learns the line's noise floor from it (a recording that starts mid-word would otherwise be taken for it)."""
RESULT_TIMEOUT = 30.0
"""Bound on the recogniser's final result once the audio is in (file-fed, so only a stuck decoder hits it)."""
PRETEND = "pretend"
"""``SimulatedCall(transfer=PRETEND)``: every transfer succeeds, whatever the config (``ivr simulate`` on the
bench, where no PBX is in reach)."""
NOT_CONFIGURED = "transfer not configured (no transfer: section)"
"""What a real call's transfer answers without a ``transfer:`` section (ivr.adapters.transfer.Transferer)."""


@dataclass(frozen=True)
class SpokenAudio:
    """A ``wav:`` token: a recording of the caller, recognised by the real model."""

    path: str


class AudioInputError(Exception):
    """The recording could not be read (sox said why)."""


def read_audio(path: str, *, timeout: float = 30.0) -> bytes:
    """Any file sox reads → 16-bit 8 kHz mono PCM, as a call's G.711 decoder delivers it."""
    if not Path(path).is_file():
        raise AudioInputError(f"no such file: {path}")
    try:
        done = subprocess.run(
            ["sox", path, "-r", str(RATE), "-b", "16", "-c", "1", "-e", "signed-integer", "-t", "raw", "-"],
            capture_output=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioInputError(f"cannot convert {path} with sox: {exc}") from exc
    if done.returncode != 0:
        raise AudioInputError(f"sox cannot read {path}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


async def _terminal_input() -> str | None:
    try:
        return await asyncio.to_thread(input, "  > ")
    except EOFError:
        return None


def parse_token(token: str) -> list[CallerInput] | str | SpokenAudio:
    """A script token → inputs, spoken audio, or ``"silence"``/``"hangup"``; ValueError on nonsense."""
    t = token.strip()
    if t in ("silence", "hangup"):
        return t
    if t.startswith("wav:"):
        if not t[4:].strip():
            raise ValueError(f"no file in {token!r}")
        return SpokenAudio(t[4:].strip())
    if t.startswith("say:"):
        text, _, conf = t[4:].rpartition("@") if "@" in t[4:] else (t[4:], "", "")
        try:
            confidence = float(conf) if conf else 1.0
        except ValueError:
            text, confidence = t[4:], 1.0
        if not text.strip():
            raise ValueError(f"nothing to say in {token!r}")
        return [CallerInput("speech", text.strip(), confidence, "simulator")]
    if t and set(t) <= VALID_KEYS:
        return [CallerInput("dtmf", c, None, "simulator") for c in t]
    raise ValueError(f"bad input {token!r}: use keys (0-9 * #), say:WORDS, wav:FILE, silence or hangup")


class SimulatedCall:
    """Implements the engine's Call with a script (or stdin when ``interactive``)."""

    channel = "simulator"

    def __init__(
        self,
        call_id: str,
        caller: str,
        dialed: str,
        script: Sequence[str] = (),
        *,
        interactive: bool = False,
        emit: Callable[[str], None] = print,
        ask: Callable[[], Awaitable[str | None]] | None = None,
        speech: Callable[[], Awaitable[SpeechService]] | None = None,
        speech_verify: bool = False,
        headers: Mapping[str, str] | None = None,
        transfer: TransferConfig | None | str = PRETEND,
    ) -> None:
        self.call_id, self.caller, self.dialed = call_id, caller, dialed
        self.headers: dict[str, str] = dict(headers or {})
        """X- headers the call pretends its INVITE carried (``ivr simulate --header X-IVR-Queue=support``)."""
        self.script: deque[str] = deque(script)
        self.interactive = interactive
        self.emit = emit
        self.ask = ask or _terminal_input
        self.buffer: deque[CallerInput] = deque()
        self.grammar: Grammar | None = None
        self.transfers: list[TransferTarget] = []
        self.hung_up = False
        self.caller_gone = False
        self.start_speech = speech
        """Loads the model at the first ``wav:`` input (3 s, 500 MB): never for keys and ``say:``."""
        self.speech_verify = speech_verify
        self.transfer_settings = transfer
        """The daemon's ``transfer:`` settings for ``--live`` (None: transfers fail as a real call's do), or
        PRETEND."""

    masking = False
    """A sensitive entry is being read: the echo of the caller's keys is masked (``mask_input``)."""

    def mask_input(self, on: bool) -> None:
        self.masking = on

    def say(self, line: str) -> None:
        self.emit(line)

    async def play(self, audio: Sequence[Audio]) -> None:
        self._check()
        for a in audio:
            if self.masking and a.name.startswith(("digit_", "v.")):  # a sensitive read-back or value: heard only
                self.say("  ♪ •")
                continue
            self.say("  ♪ (pause)" if a.name == "pause" else f"  ♪ {a.text}")
        await asyncio.sleep(0)

    def has_input(self) -> bool:
        return bool(self.buffer)

    async def input_pending(self) -> None:
        # Scripted input arrives when the engine waits, never mid-prompt: block until cancelled.
        await asyncio.Event().wait()

    async def _next_token(self) -> str | None:
        if self.script:
            return self.script.popleft()
        if self.interactive:
            token = await self.ask()
            return None if token is None else (token.strip() or "silence")
        return None

    async def receive(self, timeout: float, *, mid_entry: bool = False) -> CallerInput | None:
        self._check()
        await asyncio.sleep(0)
        while True:
            if self.buffer:
                return self.buffer.popleft()
            if mid_entry:
                return None  # the burst ended: the caller paused past the inter-digit timeout
            token = await self._next_token()
            if token is None or token == "hangup":
                self.say("  ☎ caller hangs up")
                self.caller_gone = True
                raise CallerHungUp()
            try:
                parsed = parse_token(token)
            except ValueError as exc:
                self.say(f"  ! {exc}")
                continue
            if isinstance(parsed, SpokenAudio):
                heard = await self._recognise(parsed, timeout)
                if heard is None:
                    return None
                self.buffer.append(heard)
                continue
            if parsed == "silence":
                self.say(f"  … (silence: {timeout:g} s timeout)")
                return None
            assert isinstance(parsed, list)
            if parsed[0].kind == "speech" and self.grammar is None:
                self.say(f"  … (said '{parsed[0].value}', but this prompt does not listen for speech)")
                return None
            shown = "".join(i.value for i in parsed) if parsed[0].kind == "dtmf" else f"say '{parsed[0].value}'"
            if self.masking:  # a sensitive entry: the transcript never holds it (ivr/engine/privacy.py)
                shown = "•" * len(parsed) if parsed[0].kind == "dtmf" else "say (sensitive, masked)"
            self.say(f"  ← {shown}")
            self.buffer.extend(parsed)

    async def _recognise(self, audio: SpokenAudio, timeout: float) -> CallerInput | None:
        """The recording through the listening turn, as a live call's audio would go: None is no input."""
        name = Path(audio.path).name
        grammar = self.grammar
        if grammar is None or not (grammar.phrases or grammar.digits):
            self.say(f"  … (played {name}, but this prompt does not listen for speech)")
            return None
        if self.start_speech is None:
            self.say(f"  … (played {name}, but speech is off: speech.enabled is false in the config)")
            return None
        try:
            pcm = await asyncio.to_thread(read_audio, audio.path)
        except AudioInputError as exc:
            self.say(f"  ! {exc}")
            return None
        speech = await self.start_speech()
        st = grammar.settings  # the node's own speech: settings, as a live call applies them
        turn = speech.open_turn(list(grammar.phrases) or None, digits=grammar.digits,
                                verify=self.speech_verify if st.verify is None else st.verify,
                                min_margin=st.min_margin, max_free_gap=st.max_free_gap)
        if turn is None:
            self.say(f"  … (played {name}, but no speech slot is free: keys only)")
            return None
        async with turn:
            timeout = timeout if st.no_input is None else st.no_input
            config = vad_config(digits=grammar.digits, end_of_speech=st.end_of_speech, max_length=st.max_length,
                                barge_in_min=st.barge_in_min, echo_return_loss_db=speech.echo_return_loss_db)
            listening = Listening(turn, digits=grammar.digits, now=0.0, no_input=timeout, config=config)
            pcm = bytes(2 * round(LEAD * RATE)) + pcm
            frames = [pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(pcm), FRAME_BYTES)]
            cfg = listening.config
            # Silence after the file until the detector decides: bounded by the longest it can wait.
            tail = math.ceil((min(cfg.no_input, 60.0) + cfg.max_speech + cfg.hangover) / FRAME) + 1
            silent = bytes(FRAME_BYTES)
            for i in range(len(frames) + tail):
                listening.receive(frames[i] if i < len(frames) else silent, (i + 1) * FRAME)
                if listening.done:
                    break
                for _ in range(2000):  # faster than real time, but never past the turn's queue (no drops)
                    if turn.backlog < speech.queue_frames // 2:
                        break
                    await asyncio.sleep(0.005)
            if listening.ended is None:
                self.say(f"  … ({name}: no speech within {timeout:g} s)")
                return None
            try:
                result = await asyncio.wait_for(turn.result(), RESULT_TIMEOUT)
            except TimeoutError:
                self.say(f"  ! ({name}: the recogniser gave no result)")
                return None
        d = result.decision
        if isinstance(listening.ended, TooLong):
            self.say(f"  … ({name}: speech cut at {listening.config.max_speech:g} s, the max length)")
        verdict = f"accepted '{d.value}'" if d.accepted else "rejected"
        if self.masking:
            self.say(f"  ← {name}: heard (sensitive, masked) confidence {result.confidence:.2f}, "
                     f"{'accepted' if d.accepted else 'rejected'} ({d.reason})")
        else:
            self.say(f"  ← {name}: heard '{result.text}' confidence {result.confidence:.2f}, {verdict} ({d.reason})")
        details: dict[str, object] = {
            "heard": result.text,
            "decision": d.reason,
            "accepted": d.accepted,
            "alternatives": [[h.text, round(h.score, 3)] for h in result.alternatives],
            "grammar": list(grammar.phrases) + (["<digits>"] if grammar.digits else []),
            "ended": "max-length" if isinstance(listening.ended, TooLong) else "end-of-speech",
        }
        if listening.ended is not None:
            e = listening.ended
            details["speech_ms"] = round(((e.at if isinstance(e, TooLong) else e.ended) - e.started) * 1000)
        return CallerInput("speech", d.value if d.accepted else "", result.confidence, "asr", details)

    async def record(self, max_seconds: float, end_keys: str, silence_seconds: float) -> Recording:
        """The next token is what the caller says after the tone: ``wav:FILE`` (the message; it ends by the
        silence after it, or the length limit), ``silence`` (nothing), an end key (an empty message), or
        ``hangup`` / the script's end (nothing more said)."""
        self._check()
        take = Take(max_seconds, silence_seconds)
        token = await self._next_token()
        if token is None or token == "hangup":
            self.say("  ☎ caller hangs up")
            self.caller_gone = True
            return Recording(b"", "hangup")
        try:
            parsed = parse_token(token)
        except ValueError as exc:
            self.say(f"  ! {exc}")
            parsed = "silence"
        if isinstance(parsed, SpokenAudio):
            try:
                pcm = await asyncio.to_thread(read_audio, parsed.path)
            except AudioInputError as exc:
                self.say(f"  ! {exc}")
                pcm = b""
            silent = bytes(FRAME_BYTES)
            frames = [pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(pcm), FRAME_BYTES)]
            ended: RecordingEnd = "max"
            for i in range(take.max_frames):  # the file, then silence until the take ends (bounded)
                why = take.feed(frames[i] if i < len(frames) else silent)
                if why is not None:
                    ended = "silence" if why == "silence" else "max"
                    break
            self.say(f"  ● recorded {take.seconds:.1f} s of {Path(parsed.path).name} (ended by {ended})")
            return Recording(take.audio(), ended)
        if isinstance(parsed, list) and parsed[0].kind == "dtmf" and parsed[0].value in end_keys:
            self.say(f"  ● {parsed[0].value}: the recording ends, nothing said")
            return Recording(b"", "key")
        self.say(f"  ● (silence: nothing recorded after {silence_seconds:g} s)")
        return Recording(b"", "silence")

    @asynccontextmanager
    async def listen(self, grammar: Grammar | None) -> AsyncIterator[bool]:
        previous, self.grammar = self.grammar, grammar
        try:
            yield True  # a simulated caller always has a speech slot
        finally:
            self.grammar = previous

    async def transfer(self, target: TransferTarget, progress: TransferProgress | None = None) -> TransferResult:
        self._check()
        self.transfers.append(target)
        where = f"  ⇒ transfer to {target.kind} {target.destination}"
        if target.data:  # what the agent's channel would carry (X-IVR-Var-* headers, IVR_VAR_* variables)
            where += " with " + ", ".join(f"{k}={'•' * len(v) if k in target.sensitive else v}"
                                          for k, v in target.data)
        settings = self.transfer_settings
        if settings is None:  # as a real call on this daemon: ivr simulate --live must not promise more
            self.say(f"{where}: not placed, {NOT_CONFIGURED}")
            return TransferResult(False, NOT_CONFIGURED)
        if isinstance(settings, TransferConfig):
            self.say(f"{where} (simulated: a real call would go by transfer.mode {settings.mode}; "
                     "nothing is placed, the transfer is taken as done)")
            detail = f"simulated, transfer.mode {settings.mode}"
        else:
            self.say(f"{where} (simulated: taken as done; no transfer settings are read)")
            detail = "simulated"
        if progress is not None:  # a pretend transfer always succeeds, as an accepted REFER would
            await progress("referred", {})
        return TransferResult(True, detail)

    async def hangup(self) -> None:
        if not self.hung_up and not self.caller_gone:
            self.say("  ☎ IVR hangs up")
        self.hung_up = True

    def _check(self) -> None:
        if self.caller_gone:
            raise CallerHungUp()


class NarratingRecorder:
    """Wraps a Recorder and tells the terminal what the engine does, as it records it."""

    SHOWN = {
        "node.entered": lambda d: f"[{d['node']}] {d['kind']}",
        "hours.decided": lambda d: f"  ◷ {d['schedule']}: {d['state']} ({d['reason']})",
        "menu.no_input": lambda d: f"  ✗ no input ({d['count']} of {d['max']})",
        "menu.no_match": lambda d: f"  ✗ no match for '{d['input']}' ({d['count']} of {d['max']})",
        "menu.choice": lambda d: f"  ✓ chose {d['key'] or 'by voice'} → {d['target']}",
        "collect.no_input": lambda d: f"  ✗ no input ({d['count']} of {d['max']})",
        "collect.invalid": lambda d: f"  ✗ invalid entry '{d['entry']}' ({d['count']} of {d['max']})",
        "collect.confirm": lambda d: f"  {'✓ confirmed' if d['confirmed'] else '✗ not confirmed'} {d['entry']}",
        "collect.value": lambda d: f"  ✓ {d['var']} = {d['value']}",
        "survey.answer": lambda d: f"  ✓ {d['scale']} answer {d['value']}",
        "node.failed": lambda d: f"  ✗ {d['node']} failed: {d['reason']}",
        "prompt.skipped": lambda d: "  (prompt skipped: keys typed ahead)",
        "queue.offer": lambda d: f"  ☏ callback offer: {'made' if d['offered'] else 'none'} ({d['reason']}"
                                 + (f", wait about {d['minutes'][0]}-{d['minutes'][1]} min" if d.get("minutes")
                                    else "") + ")",
        "queue.arrival": lambda d: f"  ☏ place in line from {d['arrival']}" + ("" if d["kept"] else
                                                                               f" (now: {d['reason']})"),
        "callback.offer.accepted": lambda d: "  ✓ callback "
                                             + ("asked for in the queue" if d.get("requested") else "offer accepted"),
        "callback.offer.declined": lambda d: f"  ✗ callback offer declined ({d['reason']})",
        "callback.number.refused": lambda d: f"  ✗ number {d.get('entry') or d['number'] or '(none)'} refused "
                                             f"({d['reason']})",
        "callback.number.confirmed": lambda d: f"  ✓ call back at {d['number']}",
        "callback.confirmed": lambda d: f"  ✓ callback {d['request_id']} "
                                        + ("filed" if d["created"] else "updated (one per number and queue)"),
        "callback.request_failed": lambda d: f"  ! callback not stored: {d['error']}",
        "callback.cancelled": lambda d: f"  ✗ pending callback {d['request_id']} cancelled ({d['reason']})",
        "callback.cancel.none": lambda d: "  ✗ no pending callback for this number",
        "callback.cancel.kept": lambda d: "  ✓ pending callback kept",
        "callback.cancel.done": lambda d: f"  ✓ cancelled {', '.join(d['request_ids'])}",
        "http.lookup": lambda d: f"  ⇄ {d['method']} {d['lookup'] + ' ' if d['lookup'] else ''}{d['url']}: "
                                 f"{d['outcome']}" + (f" {d['status']}" if d["status"] else "")
                                 + f" ({d['latency_ms']} ms" + (", comfort prompt played" if d["comfort"] else "")
                                 + ")" + (f" → {', '.join(d['vars'])}" if d["vars"] else ""),
    }

    def __init__(self, inner: object, emit: Callable[[str], None]) -> None:
        self.inner = inner
        self.emit = emit

    async def begin(self, call: object, flow: object, version: str) -> None:
        await self.inner.begin(call, flow, version)  # type: ignore[attr-defined]

    async def event(self, type: str, **data: object) -> None:
        await self.inner.event(type, **data)  # type: ignore[attr-defined]
        show = self.SHOWN.get(type)
        if show is not None:  # told only once it is on disk
            self.emit(show(data))

    async def end(self, outcome: object, path: list[str], variables: dict[str, object]) -> None:
        await self.inner.end(outcome, path, variables)  # type: ignore[attr-defined]


class StatedWaits:
    """Queue waits the admin states (``ivr simulate --wait support=600``): a QueueWaits without a PBX, so an
    offer can be tried on the bench. A queue not stated has an unknown wait, and no offer is made."""

    SPREAD = 0.2
    """The quoted range is the stated wait -/+ this fraction."""

    def __init__(self, waits: dict[str, float]) -> None:
        self.waits = dict(waits)

    def estimate(self, queue: str) -> EwtEstimate:
        seconds = self.waits.get(queue)
        if seconds is None:
            return EwtEstimate.unknown("not-stated")
        return EwtEstimate(seconds, seconds * (1 - self.SPREAD), seconds * (1 + self.SPREAD), method="stated")

    def free_agents(self, queue: str) -> int | None:
        return None

    def callers_waiting(self, queue: str) -> int | None:
        return None


def parse_headers(specs: Sequence[str]) -> dict[str, str]:
    """``["X-IVR-Queue=support"]`` → {"X-IVR-Queue": "support"}; ValueError saying which one is wrong. Only
    X- headers: those are the ones a real call hands to its flow."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[Xx]-[A-Za-z0-9-]+", name):
            raise ValueError(f"bad --header {spec!r}: use X-NAME=VALUE, e.g. X-IVR-Queue=support")
        out[name] = value.strip()
    return out


def parse_waits(specs: Sequence[str]) -> dict[str, float]:
    """``["support=600", "sales=90"]`` → seconds per queue; ValueError saying which one is wrong."""
    out: dict[str, float] = {}
    for spec in specs:
        queue, sep, value = spec.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not queue.strip() or not 0 <= seconds < 86400:
            raise ValueError(f"bad --wait {spec!r}: use QUEUE=SECONDS, e.g. support=600")
        out[queue.strip()] = seconds
    return out


@asynccontextmanager
async def scratch_desk(waits: StatedWaits, *, site: str, policy: CallbackPolicy, region: str,
                       now: Callable[[], datetime]) -> AsyncIterator[Desk]:
    """A callback desk over a throw-away store: simulated requests never reach the real callback queue (the
    daemon's dialer would call them)."""
    with tempfile.TemporaryDirectory(prefix="ivr-simulate-callbacks-") as tmp:
        async with await EventLog.open(Path(tmp) / "callbacks.sqlite", site) as log:
            yield Desk(CallbackStore(log), policy, waits, region=region, now=now)
