"""`ivr graph` of a flow too big to lay out in one picture (issue #18, item 9): a 2,000-node flow ran Graphviz
into its 60 s timeout and the user got a ``TimeoutExpired`` traceback. It is drawn a part at a time, and
refused in one line saying what to do."""

from __future__ import annotations

import pytest

from tests.conftest import Env

SIZE = 600
"""Past MAX_NODES (400) and still quick to check: the flow checks take ~20 s for 2,000 nodes."""


def big_flow(env: Env) -> None:
    """A chain: ``n0 -> n1 -> … -> n599`` (hang up)."""
    nodes = "".join(f"  n{i}: {{goto: n{i + 1}}}\n" for i in range(SIZE - 1))
    (env.flows / "big.yaml").write_text(f"flow: big\nnumbers: ['900']\nstart: n0\nnodes:\n{nodes}"
                                        f"  n{SIZE - 1}: {{hangup: null}}\n", encoding="utf-8")


def test_a_flow_too_big_to_draw_is_one_line_saying_what_to_do(env: Env) -> None:
    big_flow(env)
    out = env.root / "big.svg"
    r = env.ivr("graph", "big", "-o", str(out))
    assert r.code == 1 and not out.exists()
    assert r.err == ("ivr graph: 600 nodes to draw, more than Graphviz lays out in time (400): draw a part with "
                     "--node NODE [--depth N], or write .dot\n")
    dot = env.root / "big.dot"
    assert env.ivr("graph", "big", "-o", str(dot)).code == 0  # text, any size
    assert dot.read_text().count("[goto]") == SIZE - 1


def test_the_neighbourhood_of_one_node(env: Env) -> None:
    big_flow(env)
    out = env.root / "part.svg"
    r = env.ivr("graph", "big", "--node", "n300", "--depth", "3", "-o", str(out))
    assert r.code == 0, r.err
    svg = out.read_text()
    drawn = {f"n{i}" for i in range(297, 304)}
    for name in drawn:
        assert f">{name}</text>" in svg, name
    assert ">n304 …</text>" in svg and ">n305" not in svg and ">n296</text>" not in svg  # named, not drawn
    r = env.ivr("graph", "big", "--node", "n3000", "-o", str(out))
    assert r.code == 2 and "ivr graph: flow big has no node 'n3000' (did you mean 'n300'?)" in r.err


def test_one_flow_without_its_subflows(env: Env) -> None:
    dot = env.root / "main.dot"
    assert env.ivr("graph", "main", "--no-subflows", "-o", str(dot)).code == 0
    text = dot.read_text()
    assert '"main:main_menu"' in text and '"billing:account"' not in text and '"survey:csat"' not in text
    assert env.ivr("graph", "billing", "--no-subflows", "-o", str(dot)).code == 0
    assert '"billing:account"' in dot.read_text()


def test_graphviz_timing_out_is_one_line_not_a_traceback(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.flows import graph

    monkeypatch.setattr(graph, "TIMEOUT", 0.001)
    out = env.root / "main.svg"
    r = env.ivr("graph", "main", "-o", str(out))
    assert r.code == 1 and not out.exists()
    assert r.err == ("Graphviz gave up after 0.001 s: draw a part (--node NODE --depth N, or --no-subflows) "
                     "or write .dot\n")
