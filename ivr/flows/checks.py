"""Whole-set checks that need every file loaded: references, routing, reachability, loops, sub-flow cycles.

Each returns Problems; nothing here raises. Messages name the thing and, where a typo is likely, suggest the
closest existing name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from ivr.errors import Problem
from ivr.flows.loader import Loaded, Ref
from ivr.flows.model import (
    QUEUE_FACTS,
    QUEUE_VAR_PREFIX,
    TERMINAL,
    Branch,
    CallbackCancel,
    CallFlow,
    Collect,
    Flow,
    Goto,
    Hours,
    Http,
    Menu,
    Node,
    Play,
    Pos,
    Record,
    SetVars,
    Split,
    Survey,
    is_pattern,
    queue_fact,
)
from ivr.flows.prompts import BUILTIN_PROMPTS

BUILTIN_VARS = ("caller", "dialed", "lang", "time", "weekday", "date", "call_id", "flow", "hours_state")
SIP_NAME = r"[A-Za-z][A-Za-z0-9._-]*"
"""A dialed "number" that is a name (a SIP user part), e.g. the PBX's ``callback-request``."""
HEADER_VAR_PREFIX = "sip_x_"
"""``sip_x_ivr_queue`` and the like: the INVITE's X- headers (empty when a call has no such header)."""
NEEDS_NEXT = (Play, Collect, SetVars, CallFlow, Survey, Branch, CallbackCancel, Record, Http)


def _p(pos: Pos, message: str) -> Problem:
    return Problem(pos.file, pos.line, pos.column, message)


def _suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check(loaded: Loaded) -> list[Problem]:
    problems: list[Problem] = []
    problems += check_refs(loaded)
    problems += check_unused_prompts(loaded)
    problems += check_routing(loaded)
    dangling = {r.flow for r in loaded.refs if r.kind == "node" and r.flow in loaded.flows
                and r.name not in loaded.flows[r.flow].nodes} | {f for f, _ in loaded.unbuilt}
    for flow in loaded.flows.values():
        # A goto to a missing node cuts the graph: what looks unreachable or stuck may be fine once it is fixed.
        problems += check_graph(flow, paths=flow.name not in dangling)
    problems += check_subflow_cycles(loaded)
    return problems


def known_vars(loaded: Loaded) -> set[str]:
    names = set(BUILTIN_VARS)
    for flow in loaded.flows.values():
        names |= set(flow.variables)
        for node in flow.nodes.values():
            a = node.action
            if isinstance(a, Collect | Survey | Record):
                names.add(a.into)
            if isinstance(a, Record):
                names.add(f"{a.into}_url")
            elif isinstance(a, SetVars):
                names |= {k for k, _ in a.values}
            elif isinstance(a, Http):
                names |= {var for var, _, _ in a.into}
            elif isinstance(a, Split):
                names.add(a.variable)
    return names


def check_refs(loaded: Loaded) -> list[Problem]:
    problems: list[Problem] = []
    variables = known_vars(loaded)
    for ref in loaded.refs:
        flow = loaded.flows.get(ref.flow or "")
        if ref.kind == "node":
            if flow is None or (flow.name, ref.name) in loaded.unbuilt:
                continue
            if ref.name not in flow.nodes:
                hint = _suggest(ref.name, flow.nodes)
                if not hint and ref.name in loaded.flows and ref.role != "start":
                    hint = f" ('{ref.name}' is a flow: to run it, go to a node with call: {ref.name} and next:)"
                elif not hint and len(flow.nodes) <= 12:
                    hint = f" (this flow's nodes: {', '.join(sorted(flow.nodes))})"
                problems.append(_p(ref.pos, f"unknown node '{ref.name}'{hint}"))
        elif ref.kind == "prompt":
            if flow is None:
                continue
            if ref.name not in flow.prompts and ref.name not in BUILTIN_PROMPTS:
                choices = [*flow.prompts, *BUILTIN_PROMPTS]
                hint = _suggest(ref.name, choices) or " (define it under prompts:)"
                problems.append(_p(ref.pos, f"unknown prompt '{ref.name}'{hint}"))
            else:
                problems += _builtin_languages(flow, ref)
        elif loaded.unread and ref.kind in ("flow", "schedule", "var"):
            continue  # it may be defined in the file that did not read; that file's error is reported
        elif ref.kind == "flow":
            if ref.name not in loaded.flows and ref.name not in loaded.broken_flows:
                hint = _suggest(ref.name, loaded.flows) or f" (no file says flow: {ref.name}; flows: " \
                    f"{', '.join(sorted(loaded.flows))})"
                problems.append(_p(ref.pos, f"unknown flow '{ref.name}'{hint}"))
        elif ref.kind == "schedule":
            if ref.name not in loaded.schedules:
                known = ", ".join(sorted(loaded.schedules)) or "none"
                sug = _suggest(ref.name, loaded.schedules) or \
                    f" (define it under hours: in any flow file; schedules: {known})"
                problems.append(_p(ref.pos, f"unknown hours schedule '{ref.name}'{sug}"))
        elif ref.kind == "var" and ref.name.startswith(QUEUE_VAR_PREFIX) and queue_fact(ref.name) is None:
            problems.append(_p(ref.pos, f"unknown queue fact '{ref.name}': write queue.NAME.FACT, FACT one of "
                               f"{', '.join(QUEUE_FACTS)} (e.g. queue.support.wait)"))
        elif ref.kind == "var" and ref.name not in variables and not ref.name.startswith(
                (HEADER_VAR_PREFIX, QUEUE_VAR_PREFIX)):
            problems.append(_p(ref.pos, f"unknown variable '{ref.name}'{_suggest(ref.name, variables)}; "
                               "it is never set (declare it under variables:)"))
    return problems


