"""A call's whole life as one coroutine: route, walk nodes, record, end — whatever happens."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from ivr.engine.call import Call, Lookups
from ivr.engine.context import CallbackDesk, CallContext, NoSwitches, Outcome, Recorder, RecordingStore, Switches
from ivr.engine.steps import STEPS
from ivr.errors import CallerHungUp
from ivr.flows.model import FlowSet

log = logging.getLogger("ivr.engine")

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def header_variable(name: str) -> str:
    """``X-IVR-Queue-Entered`` → ``sip_x_ivr_queue_entered``: a header as a flow variable name."""
    return "sip_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def header_variables(headers: Mapping[str, str]) -> dict[str, str]:
    """The call's X- headers as ``sip_x_...`` variables (the first of a repeated header wins)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower().startswith("x-"):
            out.setdefault(header_variable(name), value.strip())
    return out


def builtin_variables(call: Call, flow_name: str, now: datetime, tz: str) -> dict[str, object]:
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo(tz))
    # A Call without headers (a test double) is a call that carried none.
    headers = header_variables(getattr(call, "headers", None) or {})
    return {
        **headers,
        "caller": call.caller,
        "dialed": call.dialed,
        "call_id": call.call_id,
        "flow": flow_name,
        "time": local.strftime("%H:%M"),
        "weekday": DAY_NAMES[local.weekday()],
        "date": local.date().isoformat(),
    }


async def run_call(
    call: Call,
    flows: FlowSet,
    rec: Recorder,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    switches: Switches | None = None,
    max_call_seconds: float = 3600.0,
    entry: str | None = None,
    callbacks: CallbackDesk | None = None,
    variables: dict[str, object] | None = None,
    recordings: RecordingStore | None = None,
    lookups: Lookups | None = None,
    carried: tuple[tuple[str, str], ...] = (),
    sensitive: frozenset[str] = frozenset(),
) -> Outcome:
    """Run one call on the flow set it started with (a reload meanwhile does not touch it).

    ``entry`` names the flow to start instead of routing by the dialed number (the simulator's choice).
    ``callbacks`` is virtual hold (the daemon's or the simulator's Desk); without it queue nodes transfer
    and record why no callback was offered. ``lookups`` serves ``http`` nodes (ivr.adapters.lookup).
    ``carried``: a callback leg's data for the agent, handed over by its transfers (``sensitive``: those
    names are masked wherever the call is recorded).
    """
    flow = flows.flows[entry] if entry else flows.route(call.dialed)
    ctx = CallContext(
        call=call,
        flows=flows,
        flow=flow,
        rec=rec,
        now=now,
        switches=switches or NoSwitches(),
        log=logging.LoggerAdapter(log, {"call_id": call.call_id, "flow": f"{flow.name}@{flows.version}"}),
        callbacks=callbacks,
        recordings=recordings,
        lookups=lookups,
        carried=carried,
    )
    ctx.sensitive.update(sensitive)
    ctx.variables.update(flow.variables)
    for f in flows.flows.values():  # sub-flows' declared variables start with their defaults too
        for k, v in f.variables.items():
            ctx.variables.setdefault(k, v)
    ctx.variables.update(builtin_variables(call, flow.name, now(), flow.timezone))
    ctx.variables.update(variables or {})  # set by who started the call (the callback dialer: queue, callback_id)
    ctx.variables["lang"] = flow.language
    ctx.entry = flow.name
    await rec.begin(call, flow, flows.version)
    outcome = Outcome("error")
    try:
        async with asyncio.timeout(max_call_seconds):
            name: str | None = flow.start
            while name is not None:
                node = ctx.flow.nodes[name]
                ctx.node = name
                ctx.node_failed = False
                label = ctx.label(name)
                ctx.path.append(label)
                await ctx.event("node.entered", node=name, kind=node.kind)
                name = await STEPS[type(node.action)](ctx, node, node.action)
                if node.resolved and not ctx.node_failed and ctx.resolved is None:
                    ctx.resolved = label
                    await ctx.rec.event("call.resolved", node=label, flow=ctx.entry, flow_version=flows.version)
        outcome = ctx.outcome or Outcome("hangup", "end of flow")
        if outcome.kind not in ("transferred", "queued"):
            await call.hangup()
    except CallerHungUp as exc:
        outcome = Outcome(exc.outcome, ctx.label(ctx.node))
    except TimeoutError:
        outcome = Outcome("max_length", f"{max_call_seconds:g} s")
        await _hangup_quietly(call)
    except asyncio.CancelledError:
        outcome = Outcome("shutdown", ctx.label(ctx.node))
        raise
    except Exception as exc:
        ctx.log.exception("call failed in node %s", ctx.node)
        outcome = Outcome("error", f"{ctx.label(ctx.node)}: {type(exc).__name__}: {exc}")
        await _hangup_quietly(call)
    finally:
        outcome = final_outcome(ctx, outcome)
        # Shielded: a shutdown cancels the call, but its record is still committed.
        await asyncio.shield(rec.end(outcome, ctx.path, ctx.recorded_variables()))
        ctx.log.info("call ended outcome=%s detail=%s path=%s", outcome.kind, outcome.detail,
                     ">".join(ctx.path))
    return outcome


#: outcomes a failed hand-over turns into ``transfer_failed``: the call ended in the IVR after it, whether the
#: flow said goodbye, took its failure path to the end, or the caller hung up on the apology
AFTER_FAILED_TRANSFER = ("hangup", "caller_hangup", "failed")


def final_outcome(ctx: CallContext, outcome: Outcome) -> Outcome:
    """The call's recorded outcome: a failed transfer is its own outcome (never counted as contained), and
    ``resolved`` says whether a ``resolved: true`` node completed."""
    if ctx.transfer_failed is not None and outcome.kind in AFTER_FAILED_TRANSFER:
        then = f"{outcome.kind} {outcome.detail}".strip()
        outcome = Outcome("transfer_failed", f"{ctx.transfer_failed} (then {then})")
    if ctx.resolved is not None:
        outcome = Outcome(outcome.kind, outcome.detail, resolved=True)
    return outcome


async def _hangup_quietly(call: Call) -> None:
    try:
        await call.hangup()
    except Exception:  # the caller may already be gone; the record matters more
        log.debug("hangup after failure failed", exc_info=True)
