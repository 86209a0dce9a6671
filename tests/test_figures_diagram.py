"""The GQA wiring diagram (gqa_viz.figures.diagram), without Streamlit."""

from __future__ import annotations

import json

import pytest

from gqa_viz.figures.diagram import attention_kind, describe, gqa_diagram
from gqa_viz.figures.theme import group_color

CASES = [(1, 1), (2, 1), (8, 2), (8, 8), (8, 1), (12, 3), (16, 4), (32, 8), (64, 1), (64, 64)]


def _shapes(fig):
    """name -> shape dict for every named layout shape."""
    return {s.name: s for s in fig.layout.shapes}


def _trace(fig, name):
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


@pytest.mark.parametrize(("n", "k"), CASES)
def test_box_and_wire_counts(n, k):
    names = [s.name for s in gqa_diagram(n, k).layout.shapes]
    assert sorted(x for x in names if x.startswith("q") and "->" not in x) == sorted(
        f"q{i}" for i in range(n)
    )
    assert sorted(x for x in names if x.startswith("kv")) == sorted(f"kv{j}" for j in range(k))
    assert sum("->" in x for x in names) == n
    assert len(names) == 2 * n + k


@pytest.mark.parametrize(("n", "k"), CASES)
def test_every_wire_connects_query_head_to_its_kv_head(n, k):
    g = n // k
    shapes = _shapes(gqa_diagram(n, k))
    for i in range(n):
        j = i // g
        wire, q, kv = shapes[f"q{i}->kv{j}"], shapes[f"q{i}"], shapes[f"kv{j}"]
        assert wire.type == "line"
        assert wire.x0 == pytest.approx((q.x0 + q.x1) / 2)  # leaves the query box's centre
        assert wire.y0 == pytest.approx(q.y0)  # ... from its bottom edge
        assert kv.x0 <= wire.x1 <= kv.x1  # lands on the K/V box of group j
        assert wire.y1 == pytest.approx(kv.y1)  # ... on its top edge
        # and on no other K/V box
        others = [shapes[f"kv{m}"] for m in range(k) if m != j]
        assert not any(o.x0 <= wire.x1 <= o.x1 for o in others)


