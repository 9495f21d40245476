"""One coroutine per node kind. Each returns the name of the next node, or None when the call ends
(having set ``ctx.outcome``)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from ivr.callbacks.desk import CANCELLABLE
from ivr.engine import offer, turns
from ivr.engine.call import CallerInput, Grammar, LookupRequest, LookupResult, TransferProgress, TransferTarget
from ivr.engine.conditions import evaluate, interpolate
from ivr.engine.context import CallContext, Outcome
from ivr.engine.privacy import mask, refers_to
from ivr.flows import jsonpath
from ivr.flows.arith import Arithmetic, NotComputable
from ivr.flows.audio import tone
from ivr.flows.hours import HoursState, decide
from ivr.flows.loader import normalize_words
from ivr.flows.model import (
    Branch,
    CallbackCancel,
    CallFlow,
    Collect,
    DigitsRef,
    Goto,
    Hangup,
    Hours,
    Http,
    Menu,
    MenuOption,
    Node,
    Play,
    Pos,
    QueueWithCallback,
    Record,
    Return,
    SetVars,
    Split,
    Survey,
    Transfer,
    queue_fact,
)

Step = Callable[[CallContext, Node, Any], Awaitable[str | None]]

SPOKEN_DIGITS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "star": "*", "pound": "#", "hash": "#",
}


async def fail(ctx: CallContext, node: Node, why: str) -> str | None:
    """Retries used up or an action refused: to the node's failure target, else end the call."""
    ctx.node_failed = True
    await ctx.event("node.failed", node=node.name, reason=why, failure=node.failure)
    if node.failure:
        return node.failure
    ctx.outcome = Outcome("failed", f"{ctx.label(node.name)}: {why}")
    return None


def spoken_to_digits(text: str) -> str:
    """"five five five one" or "5551" → "5551"; anything else is dropped."""
    out = []
    for word in normalize_words(text).split():
        if word.isdigit():
            out.append(word)
        elif word in SPOKEN_DIGITS:
            out.append(SPOKEN_DIGITS[word])
    return "".join(out)


async def step_play(ctx: CallContext, node: Node, a: Play) -> str | None:
    await turns.play(ctx, a.prompt, barge_in=a.barge_in)
    return node.next


async def _match_menu(ctx: CallContext, menu: Menu, got: CallerInput) -> MenuOption | None:
    if got.kind == "speech":
        if got.confidence is not None and got.confidence < menu.min_confidence:
            return None
        said = f" {normalize_words(got.value)} "
        for o in menu.options:
            if any(f" {normalize_words(w)} " in said for w in o.keywords):
                return o
        return None
    keys = {o.key: o for o in menu.options if o.key}
    entry = got.value
    # Multi-key options: keep reading while a longer key could still match (FreeSWITCH digit-len).
    while any(k.startswith(entry) and k != entry for k in keys) and len(entry) < menu.key_length:
        more = await turns.more_digits(ctx, menu.inter_digit_timeout)
        if more is None:
            break
        entry += more
    return keys.get(entry)


def _enter_menu(ctx: CallContext, node: Node) -> str | None:
    """Note the menu on the trail (back to an earlier one cuts the trail there, like a browser's history);
    the menu before it in the same flow, where ``back`` goes."""
    here = (ctx.flow.name, node.name)
    if here in ctx.menu_trail:
        del ctx.menu_trail[ctx.menu_trail.index(here) + 1:]
    else:
        ctx.menu_trail.append(here)
    before = ctx.menu_trail[-2] if len(ctx.menu_trail) > 1 else None
    return before[1] if before is not None and before[0] == ctx.flow.name else None


