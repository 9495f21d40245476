"""The engine's Call on a real SIP dialog and its RTP session.

Keys arrive three ways — RFC 4733 events and in-band tones from the RTP session, SIP INFO from the dialog —
and are merged into one input queue; a digit sent two ways at once counts once (DtmfDeduplicator). A key's
*start* is what interrupts a prompt (barge-in); its *end* is the digit. The caller hanging up (BYE,
CANCEL, RTP silence past the inactivity limit) is raised as CallerHungUp from whatever the engine awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

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
from ivr.proto.dtmf import DtmfDeduplicator
from ivr.proto.take import Take
from ivr.proto.vad import SpeechEnded, SpeechStarted, TooLong
from ivr.speech.listen import Listening, vad_config

log = logging.getLogger("ivr.sip.call")
T = TypeVar("T")


class Leg(Protocol):
    """What the call needs of a SIP dialog (ivr.sip.endpoint.InboundLeg)."""

    caller: str
    dialed: str
    ended: asyncio.Event
    end_reason: str | None
    on_dtmf: Callable[[str], None] | None

    async def hangup(self) -> None: ...


class Media(Protocol):
    """What the call needs of its RTP session (ivr.rtp.session.RtpSession)."""

    on_dtmf: Callable[[str, str, str], None] | None
    on_audio: Callable[[bytes], None] | None

    @property
    def last_played(self) -> bytes: ...

    @property
    def law(self) -> str: ...

    @property
    def last_received(self) -> float | None: ...

    async def play(self, frames: Sequence[bytes]) -> None: ...

    def start_play(self, frames: Sequence[bytes]) -> asyncio.Future[None]: ...


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned task's outcome as seen (no "Task exception was never retrieved" at ERROR)."""
    if not task.cancelled():
        task.exception()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class SipCall:
    channel = "sip"

    def __init__(self, call_id: str, leg: Leg, media: Media, *, rtp_timeout: float = 30.0,
                 speech: Any = None, speech_verify: bool = False, speech_language: str = "") -> None:
        self.call_id = call_id
        self.leg = leg
        self.media = media
        self.caller = leg.caller
        self.dialed = leg.dialed
        # An inbound leg keeps its INVITE's X- headers (the PBX's X-IVR-Queue...); an outbound one has none.
        self.headers: dict[str, str] = {}
        for name, value in getattr(leg, "extra_headers", ()):
            self.headers.setdefault(name, value)
        self.rtp_timeout = rtp_timeout
        self.inputs: asyncio.Queue[CallerInput] = asyncio.Queue()
        self._input_waiter: asyncio.Future[None] | None = None
        self.key_down = asyncio.Event()
        self.dedup = DtmfDeduplicator()
        self._on_hold = False
        self._resumed_at: float | None = None
        self.hung_up_by_us = False
        self.rtp_timed_out = False
        self.speech = speech  # ivr.adapters.speech.SpeechService, or None: keys only
        self.speech_refused = 0
        self.speech_verify = speech_verify
        self.speech_language = speech_language
        self._listener: SpeechListener | None = None
        self.masking = False
        """A sensitive entry is being read (the engine's ``mask_input``): what is heard is not logged."""
        self._loop = asyncio.get_running_loop()
        self.answered_at = self._loop.time()
        leg.on_dtmf = self._info_digit
        media.on_dtmf = self._rtp_dtmf

    # -- input from the network --
    def _info_digit(self, digit: str) -> None:
        self.key_down.set()
        self._digit(digit, "info")

    def _rtp_dtmf(self, kind: str, digit: str, source: str) -> None:
        if kind == "start":
            self.key_down.set()  # barge-in at the start of the key, the digit at its end
        else:
            self._digit(digit, source)

    def _digit(self, digit: str, source: str) -> None:
        if self.dedup.accept(digit, source, self._loop.time()):
            self.put_input(CallerInput("dtmf", digit, None, source))

    def put_input(self, got: CallerInput) -> None:
        """A key or an answer for the engine (and whoever waits in :meth:`next_input`)."""
        self.inputs.put_nowait(got)
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_input(self, timeout: float) -> CallerInput | None:
        """The next key or answer within ``timeout`` seconds, or None; a hang-up raises CallerHungUp. The key
        wakes a plain future the engine waits on, not a ``Queue.get`` task inside ``wait_for`` inside another
        task: each of those hops is a loop turn between the key and the next prompt (bench/README.md)."""
        if self.inputs.empty():
            waiter = self._input_waiter = self._loop.create_future()
            timer = self._loop.call_later(max(0.0, timeout), _time_out, waiter)
            try:
                await self._or_hangup(waiter)
            finally:
                timer.cancel()
                self._input_waiter = None
        return None if self.inputs.empty() else self.inputs.get_nowait()

    @property
    def on_hold(self) -> bool:
        """The caller's side holds the call (sendonly/inactive): silence from it then is no hang-up."""
        return self._on_hold

    @on_hold.setter
    def on_hold(self, held: bool) -> None:
        if self._on_hold and not held:
            self._resumed_at = self._loop.time()  # the inactivity clock restarts on resume, not at the last packet
        self._on_hold = held

    # -- hang-up detection --
    def _gone(self) -> bool:
        if self.leg.ended.is_set():
            return True
        # From the answer until the first packet too: a caller whose audio never arrives is gone as well.
        last = max(t for t in (self.media.last_received, self.answered_at, self._resumed_at) if t is not None)
        if not self.on_hold and self._loop.time() - last > self.rtp_timeout:
            self.rtp_timed_out = True
            self.hung_up_by_us = True  # the adapter sends the BYE once the engine has finished
            return True
        return False

    def _hung_up(self) -> CallerHungUp:
        if self.leg.end_reason == "session timer expired":
            self.hung_up_by_us = True  # RFC 4028: the peer stopped refreshing the session, our BYE ended it
            return CallerHungUp("session_expired")
        if self.leg.end_reason == "no ACK":
            self.hung_up_by_us = True  # our 200 OK was never ACKed: Timer H (64*T1) ended it, with our BYE
            return CallerHungUp("no_ack")
        return CallerHungUp("rtp_timeout" if self.rtp_timed_out else "caller_hangup")

    async def _until_gone(self) -> None:
        while not self._gone():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.leg.ended.wait(), timeout=1.0)

    async def _or_hangup(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the caller leaves first (then CallerHungUp). A future (a prompt playing, the next
        input) is raced as it is; a coroutine gets a task."""
        if self._gone():
            if inspect.iscoroutine(aw):
                aw.close()  # never started: closed, so no "coroutine ... was never awaited" on a quick hang-up
            elif isinstance(aw, asyncio.Future):
                aw.cancel()
            raise self._hung_up()
        work = asyncio.ensure_future(aw)
        gone = asyncio.ensure_future(self._until_gone())
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if work.done():
                gone.cancel()  # not waited for: the flow goes on now (it only watches the leg and the clock)
            else:
                for t in (work, gone):
                    t.cancel()
                await asyncio.wait({work, gone}, timeout=1.0)
            if not work.done():  # slower to stop than the bound: whatever it ends with is nobody's to raise
                work.add_done_callback(_retrieve)
        if work.done() and not work.cancelled():
            return work.result()
        raise self._hung_up()

    # -- the Call interface --
    def play(self, audio: Sequence[Audio]) -> Coroutine[Any, Any, None]:
        """The prompt starts when this is called; awaiting the result waits for its end (or the hang-up). Not a
        coroutine function: a barge-in prompt raced against the keys runs in a task whose first step is a loop
        turn later, and the caller would wait that turn for the answer to a key."""
        frames = [f for a in audio for f in a.frames(self.media.law)]
        if self._gone():
            raise self._hung_up()
        return self._or_hangup(self.media.start_play(frames))

    def has_input(self) -> bool:
        return not self.inputs.empty()

    async def input_pending(self) -> None:
        async def pending() -> None:
            while self.inputs.empty() and not self.key_down.is_set():
                await self.key_down.wait()

        await self._or_hangup(pending())

    async def receive(self, timeout: float, *, mid_entry: bool = False) -> CallerInput | None:
        try:
            if self._listener is not None and not mid_entry:  # speech's own no-input and length rules
                got = await self._or_hangup(self._listener.wait_input(timeout))
            else:
                got = await self.next_input(timeout)
        except TimeoutError:
            return None
        if got is None:
            return None
        if self.inputs.empty():
            self.key_down.clear()
        return got

    @asynccontextmanager
    async def listen(self, grammar: Grammar | None) -> AsyncIterator[bool | None]:
        """A listening turn: the caller's audio goes to our voice detector and a Vosk turn with this
        grammar; speech onset interrupts the prompt like a key, the recognised phrase arrives through
        receive(). Keys keep working throughout; with no free speech slot the turn is keys-only."""
        if grammar is None or not (grammar.phrases or grammar.digits):
            yield False
            return
        if self.speech is None or (grammar.lang and grammar.lang != self.speech_language):
            yield None  # no recogniser for this language (by configuration, not busy): keys only, quietly
            return
        settings = grammar.settings
        turn = self.speech.open_turn(list(grammar.phrases) or None, digits=grammar.digits,
                                     verify=self.speech_verify if settings.verify is None else settings.verify,
                                     min_margin=settings.min_margin, max_free_gap=settings.max_free_gap)
        if turn is None:
            self.speech_refused += 1
            log.warning("no free speech slot call_id=%s: this turn takes keys only", self.call_id)
            yield False
            return
        listener = SpeechListener(self, turn, grammar)
        self.media.on_audio = listener.frame
        self._listener = listener
        try:
            yield True
        finally:
            self.media.on_audio = None
            self._listener = None
            await listener.close()

    #: Set by the wiring (ivr.adapters.telephony): an ivr.adapters.transfer.Transferer; None: no transfer.
    transferer: Any = None

    async def transfer(self, target: TransferTarget, progress: TransferProgress | None = None) -> TransferResult:
        """REFER, AMI Redirect or a bridge we hold, as ``transfer.mode`` says (ivr.adapters.transfer). A
        bridged call stays in here until the bridge ends; ``ok=False`` sends the engine to the node's
        failure target, with the reason in the record. ``progress`` hears referred/redirected/bridged."""
        if self.transferer is None:
            return TransferResult(False, "transfer not available: no SIP endpoint")
        result: TransferResult = await self.transferer.transfer(self, target, progress)
        log.info("transfer call_id=%s to=%s %s ok=%s detail=%s", self.call_id, target.kind, target.destination,
                 result.ok, result.detail)
        return result

    def mask_input(self, on: bool) -> None:
        """The engine reads a sensitive entry (``sensitive: true``) while ``on``: nothing heard is logged."""
        self.masking = on

    async def hangup(self) -> None:
        if self.leg.ended.is_set():
            return
        self.hung_up_by_us = True
        await self.leg.hangup()

    async def record(self, max_seconds: float, end_keys: str, silence_seconds: float) -> Recording:
        """The caller's decoded audio (what a recogniser would hear) into a take, until an end key, the
        silence or length limit, or a hang-up; other keys are dropped (they are not part of the message)."""
        take = Take(max_seconds, silence_seconds)
        over: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def frame(pcm: bytes) -> None:
            if not over.done():
                why = take.feed(pcm)
                if why is not None:
                    over.set_result(why)

        async def end_key() -> str:
            while True:
                got = await self.inputs.get()
                if got.kind == "dtmf" and got.value in end_keys:
                    return "key"

        self.media.on_audio = frame
        keys = asyncio.ensure_future(end_key())
        try:
            done, _ = await self._or_hangup(asyncio.wait({over, keys}, return_when=asyncio.FIRST_COMPLETED))
            ended: RecordingEnd = next(iter(done)).result()  # type: ignore[assignment]
        except CallerHungUp:
            ended = "hangup"
        finally:
            self.media.on_audio = None
            keys.cancel()
            await asyncio.wait({keys}, timeout=1.0)
            self.key_down.clear()
        log.info("recorded call_id=%s seconds=%.1f ended=%s", self.call_id, take.seconds, ended)
        return Recording(take.audio(), ended)


class SpeechListener:
    """One listening turn on a live call: 20 ms frames → voice detector + recogniser → caller input.

    End of speech is our detector's call (about 0.3 s after the words for keywords, 0.8 s for digits), not
    Vosk's slower endpointer; then the recogniser is asked for its final result. The node's ``speech:``
    settings (Grammar.settings) set the detector's end of speech, max length and barge-in minimum, and how
    long after the prompt speech may start (:meth:`wait_input`). The detector and turn logic is shared with
    the simulator (ivr.speech.listen.Listening).
    """

    RESULT_TIMEOUT = 5.0

    def __init__(self, call: SipCall, turn: Any, grammar: Grammar) -> None:
        self.call = call
        self.turn = turn
        self.grammar = list(grammar.phrases) or (["<digits>"] if grammar.digits else [])
        self.loop = asyncio.get_running_loop()
        s = grammar.settings
        config = vad_config(digits=grammar.digits, end_of_speech=s.end_of_speech, max_length=s.max_length,
                            barge_in_min=s.barge_in_min,
                            echo_return_loss_db=call.speech.echo_return_loss_db)
        self.no_input = s.no_input
        self.listening = Listening(turn, digits=grammar.digits, now=self.loop.time(), config=config)
        self.finishing: asyncio.Task[None] | None = None
        self.started_at: float | None = None
        self.ended_at = 0.0
        self.deaf = False
        """Set when the speech no-input time ran out with nobody speaking: later speech is not listened to
        (keys still are, until the node's timeout)."""

    def frame(self, pcm: bytes) -> None:
        if self.deaf:
            return
        now = self.loop.time()
        for event in self.listening.receive(pcm, now, played=self.call.media.last_played):
            if isinstance(event, SpeechStarted):
                self.started_at = now
                self.call.key_down.set()  # barge-in: the prompt stops as for a key
            elif isinstance(event, SpeechEnded | TooLong):
                self.ended_at = now
                self.finishing = asyncio.ensure_future(self._deliver(event))

    async def wait_input(self, timeout: float) -> CallerInput | None:
        """After the prompt: the next key or answer, or None. Keys have the node's ``timeout``; speech may
        start until its own no-input time (default the same), and speech that has started is heard to its
        end even past both (bounded by max length + end of speech + the result's wait)."""
        cfg = self.listening.config
        start = self.loop.time()
        keys_until = start + timeout
        speech_until = start + (timeout if self.no_input is None else self.no_input)
        for _ in range(10_000):  # each pass waits until the next decision point
            now = self.loop.time()
            deadline = keys_until
            if self.started_at is None and not self.deaf:
                if now >= speech_until:
                    self.deaf = True
                    log.info("speech no-input after %.1f s call_id=%s", now - start, self.call.call_id)
                else:
                    deadline = max(deadline, speech_until)
            if self.started_at is not None and (self.finishing is None or not self.finishing.done()):
                deadline = max(deadline, self.started_at + cfg.max_speech + cfg.hangover + self.RESULT_TIMEOUT)
            wake = deadline if self.deaf or self.started_at is not None else min(deadline, speech_until)
            if now >= deadline:
                return None
            got = await self.call.next_input(wake - now)
            if got is not None:
                return got
        return None

    async def _deliver(self, ended: SpeechEnded | TooLong) -> None:
        try:
            result = await asyncio.wait_for(self.turn.result(), self.RESULT_TIMEOUT)
        except TimeoutError:
            log.warning("speech result late call_id=%s", self.call.call_id)
            return
        text = result.value if result.accepted else ""
        details: dict[str, object] = {
            "heard": result.text,
            "accepted": result.accepted,
            "decision": result.decision.reason,
            "alternatives": [[h.text, round(h.score, 3)] for h in result.alternatives],
            "grammar": self.grammar,
            "latency_ms": round((self.loop.time() - self.ended_at) * 1000),
            "after_speech_ms": round((self.loop.time() - (ended.ended if isinstance(ended, SpeechEnded)
                                                           else ended.at)) * 1000),
            "ended": "max-length" if isinstance(ended, TooLong) else "end-of-speech",
            "speech_ms": round(((ended.ended if isinstance(ended, SpeechEnded) else ended.at) - ended.started)
                               * 1000),
        }
        self.call.put_input(CallerInput("speech", text or "", result.confidence, "asr", details))
        heard = "(sensitive, masked)" if self.call.masking else repr(result.text)
        log.info("speech call_id=%s heard=%s accepted=%s reason=%s", self.call.call_id, heard,
                 result.accepted, result.decision.reason)

    async def close(self) -> None:
        # The turn is over (a key, an answer or a timeout ended it): a result still decoding belongs to no
        # question any more, so it is dropped rather than answering the next one.
        if self.finishing is not None and not self.finishing.done():
            self.finishing.cancel()
            await asyncio.wait({self.finishing}, timeout=1.0)
        self.turn.close()
        erl = self.listening.vad.measured_echo_loss()
        if erl is not None:  # what this line gives, against the configured assumption
            log.info("speech echo call_id=%s measured_loss_db=%.1f assumed_db=%.1f", self.call.call_id, erl,
                     self.listening.config.echo_return_loss_db)
