"""Turn-taking, written once: prompt vs. barge-in, first key vs. timeout, keys vs. inter-digit timeout.

Every race is ``asyncio.wait(FIRST_COMPLETED)``; the loser is cancelled and awaited, so no task outlives
the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any

from ivr.engine.call import CallerInput, Grammar
from ivr.engine.context import CallContext
from ivr.engine.privacy import MASK, mask
from ivr.flows import spoken
from ivr.flows.audio import Audio
from ivr.flows.model import DigitsRef, Pos, PromptRef, Prompts, ValueRef
from ivr.flows.prompts import DIGIT_NAMES


def resolve(ctx: CallContext, prompts: Prompts) -> list[Audio]:
    """Prompt items → rendered audio in the caller's language (read-backs from digit prompts)."""
    return [a for a, _ in resolve_named(ctx, prompts)]


def resolve_named(ctx: CallContext, prompts: Prompts) -> list[tuple[Audio, str]]:
    """Each audio with the name events record for it: a read-back of a sensitive variable is recorded as
    ``digits:<mask>``, never digit by digit (the caller hears the digits; the log does not)."""
    lib = ctx.flows.library
    assert lib is not None, "flow set was not rendered"
    out: list[tuple[Audio, str]] = []
    for item in prompts:
        if isinstance(item, PromptRef):
            try:
                a = lib.get(ctx.flow, item.name, ctx.lang)
                out.append((a, a.name))
            except KeyError:  # only built-ins with no text in the flow's languages; checks catch the rest
                ctx.log.warning("no audio for built-in prompt %s in %s", item.name, ctx.lang)
        elif isinstance(item, DigitsRef):
            value = str(ctx.variables.get(item.var, ""))
            hidden = item.var in ctx.sensitive
            for c in value:
                with contextlib.suppress(KeyError):  # a symbol with no recording in this language
                    a = lib.get(ctx.flow, DIGIT_NAMES[c], ctx.lang)
                    out.append((a, f"digits:{mask(value)}" if hidden else a.name))
        elif isinstance(item, ValueRef):
            said = _say_value(ctx, item)
            hidden = item.var in ctx.sensitive  # a spoken value's fragments would spell it out
            out += [(a, f"{item.kind}:{MASK}" if hidden else a.name) for a in said]
    return out


def recorded_names(named: list[tuple[Audio, str]]) -> list[str]:
    """The names of the audio played, a masked read-back or value once rather than once per fragment."""
    out: list[str] = []
    for _, name in named:
        if not (MASK in name and out and out[-1] == name):
            out.append(name)
    return out


def _say_value(ctx: CallContext, item: ValueRef) -> list[Audio]:
    """A value in the caller's language (the flow's first where the caller's has no fragments); a value that
    cannot be said is skipped with one warning, never a wrong number."""
    lib = ctx.flows.library
    assert lib is not None
    value = ctx.variables.get(item.var)
    lang = ctx.lang if ctx.lang.split("-")[0] in spoken.LANGUAGES else ctx.flow.language
    try:
        names = spoken.words(item.kind, "" if value is None else value, lang, currency=item.currency)
        return [lib.get(ctx.flow, name, lang) for name in names]
    except spoken.NotSayable as exc:
        ctx.log.warning("not said: %s %s: %s", item.kind, item.var,
                        "(sensitive, masked)" if item.var in ctx.sensitive else exc)
    except KeyError as exc:  # a fragment not rendered: the flow's languages lack it (ivr check says so)
        ctx.log.warning("not said: %s %s: no audio for %s in %s", item.kind, item.var, exc, lang)
    return []


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel and wait (bounded) without swallowing our own cancellation (asyncio.wait never raises it)."""
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: the loser's error is not ours to raise


async def race(first: Coroutine[Any, Any, Any], second: Coroutine[Any, Any, Any]) -> int:
    """Run both; return 0 or 1 for the one that finished first, cancel the other (its errors propagate)."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                await _cancel(t)
    winner = 0 if tasks[0] in done else 1
    loser = tasks[1 - winner]
    if loser.done() and not loser.cancelled():
        loser.exception()  # both ended in one turn (a hang-up wakes both): its error is the winner's, retrieved
    tasks[winner].result()  # re-raise CallerHungUp and friends
    return winner


async def play(ctx: CallContext, prompts: Prompts, *, barge_in: bool) -> bool:
    """Play prompts; returns True when the caller interrupted them (or had already typed ahead)."""
    if not prompts:
        return False
    named = resolve_named(ctx, prompts)
    audio = [a for a, _ in named]
    names = recorded_names(named)
    if barge_in and ctx.call.has_input():
        await ctx.event("prompt.skipped", prompts=names, reason="type-ahead")
        return True
    # a read-back of a sensitive value: a call that narrates what it plays (the simulator) masks it
    hidden = any(MASK in n for n in names)
    if not barge_in:
        with sensitive_entry(ctx, hidden):
            await ctx.call.play(audio)
        await ctx.event("prompt.played", prompts=names, lang=ctx.lang, interrupted=False)
        return False
    with sensitive_entry(ctx, hidden):
        winner = await race(ctx.call.play(audio), ctx.call.input_pending())
    await ctx.event("prompt.played", prompts=names, lang=ctx.lang, interrupted=winner == 1)
    return winner == 1


async def ask(
    ctx: CallContext, prompts: Prompts, *, timeout: float, barge_in: bool, grammar: Grammar | None
) -> CallerInput | None:
    """Prompt, then wait for the first input; speech is recognised during the prompt too."""
    async with ctx.call.listen(grammar) as listening:
        if grammar is not None and listening is False and not ctx.told_speech_busy:
            # All speech slots are busy: say so once, rather than let the caller talk to a deaf menu.
            ctx.told_speech_busy = True
            await ctx.event("speech.unavailable", node=ctx.node)
            prompts = (PromptRef("speech_unavailable", Pos("", 0, 0)), *prompts)
        await play(ctx, prompts, barge_in=barge_in)
        got = await ctx.call.receive(timeout)
    if got is not None:
        await record_input(ctx, got)
    return got


@contextlib.contextmanager
def sensitive_entry(ctx: CallContext, on: bool) -> Iterator[None]:
    """While a sensitive entry is read (``on``), the caller's keys and words are recorded masked, and a call
    that echoes input (the simulator's ``mask_input``) masks its echo too."""
    if not on or ctx.masking_input:  # not sensitive, or masked already by an enclosing entry
        yield
        return
    hook = getattr(ctx.call, "mask_input", None)
    ctx.masking_input = True
    if callable(hook):
        hook(True)
    try:
        yield
    finally:
        ctx.masking_input = False
        if callable(hook):
            hook(False)


async def record_input(ctx: CallContext, got: CallerInput) -> None:
    if ctx.masking_input:
        if got.kind == "dtmf":
            await ctx.event("input.dtmf", digit=MASK, source=got.source, sensitive=True)
        else:
            await ctx.event("input.speech", text=MASK, confidence=got.confidence, source=got.source,
                            sensitive=True)  # not even its length: words are not digits
        return
    if got.kind == "dtmf":
        await ctx.event("input.dtmf", digit=got.value, source=got.source)
    else:
        await ctx.event("input.speech", text=got.value, confidence=got.confidence, source=got.source,
                        **(got.details or {}))


async def more_digits(ctx: CallContext, timeout: float) -> str | None:
    """The next key of an entry in progress, or None when the caller paused (inter-digit timeout)."""
    got = await ctx.call.receive(timeout, mid_entry=True)
    if got is None:
        return None
    await record_input(ctx, got)
    return got.value if got.kind == "dtmf" else None