async def step_menu(ctx: CallContext, node: Node, m: Menu) -> str | None:
    phrases = tuple(w for o in m.options for w in o.keywords)
    grammar = Grammar(phrases, lang=ctx.flow.language, settings=m.speech_settings) if m.speech else None
    no_input = no_match = 0
    prompt = m.prompt
    back = _enter_menu(ctx, node)
    global_keys = dict(m.global_keys)
    while True:
        got = await turns.ask(ctx, prompt, timeout=m.timeout, barge_in=m.barge_in, grammar=grammar)
        if got is None:
            no_input += 1
            await ctx.event("menu.no_input", node=node.name, count=no_input, max=m.max_no_input)
            if no_input >= m.max_no_input:
                return await fail(ctx, node, f"no input {no_input} times")
            prompt = m.no_input + m.reprompt
            continue
        option = await _match_menu(ctx, m, got)
        if option is not None:
            await ctx.event("menu.choice", node=node.name, key=option.key, via=got.kind,
                            target=option.target)
            return option.target
        action = global_keys.get(got.value) if got.kind == "dtmf" else None
        if action == "repeat":  # asked for, not a mistake: no count, the full greeting again
            await ctx.event("menu.repeat", node=node.name, key=got.value)
            prompt = m.prompt
            continue
        target = back if action == "back" else action
        if target is not None:
            await ctx.event("menu.choice", node=node.name, key=got.value, via=got.kind, target=target,
                            global_key=action)
            return target
        no_match += 1
        await ctx.event("menu.no_match", node=node.name, input=got.value, count=no_match,
                        max=m.max_no_match)
        if no_match >= m.max_no_match:
            return await fail(ctx, node, f"no match {no_match} times")
        prompt = m.no_match + m.reprompt


async def _read_entry(ctx: CallContext, c: Collect, first: CallerInput) -> str:
    if first.kind == "speech":
        return spoken_to_digits(first.value)
    entry = ""
    key: str | None = first.value
    while key is not None:
        if c.terminator and key == c.terminator:
            break
        entry += key
        if len(entry) >= c.max_digits:
            break
        key = await turns.more_digits(ctx, c.inter_digit_timeout)
    return entry


def _valid(c: Collect, entry: str) -> bool:
    if not (c.min_digits <= len(entry) <= c.max_digits):
        return False
    return c.pattern is None or re.fullmatch(c.pattern, entry) is not None


async def step_collect(ctx: CallContext, node: Node, c: Collect) -> str | None:
    grammar = Grammar(digits=True, lang=ctx.flow.language, settings=c.speech_settings) if c.speech else None
    if c.sensitive:  # before the first key: the variable is masked wherever it is recorded from now on
        ctx.sensitive.add(c.into)
    shown = mask if c.sensitive else str
    attempts = 0
    prompt = c.prompt
    while attempts < c.max_attempts:
        with turns.sensitive_entry(ctx, c.sensitive):
            got = await turns.ask(ctx, prompt, timeout=c.timeout, barge_in=c.barge_in, grammar=grammar)
            entry = None if got is None else await _read_entry(ctx, c, got)
        if got is None or entry is None:
            attempts += 1
            await ctx.event("collect.no_input", node=node.name, count=attempts, max=c.max_attempts)
            prompt = c.no_input + c.prompt
            continue
        if not _valid(c, entry):
            attempts += 1
            await ctx.event("collect.invalid", node=node.name, entry=shown(entry), count=attempts,
                            max=c.max_attempts)
            prompt = c.invalid + c.prompt
            continue
        if c.confirm is not None:
            ctx.variables[c.into] = entry
            answer = await turns.ask(ctx, c.confirm.before + (_digits_ref(c),) + c.confirm.after,
                                     timeout=c.timeout, barge_in=True, grammar=None)
            confirmed = answer is not None and answer.value == c.confirm.yes
            await ctx.event("collect.confirm", node=node.name, entry=shown(entry), confirmed=confirmed)
            if not confirmed:
                ctx.variables.pop(c.into, None)
                attempts += 1
                prompt = c.prompt
                continue
        ctx.variables[c.into] = entry
        if c.sensitive:
            await ctx.event("collect.value", node=node.name, var=c.into, value=mask(entry), sensitive=True)
        else:
            await ctx.event("collect.value", node=node.name, var=c.into, value=entry)
        return node.next
    return await fail(ctx, node, f"no valid entry in {attempts} attempts")


def _digits_ref(c: Collect) -> DigitsRef:
    return DigitsRef(c.into, Pos("", 0, 0))


