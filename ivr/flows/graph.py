"""Draw flows as Graphviz DOT (and SVG/PNG through the ``dot`` program), so admins can see the menu tree.

A big flow is drawn a part at a time (one node's neighbourhood, or one flow without its sub-flows): ``dot``
needs more than a minute for 2,000 nodes, and such a picture cannot be read anyway.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ivr.flows.model import (
    Branch,
    CallFlow,
    Collect,
    Flow,
    FlowSet,
    Hangup,
    Hours,
    Menu,
    Play,
    QueueWithCallback,
    Return,
    Split,
    Survey,
    Transfer,
)
from ivr.flows.prompts import describe

MAX_NODES = 400
"""Most nodes laid out through Graphviz: ``dot`` takes seconds for a few hundred, more than a minute for 2,000.
A ``.dot`` file is written whatever its size."""
TIMEOUT = 60.0
"""Seconds ``dot`` may take before the drawing is given up."""

SHAPES = {
    "menu": ("box", "#dbeafe"),
    "collect": ("box", "#fef3c7"),
    "survey": ("box", "#fce7f3"),
    "hours": ("diamond", "#e0e7ff"),
    "branch": ("diamond", "#e0e7ff"),
    "split": ("diamond", "#fae8ff"),
    "transfer": ("doubleoctagon", "#dcfce7"),
    "queue": ("doubleoctagon", "#dcfce7"),
    "hangup": ("octagon", "#fee2e2"),
    "return": ("invhouse", "#f3f4f6"),
    "call": ("component", "#f3f4f6"),
}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _detail(flowset: FlowSet, flow: Flow, node_name: str) -> str:
    node = flow.nodes[node_name]
    a = node.action

    def said(prompts: tuple) -> str:
        names = [p.name for p in prompts if hasattr(p, "name")]
        if not names:
            return ""
        text = describe(flow, names[0], flow.language, flowset.library)
        return (text[:38] + "…") if len(text) > 40 else text

    if isinstance(a, Menu | Collect | Survey | Play):
        return said(a.prompt)
    if isinstance(a, Hours):
        return f"schedule {a.schedule}"
    if isinstance(a, Transfer):
        return f"→ {a.queue or a.extension}"
    if isinstance(a, QueueWithCallback):
        return f"queue {a.name}" + (" (callback offer)" if a.offer_callback else "")
    if isinstance(a, CallFlow):
        return f"sub-flow {a.flow}"
    if isinstance(a, Hangup):
        return said(a.prompt)
    if isinstance(a, Branch):
        return f"{len(a.cases)} conditions"
    if isinstance(a, Split):
        return f"experiment {a.experiment}"
    if isinstance(a, Return):
        return "back to caller flow"
    return ""


def to_dot(flowset: FlowSet, names: list[str], only: Mapping[str, set[str]] | None = None,
           focus: str | None = None) -> str:
    """``only``: per flow, the nodes to draw (the others its edges lead to are named, in grey, not drawn);
    ``focus``: ``flow:node`` drawn with a thick border."""
    lines = [
        "digraph ivr {",
        '  graph [rankdir=TB, fontname="Helvetica", labelloc=t];',
        '  node [fontname="Helvetica", fontsize=10, style="filled,rounded"];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    cross: list[str] = []
    for fname in names:
        flow = flowset.flows[fname]
        numbers = ", ".join(flow.numbers) + (" (default)" if flow.default else "")
        lines.append(f"  subgraph {_q('cluster_' + fname)} {{")
        lines.append(f"    label={_q(f'flow {fname}' + (f' — {numbers}' if numbers.strip() else ''))};")
        drawn = only.get(fname, set(flow.nodes)) if only is not None else set(flow.nodes)
        if flow.start in drawn:
            start_id = _q(f"{fname}:__start")
            lines.append(f'    {start_id} [label="start", shape=circle, style=filled, fillcolor="#111827", '
                         'fontcolor=white, width=0.5];')
            lines.append(f"    {start_id} -> {_q(f'{fname}:{flow.start}')};")
        beyond: set[str] = set()
        for name, node in flow.nodes.items():
            if name not in drawn:
                continue
            shape, color = SHAPES.get(node.kind, ("box", "#ffffff"))
            detail = _detail(flowset, flow, name)
            label = f"{name}\\n[{node.kind}]" + (f"\\n{_q(detail)[1:-1]}" if detail else "")
            bold = ", penwidth=3" if focus == f"{fname}:{name}" else ""
            lines.append(f'    {_q(f"{fname}:{name}")} [label="{label}", shape={shape}, fillcolor="{color}"{bold}];')
            for edge_label, target in node.edges():
                if target not in drawn and target not in beyond:
                    beyond.add(target)
                    lines.append(f'    {_q(f"{fname}:{target}")} [label={_q(target + " …")}, shape=plaintext, '
                                 'style="", fontcolor="#6b7280"];')
                style = ', style=dashed, color="#b91c1c"' if edge_label == "failure" else ""
                lines.append(f"    {_q(f'{fname}:{name}')} -> {_q(f'{fname}:{target}')} "
                             f"[label={_q(edge_label)}{style}];")
            if isinstance(node.action, CallFlow) and node.action.flow in names:
                # Drawn after the clusters: an edge inside one would pull the sub-flow's start into it.
                cross.append(f"  {_q(f'{fname}:{name}')} -> {_q(f'{node.action.flow}:__start')} "
                             '[style=dotted, label="calls"];')
        lines.append("  }")
    lines += cross
    lines.append("}")
    return "\n".join(lines) + "\n"


def neighbourhood(flow: Flow, node: str, depth: int) -> set[str]:
    """NODE and every node within ``depth`` edges of it, either way: what leads there and where it goes."""
    near: dict[str, set[str]] = {n: set() for n in flow.nodes}
    for name, nd in flow.nodes.items():
        for _, target in nd.edges():
            if target in near:
                near[name].add(target)
                near[target].add(name)
    seen, ring = {node}, {node}
    for _ in range(depth):
        ring = {m for n in ring for m in near[n]} - seen
        seen |= ring
    return seen


def node_count(flowset: FlowSet, names: list[str], only: Mapping[str, set[str]] | None = None) -> int:
    return sum(len(only[n]) if only is not None and n in only else len(flowset.flows[n].nodes) for n in names)


def flows_to_draw(flowset: FlowSet, name: str) -> list[str]:
    """The named flow and every sub-flow it reaches."""
    out, todo = [], [name]
    while todo:
        n = todo.pop(0)
        if n in out:
            continue
        out.append(n)
        todo += [nd.action.flow for nd in flowset.flows[n].nodes.values() if isinstance(nd.action, CallFlow)]
    return out


def render(dot: str, output: Path) -> None:
    """Write DOT as-is, or SVG/PNG/PDF through Graphviz's ``dot``."""
    fmt = output.suffix.lstrip(".").lower() or "dot"
    if fmt in ("dot", "gv"):
        output.write_text(dot, encoding="utf-8")
        return
    if shutil.which("dot") is None:
        raise RuntimeError("Graphviz is not installed (apt-get install graphviz); write .dot instead")
    try:
        done = subprocess.run(["dot", f"-T{fmt}", "-o", str(output)], input=dot.encode(), capture_output=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        output.unlink(missing_ok=True)
        raise RuntimeError(f"Graphviz gave up after {TIMEOUT:g} s: draw a part (--node NODE --depth N, or "
                           "--no-subflows) or write .dot") from None
    if done.returncode != 0:
        output.unlink(missing_ok=True)
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"Graphviz cannot draw {output}: {why[-1] if why else f'exit {done.returncode}'}")