def check_unused_prompts(loaded: Loaded) -> list[Problem]:
    """A prompt no node plays is a warning: usually a typo'd reference elsewhere, or a leftover. Overrides
    of built-in prompts count as used (the engine plays them itself: digits, numbers, callbacks)."""
    used = {(ref.flow, ref.name) for ref in loaded.refs if ref.kind == "prompt"}
    unsure = {ref.flow for ref in loaded.refs if ref.kind == "prompt" and ref.flow in loaded.flows
              and ref.name not in loaded.flows[ref.flow].prompts and ref.name not in BUILTIN_PROMPTS}
    problems = [Problem(p.pos.file, p.pos.line, p.pos.column,
                        f"prompt '{name}' is never played (no node uses it): use it or remove it", warning=True)
                for flow in loaded.flows.values() for name, p in flow.prompts.items()
                if (flow.name, name) not in used and name not in BUILTIN_PROMPTS and flow.name not in unsure
                and p.pos.file == flow.file]  # a shared prompt is not every flow's leftover
    if not unsure and not loaded.unread:
        played = {name for _, name in used}
        problems += [Problem(p.pos.file, p.pos.line, p.pos.column, f"shared prompt '{name}' is never played "
                             "(no flow uses it): use it or remove it", warning=True)
                     for name, p in loaded.shared_prompts.items() if name not in played]
    return problems


def _builtin_languages(flow: Flow, ref: Ref) -> list[Problem]:
    """A built-in prompt without a flow override must have text in every language the flow speaks."""
    if ref.name in flow.prompts:
        return []
    builtin = BUILTIN_PROMPTS[ref.name]
    missing = [lang for lang in flow.languages if builtin.text_for(lang) is None]
    if not missing:
        return []
    return [_p(ref.pos, f"built-in prompt '{ref.name}' has no text in {', '.join(missing)}; "
               f"define prompts: {ref.name}: with say: for those languages")]


def check_routing(loaded: Loaded) -> list[Problem]:
    problems: list[Problem] = []
    owner: dict[str, Flow] = {}
    for flow in loaded.flows.values():
        for number in flow.numbers:
            if number in owner:
                first = owner[number]
                problems.append(_p(flow.pos, f"number '{number}' routes to both '{first.name}' "
                                   f"({first.file}:{first.pos.line}) and '{flow.name}'"))
            owner[number] = flow
            # Digits as dialed, or a name a PBX puts in the request URI (sip:callback-request@box).
            if not is_pattern(number) and not (all(c.isdigit() or c in "+*#" for c in number)
                                               or re.fullmatch(SIP_NAME, number)):
                problems.append(_p(flow.pos, f"number '{number}' has characters that are not dialable "
                                   "(digits, + * #, or a SIP name such as callback-request)"))
    defaults = [f for f in loaded.flows.values() if f.default]
    if loaded.flows and not defaults and not loaded.broken_flows and not loaded.unread:
        first = min(loaded.flows.values(), key=lambda f: f.file)
        problems.append(_p(first.pos, "no flow is the default (set default: true on the flow that takes "
                           "calls to unlisted numbers)"))
    for extra in defaults[1:]:
        problems.append(_p(extra.pos, f"flow '{extra.name}' and flow '{defaults[0].name}' are both default"))
    return problems


def _exits(node: Node) -> bool:
    """Ends the call or leaves the flow: an exit action, or a node whose retries run out into a hang-up."""
    if isinstance(node.action, TERMINAL):
        return True
    return isinstance(node.action, Menu | Collect | Survey) and node.failure is None