async def step_branch(ctx: CallContext, node: Node, b: Branch) -> str | None:
    variables = LiveVariables(ctx)
    for i, (cond, target) in enumerate(b.cases):
        if evaluate(cond, variables):
            await ctx.event("branch.taken", node=node.name, case=i + 1, target=target, **variables.seen())
            return target
    await ctx.event("branch.taken", node=node.name, case=None, target=node.next, **variables.seen())
    return node.next


class LiveVariables(Mapping[str, object]):
    """The call's variables, and the live queue facts (``queue.support.wait`` …) read from the callback desk
    when a condition asks for them, each once per branch; what was read goes into the event (``live``), so
    a routing decision on the queue's state can be explained afterwards."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.read: dict[str, int | None] = {}

    def __getitem__(self, name: str) -> object:
        fact = queue_fact(name)
        if fact is None:
            return self.ctx.variables[name]
        if name not in self.read:
            desk = self.ctx.callbacks
            self.read[name] = desk.queue_fact(*fact) if desk is not None else None
        value = self.read[name]
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.ctx.variables)

    def __len__(self) -> int:
        return len(self.ctx.variables)

    def seen(self) -> dict[str, object]:
        return {"live": dict(self.read)} if self.read else {}


BEEP = tone("beep")


async def step_record(ctx: CallContext, node: Node, r: Record) -> str | None:
    """Prompt, tone, the caller's message until the end key, silence, the limit or a hang-up; kept on disk
    (``recording.saved``) before the flow goes on. Nothing said, or nowhere to keep it: the failure target."""
    await turns.play(ctx, r.prompt, barge_in=False)
    if r.beep:
        await ctx.call.play([BEEP])
    took = await ctx.call.record(r.max_seconds, r.end_keys, r.silence_seconds)
    if not took.pcm:
        await ctx.event("recording.empty", node=node.name, ended=took.ended)
        return await fail(ctx, node, f"nothing recorded ({took.ended})")
    if ctx.recordings is None:
        await ctx.event("recording.empty", node=node.name, ended=took.ended, reason="no recording store")
        return await fail(ctx, node, "no recording store")
    saved = await ctx.recordings.save(ctx.call.call_id, node.name, took.pcm)
    ctx.variables[r.into] = saved.id
    if saved.url:
        ctx.variables[f"{r.into}_url"] = saved.url  # for the agent: data: [message_url]
    await ctx.event("recording.saved", node=node.name, recording_id=saved.id, file=saved.file,
                    seconds=round(saved.seconds, 2), ended=took.ended, **({"url": saved.url} if saved.url else {}))
    return node.next  # after a hang-up the next prompt ends the call, as any hang-up does


async def step_split(ctx: CallContext, node: Node, s: Split) -> str | None:
    """One variant per caller, the same on every call (their caller ID's digits); a withheld caller ID
    falls back to the call, so such callers are spread but not kept in one variant."""
    digits = "".join(ch for ch in ctx.call.caller if ch.isdigit())
    basis, key = ("caller", digits) if len(digits) >= 3 else ("call", ctx.call.call_id)
    variant, target = s.choose(key)
    ctx.variables[s.variable] = variant
    await ctx.event("experiment.assigned", node=node.name, experiment=s.experiment, variant=variant,
                    basis=basis, target=target)
    return target


async def step_hours(ctx: CallContext, node: Node, h: Hours) -> str | None:
    schedule = ctx.flows.schedules[h.schedule]
    decision = decide(schedule, ctx.now(), emergency_closed=await ctx.switches.emergency_closed(h.schedule))
    ctx.variables["hours_state"] = decision.state.value
    await ctx.event("hours.decided", node=node.name, schedule=h.schedule, state=decision.state.value,
                    reason=decision.reason)
    if decision.state is HoursState.OPEN:
        return h.open
    if decision.state is HoursState.HOLIDAY and h.holiday:
        return h.holiday
    return h.closed


async def step_set(ctx: CallContext, node: Node, s: SetVars) -> str | None:
    errors: dict[str, str] = {}
    for name, value in s.values:
        # a copy of a secret, or a sum with one, is a secret
        if (name in s.sensitive or refers_to(value, ctx.sensitive)
                or (isinstance(value, Arithmetic) and ctx.sensitive.intersection(value.variables))):
            ctx.sensitive.add(name)
        if isinstance(value, Arithmetic):
            try:
                ctx.variables[name] = value.evaluate(ctx.variables)
            except NotComputable as exc:  # the call goes on; the flow can branch on an empty value
                ctx.variables[name] = ""
                why = "(sensitive, masked)" if name in ctx.sensitive else str(exc)  # the reason may quote it
                errors[name] = why
                ctx.log.warning("set %s: %s; it is now empty (node %s)", name, why, node.name)
        else:
            ctx.variables[name] = interpolate(value, ctx.variables)
    hidden = sorted(k for k, _ in s.values if k in ctx.sensitive)
    await ctx.event("vars.set", node=node.name,
                    values={k: ctx.recordable(k, ctx.variables[k]) for k, _ in s.values},
                    **({"errors": errors} if errors else {}), **({"sensitive": hidden} if hidden else {}))
    return node.next


async def step_goto(ctx: CallContext, node: Node, g: Goto) -> str | None:
    return g.target


async def step_call(ctx: CallContext, node: Node, c: CallFlow) -> str | None:
    sub = ctx.flows.flows[c.flow]
    await ctx.event("subflow.enter", node=node.name, to=sub.name)
    ctx.stack.append((ctx.flow, node.next))
    ctx.flow = sub
    return sub.start


async def step_return(ctx: CallContext, node: Node, r: Return) -> str | None:
    if not ctx.stack:  # a sub-flow reached directly by a number: returning ends the call
        ctx.outcome = Outcome("hangup", "return from top-level flow")
        return None
    parent, after = ctx.stack[-1]
    # named before the pop: this node in the sub-flow, ``next`` in the flow returned to
    nxt = after if after is None or len(ctx.stack) == 1 else f"{parent.name}.{after}"
    await ctx.event("subflow.return", node=node.name, to=parent.name, next=nxt)
    ctx.flow, after = ctx.stack.pop()
    return after


def _progress(ctx: CallContext, node: Node, target: TransferTarget, shown: str | None = None) -> TransferProgress:
    """Commits ``transfer.progress`` before the transfer goes on: the durable proof that the caller reached the
    PBX or an agent, which reconciliation after a crash relies on. ``shown``: the destination as recorded
    (masked when it came from a sensitive variable)."""

    async def progress(stage: str, data: dict[str, Any]) -> None:
        await ctx.event("transfer.progress", node=node.name, stage=stage, kind=target.kind,
                        destination=target.destination if shown is None else shown, **data)

    return progress


MAX_DATA_VALUE = 256
"""Longest value handed to the PBX (a SIP header, an AMI channel variable): enough for ids and amounts."""


def agent_data(ctx: CallContext, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``data: [account]`` → (name, value) for the PBX; a variable that is not set is left out. Line breaks
    and control characters are dropped: a value must not end a SIP header or an AMI line early."""
    out = []
    for name in names:
        value = ctx.variables.get(name)
        if value is None or value == "":
            continue
        text = "".join(c for c in str(value) if c.isprintable())[:MAX_DATA_VALUE]
        out.append((name, text))
    return tuple(out)


def handover_data(ctx: CallContext, names: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
    """The node's ``data:`` (``agent_data``) and what a callback leg carried from the call that asked for it
    (``ctx.carried``; the node's own value wins), with the names of the sensitive ones."""
    data = agent_data(ctx, names)
    own = {k for k, _ in data}
    data += tuple((k, v) for k, v in ctx.carried if k not in own)
    return data, frozenset(k for k, _ in data if k in ctx.sensitive)


async def step_transfer(ctx: CallContext, node: Node, t: Transfer) -> str | None:
    await turns.play(ctx, t.prompt, barge_in=False)
    # "${queue}" and the like: the callback flow transfers to the queue its request came from
    template = t.queue or t.extension or ""
    dest = str(interpolate(template, ctx.variables))
    data, hidden = handover_data(ctx, t.data)
    target = TransferTarget("queue" if t.queue else "extension", dest, data, hidden)
    shown = mask(dest) if refers_to(template, ctx.sensitive) else dest  # where the call went, as recorded
    result = await ctx.call.transfer(target, _progress(ctx, node, target, shown))
    await ctx.event("transfer", node=node.name, kind=target.kind, destination=shown,
                    ok=result.ok, detail=result.detail, data=[k for k, _ in data])
    if result.ok:
        ctx.transfer_failed = None
        ctx.outcome = Outcome("transferred", f"{target.kind} {shown}")
        return None
    ctx.transfer_failed = f"{target.kind} {shown}"
    return await fail(ctx, node, f"transfer refused: {result.detail}")


async def step_queue(ctx: CallContext, node: Node, q: QueueWithCallback) -> str | None:
    name = str(interpolate(q.name, ctx.variables)).strip()  # "${sip_x_ivr_queue}": the queue a caller left
    if not name:
        return await fail(ctx, node, f"no queue name: {q.name!r} is empty")
    q = dataclasses.replace(q, name=name)
    arrival = await offer.arrival_of(ctx, node, q)  # the callback keeps the place in line this earned
    data, hidden = handover_data(ctx, q.data)
    if await offer.offer_callback(ctx, node, q, arrival, data, hidden):
        return None  # filed and confirmed (with the data for the agent): the call ends with outcome "callback"
    await turns.play(ctx, q.prompt, barge_in=False)
    target = TransferTarget("queue", q.name, data, hidden)
    result = await ctx.call.transfer(target, _progress(ctx, node, target))
    await ctx.event("transfer", node=node.name, kind="queue", destination=q.name, ok=result.ok,
                    detail=result.detail, data=[k for k, _ in data])
    if result.ok:
        ctx.transfer_failed = None
        ctx.outcome = Outcome("queued", q.name)
        await offer.cancel_on_reaching_queue(ctx, node, q)
        return None
    ctx.transfer_failed = f"queue {q.name}"
    return await fail(ctx, node, f"queue refused: {result.detail}")


async def step_callback_cancel(ctx: CallContext, node: Node, c: CallbackCancel) -> str | None:
    """The caller cancels the callback(s) waiting for their caller ID: next when cancelled or kept, failure
    (else next) when none is waiting."""
    desk = ctx.callbacks
    if desk is None:
        return await fail(ctx, node, "callbacks are not available")
    found = await desk.pending(ctx.call.caller, c.queue) if ctx.call.caller else []
    waiting = [r for r in found if r.state in CANCELLABLE]
    if not waiting:
        await ctx.event("callback.cancel.none", node=node.name, queue=c.queue,
                        in_progress=[r.id for r in found])
        await turns.play(ctx, c.none, barge_in=False)
        return node.failure or node.next
    if c.ask:
        got = await turns.ask(ctx, c.ask, timeout=c.timeout, barge_in=True, grammar=None)
        if got is None or got.value != "1":
            await ctx.event("callback.cancel.kept", node=node.name, request_ids=[r.id for r in waiting],
                            key=got.value if got else None)
            await turns.play(ctx, c.kept, barge_in=False)
            return node.next
    cancelled = [r.id for r in waiting if await desk.cancel(r.id, "cancelled by the caller")]
    await ctx.event("callback.cancel.done", node=node.name, request_ids=cancelled,
                    missed=[r.id for r in waiting if r.id not in cancelled])
    if not cancelled:  # each began dialling meanwhile
        return node.failure or node.next
    await turns.play(ctx, c.done, barge_in=False)
    return node.next


async def step_survey(ctx: CallContext, node: Node, s: Survey) -> str | None:
    prompt = s.prompt
    for attempt in range(1, s.max_attempts + 1):
        got = await turns.ask(ctx, prompt, timeout=s.timeout, barge_in=True, grammar=None)
        if got is None:
            await ctx.event("survey.no_input", node=node.name, count=attempt)
            prompt = s.no_input + s.prompt
            continue
        entry = spoken_to_digits(got.value) if got.kind == "speech" else got.value
        if s.high >= 10 and entry == "1":  # NPS 10 is two keys; 1 alone after a pause is 1
            more = await turns.more_digits(ctx, 1.5)
            if more is not None and more != "#":
                entry += more
        if entry.isdigit() and s.low <= int(entry) <= s.high:
            ctx.variables[s.into] = int(entry)
            await ctx.event("survey.answer", node=node.name, scale=s.scale, var=s.into, value=int(entry))
            await turns.play(ctx, s.thanks, barge_in=False)
            return node.next
        await ctx.event("survey.invalid", node=node.name, entry=entry, count=attempt)
        prompt = s.invalid + s.prompt
    await ctx.event("survey.skipped", node=node.name, scale=s.scale)
    return node.next  # a survey never traps a caller: no answer simply goes on


_VAR = re.compile(r"\$\{([^}]*)\}")


def fill_url(template: str, variables: dict[str, object]) -> str:
    """``/accounts/${account}`` with each value URL-encoded (a ``/`` or ``?`` in a value stays in its place)."""
    return _VAR.sub(lambda m: quote(str(variables.get(m.group(1), "")), safe=""), template)


def fill_body(template: object, variables: dict[str, object]) -> object:
    """A JSON body template: ``"${n}"`` alone keeps the variable's own type (a number stays a number)."""
    if isinstance(template, str):
        whole = _VAR.fullmatch(template)
        if whole is not None:
            return variables.get(whole.group(1))
        return interpolate(template, variables)
    if isinstance(template, dict):
        return {k: fill_body(v, variables) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_body(v, variables) for v in template]
    return template


async def step_http(ctx: CallContext, node: Node, h: Http) -> str | None:
    """A data look-up: next with the mapped variables set, ``on_timeout`` when it ran out of time, else the
    node's failure. The caller hears ``comfort`` once if the answer takes longer than ``comfort_after``."""
    request = LookupRequest(h.lookup, h.method, fill_url(h.url, ctx.variables), fill_body(h.body, ctx.variables),
                            h.timeout)
    comforted = False
    started = time.monotonic()
    if ctx.lookups is None:
        result = LookupResult("not_configured", detail="this call has no look-up service")
    else:
        task = asyncio.ensure_future(ctx.lookups.fetch(request))
        try:
            if h.comfort:
                done, _ = await asyncio.wait({task}, timeout=h.comfort_after)
                if not done:
                    comforted = True
                    await turns.play(ctx, h.comfort, barge_in=False)
            result = await task
        finally:
            if not task.done():  # the caller hung up meanwhile
                task.cancel()
    values: dict[str, object] = {}
    missing = ""
    if result.outcome == "ok":
        for var, expr, steps in h.into:
            try:
                values[var] = jsonpath.find(result.body, steps)
            except KeyError as exc:
                missing = f"the answer has no {exc.args[0]} (for {var}: {expr})"
                break
    await ctx.event("http.lookup", node=node.name, lookup=h.lookup, method=h.method, url=h.url,
                    host=result.host, outcome=result.outcome if not missing else "bad_response",
                    status=result.status, attempts=result.attempts,
                    latency_ms=round((result.seconds or time.monotonic() - started) * 1000),
                    comfort=comforted, vars=sorted(values) if not missing else [])
    if result.outcome == "ok" and not missing:
        if h.sensitive:  # before they are set: masked wherever they are recorded from now on
            ctx.sensitive.update(values)
        ctx.variables.update(values)
        return node.next
    if result.outcome == "timeout" and h.on_timeout:
        ctx.node_failed = True
        await ctx.event("node.failed", node=node.name, reason=f"look-up timeout: {result.detail}",
                        failure=h.on_timeout)
        return h.on_timeout
    return await fail(ctx, node, missing or f"look-up {result.outcome}: {result.detail}".rstrip(": "))


async def step_hangup(ctx: CallContext, node: Node, h: Hangup) -> str | None:
    await turns.play(ctx, h.prompt, barge_in=False)
    ctx.outcome = Outcome("hangup", ctx.label(node.name))
    return None


STEPS: dict[type, Step] = {
    Play: step_play,
    Menu: step_menu,
    Collect: step_collect,
    Branch: step_branch,
    Hours: step_hours,
    SetVars: step_set,
    Goto: step_goto,
    CallFlow: step_call,
    Return: step_return,
    Transfer: step_transfer,
    QueueWithCallback: step_queue,
    Survey: step_survey,
    Hangup: step_hangup,
    CallbackCancel: step_callback_cancel,
    Http: step_http,
    Split: step_split,
    Record: step_record,
}
