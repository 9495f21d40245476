"""The simulated call: a caller in the terminal or a script of inputs, no phone.

Script tokens (``ivr simulate --input``): ``1`` or ``5551234#`` (keys typed in one burst), ``say:billing``
(an utterance, confidence 1.0; ``say:billing@0.4`` sets the confidence), ``silence`` (the caller says
nothing until the wait times out) and ``hangup``. A burst ends where the token ends: waiting for more keys
of an entry then times out, as a real caller's pause would. When the script runs out the caller hangs up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from ivr.engine.call import CallerInput, Grammar, TransferResult, TransferTarget
from ivr.errors import CallerHungUp
from ivr.flows.prompts import Audio

VALID_KEYS = set("0123456789*#ABCD")


async def _terminal_input() -> str | None:
    try:
        return await asyncio.to_thread(input, "  > ")
    except EOFError:
        return None


def parse_token(token: str) -> list[CallerInput] | str:
    """A script token → inputs, or ``"silence"``/``"hangup"``; ValueError on nonsense."""
    t = token.strip()
    if t in ("silence", "hangup"):
        return t
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
    raise ValueError(f"bad input {token!r}: use keys (0-9 * #), say:WORDS, silence or hangup")


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
    ) -> None:
        self.call_id, self.caller, self.dialed = call_id, caller, dialed
        self.script: deque[str] = deque(script)
        self.interactive = interactive
        self.emit = emit
        self.ask = ask or _terminal_input
        self.buffer: deque[CallerInput] = deque()
        self.grammar: Grammar | None = None
        self.transfers: list[TransferTarget] = []
        self.hung_up = False
        self.caller_gone = False

    def say(self, line: str) -> None:
        self.emit(line)

    async def play(self, audio: Sequence[Audio]) -> None:
        self._check()
        for a in audio:
            self.say(f"  ♪ {a.text}")
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
            if parsed == "silence":
                self.say(f"  … (silence: {timeout:g} s timeout)")
                return None
            assert isinstance(parsed, list)
            if parsed[0].kind == "speech" and self.grammar is None:
                self.say(f"  … (said '{parsed[0].value}', but this prompt does not listen for speech)")
                return None
            shown = "".join(i.value for i in parsed) if parsed[0].kind == "dtmf" else f"say '{parsed[0].value}'"
            self.say(f"  ← {shown}")
            self.buffer.extend(parsed)

    @asynccontextmanager
    async def listen(self, grammar: Grammar | None) -> AsyncIterator[None]:
        previous, self.grammar = self.grammar, grammar
        try:
            yield
        finally:
            self.grammar = previous

    async def transfer(self, target: TransferTarget) -> TransferResult:
        self._check()
        self.transfers.append(target)
        self.say(f"  ⇒ transfer to {target.kind} {target.destination}")
        return TransferResult(True, "simulated")

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
        "queue.offer": lambda d: f"  ☏ callback offer: {'made' if d['offered'] else 'none'} ({d['reason']})",
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