def check_graph(flow: Flow, *, paths: bool = True) -> list[Problem]:
    """``paths``: also reachability and loops (not when an edge points nowhere: they would be guesses)."""
    problems: list[Problem] = []
    nodes = flow.nodes
    for node in nodes.values():
        if isinstance(node.action, NEEDS_NEXT) and node.next is None:
            what = "the else case" if isinstance(node.action, Branch) else "where the call goes after it"
            problems.append(_p(node.pos, f"node '{node.name}' ({node.kind}) needs next: ({what})"))
    if not paths:
        return problems
    succ = {n.name: [t for _, t in n.edges() if t in nodes] for n in nodes.values()}
    # Reachability from start.
    seen: set[str] = set()
    todo = [flow.start] if flow.start in nodes else []
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo += succ[n]
    for node in nodes.values():
        if node.name not in seen and flow.start in nodes:
            problems.append(_p(node.pos, f"node '{node.name}' is never reached from start '{flow.start}'"))
    # Which nodes can reach an exit (hang-up, transfer, queue, return)?
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for n, ts in succ.items():
        for t in ts:
            pred[t].append(n)
    can_exit = {n.name for n in nodes.values() if _exits(n)}
    todo = list(can_exit)
    while todo:
        n = todo.pop()
        for p in pred[n]:
            if p not in can_exit:
                can_exit.add(p)
                todo.append(p)
    stuck = [n for n in nodes.values() if n.name in seen and n.name not in can_exit]
    reported: set[str] = set()
    for node in sorted(stuck, key=lambda n: n.pos):
        if node.name in reported:
            continue
        group = _component(node.name, succ)
        if len(group) == 1 and node.name not in succ[node.name]:
            continue  # leads into a stuck loop; the loop itself is reported
        reported |= group
        names = " → ".join(sorted(group))
        problems.append(_p(node.pos, f"loop with no exit: {names} never reaches a hangup, transfer, "
                           "queue or return"))
    # Loops that spin without playing or waiting (set/goto/branch/hours only).
    instant = {n.name for n in nodes.values() if isinstance(n.action, SetVars | Goto | Branch | Hours | Split)}
    for n in sorted(instant, key=lambda x: nodes[x].pos):
        if n in reported:
            continue
        group = _component(n, {k: [t for t in v if t in instant] for k, v in succ.items() if k in instant})
        if len(group) > 1 or n in succ[n]:
            reported |= group
            problems.append(_p(nodes[n].pos, f"loop through {' → '.join(sorted(group))} never plays a "
                               "prompt or waits for the caller"))
    return problems


def _component(start: str, succ: dict[str, list[str]]) -> set[str]:
    """The strongly connected component containing ``start`` (small graphs: forward ∩ backward)."""
    def reach(graph: dict[str, list[str]]) -> set[str]:
        out, todo = {start}, [start]
        while todo:
            for t in graph.get(todo.pop(), []):
                if t not in out:
                    out.add(t)
                    todo.append(t)
        return out

    back: dict[str, list[str]] = {}
    for n, ts in succ.items():
        for t in ts:
            back.setdefault(t, []).append(n)
    return reach(succ) & reach(back)


def check_lookups(loaded: Loaded, backends: Iterable[str]) -> list[Problem]:
    """An ``http`` node naming a back end the box's config does not have: a warning (the flows may be checked
    against another box's config), and only when the config names any (a box without ``lookups:`` says nothing:
    its look-ups fail as not configured, which the flow routes like any failure)."""
    known = sorted(backends)
    if not known:
        return []
    out = []
    for flow in loaded.flows.values():
        for node in flow.nodes.values():
            a = node.action
            if isinstance(a, Http) and a.lookup is not None and a.lookup not in known:
                out.append(Problem(node.pos.file, node.pos.line, node.pos.column,
                                   f"node '{node.name}': back end '{a.lookup}' is not in the config's lookups: "
                                   f"({', '.join(known)}){_suggest(a.lookup, known)}; its look-ups will fail",
                                   warning=True))
    return out


def check_subflow_cycles(loaded: Loaded) -> list[Problem]:
    calls: dict[str, list[tuple[str, Pos]]] = {}
    for flow in loaded.flows.values():
        for node in flow.nodes.values():
            if isinstance(node.action, CallFlow):
                calls.setdefault(flow.name, []).append((node.action.flow, node.pos))
    problems: list[Problem] = []
    reported: set[frozenset[str]] = set()

    def walk(name: str, stack: list[str]) -> None:
        for callee, pos in calls.get(name, []):
            if callee in stack:
                ring = stack[stack.index(callee):]
                k = ring.index(name)  # told from the flow whose call closes the loop, where it points
                cycle = ring[k:] + ring[:k] + [name]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    problems.append(_p(pos, f"sub-flow calls loop: {' → '.join(cycle)}"))
                continue
            walk(callee, [*stack, callee])

    for name in sorted(calls):
        walk(name, [name])
    return problems
