"""`ivr graph` draws every sample flow, sub-flows included, as SVG, PNG or DOT."""

from __future__ import annotations

import pytest

from tests.conftest import Env


@pytest.mark.parametrize("flow", ["main", "billing", "survey"])
def test_graph_svg_shows_every_node(env: Env, flow: str) -> None:
    out = env.root / f"{flow}.svg"
    r = env.ivr("graph", flow, "-o", str(out))
    assert r.code == 0, r.err
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    from ivr.flows.loader import load

    nodes = load([env.flows]).flows[flow].nodes
    for name in nodes:  # every node is drawn with its name as a label
        assert f">{name}</text>" in svg, name


def test_main_graph_includes_subflows_and_failure_edges(env: Env) -> None:
    dot_path = env.root / "main.dot"
    assert env.ivr("graph", "main", "-o", str(dot_path)).code == 0
    dot = dot_path.read_text()
    for name in ("main:main_menu", "billing:account", "survey:csat", "main:operator"):
        assert f'"{name}"' in dot
    assert '"main:main_menu" -> "main:operator" [label="failure", style=dashed' in dot
    assert '"main:billing" -> "billing:__start"' in dot
    png = env.root / "main.png"
    assert env.ivr("graph", "main", "-o", str(png)).code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_graph_of_broken_flow_reports_problems(env: Env) -> None:
    (env.flows / "survey.yaml").write_text("flow: survey\nstart: a\nnodes: {a: {goto: b}}\n")
    r = env.ivr("graph", "survey", "-o", str(env.root / "x.svg"))
    assert r.code == 1 and "unknown node 'b'" in r.err