@pytest.mark.parametrize(("n", "k"), CASES)
def test_colours_follow_the_group(n, k):
    g = n // k
    shapes = _shapes(gqa_diagram(n, k))
    for i in range(n):
        assert shapes[f"q{i}"].fillcolor == group_color(i // g)
        assert shapes[f"q{i}->kv{i // g}"].line.color == group_color(i // g)
    for j in range(k):
        assert shapes[f"kv{j}"].fillcolor == group_color(j)


@pytest.mark.parametrize(("n", "k"), CASES)
def test_boxes_do_not_overlap_and_rows_are_ordered(n, k):
    shapes = _shapes(gqa_diagram(n, k))
    qs = [shapes[f"q{i}"] for i in range(n)]
    kvs = [shapes[f"kv{j}"] for j in range(k)]
    for row in (qs, kvs):
        for a, b in zip(row, row[1:]):
            assert a.x1 < b.x0
    assert min(q.y0 for q in qs) > max(kv.y1 for kv in kvs)  # query row above the K/V row


def test_hover_text():
    fig = gqa_diagram(8, 2)
    q = _trace(fig, "query heads").hovertext
    assert len(q) == 8
    assert q[5] == "query head 5 reads K/V head 1 (group 1: query heads 4-7)"
    assert q[0] == "query head 0 reads K/V head 0 (group 0: query heads 0-3)"
    kv = _trace(fig, "K/V heads").hovertext  # one target under each query head
    assert (
        kv
        == ("K/V head 0 is read by query heads 0-3 (G = 4)",) * 4
        + ("K/V head 1 is read by query heads 4-7 (G = 4)",) * 4
    )
    mha = _trace(gqa_diagram(4, 4), "query heads").hovertext
    assert mha[2] == "query head 2 reads K/V head 2 (group 2: query head 2)"
    mqa = _trace(gqa_diagram(64, 1), "query heads").hovertext
    assert mqa[63] == "query head 63 reads K/V head 0 (group 0: query heads 0-63)"


@pytest.mark.parametrize(("n", "k"), [(12, 3), (8, 8), (64, 1)])
def test_hover_markers_sit_on_their_boxes(n, k):
    g = n // k
    fig = gqa_diagram(n, k)
    shapes = _shapes(fig)
    trace = _trace(fig, "query heads")
    for i, (x, y) in enumerate(zip(trace.x, trace.y)):
        box = shapes[f"q{i}"]
        assert box.x0 < x < box.x1 and box.y0 < y < box.y1
    trace = _trace(fig, "K/V heads")
    for i, (x, y, text) in enumerate(zip(trace.x, trace.y, trace.hovertext)):
        box = shapes[f"kv{i // g}"]
        assert box.x0 < x < box.x1 and box.y0 < y < box.y1
        assert text.startswith(f"K/V head {i // g} is read by")


@pytest.mark.parametrize(
    ("n", "k", "kind", "text"),
    [
        (8, 2, "GQA", "<b>GQA</b>: 8 query heads · 2 K/V heads · G = 8/2 = 4 per group"),
        (8, 8, "MHA", "<b>MHA</b>: 8 query heads · 8 K/V heads · G = 8/8 = 1 per group"),
        (64, 1, "MQA", "<b>MQA</b>: 64 query heads · 1 K/V head · G = 64/1 = 64 per group"),
        (1, 1, "MHA", "1 query head · 1 K/V head · G = 1/1 = 1 per group"),
    ],
)
def test_title_and_kind(n, k, kind, text):
    fig = gqa_diagram(n, k)
    assert text in fig.layout.title.text
    assert attention_kind(n, k) == kind
    assert fig.layout.meta["kind"] == kind


def test_labels():
    small = _trace(gqa_diagram(8, 2), "query head labels")
    assert list(small.text) == [f"q{i}" for i in range(8)]  # every head, inside its box
    kv = _trace(gqa_diagram(8, 2), "K/V head labels")
    assert list(kv.text) == ["K/V head 0", "K/V head 1"]
    big = _trace(gqa_diagram(64, 8), "query head labels")
    assert 4 <= len(big.text) < 64 and big.text[0] == "q0"  # only every few heads
    shapes = _shapes(gqa_diagram(64, 8))
    assert min(big.y) > shapes["q0"].y1  # and outside (above) the boxes


def test_figure_style():
    fig = gqa_diagram(8, 2)
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert fig.layout.paper_bgcolor == "white" and fig.layout.plot_bgcolor == "white"
    assert fig.layout.showlegend is False
    json.loads(fig.to_json())  # serialisable, as Streamlit needs


@pytest.mark.parametrize(
    ("n", "k"),
    [(8, 3), (0, 1), (8, 0), (-4, 2), (4, -2), (8, 16), (2.0, 1), (8, 2.0), (True, 1), (65, 1)],
)
def test_invalid_inputs_raise(n, k):
    with pytest.raises(ValueError):
        gqa_diagram(n, k)
    with pytest.raises(ValueError):
        describe(n, k)


def test_non_divisible_message_lists_the_divisors():
    with pytest.raises(ValueError, match="valid choices are 1, 2, 4, 8"):
        gqa_diagram(8, 3)


def test_describe():
    assert describe(8, 2) == (
        "G = 4: each K/V head is shared by 4 query heads. This is **grouped-query attention "
        "(GQA)**: the K/V cache stores 2 heads instead of 8, **4× smaller** than MHA "
        "(75% less memory)."
    )
    assert "multi-head attention (MHA)" in describe(8, 8) and "no saving" in describe(8, 8)
    mqa = describe(64, 1)
    assert "multi-query attention (MQA)" in mqa and "64× smaller" in mqa and "98.4%" in mqa
    assert "1 head instead of 64" in mqa
    assert "MHA and MQA coincide" in describe(1, 1)


def test_the_app_never_asks_for_more_heads_than_the_diagram_draws():
    from gqa_viz.app.limits import MAX_QUERY_HEADS
    from gqa_viz.figures.diagram import LEGIBLE_HEADS

    assert MAX_QUERY_HEADS <= LEGIBLE_HEADS
    gqa_diagram(MAX_QUERY_HEADS, 1)  # draws
