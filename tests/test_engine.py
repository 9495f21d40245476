"""The engine against a call with real timing: barge-in, type-ahead, hang-up mid-prompt, shutdown.

``TimedCall`` implements the engine's Call interface with asyncio time (prompts take their length, input
arrives on a schedule), the way the SIP adapter will; the recorder keeps events in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ivr.config import Config
from ivr.engine.call import CallerInput, Grammar, TransferProgress, TransferResult, TransferTarget
from ivr.engine.context import Outcome
from ivr.engine.runner import run_call
from ivr.errors import CallerHungUp
from ivr.flows.audio import Audio
from ivr.flowset import load_flowset

FLOW = """
flow: t
default: true
start: intro
prompts:
  intro: "This is a long introduction that nobody wants to hear twice."
  menu: "Press 1 or 2."
nodes:
  intro:
    play: {prompt: intro, barge_in: false}
    next: menu
  menu:
    menu:
      prompt: menu
      timeout: 0.3
      options: {1: one, 2: two}
  one:
    hangup: true
  two:
    transfer: {extension: 22}
"""


class TimedCall:
    channel = "test"

    def __init__(self, schedule: list[tuple[float, str]], prompt_seconds: float = 0.5) -> None:
        self.call_id, self.caller, self.dialed = "c1", "+1", "9"
        self.schedule = schedule
        self.prompt_seconds = prompt_seconds
        self.queue: asyncio.Queue[CallerInput | None] = asyncio.Queue()
        self.arrived = asyncio.Event()
        self.played: list[tuple[str, bool]] = []  # (prompt, finished)

    async def feed(self) -> None:
        start = asyncio.get_running_loop().time()
        for at, token in self.schedule:
            await asyncio.sleep(max(0.0, start + at - asyncio.get_running_loop().time()))
            self.queue.put_nowait(None if token == "hangup" else CallerInput("dtmf", token, None, "test"))
            self.arrived.set()

    async def play(self, audio: Sequence[Audio]) -> None:
        for a in audio:
            try:
                await asyncio.sleep(self.prompt_seconds)
            except asyncio.CancelledError:
                self.played.append((a.name, False))
                raise
            self.played.append((a.name, True))

    def has_input(self) -> bool:
        return not self.queue.empty()

    async def input_pending(self) -> None:
        while self.queue.empty():
            self.arrived.clear()
            await self.arrived.wait()

    async def receive(self, timeout: float, *, mid_entry: bool = False) -> CallerInput | None:
        try:
            got = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if got is None:
            raise CallerHungUp()
        return got

    @asynccontextmanager
    async def listen(self, grammar: Grammar | None) -> AsyncIterator[bool]:
        yield grammar is not None

    async def transfer(self, target: TransferTarget, progress: TransferProgress | None = None) -> TransferResult:
        if progress is not None:
            await progress("referred", {})
        return TransferResult(True, "test")

    async def hangup(self) -> None:
        pass


class MemoryRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ended: tuple[Outcome, list[str]] | None = None

    async def begin(self, call: Any, flow: Any, version: str) -> None:
        self.events.append(("call.started", {}))

    async def event(self, type: str, **data: Any) -> None:
        self.events.append((type, data))

    async def end(self, outcome: Outcome, path: list[str], variables: dict[str, object]) -> None:
        self.ended = (outcome, path)


@pytest.fixture
def flowset(tmp_path: Path, prompt_cache: Path) -> Any:
    (tmp_path / "t.yaml").write_text(FLOW)
    config = Config(site_id="t", state_dir=tmp_path / "var", prompt_cache_dir=prompt_cache)
    return asyncio.run(load_flowset([tmp_path], config))


async def drive(flowset: Any, call: TimedCall) -> tuple[Outcome, MemoryRecorder]:
    rec = MemoryRecorder()
    feeder = asyncio.create_task(call.feed())
    outcome = await run_call(call, flowset, rec)
    feeder.cancel()
    return outcome, rec


def test_key_during_menu_prompt_interrupts_it(flowset: Any) -> None:
    # The intro (0.5 s, no barge-in) plays out; "2" at 0.7 s cuts the menu prompt short.
    call = TimedCall([(0.7, "2")])
    outcome, rec = asyncio.run(drive(flowset, call))
    assert outcome == Outcome("transferred", "extension 22")
    assert call.played == [("intro", True), ("menu", False)]
    played = [d for t, d in rec.events if t == "prompt.played"]
    assert played[-1]["interrupted"] is True


def test_key_during_non_barge_in_prompt_is_kept_as_type_ahead(flowset: Any) -> None:
    # "1" pressed during the intro: the intro still plays to the end, then the menu prompt is skipped.
    call = TimedCall([(0.1, "1")])
    outcome, rec = asyncio.run(drive(flowset, call))
    assert outcome.kind == "hangup"
    assert call.played == [("intro", True)]
    assert ("prompt.skipped", {"prompts": ["menu"], "reason": "type-ahead"}) in rec.events


def test_hangup_during_prompt_ends_call_as_caller_hangup(flowset: Any) -> None:
    call = TimedCall([(0.6, "hangup")])
    outcome, rec = asyncio.run(drive(flowset, call))
    assert outcome == Outcome("caller_hangup", "menu")
    assert rec.ended is not None and rec.ended[1] == ["intro", "menu"]


def test_shutdown_cancels_call_but_records_it(flowset: Any) -> None:
    async def go() -> MemoryRecorder:
        call = TimedCall([])
        rec = MemoryRecorder()
        task = asyncio.create_task(run_call(call, flowset, rec))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return rec

    rec = asyncio.run(go())
    assert rec.ended is not None and rec.ended[0] == Outcome("shutdown", "intro")


def test_max_call_length_ends_call(flowset: Any) -> None:
    async def go() -> Outcome:
        return await run_call(TimedCall([]), flowset, MemoryRecorder(), max_call_seconds=0.2)

    assert asyncio.run(go()).kind == "max_length"


def test_transfer_progress_is_recorded_before_the_transfer_goes_on(flowset: Any) -> None:
    call = TimedCall([(0.7, "2")])
    _outcome, rec = asyncio.run(drive(flowset, call))
    types = [t for t, _ in rec.events]
    assert types.index("transfer.progress") < types.index("transfer")
    [progress] = [d for t, d in rec.events if t == "transfer.progress"]
    assert progress == {"node": progress["node"], "stage": "referred", "kind": "extension", "destination": "22",
                        "flow": "t", "flow_version": progress["flow_version"]}


def test_a_hang_up_seen_by_prompt_and_key_wait_at_once_leaves_no_unretrieved_error() -> None:
    """Both racers of a barge-in prompt fail with CallerHungUp in the same loop turn: the loser's error must be
    retrieved, or asyncio logs "Task exception was never retrieved" at ERROR when it is collected."""
    import gc

    from ivr.engine.turns import race

    unretrieved: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
        gone = asyncio.Event()

        async def until_gone() -> None:
            await gone.wait()
            raise CallerHungUp()

        asyncio.get_running_loop().call_soon(gone.set)
        with pytest.raises(CallerHungUp):
            await race(until_gone(), until_gone())
        gc.collect()

    asyncio.run(main())
    gc.collect()
    assert not unretrieved, unretrieved
